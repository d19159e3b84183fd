//! The storage schema (`ctxd.storage.v1`, proto/ctxd/storage/v1/storage.proto): the records
//! the engines hold, generated from the .proto (checked by `buf lint` and `buf breaking` in
//! `make lint`). Tags are never reused; what a field's zero value means for older records
//! is the codec's to say.

#![allow(clippy::all)]
// Generated whole: `StoredSnapshot` is layout 1 of the NATS store, which this version no longer writes.
#![allow(dead_code)]

include!(concat!(env!("OUT_DIR"), "/ctxd.storage.v1.rs"));
