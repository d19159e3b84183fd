//! LLM providers behind one trait. The state machine never sees a provider: the context's
//! actor turns a provider's stream into commands (`LlmDelta`, `LlmFinished`, `LlmFailed`).

mod mock;
mod openai;
mod router;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;

pub use mock::MockProvider;
pub use openai::{OpenAiConfig, OpenAiProvider};
pub use router::LlmRouter;

use crate::domain::Usage;
use crate::fsm::RequestedToolCall;

/// One message of the conversation as sent to a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmMessage {
    System { text: String },
    User { text: String },
    Assistant { text: String, tool_calls: Vec<RequestedToolCall> },
    Tool { tool_call_id: String, name: String, output: String },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    pub model: String,
    pub messages: Vec<LlmMessage>,
    pub tools: Arc<[ToolDefinition]>,
    /// 1 for the first try of this call, then 2, 3... on retries.
    pub attempt: u32,
}

/// A piece of a streamed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmEvent {
    Text(String),
    ToolCall(RequestedToolCall),
    Usage(Usage),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    pub message: String,
    /// Worth retrying (timeouts, rate limits, server errors).
    pub transient: bool,
    /// The provider asked to wait this long before retrying (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl LlmError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: true, retry_after: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: false, retry_after: None }
    }
}

pub type LlmStream = BoxStream<'static, Result<LlmEvent, LlmError>>;

/// Streams a reply for a conversation. Dropping the stream must abort the request.
pub trait LlmProvider: Send + Sync + 'static {
    fn stream(&self, request: LlmRequest) -> LlmStream;
}
