//! The storage schema (`ctxd.storage.v1`, proto/ctxd/storage/v1/storage.proto): the records
//! the engines hold, generated from the .proto (checked by `buf lint` and `buf breaking` in
//! `make lint`). Tags are never reused; what a field's zero value means for older records
//! is the codec's to say.

#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/ctxd.storage.v1.rs"));
