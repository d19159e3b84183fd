//! What the runtime's callers can be told went wrong.

use crate::cluster::Peer;
use crate::domain::{ContextId, ForkError, MessageId, TenantId};
use crate::fsm::Rejection;
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("context {0} not found")]
    NotFound(ContextId),
    #[error("context {context} has no message {message}")]
    UnknownMessage { context: String, message: MessageId },
    #[error("context {0} already exists")]
    AlreadyExists(ContextId),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Fork(#[from] ForkError),
    #[error(transparent)]
    Storage(#[from] store::Error),
    #[error("too many actions are queued for context {0}; try again later")]
    Overloaded(ContextId),
    #[error(
        "tenant {tenant} already has {max} runs in progress, the most this server allows at once; try again when one \
         ends"
    )]
    TooManyRuns { tenant: TenantId, max: usize },
    #[error("tenant {tenant} already has {max} contexts, the most this server allows; delete one first")]
    TooManyContexts { tenant: TenantId, max: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("context {id} stopped: {reason}")]
    Stopped { id: ContextId, reason: String },
    /// The request reached an actor that was unloading and was not applied: send it to the
    /// context's next actor. Never leaves the runtime.
    #[error("the context was unloaded; try again")]
    Unloaded,
    #[error(
        "the action was saved (revision {revision}), but context {id} did not come to rest before the deadline; \
         GetState or WatchState show how it ends"
    )]
    DeadlineExceeded { id: ContextId, revision: u64 },
    /// Another node holds the context: the call belongs there.
    #[error("context {id} is run by node {peer} now; try again")]
    Elsewhere { id: ContextId, peer: Peer },
    /// A call another node sent on, about a context this node does not run: the sender
    /// takes it or finds its node.
    #[error("context {0} is not run by this node; try again")]
    NotHere(ContextId),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
