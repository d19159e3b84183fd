//! Key encoding. Ids and numbers are fixed-width big-endian, so a context's messages are
//! one contiguous, ordered range and prefix scans work. Each column family holds one
//! kind of key; never reuse a family's name for another layout.

use crate::domain::{ContextId, ListPosition, Timestamp};

/// context id → the context's metadata (everything but its messages).
pub const CF_CONTEXTS: &str = "contexts";
/// context id ++ seq → one message.
pub const CF_MESSAGES: &str = "messages";
/// (u64::MAX - updated_at) ++ context id → nothing: contexts, most recently updated first.
pub const CF_BY_UPDATED: &str = "by_updated";
/// context id → nothing: contexts saved in the middle of a run, resumed at start-up
/// without scanning every context.
pub const CF_ACTIVE: &str = "active";

pub const ALL_FAMILIES: [&str; 4] = [CF_CONTEXTS, CF_MESSAGES, CF_BY_UPDATED, CF_ACTIVE];

pub const CONTEXT_KEY_LEN: usize = 16;
pub const MESSAGE_KEY_LEN: usize = 24;
pub const BY_UPDATED_KEY_LEN: usize = 24;

pub fn context_key(id: ContextId) -> [u8; CONTEXT_KEY_LEN] {
    *id.as_bytes()
}

pub fn message_key(id: ContextId, seq: u64) -> [u8; MESSAGE_KEY_LEN] {
    let mut key = [0u8; MESSAGE_KEY_LEN];
    key[..16].copy_from_slice(id.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The seq of a message key, if `key` is one of `id`'s.
pub fn message_seq(id: ContextId, key: &[u8]) -> Option<u64> {
    if key.len() != MESSAGE_KEY_LEN || &key[..16] != id.as_bytes() {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&key[16..]);
    Some(u64::from_be_bytes(seq))
}

/// The half-open key range holding every message of `id`.
pub fn message_range(id: ContextId) -> ([u8; MESSAGE_KEY_LEN], [u8; MESSAGE_KEY_LEN]) {
    let start = message_key(id, 0);
    let mut end = [0u8; MESSAGE_KEY_LEN];
    end[..16].copy_from_slice(&next_id(id.as_bytes()));
    // An all-0xff id has no successor of the same length: end after its last seq instead.
    if end[..16] == [0u8; 16] {
        end = [0xff; MESSAGE_KEY_LEN];
    }
    (start, end)
}

fn next_id(id: &[u8; 16]) -> [u8; 16] {
    u128::from_be_bytes(*id).wrapping_add(1).to_be_bytes()
}

pub fn by_updated_key(updated_at: Timestamp, id: ContextId) -> [u8; BY_UPDATED_KEY_LEN] {
    let micros = u64::try_from(updated_at.as_micros()).unwrap_or(0);
    let mut key = [0u8; BY_UPDATED_KEY_LEN];
    key[..8].copy_from_slice(&(u64::MAX - micros).to_be_bytes());
    key[8..].copy_from_slice(id.as_bytes());
    key
}

/// The list position a `by_updated` key stands for.
pub fn by_updated_position(key: &[u8]) -> Option<ListPosition> {
    if key.len() != BY_UPDATED_KEY_LEN {
        return None;
    }
    let inverted = u64::from_be_bytes(key[..8].try_into().ok()?);
    let micros = i64::try_from(u64::MAX - inverted).ok()?;
    let id = ContextId::from_bytes(key[8..].try_into().ok()?);
    Some(ListPosition { updated_at: Timestamp::from_micros(micros), id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_round_trip_and_sort_by_context_then_seq() {
        let a = ContextId::from_bytes([1; 16]);
        let b = ContextId::from_bytes([2; 16]);
        let keys = [message_key(a, 0), message_key(a, 1), message_key(a, 255), message_key(a, 256), message_key(b, 0)];
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys must sort by context, then seq");
        assert_eq!(message_seq(a, &message_key(a, 300)), Some(300));
        assert_eq!(message_seq(b, &message_key(a, 300)), None);
        assert_eq!(message_seq(a, &[0u8; 3]), None);

        let (start, end) = message_range(a);
        assert!(keys[..4].iter().all(|k| *k >= start && *k < end));
        assert!(keys[4] >= end);

        let last = ContextId::from_bytes([0xff; 16]);
        let (start, end) = message_range(last);
        assert!(message_key(last, u64::MAX - 1) < end && message_key(last, 0) >= start);
    }

    #[test]
    fn by_updated_keys_sort_newest_first() {
        let id = ContextId::from_bytes([7; 16]);
        let old = by_updated_key(Timestamp::from_micros(1_000), id);
        let new = by_updated_key(Timestamp::from_micros(2_000), id);
        assert!(new < old);
        let position = ListPosition { updated_at: Timestamp::from_micros(2_000), id };
        assert_eq!(by_updated_position(&new), Some(position));
        assert_eq!(by_updated_position(&new[..10]), None);
    }
}
