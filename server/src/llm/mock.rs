//! The built-in mock: no network, deterministic replies, scriptable from the chat itself.
//!
//! - any text: streams `You said: <text>` word by word;
//! - `/tool NAME {json}`: asks for tool NAME with those arguments; after the result it
//!   answers `Tool NAME returned: <result>`;
//! - `/fail`: a (transient) provider error on every attempt;
//! - `/fail-once`: a provider error on the first attempt only.

use std::time::Duration;

use futures::StreamExt;

use super::provider::{LlmError, LlmEvent, LlmMessage, LlmProvider, LlmRequest, LlmStream};
use super::router::MOCK_MODEL;
use crate::domain::RequestedToolCall;
use crate::domain::Usage;

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

    fn name(&self, _model: &str) -> &'static str {
        MOCK_MODEL
    }
}

fn reply_for(request: &LlmRequest) -> Vec<Result<LlmEvent, LlmError>> {
    let mut events = vec![Ok(LlmEvent::Model(MOCK_MODEL.to_owned()))];
    // Answer the tool results that end the conversation, if any.
    let mut recent = request.recent().peekable();
    let mut results = Vec::new();
    while let Some(LlmMessage::Tool { name, output, .. }) = recent.next_if(|m| matches!(m, LlmMessage::Tool { .. })) {
        results.push(format!("Tool {name} returned: {output}"));
    }
    let text = if !results.is_empty() {
        results.reverse();
        results.join("\n")
    } else {
        let said = recent
            .find_map(|m| match m {
                LlmMessage::User { text } => Some(text),
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
                id: format!("call_{}", uuid::Uuid::new_v4().simple()).into(),
                name: name.to_owned(),
                arguments_json: if arguments.is_empty() { "{}".to_owned() } else { arguments.to_owned() },
            })));
            events.push(Ok(LlmEvent::Usage(usage(command, 1))));
            return events;
        }
        format!("You said: {said}")
    };
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    events.extend(words.iter().map(|w| Ok(LlmEvent::Text((*w).to_owned()))));
    events.push(Ok(LlmEvent::Usage(usage(&text, words.len()))));
    events
}

/// Word counts stand in for tokens: the prompt is the message answered, not the whole
/// conversation, so the mock stays O(1) in the length of the history.
fn usage(answered: &str, completion: usize) -> Usage {
    Usage {
        prompt_tokens: u32::try_from(answered.split_whitespace().count()).unwrap_or(u32::MAX),
        completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
    }
}
