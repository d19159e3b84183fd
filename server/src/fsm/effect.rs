use crate::domain::{Seq, ToolCall};

/// A side effect a transition asks for. The driver runs effects only after the
/// transition that asked for them is saved.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Apply [`Command::Continue`](super::Command::Continue) next.
    Continue,
    /// Send the conversation to the LLM; the reply comes back as `LlmDelta`/`LlmFinished`/`LlmFailed`.
    CallLlm { attempt: u32 },
    /// Send `RetryDue` after the backoff for `attempt` (the attempt that failed), and not
    /// sooner than `at_least_ms` when the provider asked for that.
    ScheduleRetry { attempt: u32, at_least_ms: Option<u64> },
    /// Run these tool calls concurrently; each result comes back as `ToolFinished`.
    /// External calls are not run but waited for (with their timeout).
    RunTools { calls: Vec<ToolCall> },
    /// Summarise the active path's messages since the last summary through depth `through`;
    /// the summary comes back as `SummaryFinished`, or `SummaryFailed` after the retries.
    Summarize { through: Seq },
    /// Stop whatever the run has in flight (LLM call, tools, retry timer).
    AbortRun,
}
