//! What the nodes tell each other (see docs/cluster.md): each node's heartbeat, published on
//! core NATS (`{prefix}.nodes.{node}`) every sixth of the lease TTL (at most every half
//! second) — its incarnation
//! (`epoch`, new at every start and after it lost its standing), the address other nodes send
//! calls to, the partitions it holds, its TTL, and whether it is leaving — and which node
//! should hold each partition.

use serde::{Deserialize, Serialize};

use crate::auth::PeerKey;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub epoch: String,
    pub addr: String,
    /// The record's signature with the cluster secret (empty without one): with a secret,
    /// an unsigned record is no node's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The partitions the node holds (a hint for routing: the leases in the streams decide).
    #[serde(default)]
    pub partitions: Vec<u32>,
    /// The node's lease TTL: every node of a cluster must have the same.
    #[serde(default)]
    pub ttl_ms: u64,
    /// The node is leaving (it gave its partitions up): take them at once.
    #[serde(default)]
    pub leaving: bool,
}

impl NodeRecord {
    /// Node `node`'s record, signed with `key` when the cluster has one.
    pub fn signed(node: &str, epoch: String, addr: String, key: Option<&PeerKey>) -> Self {
        let mac = key.map(|key| key.sign_member(node, &epoch, &addr)).unwrap_or_default();
        Self { epoch, addr, mac, partitions: Vec::new(), ttl_ms: 0, leaving: false }
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

/// The node of `nodes` that should hold `partition`: the highest hash of (node, partition)
/// (rendezvous hashing), so every node agrees without talking, and a node joining or leaving
/// moves only its own share.
pub fn chosen<'a>(partition: u32, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    use sha2::{Digest, Sha256};
    nodes.into_iter().max_by_key(|node| {
        let digest = Sha256::new()
            .chain_update(node.as_bytes())
            .chain_update([0])
            .chain_update(partition.to_be_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first), *node)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut node = NodeRecord::signed("a", "e1".into(), "127.0.0.1:5000".into(), None);
        node.partitions = vec![1, 4];
        node.ttl_ms = 1500;
        assert_eq!(NodeRecord::decode("a", &node.encode(), None), Some(node));
        assert!(NodeRecord::decode("a", b"not json", None).is_none());
    }

    #[test]
    fn partitions_spread_over_the_nodes_and_agree() {
        let nodes = ["node-a", "node-b", "node-c"];
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for partition in 0..3000u32 {
            let pick = chosen(partition, nodes).expect("a node");
            // The same answer whatever order the nodes are listed in.
            assert_eq!(chosen(partition, nodes.iter().rev().copied()), Some(pick));
            counts[nodes.iter().position(|n| *n == pick).expect("one of them")] += 1;
            // A fourth node takes about a quarter, each from whoever had it.
            let four = ["node-a", "node-b", "node-c", "node-d"];
            let now = chosen(partition, four).expect("a node");
            if now != pick {
                assert_eq!(now, "node-d", "only the new node takes partitions");
                moved += 1;
            }
        }
        for count in counts {
            assert!((800..1200).contains(&count), "uneven spread: {counts:?}");
        }
        assert!((600..900).contains(&moved), "{moved} of 3000 moved to the fourth node");
        assert_eq!(chosen(1, []), None);
    }
}
