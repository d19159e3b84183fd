//! Any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, llama.cpp's server, LM Studio):
//! `POST {base_url}/chat/completions` with `stream: true`, read as server-sent events.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::provider::{LlmError, LlmEvent, LlmMessage, LlmProvider, LlmRequest, LlmStream};
use crate::domain::Usage;
use crate::domain::{RequestedToolCall, ToolCallId};

/// The longest `Retry-After` honoured; a provider asking for more is retried after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How much of an error body ends up in `last_error`.
const MAX_ERROR_BODY: usize = 500;

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: String,
    /// Sent as a bearer token; never logged.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// Longest silence allowed between two chunks of a streamed reply.
    pub idle_timeout: Duration,
}

pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    api_key: Option<String>,
    idle_timeout: Duration,
    /// How the reply's limit is named: OpenAI's own API wants `max_completion_tokens` (its
    /// reasoning models refuse `max_tokens`); vLLM, Ollama, llama.cpp and older proxies know
    /// only `max_tokens`.
    max_tokens_field: &'static str,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().connect_timeout(config.connect_timeout).build()?;
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        let max_tokens_field =
            if config.base_url.contains("api.openai.com") { "max_completion_tokens" } else { "max_tokens" };
        Ok(Self { client, url, api_key: config.api_key, idle_timeout: config.idle_timeout, max_tokens_field })
    }
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key stays out of logs.
        f.debug_struct("OpenAiProvider").field("url", &self.url).finish_non_exhaustive()
    }
}

impl LlmProvider for OpenAiProvider {
    fn name(&self, _model: &str) -> &'static str {
        "openai"
    }

    fn stream(&self, request: LlmRequest) -> LlmStream {
        let mut call = self.client.post(&self.url).header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        let call = call.body(request_body(&request, self.max_tokens_field).to_string());
        let idle = self.idle_timeout;
        // Dropping this stream (CancelRun) drops the response, which closes the connection.
        async_stream::stream! {
            let response = match call.send().await {
                Ok(response) => response,
                Err(error) => {
                    yield Err(LlmError::transient(format!("cannot reach the LLM provider: {error}")));
                    return;
                }
            };
            let status = response.status();
            if !status.is_success() {
                let retry_after = retry_after(response.headers());
                let body = response.text().await.unwrap_or_default();
                let transient = status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                let too_long = says_too_long(status, &body);
                let message = format!("the LLM provider answered {status}: {}", snippet(&body));
                yield Err(LlmError { message, transient, too_long, retry_after });
                return;
            }
            let mut events = response.bytes_stream().eventsource();
            let mut calls = ToolCalls::default();
            let mut named = false;
            loop {
                let event = match tokio::time::timeout(idle, events.next()).await {
                    Err(_) => {
                        yield Err(LlmError::transient(format!("the LLM provider sent nothing for {} ms", idle.as_millis())));
                        return;
                    }
                    Ok(None) => {
                        yield Err(LlmError::transient("the LLM provider closed the stream before [DONE]"));
                        return;
                    }
                    Ok(Some(Err(EventStreamError::Transport(error)))) => {
                        yield Err(LlmError::transient(format!("the LLM stream broke: {error}")));
                        return;
                    }
                    Ok(Some(Err(error))) => {
                        yield Err(LlmError::permanent(format!("malformed LLM stream: {error}")));
                        return;
                    }
                    Ok(Some(Ok(event))) => event,
                };
                if event.data.trim() == "[DONE]" {
                    break;
                }
                let chunk: Chunk = match serde_json::from_str(&event.data) {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        yield Err(LlmError::permanent(format!("malformed LLM stream chunk: {error}")));
                        return;
                    }
                };
                if let Some(error) = chunk.error {
                    yield Err(LlmError::permanent(format!("the LLM provider reported: {error}")));
                    return;
                }
                if let Some(model) = chunk.model.filter(|m| !m.is_empty() && !named) {
                    named = true;
                    yield Ok(LlmEvent::Model(model));
                }
                for choice in chunk.choices {
                    if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                        yield Ok(LlmEvent::Text(text));
                    }
                    for delta in choice.delta.tool_calls {
                        calls.add(delta);
                    }
                }
                if let Some(usage) = chunk.usage {
                    yield Ok(LlmEvent::Usage(Usage {
                        prompt_tokens: usage.prompt_tokens,
                        completion_tokens: usage.completion_tokens,
                    }));
                }
            }
            for call in calls.finish() {
                yield Ok(LlmEvent::ToolCall(call));
            }
        }
        .boxed()
    }
}

fn snippet(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(MAX_ERROR_BODY) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_owned(),
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(SystemTime::now()).unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Whether an error answer says the request was more than the model's context window holds,
/// in the words of OpenAI (`context_length_exceeded`), vLLM ("maximum context length"),
/// Ollama ("prompt too long; exceeded max context length"), llama.cpp ("exceeds the
/// available context size") and LiteLLM (`ContextWindowExceededError`).
fn says_too_long(status: reqwest::StatusCode, body: &str) -> bool {
    const WORDINGS: [&str; 8] = [
        "context_length_exceeded",
        "maximum context length",
        "max context length",
        "context window",
        "contextwindowexceeded",
        "exceeds the available context",
        "prompt is too long",
        "prompt too long",
    ];
    let client_error = matches!(status.as_u16(), 400 | 413 | 422);
    let body = body.to_ascii_lowercase();
    client_error && WORDINGS.iter().any(|w| body.contains(w))
}

fn request_body(request: &LlmRequest, max_tokens_field: &str) -> Value {
    let messages: Vec<Value> = request
        .messages()
        .iter()
        .map(|message| match message {
            LlmMessage::System { text } => json!({"role": "system", "content": text}),
            LlmMessage::User { text } => json!({"role": "user", "content": text}),
            LlmMessage::Assistant { text, tool_calls } if tool_calls.is_empty() => {
                json!({"role": "assistant", "content": text})
            }
            LlmMessage::Assistant { text, tool_calls } => json!({
                "role": "assistant",
                "content": if text.is_empty() { Value::Null } else { json!(text) },
                "tool_calls": tool_calls.iter().map(|c| json!({
                    "id": c.id.as_str(),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json},
                })).collect::<Vec<_>>(),
            }),
            LlmMessage::Tool { tool_call_id, output, .. } => {
                json!({"role": "tool", "tool_call_id": tool_call_id, "content": output})
            }
        })
        .collect();
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(limit) = request.max_tokens {
        body[max_tokens_field] = json!(limit);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters,
                }})
            })
            .collect();
    }
    body
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<ChunkUsage>,
    error: Option<Value>,
    /// The model answering; OpenAI names the exact snapshot (`gpt-4o-mini-2024-07-18`).
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Default, Deserialize)]
struct Delta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: u32,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// Tool calls arrive in pieces keyed by `index`: the id and name once, the arguments in
/// fragments to concatenate.
#[derive(Default)]
struct ToolCalls {
    by_index: BTreeMap<u32, RequestedToolCall>,
}

impl ToolCalls {
    fn add(&mut self, delta: ToolCallDelta) {
        let call = self.by_index.entry(delta.index).or_insert_with(|| RequestedToolCall {
            id: ToolCallId::default(),
            name: String::new(),
            arguments_json: String::new(),
        });
        if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
            call.id = id.into();
        }
        if let Some(function) = delta.function {
            if let Some(name) = function.name {
                call.name.push_str(&name);
            }
            if let Some(arguments) = function.arguments {
                call.arguments_json.push_str(&arguments);
            }
        }
    }

    fn finish(self) -> impl Iterator<Item = RequestedToolCall> {
        self.by_index.into_values().map(|mut call| {
            if call.id.as_str().is_empty() {
                call.id = format!("call_{}", uuid::Uuid::new_v4().simple()).into();
            }
            if call.arguments_json.trim().is_empty() {
                call.arguments_json = "{}".into();
            }
            call
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_fragments_are_assembled_by_index() {
        let mut calls = ToolCalls::default();
        let delta = |index, id: Option<&str>, name: Option<&str>, arguments: Option<&str>| ToolCallDelta {
            index,
            id: id.map(String::from),
            function: Some(FunctionDelta { name: name.map(String::from), arguments: arguments.map(String::from) }),
        };
        calls.add(delta(0, Some("a"), Some("clock"), Some("")));
        calls.add(delta(1, Some("b"), Some("read_file"), Some("{\"pa")));
        calls.add(delta(1, None, None, Some("th\": \"x\"}")));
        let done: Vec<RequestedToolCall> = calls.finish().collect();
        assert_eq!(done.len(), 2);
        assert_eq!((done[0].id.as_str(), done[0].arguments_json.as_str()), ("a", "{}"));
        assert_eq!((done[1].name.as_str(), done[1].arguments_json.as_str()), ("read_file", "{\"path\": \"x\"}"));
    }

    #[test]
    fn context_overflows_are_recognised_in_the_usual_wordings() {
        let bad = reqwest::StatusCode::BAD_REQUEST;
        for body in [
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","code":"context_length_exceeded"}}"#,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens"}"#,
            r#"{"error":"prompt too long; exceeded max context length by 112 tokens"}"#,
            r#"{"error":{"message":"the request exceeds the available context size, try increasing it"}}"#,
            r#"{"error":{"message":"litellm.ContextWindowExceededError: ..."}}"#,
        ] {
            assert!(says_too_long(bad, body), "{body}");
        }
        assert!(!says_too_long(bad, r#"{"error":{"message":"Invalid 'messages[1].content'"}}"#));
        assert!(!says_too_long(reqwest::StatusCode::INTERNAL_SERVER_ERROR, "maximum context length"));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(reqwest::header::RETRY_AFTER, "86400".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        headers.insert(reqwest::header::RETRY_AFTER, soon.parse().expect("header"));
        assert!(retry_after(&headers).is_some_and(|d| d > Duration::from_secs(25) && d <= Duration::from_secs(30)));
    }
}
