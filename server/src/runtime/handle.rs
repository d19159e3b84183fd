//! How the registry and callers reach a live context's actor, and what it publishes.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::error::Result;
use super::feed::Feed;
use crate::domain::{Context, MessageId};
use crate::fsm::Command;

/// What a caller asks a context's actor to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Apply a command.
    Apply(Command),
    /// Switch the active path to the branch through a message: the actor reads that branch
    /// from storage, then applies it.
    Switch { message_id: MessageId, expected_revision: Option<u64> },
}

impl From<Command> for Action {
    fn from(command: Command) -> Self {
        Action::Apply(command)
    }
}

/// What a live context's watchers see.
#[derive(Debug, Clone)]
pub enum Slot {
    Loading,
    Live(Arc<Context>),
    Gone(Gone),
}

#[derive(Debug, Clone)]
pub enum Gone {
    NotFound,
    Deleted,
    /// Unloaded while idle: the next request starts a new actor.
    Unloaded,
    /// The server is stopping, or a load or save failed.
    Stopped(String),
}

pub(super) enum Request {
    /// `span`: the caller's (its RPC's), so the run the action starts continues its trace.
    Act {
        action: Action,
        reply: oneshot::Sender<Result<Arc<Context>>>,
        span: tracing::Span,
    },
    Delete {
        reply: oneshot::Sender<Result<()>>,
    },
}

#[derive(Clone)]
pub(super) struct ActorHandle {
    pub mailbox: mpsc::Sender<Request>,
    pub state: watch::Receiver<Slot>,
    pub feed: Arc<Feed>,
    pub instance: u64,
}
