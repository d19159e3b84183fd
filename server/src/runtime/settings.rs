//! The runtime's knobs, taken from the configuration (which holds every default).

use std::collections::HashMap;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::llm::MOCK_MODEL;

#[derive(Debug, Clone)]
pub struct Settings {
    /// LLM attempts per call (the first try included) before a run fails.
    pub max_llm_attempts: u32,
    /// Pauses before LLM retries: doubling each attempt, with jitter.
    pub llm_retry: Backoff,
    /// A resting context with no watchers unloads after this long.
    pub idle_unload: Duration,
    /// The model of contexts whose config names none.
    pub default_model: String,
    /// How long an external tool call waits for SubmitToolResult unless its tool says.
    pub external_tool_timeout: Duration,
    /// Models named in metric labels as they are (the mock, the default, the configured
    /// ones); any other is `other`, so clients cannot grow the label set.
    pub metered_models: Vec<String>,
    /// Runs one tenant may have in progress at once.
    pub max_runs_per_tenant: usize,
    /// Contexts one tenant may keep (none: no limit).
    pub max_contexts_per_tenant: Option<u64>,
    /// Configured context windows, by model.
    pub context_windows: HashMap<String, u32>,
    /// The window of models nobody names.
    pub default_context_window: u32,
    /// The mock's window, if it counts.
    pub mock_context_window: Option<u32>,
    /// The model that writes summaries; none: each context's own.
    pub summary_model: Option<String>,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Self {
            max_llm_attempts: config.llm_max_attempts,
            llm_retry: Backoff {
                immediate: 0,
                first: Duration::from_millis(config.llm_retry_base_ms),
                max: Duration::from_millis(config.llm_retry_max_ms),
                jitter: true,
            },
            idle_unload: Duration::from_secs(config.idle_unload_secs),
            default_model: config.default_model.clone(),
            external_tool_timeout: Duration::from_millis(config.external_tool_timeout_ms),
            metered_models: [MOCK_MODEL.to_owned(), config.default_model.clone()]
                .into_iter()
                .chain(config.openai_models.iter().cloned())
                .collect(),
            max_runs_per_tenant: config.runs_per_tenant(),
            max_contexts_per_tenant: config.max_contexts_per_tenant,
            // Checked when the configuration was loaded.
            context_windows: config.context_windows().unwrap_or_default(),
            default_context_window: config.default_context_window,
            mock_context_window: config.mock_context_window,
            summary_model: config.summary_model.clone(),
        }
    }
}
