//! Switching the active path to another branch: which messages it keeps, and what it reads
//! from storage to find the rest (the messages off the active path are not in memory).

use std::sync::Arc;

use super::context::Context;
use super::ids::{MessageId, NodeId, Seq};
use super::message::Message;
use super::tree::Sibling;

/// A child of a message, as storage indexes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    pub node: NodeId,
    pub id: MessageId,
    /// The revision at which it last joined the active path: a switch continues down the
    /// most recently active child.
    pub active_at: u64,
}

impl Child {
    /// The child as one of the versions at its depth.
    pub fn sibling(&self) -> Sibling {
        Sibling { node: self.node, id: self.id }
    }
}

/// What a switch needs to read of a context's tree. Reads are async: the tree may be on
/// another machine.
pub trait TreeReader: Sync {
    type Error: Send;
    /// The node of message `id`, if the context has it (on any branch).
    fn node_of(&self, id: MessageId) -> impl Future<Output = Result<Option<NodeId>, Self::Error>> + Send;
    /// The message with number `node`, which the context has.
    fn message(&self, node: NodeId) -> impl Future<Output = Result<Message, Self::Error>> + Send;
    /// The children of `parent` (`None`: the first messages), oldest first.
    fn children(&self, parent: Option<NodeId>) -> impl Future<Output = Result<Vec<Child>, Self::Error>> + Send;
}

/// A path to switch to: the active path's first `keep` messages, then `tail`.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub keep: Seq,
    /// The messages from depth `keep` on, oldest first.
    pub tail: Vec<Arc<Message>>,
    /// The versions at the tail's depths (beyond `keep`) whose parent has more than one child.
    pub forks: Vec<(Seq, Arc<[Sibling]>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BranchError<E> {
    #[error("context {context} has no message {message}")]
    UnknownMessage { context: String, message: MessageId },
    #[error(transparent)]
    Read(E),
}

impl Context {
    /// The path through message `target`, continuing down the most recently active child of
    /// each message; `None` when `target` is on the active path already (nothing changes).
    /// Reads only the branch it switches to: its messages from where it leaves the active
    /// path, and the children of each.
    pub async fn branch_through<R: TreeReader>(
        &self,
        reader: &R,
        target: MessageId,
    ) -> Result<Option<Branch>, BranchError<R::Error>> {
        let unknown = || BranchError::UnknownMessage { context: self.id.to_string(), message: target };
        let node = reader.node_of(target).await.map_err(BranchError::Read)?.ok_or_else(unknown)?;
        // Up from the target to the first message the active path shares with it.
        let mut chain = Vec::new();
        let mut current = reader.message(node).await.map_err(BranchError::Read)?;
        let keep = loop {
            if self.message(current.seq).is_some_and(|m| m.node == current.node) {
                break current.seq.next();
            }
            let parent = current.parent;
            chain.push(Arc::new(current));
            match parent {
                Some(parent) => current = reader.message(parent).await.map_err(BranchError::Read)?,
                None => break Seq::FIRST,
            }
        };
        if chain.is_empty() {
            return Ok(None);
        }
        chain.reverse();
        let versions = |children: &[Child]| -> Arc<[Sibling]> { children.iter().map(Child::sibling).collect() };
        let mut forks = Vec::new();
        for above in &chain[..chain.len() - 1] {
            let children = reader.children(Some(above.node)).await.map_err(BranchError::Read)?;
            if children.len() > 1 {
                forks.push((above.seq.next(), versions(&children)));
            }
        }
        // Down from the target, the way it was last followed.
        let mut tail = chain;
        while let Some(leaf) = tail.last() {
            let children = reader.children(Some(leaf.node)).await.map_err(BranchError::Read)?;
            let Some(next) = children.iter().max_by_key(|c| (c.active_at, c.node)) else { break };
            if children.len() > 1 {
                forks.push((leaf.seq.next(), versions(&children)));
            }
            tail.push(Arc::new(reader.message(next.node).await.map_err(BranchError::Read)?));
        }
        Ok(Some(Branch { keep, tail, forks }))
    }
}
