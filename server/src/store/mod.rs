//! Persistence. `rocksdb` saves every change of a context as one atomic, (by default)
//! synced `WriteBatch`; `writer` is the thread that group-commits the saves of all contexts;
//! `keys` and `codec` are the layout on disk (big-endian keys, a format byte and protobuf of
//! a storage schema separate from the wire API).

mod codec;
mod error;
mod keys;
mod migrate;
mod rocksdb;
mod save;
mod writer;

pub use error::{Error, Result};
pub use rocksdb::{Store, Tree};
pub use save::Save;
pub use writer::Writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tree_tests;
