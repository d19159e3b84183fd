//! The runtime's knobs.

use std::time::Duration;

/// Knobs of the runtime.
#[derive(Debug, Clone)]
pub struct Settings {
    /// LLM attempts per call (the first try included) before a run fails.
    pub max_llm_attempts: u32,
    /// Backoff before the first retry; doubles each attempt, with jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A resting context with no watchers unloads after this long.
    pub idle_unload: Duration,
    /// The model of contexts whose config names none.
    pub default_model: String,
    /// How long an external tool call waits for SubmitToolResult unless its tool says.
    pub external_tool_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_llm_attempts: 3,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(10),
            idle_unload: Duration::from_secs(300),
            default_model: "mock".into(),
            external_tool_timeout: Duration::from_secs(300),
        }
    }
}
