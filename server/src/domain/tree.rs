//! A conversation is a tree: every message has a parent (the first messages have none), and
//! editing a message or regenerating a reply adds a sibling instead of replacing anything.
//! The context holds one path of it in memory, the *active path*; the rest stays in storage.
//!
//! Messages are numbered by `node` in creation order, unique within a context; `seq` is a
//! message's depth, so on the active path `messages[seq]` is the message at depth `seq`.

use std::sync::Arc;

use super::ids::{MessageId, NodeId, Seq};

/// Where a new message goes in its context's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Depth: its position on the active path.
    pub seq: Seq,
    /// Its number in the context, in creation order (the storage key).
    pub node: NodeId,
    /// The node of the message it follows; `None` for a first message.
    pub parent: Option<NodeId>,
}

impl Place {
    /// Depth `seq` of a conversation without versions, whose nodes follow the path (a fork's
    /// copy, a context saved before branches): node `seq`, after node `seq - 1`.
    pub fn straight(seq: Seq) -> Self {
        Place { seq, node: NodeId::new(seq.get()), parent: seq.before().map(|above| NodeId::new(above.get())) }
    }
}

/// Where a page of a message's path stops: that message's number and depth. Its path above
/// it never changes (a message's parent is fixed), so paging on from here covers that path
/// whatever the active path does meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPoint {
    pub node: NodeId,
    pub seq: Seq,
}

/// One version at a depth of the active path: a child of the same parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sibling {
    pub node: NodeId,
    pub id: MessageId,
}

/// A run of the active path whose nodes are consecutive: from depth `seq` on, the message at
/// depth `seq + k` is node `node + k`, up to the next segment's depth (or the path's end).
/// A conversation nobody branched is one segment; storing the path as segments keeps the
/// record that names it small, and loading it is one range read per segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub seq: Seq,
    pub node: NodeId,
}

/// Which branch the active path takes, beyond its messages: its segments, and at each depth
/// where the parent has a child off the path, every child of that parent (oldest first).
/// At the path's end, `forks` may hold the children of the last message: replies abandoned by
/// a regenerate whose new reply is not there yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathShape {
    pub segments: Vec<Segment>,
    pub forks: imbl::OrdMap<Seq, Arc<[Sibling]>>,
}

impl PathShape {
    /// Cuts the path back to its first `keep` messages. The versions at depth `keep` stay:
    /// they are children of a message that stays.
    pub fn truncate(&mut self, keep: Seq) {
        self.segments.retain(|s| s.seq < keep);
        let (kept, _) = self.forks.split(&keep.next());
        self.forks = kept;
    }
}

/// Where a message stands in the tree: the message it follows, and its versions (for
/// ‹ i/n › controls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// The id of the message it follows; `None` for a first message.
    pub parent: Option<MessageId>,
    /// How many versions there are at this depth (1: none but this one).
    pub count: u32,
    /// This one's position among them, from 0, oldest first.
    pub index: u32,
    pub previous: Option<MessageId>,
    pub next: Option<MessageId>,
}

impl Versions {
    /// The only version, after `parent`.
    pub fn only(parent: Option<MessageId>) -> Self {
        Versions { parent, count: 1, index: 0, previous: None, next: None }
    }

    /// Where node `node` stands in `group` (the children of `parent`, oldest first).
    pub fn within(group: &[Sibling], node: NodeId, parent: Option<MessageId>) -> Self {
        let Some(index) = group.iter().position(|s| s.node == node) else {
            return Self::only(parent);
        };
        Versions {
            parent,
            count: u32::try_from(group.len()).unwrap_or(u32::MAX),
            index: u32::try_from(index).unwrap_or(u32::MAX),
            previous: index.checked_sub(1).and_then(|i| group.get(i)).map(|s| s.id),
            next: group.get(index + 1).map(|s| s.id),
        }
    }
}
