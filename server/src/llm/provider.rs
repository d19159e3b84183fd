//! The provider trait and what flows through it: requests, streamed events, errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;

use crate::domain::{Message, MessageStatus, RequestedToolCall, Role, ToolDefinition, Usage};

/// One message of the conversation as sent to a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmMessage {
    System { text: String },
    User { text: String },
    Assistant { text: String, tool_calls: Vec<RequestedToolCall> },
    Tool { tool_call_id: String, name: String, output: String },
}

/// What a provider is asked. The conversation is the context's own persistent vector
/// (cloned in O(1)), so building a request costs nothing per message; a provider converts
/// what it sends: all of it ([`LlmRequest::messages`]) or only the end ([`LlmRequest::recent`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    pub model: String,
    pub system_prompt: String,
    pub history: imbl::Vector<Arc<Message>>,
    pub tools: Arc<[ToolDefinition]>,
    /// 1 for the first try of this call, then 2, 3... on retries.
    pub attempt: u32,
    /// The most the reply may hold (`max_tokens`); `None`: the provider's limit.
    pub max_tokens: Option<u32>,
    pub purpose: Purpose,
}

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purpose {
    /// The next reply of the conversation.
    #[default]
    Reply,
    /// A summary of the transcript in the one user message.
    Summary,
}

impl LlmRequest {
    /// The whole conversation as providers send it: the system prompt first, then every
    /// message but the replies of failed or interrupted attempts.
    pub fn messages(&self) -> Vec<LlmMessage> {
        let mut names: HashMap<&str, &str> = HashMap::new();
        let mut messages = Vec::with_capacity(self.history.len() + 1);
        if !self.system_prompt.is_empty() {
            messages.push(LlmMessage::System { text: self.system_prompt.clone() });
        }
        for message in &self.history {
            for call in &message.tool_calls {
                names.insert(call.id.as_str(), &call.name);
            }
            messages.extend(convert(message, |id| names.get(id).copied().unwrap_or_default().to_owned()));
        }
        messages
    }

    /// The conversation from its end backwards, converting only what is read.
    pub fn recent(&self) -> impl Iterator<Item = LlmMessage> + '_ {
        self.history.iter().rev().filter_map(|message| {
            convert(message, |id| {
                let asked = self.history.iter().rev().find_map(|m| m.tool_calls.iter().find(|c| c.id == id));
                asked.map(|call| call.name.clone()).unwrap_or_default()
            })
        })
    }
}

/// One saved message as a provider sees it; `None` for replies of failed attempts, which
/// are never taken as answers, and for summaries, which go with the system prompt.
fn convert(message: &Message, tool_name: impl Fn(&str) -> String) -> Option<LlmMessage> {
    if message.status == MessageStatus::Error {
        return None;
    }
    let text = message.text_content();
    Some(match message.role {
        Role::Summary => return None,
        Role::System => LlmMessage::System { text },
        Role::User => LlmMessage::User { text },
        Role::Assistant => LlmMessage::Assistant {
            text,
            tool_calls: message
                .tool_calls
                .iter()
                .map(|c| RequestedToolCall {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments_json: c.arguments_json.clone(),
                })
                .collect(),
        },
        Role::Tool => {
            let id = message.tool_call_id.as_ref().map(|id| id.as_str().to_owned()).unwrap_or_default();
            LlmMessage::Tool { name: tool_name(&id), tool_call_id: id, output: text }
        }
    })
}

/// A piece of a streamed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmEvent {
    /// The model that is answering, as the provider names it (sent once, first).
    Model(String),
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
    /// The request was more than the model's context window holds.
    pub too_long: bool,
    /// The provider asked to wait this long before retrying (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl LlmError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: true, too_long: false, retry_after: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: false, too_long: false, retry_after: None }
    }

    /// The provider refused the request as longer than the model's context window.
    pub fn too_long(message: impl Into<String>) -> Self {
        Self { too_long: true, ..Self::permanent(message) }
    }
}

pub type LlmStream = BoxStream<'static, Result<LlmEvent, LlmError>>;

/// Streams a reply for a conversation. Dropping the stream must abort the request.
pub trait LlmProvider: Send + Sync + 'static {
    fn stream(&self, request: LlmRequest) -> LlmStream;

    /// The name of the provider that serves `model` (a metric label): `mock`, `openai`, or
    /// `none` when nothing serves it.
    fn name(&self, model: &str) -> &'static str;
}
