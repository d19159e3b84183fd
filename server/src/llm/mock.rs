//! The built-in mock: no network, deterministic replies, scriptable from the chat itself.
//!
//! - any text: streams `You said: <text>` word by word;
//! - `/tool NAME {json}`: asks for tool NAME with those arguments; after the result it
//!   answers `Tool NAME returned: <result>`;
//! - `/fail`: a (transient) provider error on every attempt;
//! - `/fail-once`: a provider error on the first attempt only.

use std::time::Duration;

use futures::StreamExt;

use super::{LlmError, LlmEvent, LlmMessage, LlmProvider, LlmRequest, LlmStream};
use crate::domain::Usage;
use crate::fsm::RequestedToolCall;

pub struct MockProvider {
    /// Pause before each streamed word.
    pub chunk_delay: Duration,
}

impl LlmProvider for MockProvider {
    fn stream(&self, request: LlmRequest) -> LlmStream {
        let delay = self.chunk_delay;
        let script = reply_for(&request);
        futures::stream::iter(script)
            .then(move |event| async move {
                if matches!(event, Ok(LlmEvent::Text(_))) && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                event
            })
            .boxed()
    }
}

fn reply_for(request: &LlmRequest) -> Vec<Result<LlmEvent, LlmError>> {
    let mut events = Vec::new();
    // Answer the tool results that end the conversation, if any.
    let trailing_results: Vec<&LlmMessage> =
        request.messages.iter().rev().take_while(|m| matches!(m, LlmMessage::Tool { .. })).collect();
    let text = if !trailing_results.is_empty() {
        trailing_results
            .iter()
            .rev()
            .filter_map(|m| match m {
                LlmMessage::Tool { name, output, .. } => Some(format!("Tool {name} returned: {output}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        let said = request
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                LlmMessage::User { text } => Some(text.as_str()),
                _ => None,
            })
            .unwrap_or_default();
        let command = said.trim();
        if command == "/fail" {
            return vec![Err(LlmError::transient("mock provider failure (/fail)"))];
        }
        if command == "/fail-once" && request.attempt <= 1 {
            return vec![Err(LlmError::transient("mock provider failure (/fail-once, first attempt)"))];
        }
        if let Some(rest) = command.strip_prefix("/tool ") {
            let rest = rest.trim();
            let (name, arguments) = rest.split_once(char::is_whitespace).unwrap_or((rest, "{}"));
            let arguments = arguments.trim();
            events.push(Ok(LlmEvent::ToolCall(RequestedToolCall {
                id: format!("call_{}", uuid::Uuid::new_v4().simple()),
                name: name.to_owned(),
                arguments_json: if arguments.is_empty() { "{}".to_owned() } else { arguments.to_owned() },
            })));
            events.push(Ok(LlmEvent::Usage(usage(request, 1))));
            return events;
        }
        format!("You said: {said}")
    };
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    events.extend(words.iter().map(|w| Ok(LlmEvent::Text((*w).to_owned()))));
    events.push(Ok(LlmEvent::Usage(usage(request, words.len()))));
    events
}

/// Word counts stand in for tokens.
fn usage(request: &LlmRequest, completion: usize) -> Usage {
    let prompt: usize = request
        .messages
        .iter()
        .map(|m| match m {
            LlmMessage::System { text } | LlmMessage::User { text } | LlmMessage::Assistant { text, .. } => {
                text.split_whitespace().count()
            }
            LlmMessage::Tool { output, .. } => output.split_whitespace().count(),
        })
        .sum();
    Usage {
        prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
        completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
    }
}
