//! Page tokens of ListContexts: opaque to clients, versioned, and independent of how any
//! store lays out its keys. A token holds the list position the page ended at (updated_at
//! and context id), so a store backend or key layout can change without changing the wire.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Status;

use crate::domain::{ContextId, ListPosition, Timestamp};

/// The layout written; tokens of any other version are refused.
const VERSION: u8 = 1;
/// Version, updated_at (µs, big-endian), context id, then a CRC-32 of those.
const LEN: usize = 1 + 8 + 16 + 4;

/// The position to continue after; `None` for an empty token (the first page).
pub fn decode(token: &str) -> Result<Option<ListPosition>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Status::invalid_argument("page_token is not a token this server issued");
    let bytes: [u8; LEN] = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?.try_into().map_err(|_| invalid())?;
    let (body, checksum) = bytes.split_at(LEN - 4);
    if body[0] != VERSION || crc32fast::hash(body).to_be_bytes() != checksum {
        return Err(invalid());
    }
    let micros = i64::from_be_bytes(body[1..9].try_into().map_err(|_| invalid())?);
    let id = ContextId::from_bytes(body[9..25].try_into().map_err(|_| invalid())?);
    Ok(Some(ListPosition { updated_at: Timestamp::from_micros(micros), id }))
}

/// The token of a page that ended at `position`; empty when there is no next page.
pub fn encode(position: Option<ListPosition>) -> String {
    let Some(position) = position else {
        return String::new();
    };
    let mut bytes = Vec::with_capacity(LEN);
    bytes.push(VERSION);
    bytes.extend_from_slice(&position.updated_at.as_micros().to_be_bytes());
    bytes.extend_from_slice(position.id.as_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
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
        let bad = ["%%%", "AAAA", "not-a-token", &next_version, &old_layout, &token[..token.len() - 1]];
        for bad in bad.iter().copied().chain(tampered.iter().map(String::as_str)) {
            assert_eq!(decode(bad).err().map(|s| s.code()), Some(tonic::Code::InvalidArgument), "{bad}");
        }
    }
}
