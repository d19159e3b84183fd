use crate::domain::{Branch, CheckedToolCall, ContextConfig, MessageId, ToolCallId, ToolResult, Usage};

/// Something that moves a context: a client's action, or the result of an effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A user message. `client_message_id` makes the send idempotent.
    Send {
        content: String,
        client_message_id: Option<String>,
        expected_revision: Option<u64>,
        on_busy: OnBusy,
    },
    /// A new version of a user message on the active path; a run starts from it.
    Edit {
        message_id: MessageId,
        content: String,
        client_message_id: Option<String>,
        expected_revision: Option<u64>,
    },
    /// A new version of an assistant reply on the active path (`None`: the last one).
    Regenerate {
        message_id: Option<MessageId>,
        expected_revision: Option<u64>,
    },
    /// Follow another branch, as the runtime read it from storage (`None`: the message asked
    /// for is on the active path already).
    SwitchBranch {
        branch: Option<Branch>,
        expected_revision: Option<u64>,
    },
    /// Decides every pending tool call.
    Approve {
        approved: Vec<ToolCallId>,
        denied: Vec<ToolCallId>,
    },
    /// Renames the context or replaces its config.
    Update {
        title: Option<String>,
        config: Option<ContextConfig>,
        expected_revision: Option<u64>,
    },
    Cancel,
    Retry,
    /// Take the next automatic step of a run (the driver feeds this back after [`Effect::Continue`]).
    Continue,
    /// The context was loaded mid-run after a restart.
    Resume,
    /// Streamed assistant text.
    LlmDelta {
        text: String,
    },
    /// The LLM's reply is complete.
    LlmFinished {
        reply: LlmReply,
    },
    /// The LLM call failed. `retry_after_ms`: the provider asked to wait at least this long.
    LlmFailed {
        error: String,
        transient: bool,
        retry_after_ms: Option<u64>,
    },
    /// An external service delivers a tool call's result.
    SubmitToolResult {
        call_id: ToolCallId,
        result: ToolResult,
    },
    /// A tool call finished (successfully or not).
    ToolFinished {
        call_id: ToolCallId,
        result: ToolResult,
    },
    /// The backoff after a transient failure elapsed.
    RetryDue,
    /// The summary asked for by [`Effect::Summarize`](super::Effect::Summarize).
    SummaryFinished {
        text: String,
        usage: Option<Usage>,
        model: String,
    },
    /// Summarising failed for good: the call goes on without a new summary, truncated.
    SummaryFailed,
}

/// What the LLM produced besides text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LlmReply {
    /// The calls the model asked for, each checked (off the executor) before it arrives.
    pub tool_calls: Vec<CheckedToolCall>,
    pub usage: Option<Usage>,
    pub duration_ms: u64,
    /// The model that answered, as the provider reported it.
    pub model: Option<String>,
    /// What ctxd counted for the request, to compare with `usage.prompt_tokens`.
    pub counted_prompt_tokens: u64,
}

/// What a send does while a run is in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBusy {
    /// Refused: the context is busy.
    #[default]
    Reject,
    /// The run stops as a cancel stops it, and the message is sent, in one transition.
    Interrupt,
    /// Saved at once as queued; when the context next rests, every queued message joins the
    /// active path and one run answers them.
    Enqueue,
}
