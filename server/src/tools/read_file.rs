use async_trait::async_trait;
use serde_json::json;

use super::tool::{Tool, ToolError};
use super::workspace::{Workspace, resolve_in};
use crate::domain::{TenantId, ToolDefinition, ToolPolicy};

/// Files larger than this are refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a UTF-8 text file under the tenant's workspace directory. Paths that leave the root (`..`,
/// absolute paths, symlinks pointing outside) are refused.
pub struct ReadFile {
    workspace: Workspace,
    definition: ToolDefinition,
}

impl ReadFile {
    pub fn new(workspace: Workspace) -> Self {
        Self {
            workspace,
            definition: ToolDefinition {
                name: "read_file".into(),
                description: "Reads a text file from the workspace. `path` is relative to the workspace root.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"path": {"type": "string", "description": "relative path of the file"}},
                    "required": ["path"],
                    "additionalProperties": false
                }),
            },
        }
    }
}

#[async_trait]
impl Tool for ReadFile {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn policy(&self) -> ToolPolicy {
        ToolPolicy { requires_approval: true, idempotent: true, external: false }
    }

    async fn call(&self, tenant: &TenantId, arguments: serde_json::Value) -> Result<String, ToolError> {
        let Some(relative) = arguments.get("path").and_then(|p| p.as_str()) else {
            return Err(ToolError("invalid arguments: `path` (a string) is required".into()));
        };
        let path = resolve_in(&self.workspace.dir(tenant).await?, relative)?;
        let metadata = tokio::fs::metadata(&path).await.map_err(|e| ToolError(format!("{relative}: {e}")))?;
        if !metadata.is_file() {
            return Err(ToolError(format!("{relative} is not a file")));
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(ToolError(format!("{relative} is {} bytes; the limit is {MAX_FILE_BYTES}", metadata.len())));
        }
        let bytes = tokio::fs::read(&path).await.map_err(|e| ToolError(format!("{relative}: {e}")))?;
        String::from_utf8(bytes).map_err(|_| ToolError(format!("{relative} is not UTF-8 text")))
    }
}
