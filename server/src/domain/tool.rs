//! What the state machine, the LLM providers and the tools say to each other about tools.

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
    pub id: String,
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

/// A tool's output as the model will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub output: String,
    pub is_error: bool,
}

impl ToolResult {
    pub fn ok(output: impl Into<String>) -> Self {
        Self { output: output.into(), is_error: false }
    }

    pub fn error(output: impl Into<String>) -> Self {
        Self { output: output.into(), is_error: true }
    }
}
