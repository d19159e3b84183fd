//! Persistence behind one boundary, [`Backend`], that each engine implements: `rocks`
//! (embedded RocksDB, the default) and `nats` (NATS JetStream, replicated). `save` is what
//! one change writes; `dump` is a whole context, as `ctxd migrate` copies it; `codec` is the storage schema both engines write (a format byte and
//! protobuf, separate from the wire API).

mod backend;
pub(crate) mod codec;
#[cfg(test)]
mod contract;
mod dump;
mod error;
mod save;

pub mod nats;
pub mod rocks;

pub use backend::{Backend, Change, Inserted, Tree};
pub use dump::Dump;
pub use error::{Error, Result};
pub use nats::{Nats, NatsOptions};
pub use rocks::{Rocks, Store};
pub use save::Save;
