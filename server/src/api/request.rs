//! Wire → domain: validates each request and names the field that is wrong.

use ctxd_proto::v1 as pb;
use tonic::Status;

use std::str::FromStr;
use std::sync::Arc;

use crate::domain::ToolResult;
use crate::domain::{
    ContextConfig, ContextId, ExternalTool, InvalidId, MIN_WINDOW, MessageId, Overflow, ToolCallId, shown,
};
use crate::fsm::OnBusy;
use crate::tools::{ArgumentSchema, truncate};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
const MAX_TITLE_BYTES: usize = 1024;
const MAX_ID_BYTES: usize = 256;
/// The largest context window a context may set, in tokens.
const MAX_WINDOW: u32 = 100_000_000;

/// Longest external tool name (OpenAI's limit for function names).
const MAX_TOOL_NAME: usize = 64;

/// What requests are checked against.
#[derive(Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    /// Longer tool results are cut.
    pub max_tool_output_bytes: usize,
    /// Names of the tools the server has, for checking `auto_approve_tools`.
    pub tool_names: Vec<String>,
    /// Whether some LLM provider serves a model name.
    pub serves_model: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

pub fn context_id(field: &str, value: &str) -> Result<ContextId, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    id(field, value)
}

/// A required message id.
pub fn message_id(value: &str) -> Result<MessageId, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument("message_id is required"));
    }
    id("message_id", value)
}

/// An optional client-given id (a context's or a message's): empty means none.
pub fn optional_id<T: FromStr<Err = InvalidId>>(field: &str, value: &str) -> Result<Option<T>, Status> {
    if value.is_empty() { Ok(None) } else { id(field, value).map(Some) }
}

fn id<T: FromStr<Err = InvalidId>>(field: &str, value: &str) -> Result<T, Status> {
    value.parse().map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

pub fn content(value: String, limits: &Limits) -> Result<String, Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument("content must not be empty"));
    }
    if value.len() > limits.max_message_bytes {
        return Err(Status::invalid_argument(format!(
            "content is {} bytes; the limit is {} bytes",
            value.len(),
            limits.max_message_bytes
        )));
    }
    Ok(value)
}

pub fn client_message_id(value: String) -> Result<Option<String>, Status> {
    if value.len() > MAX_ID_BYTES {
        return Err(Status::invalid_argument(format!("client_message_id is longer than {MAX_ID_BYTES} bytes")));
    }
    Ok(if value.is_empty() { None } else { Some(value) })
}

pub fn title(value: String) -> Result<String, Status> {
    if value.len() > MAX_TITLE_BYTES {
        return Err(Status::invalid_argument(format!("title is longer than {MAX_TITLE_BYTES} bytes")));
    }
    Ok(value)
}

pub fn config(value: Option<pb::ContextConfig>, limits: &Limits) -> Result<ContextConfig, Status> {
    let pb::ContextConfig {
        system_prompt,
        model,
        auto_approve_tools,
        external_tools,
        context_window_tokens,
        max_output_tokens,
        context_overflow,
        summarize_at,
    } = value.unwrap_or_default();
    let overflow = overflow(context_overflow)?;
    if !(0.0..=1.0).contains(&summarize_at) {
        return Err(Status::invalid_argument(format!(
            "config.summarize_at is {summarize_at}; it is a share of the window, above 0 and at most 1 (0: 0.8)"
        )));
    }
    if context_window_tokens != 0 && !(MIN_WINDOW..=MAX_WINDOW).contains(&context_window_tokens) {
        return Err(Status::invalid_argument(format!(
            "config.context_window_tokens is {context_window_tokens}; it must be 0 (the model's) or from {MIN_WINDOW} to {MAX_WINDOW}"
        )));
    }
    if context_window_tokens != 0 && max_output_tokens >= context_window_tokens / 2 {
        return Err(Status::invalid_argument(format!(
            "config.max_output_tokens ({max_output_tokens}) must be under half of context_window_tokens ({context_window_tokens}), or the conversation has no room"
        )));
    }
    // Per mille; a positive share rounds to at least 1.
    let summarize_at = if summarize_at > 0.0 { ((summarize_at * 1000.0).round() as u32).max(1) } else { 0 };
    if system_prompt.len() > limits.max_message_bytes {
        return Err(Status::invalid_argument(format!(
            "config.system_prompt is {} bytes; the limit is {} bytes",
            system_prompt.len(),
            limits.max_message_bytes
        )));
    }
    if model.len() > MAX_ID_BYTES {
        return Err(Status::invalid_argument(format!("config.model is longer than {MAX_ID_BYTES} bytes")));
    }
    if !model.is_empty() && !(limits.serves_model)(&model) {
        return Err(Status::invalid_argument(format!(
            "config.model: no LLM provider is configured for {}",
            shown(&model)
        )));
    }
    let external_tools =
        external_tools.into_iter().map(|tool| external_tool(tool, limits)).collect::<Result<Vec<_>, _>>()?;
    let mut names: Vec<&str> = external_tools.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Status::invalid_argument(format!("config.external_tools: {} is declared twice", shown(twice[0]))));
    }
    let known = |name: &String| limits.tool_names.contains(name) || external_tools.iter().any(|t| &t.name == name);
    if let Some(unknown) = auto_approve_tools.iter().find(|name| !known(name)) {
        return Err(Status::invalid_argument(format!(
            "config.auto_approve_tools: no tool named {}; the server has: {}",
            shown(unknown),
            limits.tool_names.join(", ")
        )));
    }
    Ok(ContextConfig {
        system_prompt,
        model,
        auto_approve_tools,
        external_tools,
        context_window_tokens,
        max_output_tokens,
        overflow,
        summarize_at,
    })
}

fn external_tool(tool: pb::ExternalTool, limits: &Limits) -> Result<ExternalTool, Status> {
    let pb::ExternalTool { name, description, parameters_json_schema, requires_approval, idempotent, timeout_ms } =
        tool;
    let field = format!("config.external_tools[{}]", shown(&name));
    let valid_name = !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        return Err(Status::invalid_argument(format!(
            "{field}: a tool name is 1 to {MAX_TOOL_NAME} letters, digits, '_' or '-'"
        )));
    }
    if limits.tool_names.contains(&name) {
        return Err(Status::invalid_argument(format!("{field}: a built-in tool has that name")));
    }
    if description.len() > limits.max_message_bytes || parameters_json_schema.len() > limits.max_message_bytes {
        return Err(Status::invalid_argument(format!(
            "{field}: description or schema larger than {} bytes",
            limits.max_message_bytes
        )));
    }
    ArgumentSchema::parse(&parameters_json_schema)
        .map_err(|e| Status::invalid_argument(format!("{field}.parameters_json_schema: {e}")))?;
    Ok(ExternalTool { name, description, parameters_json_schema, requires_approval, idempotent, timeout_ms })
}

/// The result of an external tool, as the model will see it.
pub fn tool_result(
    outcome: Option<pb::submit_tool_result_request::Outcome>,
    limits: &Limits,
) -> Result<ToolResult, Status> {
    use pb::submit_tool_result_request::Outcome;
    let result = match outcome {
        Some(Outcome::ResultJson(json)) => {
            serde_json::from_str::<serde_json::Value>(&json)
                .map_err(|e| Status::invalid_argument(format!("result_json is not JSON: {e}")))?;
            ToolResult::ok(json)
        }
        Some(Outcome::Error(error)) => ToolResult::error(error),
        None => return Err(Status::invalid_argument("one of result_json or error is required")),
    };
    Ok(ToolResult { output: truncate(result.output, limits.max_tool_output_bytes), ..result })
}

pub fn view(value: i32) -> Result<pb::StateView, Status> {
    pb::StateView::try_from(value).map_err(|_| Status::invalid_argument(format!("view: unknown StateView {value}")))
}

fn overflow(value: i32) -> Result<Option<Overflow>, Status> {
    match pb::ContextOverflow::try_from(value) {
        Ok(pb::ContextOverflow::Unspecified) => Ok(None),
        Ok(pb::ContextOverflow::Summarize) => Ok(Some(Overflow::Summarize)),
        Ok(pb::ContextOverflow::Truncate) => Ok(Some(Overflow::Truncate)),
        Err(_) => Err(Status::invalid_argument(format!(
            "config.context_overflow: unknown ContextOverflow {value} (SUMMARIZE or TRUNCATE)"
        ))),
    }
}

pub fn on_busy(value: i32) -> Result<OnBusy, Status> {
    match pb::OnBusy::try_from(value) {
        Ok(pb::OnBusy::Unspecified | pb::OnBusy::Reject) => Ok(OnBusy::Reject),
        Ok(pb::OnBusy::Interrupt) => Ok(OnBusy::Interrupt),
        Ok(pb::OnBusy::Enqueue) => Ok(OnBusy::Enqueue),
        Err(_) => Err(Status::invalid_argument(format!("on_busy: unknown OnBusy {value}"))),
    }
}

/// A `message_limit`: `None` (all) for 0.
pub fn message_limit(value: u32) -> Option<usize> {
    (value > 0).then(|| usize::try_from(value).unwrap_or(usize::MAX))
}

pub fn page_size(value: i32) -> Result<usize, Status> {
    match usize::try_from(value) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(Status::invalid_argument(format!("page_size must be between 0 and {MAX_PAGE_SIZE}, got {value}"))),
    }
}

/// Tool call ids of an ApproveTools request.
pub fn tool_call_ids(field: &str, ids: Vec<String>) -> Result<Vec<ToolCallId>, Status> {
    if let Some(bad) = ids.iter().find(|id| id.is_empty() || id.len() > MAX_ID_BYTES) {
        return Err(Status::invalid_argument(format!("{field}: invalid tool call id {}", shown(bad))));
    }
    Ok(ids.into_iter().map(ToolCallId::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_and_are_bounded() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1000).ok(), Some(1000));
        assert!(page_size(1001).is_err());
        assert!(page_size(-1).is_err());
    }
}
