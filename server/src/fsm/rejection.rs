use crate::domain::{FsmState, MessageId, Role, ToolCallId};

/// Why the state machine refused a command. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("context is busy: a run is in progress (state {state}); wait for it, or CancelRun")]
    Busy { state: FsmState },
    #[error("{action} is not allowed in state {state}")]
    WrongState { action: &'static str, state: FsmState },
    #[error("expected revision {expected}, but the context is at revision {actual}")]
    StaleRevision { expected: u64, actual: u64 },
    #[error("no pending tool call has id {id:?}")]
    UnknownToolCall { id: ToolCallId },
    #[error("tool call {id:?} was already decided")]
    AlreadyDecided { id: ToolCallId },
    #[error("tool call {id:?} is listed more than once")]
    DuplicateDecision { id: ToolCallId },
    #[error("every pending tool call must be approved or denied; undecided: {}", ids.iter().map(ToolCallId::as_str).collect::<Vec<_>>().join(", "))]
    Undecided { ids: Vec<ToolCallId> },
    #[error("tool call {id:?} already has a different result")]
    ToolCallAnswered { id: ToolCallId },
    #[error("no external tool call {id:?} is waiting for a result (state {state})")]
    NoResultExpected { id: ToolCallId, state: FsmState },
    #[error("message {message} is not on the active path (SwitchBranch to it first)")]
    NotOnPath { message: MessageId },
    #[error("{action} takes {} messages, and message {message} is {}", role_name(*wanted), role_name(*role))]
    WrongRole { action: &'static str, message: MessageId, role: Role, wanted: Role },
    #[error("the active path has no reply to regenerate")]
    NothingToRegenerate,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::System => "system",
        Role::Tool => "tool",
        Role::Summary => "summary",
    }
}

impl Rejection {
    /// Whether the client sent something malformed (as opposed to something the current
    /// state does not allow).
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            self,
            Rejection::UnknownToolCall { .. }
                | Rejection::DuplicateDecision { .. }
                | Rejection::Undecided { .. }
                | Rejection::WrongRole { .. }
        )
    }

    /// Whether the client named something the context does not have where it said.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Rejection::NotOnPath { .. })
    }
}
