//! What the runtime's callers can be told went wrong.

use crate::domain::ContextId;
use crate::fsm::Rejection;
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("context {0} not found")]
    NotFound(ContextId),
    #[error("context {0} already exists")]
    AlreadyExists(ContextId),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Storage(#[from] store::Error),
    #[error("too many actions are queued for context {0}; try again later")]
    Overloaded(ContextId),
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
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
