//! A whole context as a store holds it — its metadata, its active path and every message
//! of every branch — for copying it to another store (`ctxd migrate`) and checking the copy.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::codec;
use super::error::{Error, Result};
use crate::domain::{Context, Message, NodeId};

#[derive(Debug, Clone)]
pub struct Dump {
    /// The metadata, phase (pending tool calls, a run in flight) and active path.
    pub context: Arc<Context>,
    /// Every message of the tree, by node: `messages[i].node == i`.
    pub messages: Vec<Arc<Message>>,
    /// Where a parent has several children: each child's node and the revision it was last
    /// active at (which branch a switch into that subtree follows). A lone child has no
    /// choice to remember, so none is kept for it.
    pub active_at: Vec<(NodeId, u64)>,
}

impl Dump {
    /// Fails unless the messages are numbered 0, 1, ... up to the context's next node and
    /// the active path is made of them.
    pub fn check(&self) -> Result<()> {
        let key = self.context.key();
        if self.messages.len() as u64 != self.context.next_node.get() {
            return Err(Error::Corrupt(format!(
                "context {key}: {} messages, but the next is numbered {}",
                self.messages.len(),
                self.context.next_node
            )));
        }
        if let Some((node, message)) =
            self.messages.iter().enumerate().find(|(node, m)| m.node != NodeId::new(*node as u64))
        {
            return Err(Error::Corrupt(format!("context {key}: message {} is at node {node}", message.node)));
        }
        if let Some(message) = self.context.messages.iter().find(|m| self.message(m.node).map(|s| s.id) != Some(m.id)) {
            return Err(Error::Corrupt(format!("context {key}: path message {} is not in the tree", message.node)));
        }
        Ok(())
    }

    pub fn message(&self, node: NodeId) -> Option<&Arc<Message>> {
        self.messages.get(usize::try_from(node.get()).ok()?)
    }

    /// SHA-256 (hex) of everything the dump holds, in the storage schema: two stores hold
    /// the same context exactly when their dumps' checksums are equal.
    pub fn checksum(&self) -> String {
        let mut hash = Sha256::new();
        let mut part = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        part(self.context.key().to_string().as_bytes());
        part(&codec::encode(&codec::context_to_stored(&self.context)));
        part(&codec::encode(&codec::path_to_stored(&self.context.shape)));
        for message in &self.context.messages {
            part(&message.node.get().to_be_bytes());
        }
        for message in &self.messages {
            part(&message.node.get().to_be_bytes());
            part(&codec::encode(&codec::message_to_stored(message)));
        }
        for (node, active_at) in &self.active_at {
            part(&node.get().to_be_bytes());
            part(&active_at.to_be_bytes());
        }
        hex::encode(hash.finalize())
    }
}
