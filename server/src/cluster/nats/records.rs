//! What the cluster's two KV buckets hold (see docs/cluster.md):
//!
//! - `{prefix}_nodes`, a key per live node: its incarnation (`epoch`, new at every start and
//!   after it lost its standing) and the address other nodes send calls to. The bucket's
//!   max age is the lease TTL, so the engine deletes a node that stopped renewing it.
//! - `{prefix}_owners`, a key per context a node runs (`{tenant hex}.{context hex}`): which
//!   node, in which incarnation. Taken with create or update at a revision (compare-and-set),
//!   given up with a delete at the revision taken.

use serde::{Deserialize, Serialize};

use crate::auth::PeerKey;
use crate::domain::ContextKey;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub epoch: String,
    pub addr: String,
    /// The record's signature with the cluster secret (empty without one): with a secret,
    /// an unsigned record is no node's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub node: String,
    pub epoch: String,
}

impl NodeRecord {
    /// Node `node`'s record, signed with `key` when the cluster has one.
    pub fn signed(node: &str, epoch: String, addr: String, key: Option<&PeerKey>) -> Self {
        let mac = key.map(|key| key.sign_member(node, &epoch, &addr)).unwrap_or_default();
        Self { epoch, addr, mac }
    }

    pub fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    /// Node `node`'s record, if it is one: readable and, when the cluster has a secret,
    /// signed with it.
    pub fn decode(node: &str, value: &[u8], key: Option<&PeerKey>) -> Option<Self> {
        let record: Self = serde_json::from_slice(value).ok()?;
        key.is_none_or(|key| key.verify_member(node, &record.epoch, &record.addr, &record.mac)).then_some(record)
    }
}

impl OwnerRecord {
    /// What an unreadable record is taken for: a node that is never alive, so it is taken over.
    pub fn nobody() -> Self {
        Self { node: String::new(), epoch: String::new() }
    }

    pub fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    pub fn decode(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}

pub fn owner_key(key: &ContextKey) -> String {
    key.tokens()
}

pub fn parse_owner_key(key: &str) -> Option<ContextKey> {
    ContextKey::from_tokens(key)
}

/// The node of `nodes` that should take `key` over: the highest hash of (node, context)
/// (rendezvous hashing), so every node agrees without talking, and a node's departure moves
/// only its own share.
pub fn chosen<'a>(key: &ContextKey, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    use sha2::{Digest, Sha256};
    let tokens = owner_key(key);
    nodes.into_iter().max_by_key(|node| {
        let digest = Sha256::new().chain_update(node.as_bytes()).chain_update([0]).chain_update(&tokens).finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first), *node)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ContextId, TenantId};

    #[test]
    fn records_round_trip_and_keys_name_the_context() {
        let node = NodeRecord::signed("a", "e1".into(), "127.0.0.1:5000".into(), None);
        assert_eq!(NodeRecord::decode("a", &node.encode(), None), Some(node));
        let owner = OwnerRecord { node: "a".into(), epoch: "e2".into() };
        assert_eq!(OwnerRecord::decode(&owner.encode()), Some(owner));
        assert_eq!(OwnerRecord::decode(b"not json"), None);
        let key = ContextKey::new(TenantId::parse("acme").expect("tenant"), ContextId::from_bytes([7; 16]));
        assert_eq!(parse_owner_key(&owner_key(&key)), Some(key));
    }

    #[test]
    fn takeovers_spread_over_the_nodes_and_agree() {
        let nodes = ["node-a", "node-b", "node-c"];
        let mut counts = [0usize; 3];
        for n in 0..3000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            let key = ContextKey::new(TenantId::default_tenant(), ContextId::from_bytes(id));
            let pick = chosen(&key, nodes).expect("a node");
            // The same answer whatever order the nodes are listed in.
            assert_eq!(chosen(&key, nodes.iter().rev().copied()), Some(pick));
            let i = nodes.iter().position(|n| *n == pick).expect("one of them");
            counts[i] += 1;
            // Without the chosen node, the others' choices do not move.
            let rest: Vec<&str> = nodes.iter().copied().filter(|n| *n != pick).collect();
            let next = chosen(&key, rest.iter().copied()).expect("another");
            assert_ne!(next, pick);
        }
        for count in counts {
            assert!((800..1200).contains(&count), "uneven spread: {counts:?}");
        }
        assert_eq!(chosen(&ContextKey::new(TenantId::default_tenant(), ContextId::from_bytes([1; 16])), []), None);
    }
}
