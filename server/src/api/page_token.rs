//! Page tokens: opaque to clients, versioned, and independent of how any store lays out its
//! keys. A ListContexts token holds the list position the page ended at (updated_at and
//! context id); a ListMessages token the node number of the page's last message. Each kind
//! has its own version byte, so neither is taken for the other.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Status;

use crate::domain::{ContextId, ListPosition, NodeId, PathPoint, Seq, Timestamp};

/// The layout of ListContexts tokens: version, updated_at (µs, big-endian), context id.
const CONTEXTS_VERSION: u8 = 1;
/// The layout of ListMessages tokens: version, node (big-endian).
const MESSAGES_VERSION: u8 = 0x81;
/// The layout of ListPathMessages tokens: version, node, depth (big-endian).
const PATH_VERSION: u8 = 0x82;

/// The body of a token of `version` and `len` bytes (after the version byte); `None` for an
/// empty token (the first page). Every token ends with a CRC-32 of what comes before.
fn open<const N: usize>(token: &str, version: u8) -> Result<Option<[u8; N]>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Status::invalid_argument("page_token is not a token this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if bytes.len() != 1 + N + 4 {
        return Err(invalid());
    }
    let (signed, checksum) = bytes.split_at(1 + N);
    if signed[0] != version || crc32fast::hash(signed).to_be_bytes() != checksum {
        return Err(invalid());
    }
    signed[1..].try_into().map(Some).map_err(|_| invalid())
}

fn seal(version: u8, body: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(1 + body.len() + 4);
    bytes.push(version);
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position to continue after; `None` for an empty token (the first page).
pub fn decode(token: &str) -> Result<Option<ListPosition>, Status> {
    Ok(open::<24>(token, CONTEXTS_VERSION)?.map(|body| {
        let (micros, id) = body.split_at(8);
        let micros = i64::from_be_bytes(micros.try_into().unwrap_or_default());
        let id = ContextId::from_bytes(id.try_into().unwrap_or_default());
        ListPosition { updated_at: Timestamp::from_micros(micros), id }
    }))
}

/// The token of a page that ended at `position`; empty when there is no next page.
pub fn encode(position: Option<ListPosition>) -> String {
    let Some(position) = position else {
        return String::new();
    };
    let mut body = [0u8; 24];
    body[..8].copy_from_slice(&position.updated_at.as_micros().to_be_bytes());
    body[8..].copy_from_slice(position.id.as_bytes());
    seal(CONTEXTS_VERSION, &body)
}

/// The node to continue after in a ListMessages page; `None` for the first page.
pub fn decode_node(token: &str) -> Result<Option<NodeId>, Status> {
    Ok(open::<8>(token, MESSAGES_VERSION)?.map(|bytes| NodeId::new(u64::from_be_bytes(bytes))))
}

/// The ListMessages token of a page that ended at `node`; empty when there is no next page.
pub fn encode_node(node: Option<NodeId>) -> String {
    node.map(|node| seal(MESSAGES_VERSION, &node.get().to_be_bytes())).unwrap_or_default()
}

/// Where a ListPathMessages page continues (before this message); `None` for the first page.
pub fn decode_path(token: &str) -> Result<Option<PathPoint>, Status> {
    Ok(open::<16>(token, PATH_VERSION)?.map(|body| {
        let (node, seq) = body.split_at(8);
        PathPoint {
            node: NodeId::new(u64::from_be_bytes(node.try_into().unwrap_or_default())),
            seq: Seq::new(u64::from_be_bytes(seq.try_into().unwrap_or_default())),
        }
    }))
}

/// The ListPathMessages token of a page that began at `point`; empty when it reached the first
/// message.
pub fn encode_path(point: Option<PathPoint>) -> String {
    let Some(point) = point else {
        return String::new();
    };
    let mut body = [0u8; 16];
    body[..8].copy_from_slice(&point.node.get().to_be_bytes());
    body[8..].copy_from_slice(&point.seq.get().to_be_bytes());
    seal(PATH_VERSION, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_tampered_or_foreign_ones_are_refused() {
        let position = ListPosition { updated_at: Timestamp::from_micros(1_700_000_000_123_456), id: ContextId::new() };
        let token = encode(Some(position));
        assert_eq!(decode(&token).ok().flatten(), Some(position));
        assert_eq!(encode(None), "");
        assert_eq!(decode("").ok(), Some(None));

        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        let tampered: Vec<String> = (0..bytes.len())
            .map(|i| {
                let mut copy = bytes.clone();
                copy[i] ^= 0x01;
                URL_SAFE_NO_PAD.encode(copy)
            })
            .collect();
        bytes[0] = 2;
        let next_version = URL_SAFE_NO_PAD.encode(&bytes);
        // The raw by-updated key that tokens used to be.
        let old_layout = URL_SAFE_NO_PAD.encode([9u8; 24]);
        let node_token = encode_node(Some(NodeId::new(7)));
        assert_eq!(decode_node(&node_token).ok().flatten(), Some(NodeId::new(7)));
        let point = PathPoint { node: NodeId::new(9), seq: Seq::new(4) };
        let path_token = encode_path(Some(point));
        assert_eq!(decode_path(&path_token).ok().flatten(), Some(point));
        assert!(decode_path(&node_token).is_err(), "a ListMessages token is not a ListPathMessages one");
        assert!(decode_node(&path_token).is_err(), "nor the other way round");
        assert_eq!(decode_node(&token).err().map(|s| s.code()), Some(tonic::Code::InvalidArgument), "not a node token");
        let bad = ["%%%", "AAAA", "not-a-token", &next_version, &old_layout, &token[..token.len() - 1], &node_token];
        for bad in bad.iter().copied().chain(tampered.iter().map(String::as_str)) {
            assert_eq!(decode(bad).err().map(|s| s.code()), Some(tonic::Code::InvalidArgument), "{bad}");
        }
    }
}
