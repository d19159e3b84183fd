//! Builds the LLM request for a context from what is saved.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::{Context, MessageStatus, Role};
use crate::fsm::RequestedToolCall;
use crate::llm::{LlmMessage, LlmRequest, ToolDefinition};
use crate::tools::ExternalTools;

/// `builtin`: the server's tools; the context's external tools are added to them.
pub fn request(ctx: &Context, default_model: &str, builtin: Arc<[ToolDefinition]>, attempt: u32) -> LlmRequest {
    let tools = if ctx.config.external_tools.is_empty() {
        builtin
    } else {
        builtin.iter().cloned().chain(ExternalTools::definitions(&ctx.config)).collect()
    };
    let mut messages = Vec::with_capacity(ctx.messages.len() + 1);
    if !ctx.config.system_prompt.is_empty() {
        messages.push(LlmMessage::System { text: ctx.config.system_prompt.clone() });
    }
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for message in &ctx.messages {
        // A failed or interrupted attempt's text is never taken as an answer.
        if message.status == MessageStatus::Error {
            continue;
        }
        let text = message.text_content();
        messages.push(match message.role {
            Role::System => LlmMessage::System { text },
            Role::User => LlmMessage::User { text },
            Role::Assistant => {
                for call in &message.tool_calls {
                    call_names.insert(&call.id, &call.name);
                }
                LlmMessage::Assistant {
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
                }
            }
            Role::Tool => {
                let id = message.tool_call_id.clone().unwrap_or_default();
                let name = call_names.get(id.as_str()).copied().unwrap_or_default().to_owned();
                LlmMessage::Tool { tool_call_id: id, name, output: text }
            }
        });
    }
    let model = if ctx.config.model.is_empty() { default_model } else { &ctx.config.model };
    LlmRequest { model: model.to_owned(), messages, tools, attempt }
}
