//! The runtime's side of the context window: each model's window, and ctxd's count of what
//! a request to it holds (see `domain::window` for what is sent when it does not fit).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use super::settings::Settings;
use crate::domain::{Budget, Context, ContextConfig, Message, ToolDefinition};
use crate::fsm::ContextWindow;
use crate::llm::{Encoding, MOCK_MODEL, ToolTokens};
use crate::tools::ExternalTools;

/// The reply's reserve when a context sets none: a quarter of the window, at most this.
const DEFAULT_RESERVE_CAP: u32 = 4096;
/// Counts of contexts' own system prompts and tools kept; past this the cache starts over.
const CACHED_CONFIGS: usize = 4096;

pub(super) struct Windows {
    /// Configured windows (`--model-context-window`), by model name.
    by_model: HashMap<String, u32>,
    /// The mock's window (`--mock-context-window`), if it has one.
    mock: Option<u32>,
    /// For models nobody knows.
    default: u32,
    default_model: String,
    /// The server's own tools, sent with every request.
    builtin: Arc<[ToolDefinition]>,
    builtin_tokens: ToolTokens,
    /// What a context's system prompt and external tools count, by a hash of them: a budget is
    /// worked out after every save, and a system prompt may be 256 KiB.
    configs: Mutex<HashMap<(Encoding, u64), u64>>,
}

impl Windows {
    pub fn new(settings: &Settings, builtin: Arc<[ToolDefinition]>) -> Self {
        Self {
            by_model: settings.context_windows.clone(),
            mock: settings.mock_context_window,
            default: settings.default_context_window,
            default_model: settings.default_model.clone(),
            builtin,
            builtin_tokens: ToolTokens::default(),
            configs: Mutex::new(HashMap::new()),
        }
    }

    /// The window of `model`: configured, else the mock's, else as tiktoken knows OpenAI's
    /// models (also behind a proxy's `provider/` prefix), else the default.
    pub fn window_of(&self, model: &str) -> u32 {
        if let Some(window) = self.by_model.get(model) {
            return *window;
        }
        if model == MOCK_MODEL
            && let Some(window) = self.mock
        {
            return window;
        }
        let name = model.rsplit('/').next().unwrap_or(model);
        tiktoken_rs::model::get_context_size(name).and_then(|size| u32::try_from(size).ok()).unwrap_or(self.default)
    }

    /// The budget of a request of `ctx` to `model`.
    pub fn budget_for(&self, ctx: &Context, model: &str) -> Budget {
        let config = &ctx.config;
        let window = match config.context_window_tokens {
            0 => self.window_of(model),
            tokens => tokens,
        };
        let reserve = match config.max_output_tokens {
            0 => (window / 4).min(DEFAULT_RESERVE_CAP),
            // A reserve as large as the window would leave no room at all.
            tokens => tokens.min(window / 2),
        };
        let encoding = Encoding::of(model);
        let fixed = self.own_tokens(encoding, config) + self.builtin_tokens.get(encoding, &self.builtin);
        Budget::of(ctx, window, reserve, u32::try_from(fixed).unwrap_or(u32::MAX))
    }

    /// What a context's system prompt and external tools count.
    fn own_tokens(&self, encoding: Encoding, config: &ContextConfig) -> u64 {
        let mut hasher = DefaultHasher::new();
        (&config.system_prompt, &config.external_tools).hash(&mut hasher);
        let key = (encoding, hasher.finish());
        if let Some(tokens) = self.configs.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return *tokens;
        }
        let tools: Vec<ToolDefinition> = ExternalTools::definitions(config).collect();
        let tokens = encoding.system(&config.system_prompt) + encoding.tools(&tools);
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        if configs.len() >= CACHED_CONFIGS {
            configs.clear();
        }
        configs.insert(key, tokens);
        tokens
    }

    pub fn model<'a>(&'a self, ctx: &'a Context) -> &'a str {
        ctx.config.model_or(&self.default_model)
    }
}

impl ContextWindow for Windows {
    fn budget(&self, ctx: &Context) -> Budget {
        self.budget_for(ctx, self.model(ctx))
    }

    fn count(&self, ctx: &Context, message: &Message) -> u32 {
        u32::try_from(Encoding::of(self.model(ctx)).message(message)).unwrap_or(u32::MAX)
    }
}
