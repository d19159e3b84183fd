//! What one save writes: a context's new metadata and what changed in its tree.

use std::sync::Arc;

use crate::domain::{Context, Message, NodeId};

/// One change of a context, written atomically: the context as the store holds it now and
/// as it is to be. Each engine derives what it needs from the two (RocksDB: which index
/// entries to replace; NATS: nothing more), so nothing engine-specific is computed above
/// the storage boundary.
#[derive(Debug, Clone)]
pub struct Save {
    /// The context as saved last; none for a new context.
    pub before: Option<Arc<Context>>,
    pub after: Arc<Context>,
    /// New or changed messages, each once, in its final form.
    pub messages: Vec<Arc<Message>>,
    /// Messages saved before that joined the active path (a switch): they are marked as the
    /// most recently active of their siblings.
    pub joined: Vec<Arc<Message>>,
}

impl Save {
    /// The save of a new context: everything it holds is new.
    pub fn new_context(ctx: Arc<Context>) -> Self {
        let messages = ctx.messages.iter().cloned().collect();
        Self { before: None, after: ctx, messages, joined: Vec::new() }
    }

    /// Messages numbered from here on are new: their edges and ids are written with them.
    pub fn new_from_node(&self) -> NodeId {
        self.before.as_ref().map_or(NodeId::default(), |before| before.next_node)
    }
}
