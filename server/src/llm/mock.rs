//! The built-in mock: no network, deterministic replies, scriptable from the chat itself.
//!
//! - any text: streams `You said: <text>` word by word;
//! - `/tool NAME {json}`: asks for tool NAME with those arguments; after the result it
//!   answers `Tool NAME returned: <result>`;
//! - `/fail`: a (transient) provider error on every attempt;
//! - `/fail-once`: a provider error on the first attempt only;
//! - `/system`: answers `System: <the system prompt it was sent>`, to show what it was sent
//!   (a summary goes with the system prompt);
//! - a summarisation request: `Summary of messages #FIRST to #LAST.`, naming the first and
//!   last message of the transcript it was given.
//!
//! With a context window (`--mock-context-window`) it counts every request it receives as a
//! whole (system prompt, messages, tool definitions), reports that count as
//! `usage.prompt_tokens`, and refuses a request over the window as OpenAI does (400,
//! `context_length_exceeded`).

use std::time::Duration;

use futures::StreamExt;

use super::provider::{LlmError, LlmEvent, LlmMessage, LlmProvider, LlmRequest, LlmStream, Purpose};
use super::router::MOCK_MODEL;
use super::tokens::Encoding;
use crate::domain::RequestedToolCall;
use crate::domain::Usage;

pub struct MockProvider {
    /// Pause before each streamed word.
    pub chunk_delay: Duration,
    /// The window requests are counted against; `None`: any request is answered.
    pub context_window: Option<u32>,
}

impl LlmProvider for MockProvider {
    fn stream(&self, request: LlmRequest) -> LlmStream {
        let delay = self.chunk_delay;
        let script = match self.context_window {
            Some(window) => counted(&request, window),
            None => reply_for(&request),
        };
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

/// The reply to a request counted against `window`: refused when over it, else with the
/// request's count as its prompt tokens.
fn counted(request: &LlmRequest, window: u32) -> Vec<Result<LlmEvent, LlmError>> {
    let tokens = Encoding::of(&request.model).request(request);
    if tokens > u64::from(window) {
        let body = serde_json::json!({"error": {
            "message": format!("This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."),
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }});
        return vec![Err(LlmError::too_long(format!("the LLM provider answered 400 Bad Request: {body}")))];
    }
    let mut events = reply_for(request);
    for event in &mut events {
        if let Ok(LlmEvent::Usage(usage)) = event {
            usage.prompt_tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
        }
    }
    events
}

fn reply_for(request: &LlmRequest) -> Vec<Result<LlmEvent, LlmError>> {
    let mut events = vec![Ok(LlmEvent::Model(MOCK_MODEL.to_owned()))];
    // Answer the tool results that end the conversation, if any.
    let mut recent = request.recent().peekable();
    let mut results = Vec::new();
    while let Some(LlmMessage::Tool { name, output, .. }) = recent.next_if(|m| matches!(m, LlmMessage::Tool { .. })) {
        results.push(format!("Tool {name} returned: {output}"));
    }
    let text = if request.purpose == Purpose::Summary {
        summary_of(request)
    } else if !results.is_empty() {
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
        if command == "/system" { format!("System: {}", request.system_prompt) } else { format!("You said: {said}") }
    };
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    events.extend(words.iter().map(|w| Ok(LlmEvent::Text((*w).to_owned()))));
    events.push(Ok(LlmEvent::Usage(usage(&text, words.len()))));
    events
}

/// A summary naming the first and last message of the transcript (lines `#N role: ...`).
fn summary_of(request: &LlmRequest) -> String {
    let transcript = request.history.last().map(|m| m.text_content()).unwrap_or_default();
    let labels: Vec<&str> = transcript
        .lines()
        .filter_map(|line| line.strip_prefix('#')?.split_once(' ').map(|(n, _)| n))
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
        .collect();
    match (labels.first(), labels.last()) {
        (Some(first), Some(last)) => format!("Summary of messages #{first} to #{last}."),
        _ => "Summary of nothing.".to_owned(),
    }
}

/// Word counts stand in for tokens: the prompt is the message answered, not the whole
/// conversation, so the mock stays O(1) in the length of the history.
fn usage(answered: &str, completion: usize) -> Usage {
    Usage {
        prompt_tokens: u32::try_from(answered.split_whitespace().count()).unwrap_or(u32::MAX),
        completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
    }
}
