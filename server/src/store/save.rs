//! What one save writes: a context's new metadata and what changed in its tree.

use std::sync::Arc;

use crate::domain::{Context, Message, Timestamp};

/// One change of a context, written atomically.
#[derive(Debug, Clone)]
pub struct Save {
    /// What the by-updated index holds for the context now.
    pub before_updated_at: Timestamp,
    /// Messages numbered from here on are new: their edges and ids are written with them.
    pub new_from_node: u64,
    pub after: Arc<Context>,
    /// New or changed messages, each once, in its final form.
    pub messages: Vec<Arc<Message>>,
    /// Messages saved before that joined the active path (a switch): they are marked as the
    /// most recently active of their siblings.
    pub joined: Vec<Arc<Message>>,
    /// The path's shape changed, so its record is written too.
    pub path_changed: bool,
}

impl Save {
    /// The save of a new context: everything it holds is new.
    pub fn new_context(ctx: Arc<Context>) -> Self {
        let messages = ctx.messages.iter().cloned().collect();
        Self {
            before_updated_at: ctx.updated_at,
            new_from_node: 0,
            after: ctx,
            messages,
            joined: Vec::new(),
            path_changed: true,
        }
    }
}
