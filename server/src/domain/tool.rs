//! What the state machine, the LLM providers and the tools say to each other about tools.

use super::ids::ToolCallId;

/// What the state machine needs to know about a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolPolicy {
    /// A person must approve each call (unless the context auto-approves the tool).
    pub requires_approval: bool,
    /// Running it twice does no harm, so a call interrupted by a restart is run again.
    pub idempotent: bool,
    /// Another service runs it and delivers the result with SubmitToolResult.
    pub external: bool,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A tool call as the model asked for it, before any approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedToolCall {
    pub id: ToolCallId,
    pub name: String,
    pub arguments_json: String,
}

/// A requested call with the verdict of the check made before the reply reaches the state
/// machine: `refused` holds the error result that answers it at once (an unknown tool,
/// arguments its schema refuses), so it never waits for approval, a run, or another service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedToolCall {
    pub call: RequestedToolCall,
    pub refused: Option<String>,
}

impl CheckedToolCall {
    pub fn passed(call: RequestedToolCall) -> Self {
        Self { call, refused: None }
    }
}

/// How a tool call ended, as saved with its answer (the model reads only the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolOutcome {
    /// The tool ran and answered.
    Ok,
    /// The tool ran and failed, or the call was refused (an unknown tool, bad arguments).
    Failed,
    /// The tool, or the service running an external one, did not answer in time.
    TimedOut,
    /// A person denied the call.
    Denied,
    /// CancelRun ended the run while the call was open.
    Cancelled,
    /// A restart interrupted a call that is not safe to run twice.
    Interrupted,
}

impl ToolOutcome {
    pub fn is_error(self) -> bool {
        self != ToolOutcome::Ok
    }

    /// A short, bounded label (metrics).
    pub fn label(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::Failed => "error",
            ToolOutcome::TimedOut => "timeout",
            ToolOutcome::Denied => "denied",
            ToolOutcome::Cancelled => "cancelled",
            ToolOutcome::Interrupted => "interrupted",
        }
    }
}

/// A tool's output as the model will see it, and how the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub output: String,
    pub outcome: ToolOutcome,
}

impl ToolResult {
    pub fn ok(output: impl Into<String>) -> Self {
        Self::ended(ToolOutcome::Ok, output)
    }

    pub fn error(output: impl Into<String>) -> Self {
        Self::ended(ToolOutcome::Failed, output)
    }

    pub fn ended(outcome: ToolOutcome, output: impl Into<String>) -> Self {
        Self { output: output.into(), outcome }
    }

    pub fn is_error(&self) -> bool {
        self.outcome.is_error()
    }
}
