//! Tools the model may call, each with its approval policy. The registry runs a call with a
//! timeout and an output limit and turns every failure into an error result the model sees.

mod clock;
mod read_file;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use clock::Clock;
pub use read_file::ReadFile;

use crate::fsm::{ToolPolicies, ToolPolicy, ToolResult};
use crate::llm::ToolDefinition;

/// Why a tool call produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

#[async_trait]
pub trait Tool: Send + Sync + 'static {
    fn definition(&self) -> &ToolDefinition;
    fn policy(&self) -> ToolPolicy;
    async fn call(&self, arguments: serde_json::Value) -> Result<String, ToolError>;
}

#[derive(Debug, Clone)]
pub struct ToolLimits {
    pub timeout: Duration,
    /// Longer output is cut, with a note saying so.
    pub max_output_bytes: usize,
}

pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
    definitions: Arc<[ToolDefinition]>,
    limits: ToolLimits,
}

impl ToolRegistry {
    pub fn new(tools: Vec<Arc<dyn Tool>>, limits: ToolLimits) -> Self {
        let tools: BTreeMap<String, Arc<dyn Tool>> =
            tools.into_iter().map(|tool| (tool.definition().name.clone(), tool)).collect();
        let definitions = tools.values().map(|tool| tool.definition().clone()).collect();
        Self { tools, definitions, limits }
    }

    /// The built-in tools; file tools only when a workspace is configured.
    pub fn builtin(workspace: Option<PathBuf>, limits: ToolLimits) -> Self {
        let mut tools: Vec<Arc<dyn Tool>> = vec![Arc::new(Clock::new())];
        if let Some(root) = workspace {
            tools.push(Arc::new(ReadFile::new(root)));
        }
        Self::new(tools, limits)
    }

    pub fn definitions(&self) -> Arc<[ToolDefinition]> {
        Arc::clone(&self.definitions)
    }

    /// Runs one call. Never fails: problems become error results for the model.
    pub async fn run(&self, name: &str, arguments_json: &str) -> ToolResult {
        let Some(tool) = self.tools.get(name) else {
            return ToolResult::error(format!("no tool named {name:?}"));
        };
        let arguments = match serde_json::from_str::<serde_json::Value>(arguments_json) {
            Ok(value @ serde_json::Value::Object(_)) => value,
            Ok(_) => return ToolResult::error("invalid arguments: expected a JSON object"),
            Err(e) => return ToolResult::error(format!("invalid arguments: {e}")),
        };
        match tokio::time::timeout(self.limits.timeout, tool.call(arguments)).await {
            Ok(Ok(output)) => ToolResult::ok(truncate(output, self.limits.max_output_bytes)),
            Ok(Err(ToolError(message))) => ToolResult::error(message),
            Err(_) => ToolResult::error(format!("timed out after {} ms", self.limits.timeout.as_millis())),
        }
    }
}

impl ToolPolicies for ToolRegistry {
    fn policy(&self, name: &str) -> Option<ToolPolicy> {
        self.tools.get(name).map(|tool| tool.policy())
    }
}

fn truncate(mut output: String, max: usize) -> String {
    if output.len() <= max {
        return output;
    }
    let mut end = max;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    let total = output.len();
    output.truncate(end);
    output.push_str(&format!("\n[output truncated: {total} bytes, limit {max}]"));
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_on_a_char_boundary_and_says_so() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("héllo wörld".into(), 2);
        assert!(cut.starts_with('h') && !cut.starts_with("hé"), "{cut}");
        assert!(cut.contains("output truncated"));
    }

    #[tokio::test]
    async fn bad_calls_become_error_results() {
        let registry =
            ToolRegistry::builtin(None, ToolLimits { timeout: Duration::from_secs(1), max_output_bytes: 1024 });
        assert!(registry.run("nope", "{}").await.is_error);
        assert!(registry.run("clock", "not json").await.is_error);
        assert!(registry.run("clock", "[1]").await.is_error);
        let ok = registry.run("clock", "{}").await;
        assert!(!ok.is_error && ok.output.ends_with('Z'), "{ok:?}");
    }
}
