//! The `ctxd.v1` wire API: message types plus the tonic client and server for
//! `ContextService`. Other Rust services depend on this crate to call ctxd.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("ctxd.v1");
}

/// The encoded `FileDescriptorSet` of the ctxd protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ctxd_descriptor.bin"));
