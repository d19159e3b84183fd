//! The outside world, as far as the state machine sees it.

use crate::domain::{Budget, Context, Message, MessageId, Timestamp, ToolPolicy};

/// What the state machine may ask about tools.
pub trait ToolCatalog {
    /// The policy of a server tool; `None` for tools the server does not have.
    fn policy(&self, name: &str) -> Option<ToolPolicy>;
}

/// What the state machine (and the runtime's batches) ask about the model's context window.
pub trait ContextWindow {
    /// What `ctx`'s next request must fit in.
    fn budget(&self, ctx: &Context) -> Budget;
    /// What `message` costs in a request to `ctx`'s model.
    fn count(&self, ctx: &Context, message: &Message) -> u32;
}

pub struct Env<'a> {
    pub now: Timestamp,
    pub tools: &'a dyn ToolCatalog,
    /// LLM attempts per call before the run fails (the first try included).
    pub max_llm_attempts: u32,
    /// The model of contexts whose config names none.
    pub default_model: &'a str,
    pub new_id: &'a dyn Fn() -> MessageId,
    pub window: &'a dyn ContextWindow,
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

/// A window for tests: `window` tokens, a word a token plus four a message.
#[cfg(test)]
pub struct WordWindow {
    pub window: u32,
    pub reserve: u32,
}

#[cfg(test)]
impl WordWindow {
    /// So large that nothing is ever summarised or left out.
    pub const UNBOUNDED: WordWindow = WordWindow { window: u32::MAX, reserve: 0 };
}

#[cfg(test)]
impl ContextWindow for WordWindow {
    fn budget(&self, ctx: &Context) -> Budget {
        Budget::of(ctx, self.window, self.reserve, 0)
    }

    fn count(&self, _ctx: &Context, message: &Message) -> u32 {
        message.text_content().split_whitespace().count() as u32 + 4
    }
}
