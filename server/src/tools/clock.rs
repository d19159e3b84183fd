use async_trait::async_trait;
use serde_json::json;

use super::tool::{Tool, ToolError};
use crate::domain::{TenantId, ToolDefinition, ToolPolicy};

/// The current UTC time, RFC 3339.
pub struct Clock {
    definition: ToolDefinition,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            definition: ToolDefinition {
                name: "clock".into(),
                description: "Returns the current date and time in UTC (RFC 3339).".into(),
                parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            },
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Tool for Clock {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn policy(&self) -> ToolPolicy {
        ToolPolicy { requires_approval: false, idempotent: true, external: false }
    }

    async fn call(&self, _tenant: &TenantId, _arguments: serde_json::Value) -> Result<String, ToolError> {
        Ok(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string())
    }
}
