//! Tools a context declares and another service executes: their definitions for the model
//! and the check of a call's arguments before the service is asked.

use crate::domain::{ContextConfig, ExternalTool, ToolDefinition};

use super::schema::ArgumentSchema;

/// How the error result of an external call whose result never came begins.
pub const NO_EXTERNAL_RESULT: &str = "no result from the external tool within";

pub struct ExternalTools;

impl ExternalTools {
    /// What the model is told about a context's external tools.
    pub fn definitions(config: &ContextConfig) -> impl Iterator<Item = ToolDefinition> + '_ {
        config.external_tools.iter().map(|tool| ToolDefinition {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters: ArgumentSchema::parse_json(&tool.parameters_json_schema)
                .unwrap_or_else(|_| serde_json::json!({"type": "object"})),
        })
    }

    /// Checks a call's arguments against the tool's schema (which was validated when the
    /// context was created).
    pub fn check(tool: &ExternalTool, arguments_json: &str) -> Result<(), String> {
        let (schema, _) = ArgumentSchema::parse(&tool.parameters_json_schema)?;
        schema.check(arguments_json).map(drop)
    }
}
