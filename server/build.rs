//! Generates the storage schema's types (`proto/ctxd/storage/v1`) without a system `protoc`:
//! protox parses the files, prost writes the structs. Only messages: storage has no service.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = ["ctxd/storage/v1/storage.proto", "ctxd/storage/v1/nats.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(files, [&root])?;
    tonic_prost_build::configure().build_client(false).build_server(false).compile_fds(descriptors)?;
    Ok(())
}
