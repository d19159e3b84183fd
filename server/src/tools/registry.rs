//! The server's tools by name: each call runs with a timeout and an output limit, and every
//! failure becomes an error result the model sees.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::calculator::Calculator;
use super::clock::Clock;
use super::external::ExternalTools;
use super::list_dir::ListDir;
use super::read_file::ReadFile;
use super::schema::ArgumentSchema;
use super::tool::{Tool, ToolError};
use super::workspace::Workspace;
use super::write_file::WriteFile;
use crate::domain::{
    CheckedToolCall, Context, ExternalTool, RequestedToolCall, TenantId, ToolDefinition, ToolOutcome, ToolPolicy,
    ToolResult,
};
use crate::fsm::ToolCatalog;
use crate::telemetry::names;

#[derive(Debug, Clone)]
pub struct ToolLimits {
    pub timeout: Duration,
    /// Longer output is cut, with a note saying so.
    pub max_output_bytes: usize,
}

struct Registered {
    tool: Arc<dyn Tool>,
    schema: ArgumentSchema,
}

pub struct ToolRegistry {
    tools: BTreeMap<String, Registered>,
    definitions: Arc<[ToolDefinition]>,
    limits: ToolLimits,
}

/// How long checking the arguments of one reply's tool calls may take.
pub const CHECK_BUDGET: Duration = Duration::from_secs(1);

/// How the error result of a server tool that ran out of time begins.
pub const TIMED_OUT: &str = "timed out after";

/// A tool whose argument schema does not compile (a programming error in the tool).
#[derive(Debug, thiserror::Error)]
#[error("tool {name}: invalid argument schema: {reason}")]
pub struct InvalidTool {
    pub name: String,
    pub reason: String,
}

impl ToolRegistry {
    pub fn new(tools: Vec<Arc<dyn Tool>>, limits: ToolLimits) -> Result<Self, InvalidTool> {
        let mut registered = BTreeMap::new();
        for tool in tools {
            let definition = tool.definition();
            let schema = ArgumentSchema::compile(&definition.parameters)
                .map_err(|reason| InvalidTool { name: definition.name.clone(), reason })?;
            registered.insert(definition.name.clone(), Registered { tool, schema });
        }
        let definitions = registered.values().map(|r| r.tool.definition().clone()).collect();
        Ok(Self { tools: registered, definitions, limits })
    }

    /// The built-in tools; file tools only when a workspace is configured.
    pub fn builtin(workspace: Option<Workspace>, limits: ToolLimits) -> Result<Self, InvalidTool> {
        let mut tools: Vec<Arc<dyn Tool>> = vec![Arc::new(Clock::new()), Arc::new(Calculator::new())];
        if let Some(workspace) = workspace {
            tools.push(Arc::new(ReadFile::new(workspace.clone())));
            tools.push(Arc::new(ListDir::new(workspace.clone())));
            tools.push(Arc::new(WriteFile::new(workspace)));
        }
        Self::new(tools, limits)
    }

    /// Every tool with its policy, for listing.
    pub fn catalog(&self) -> Vec<(ToolDefinition, ToolPolicy)> {
        self.tools.values().map(|r| (r.tool.definition().clone(), r.tool.policy())).collect()
    }

    /// Whether the server has a tool of this name.
    pub fn has(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    pub fn definitions(&self) -> Arc<[ToolDefinition]> {
        Arc::clone(&self.definitions)
    }

    /// Runs one call. Never fails: problems become error results for the model.
    pub async fn run(&self, tenant: &TenantId, name: &str, arguments_json: &str) -> ToolResult {
        let Some(Registered { tool, schema }) = self.tools.get(name) else {
            return ToolResult::error(unknown(name));
        };
        let arguments = match schema.check(arguments_json) {
            Ok(arguments) => arguments,
            Err(problem) => return ToolResult::error(problem),
        };
        match tokio::time::timeout(self.limits.timeout, tool.call(tenant, arguments)).await {
            Ok(Ok(output)) => ToolResult::ok(truncate(output, self.limits.max_output_bytes)),
            Ok(Err(ToolError(message))) => ToolResult::error(message),
            Err(_) => {
                ToolResult::ended(ToolOutcome::TimedOut, format!("{TIMED_OUT} {} ms", self.limits.timeout.as_millis()))
            }
        }
    }
}

impl ToolCatalog for ToolRegistry {
    fn policy(&self, name: &str) -> Option<ToolPolicy> {
        self.tools.get(name).map(|r| r.tool.policy())
    }
}

impl ToolRegistry {
    /// Checks the calls of one reply before the state machine sees them (an unknown tool,
    /// arguments its schema refuses). The server's own schemas are small and trusted: their
    /// calls are checked at once. A schema a caller declared is bounded when it is accepted,
    /// and as a second line its calls are checked on a blocking thread within
    /// [`CHECK_BUDGET`], so no schema can hold up the executor or a context for long; calls
    /// still unchecked when the budget runs out are refused.
    pub async fn check_calls(
        self: &Arc<Self>,
        ctx: Arc<Context>,
        calls: Vec<RequestedToolCall>,
    ) -> Vec<CheckedToolCall> {
        let declared = |call: &RequestedToolCall| ctx.config.external_tool(&call.name).is_some();
        if !calls.iter().any(declared) {
            return calls
                .into_iter()
                .map(|call| {
                    let refused = self.check_call(&[], &call.name, &call.arguments_json).err();
                    CheckedToolCall { call, refused }
                })
                .collect();
        }
        let (registry, asked) = (Arc::clone(self), calls.clone());
        let checking = tokio::task::spawn_blocking(move || {
            let external = &ctx.config.external_tools;
            asked.iter().map(|call| registry.check_call(external, &call.name, &call.arguments_json).err()).collect()
        });
        let verdicts: Vec<Option<String>> = match tokio::time::timeout(CHECK_BUDGET, checking).await {
            Ok(Ok(verdicts)) => verdicts,
            Ok(Err(_)) | Err(_) => {
                metrics::counter!(names::TOOL_CHECKS_OVER_BUDGET).increment(1);
                tracing::warn!(calls = calls.len(), "checking tool call arguments took longer than {CHECK_BUDGET:?}");
                let refusal = format!(
                    "invalid arguments: checking them against the tool's schema took longer than {} ms",
                    CHECK_BUDGET.as_millis()
                );
                vec![Some(refusal); calls.len()]
            }
        };
        calls.into_iter().zip(verdicts).map(|(call, refused)| CheckedToolCall { call, refused }).collect()
    }

    fn check_call(&self, external: &[ExternalTool], name: &str, arguments_json: &str) -> Result<(), String> {
        if let Some(tool) = external.iter().find(|t| t.name == name) {
            return ExternalTools::check(tool, arguments_json);
        }
        match self.tools.get(name) {
            Some(Registered { schema, .. }) => schema.check(arguments_json).map(drop),
            None => Err(unknown(name)),
        }
    }
}

fn unknown(name: &str) -> String {
    format!("no tool named {}", crate::domain::shown(name))
}

/// Cuts `output` to `max` bytes (on a char boundary) and says so.
pub fn truncate(mut output: String, max: usize) -> String {
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
        let limits = ToolLimits { timeout: Duration::from_secs(1), max_output_bytes: 1024 };
        let registry = ToolRegistry::builtin(None, limits).expect("built-in schemas compile");
        let tenant = TenantId::default_tenant();
        assert!(registry.run(&tenant, "nope", "{}").await.is_error());
        assert!(registry.run(&tenant, "calculator", r#"{"expr": "1"}"#).await.output.contains("invalid arguments"));
        assert_eq!(registry.run(&tenant, "calculator", r#"{"expression": "6 * 7"}"#).await.output, "42");
        assert!(registry.run(&tenant, "clock", "not json").await.is_error());
        assert!(registry.run(&tenant, "clock", "[1]").await.is_error());
        let ok = registry.run(&tenant, "clock", "{}").await;
        assert!(!ok.is_error() && ok.output.ends_with('Z'), "{ok:?}");
    }
}
