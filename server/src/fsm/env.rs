//! The outside world, as far as the state machine sees it.

use crate::domain::{Context, MessageId, Timestamp, ToolPolicy};

/// What the state machine may ask about tools.
pub trait ToolCatalog {
    /// The policy of a server tool; `None` for tools the server does not have.
    fn policy(&self, name: &str) -> Option<ToolPolicy>;
}

pub struct Env<'a> {
    pub now: Timestamp,
    pub tools: &'a dyn ToolCatalog,
    /// LLM attempts per call before the run fails (the first try included).
    pub max_llm_attempts: u32,
    /// The model of contexts whose config names none.
    pub default_model: &'a str,
    pub new_id: &'a dyn Fn() -> MessageId,
}

impl Env<'_> {
    /// The model `ctx` asks for.
    pub fn model<'c>(&'c self, ctx: &'c Context) -> &'c str {
        ctx.config.model_or(self.default_model)
    }

    /// A tool's policy: the context's external tools first, then the server's tools.
    pub fn policy(&self, ctx: &Context, name: &str) -> Option<ToolPolicy> {
        match ctx.config.external_tool(name) {
            Some(tool) => Some(ToolPolicy {
                requires_approval: tool.requires_approval,
                idempotent: tool.idempotent,
                external: true,
            }),
            None => self.tools.policy(name),
        }
    }
}
