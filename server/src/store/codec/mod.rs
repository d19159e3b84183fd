//! Value encoding: one format byte, then the prost bytes of a storage schema that is
//! separate from the wire API, so the two can evolve independently. `schema` holds the
//! stored records; `context` and `message` convert them to and from the domain.

use super::error::Error;
use crate::domain::{Message, MessageId, NodeId, Seq};

mod context;
mod message;
mod schema;

pub use context::*;
pub use message::*;
pub use schema::*;

/// The only format written so far; readers refuse values of formats they do not know.
const FORMAT_V1: u8 = 1;

/// The node whose children are the versions at depth `seq` of a loaded path (`None`: the
/// first messages).
pub fn parent_at(path: &[Message], seq: Seq) -> Option<NodeId> {
    seq.before().and_then(|above| path.get(above.index())).map(|m| m.node)
}

/// A stored message id; `whose` names what holds it, for the error.
pub fn message_id(bytes: &[u8], whose: impl std::fmt::Display) -> Result<MessageId, Error> {
    let id: [u8; 16] = bytes.try_into().map_err(|_| Error::Corrupt(format!("{whose}: bad id")))?;
    Ok(MessageId::from_bytes(id))
}

pub fn encode(value: &impl prost::Message) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + value.encoded_len());
    bytes.push(FORMAT_V1);
    value.encode_raw(&mut bytes);
    bytes
}

pub fn decode<T: prost::Message + Default>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => T::decode(body).map_err(|e| Error::Corrupt(format!("{what}: {e}"))),
        Some((format, _)) => Err(Error::Corrupt(format!("{what}: unknown value format {format}"))),
        None => Err(Error::Corrupt(format!("{what}: empty value"))),
    }
}
