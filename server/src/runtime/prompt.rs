//! Builds the LLM request for a context from what is saved.

use std::sync::Arc;

use crate::domain::{Context, ToolDefinition};
use crate::llm::LlmRequest;
use crate::tools::ExternalTools;

/// `builtin`: the server's tools; the context's external tools are added to them. Costs
/// O(1) in the length of the conversation: the history is shared, not copied.
pub fn request(ctx: &Context, default_model: &str, builtin: Arc<[ToolDefinition]>, attempt: u32) -> LlmRequest {
    let tools = if ctx.config.external_tools.is_empty() {
        builtin
    } else {
        builtin.iter().cloned().chain(ExternalTools::definitions(&ctx.config)).collect()
    };
    let model = ctx.config.model_or(default_model);
    LlmRequest {
        model: model.to_owned(),
        system_prompt: ctx.config.system_prompt.clone(),
        history: ctx.messages.clone(),
        tools,
        attempt,
    }
}
