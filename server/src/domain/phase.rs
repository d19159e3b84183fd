use super::ids::Seq;

/// Where a context's state machine is, with the data each state needs.
///
/// Messages are referred to by their `seq` (their position in the context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Idle,
    ProcessingUserMessage,
    /// The LLM was asked; `attempt` counts from 1 within one LLM call.
    AwaitingLlmResponse {
        attempt: u32,
    },
    /// Assistant text is arriving into message `message`.
    StreamingLlmResponse {
        attempt: u32,
        message: Seq,
    },
    /// The reply in message `message` is complete; tools are decided next.
    ProcessingLlmResponse {
        message: Seq,
    },
    /// Tool calls of message `message` wait for a person's decision.
    AwaitingToolApproval {
        message: Seq,
    },
    /// Allowed tool calls of message `message` are running.
    ExecutingTools {
        message: Seq,
    },
    ProcessingToolResults,
    GeneratingResponse,
    /// The oldest messages, through depth `through`, are being summarised before the next
    /// LLM call, because the conversation outgrew the model's window.
    SummarizingHistory {
        through: Seq,
    },
    /// Attempt `attempt` failed with `error`; the next attempt is scheduled.
    TransientFailure {
        attempt: u32,
        error: String,
    },
    Failed {
        error: String,
    },
}

/// The state's name alone, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsmState {
    Idle,
    ProcessingUserMessage,
    AwaitingLlmResponse,
    StreamingLlmResponse,
    ProcessingLlmResponse,
    AwaitingToolApproval,
    ExecutingTools,
    ProcessingToolResults,
    GeneratingResponse,
    SummarizingHistory,
    TransientFailure,
    Failed,
}

impl FsmState {
    /// Resting states: no run is being driven; the context waits for a client.
    pub fn is_resting(self) -> bool {
        matches!(self, FsmState::Idle | FsmState::AwaitingToolApproval | FsmState::Failed)
    }

    pub fn name(self) -> &'static str {
        match self {
            FsmState::Idle => "IDLE",
            FsmState::ProcessingUserMessage => "PROCESSING_USER_MESSAGE",
            FsmState::AwaitingLlmResponse => "AWAITING_LLM_RESPONSE",
            FsmState::StreamingLlmResponse => "STREAMING_LLM_RESPONSE",
            FsmState::ProcessingLlmResponse => "PROCESSING_LLM_RESPONSE",
            FsmState::AwaitingToolApproval => "AWAITING_TOOL_APPROVAL",
            FsmState::ExecutingTools => "EXECUTING_TOOLS",
            FsmState::ProcessingToolResults => "PROCESSING_TOOL_RESULTS",
            FsmState::GeneratingResponse => "GENERATING_RESPONSE",
            FsmState::SummarizingHistory => "SUMMARIZING_HISTORY",
            FsmState::TransientFailure => "TRANSIENT_FAILURE",
            FsmState::Failed => "FAILED",
        }
    }
}

impl std::fmt::Display for FsmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Phase {
    pub fn state(&self) -> FsmState {
        match self {
            Phase::Idle => FsmState::Idle,
            Phase::ProcessingUserMessage => FsmState::ProcessingUserMessage,
            Phase::AwaitingLlmResponse { .. } => FsmState::AwaitingLlmResponse,
            Phase::StreamingLlmResponse { .. } => FsmState::StreamingLlmResponse,
            Phase::ProcessingLlmResponse { .. } => FsmState::ProcessingLlmResponse,
            Phase::AwaitingToolApproval { .. } => FsmState::AwaitingToolApproval,
            Phase::ExecutingTools { .. } => FsmState::ExecutingTools,
            Phase::ProcessingToolResults => FsmState::ProcessingToolResults,
            Phase::GeneratingResponse => FsmState::GeneratingResponse,
            Phase::SummarizingHistory { .. } => FsmState::SummarizingHistory,
            Phase::TransientFailure { .. } => FsmState::TransientFailure,
            Phase::Failed { .. } => FsmState::Failed,
        }
    }

    pub fn is_resting(&self) -> bool {
        self.state().is_resting()
    }

    /// Why the run failed or is being retried.
    pub fn error(&self) -> Option<&str> {
        match self {
            Phase::TransientFailure { error, .. } | Phase::Failed { error } => Some(error),
            _ => None,
        }
    }
}
