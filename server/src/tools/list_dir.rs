use async_trait::async_trait;
use serde_json::json;

use super::tool::{Tool, ToolError};
use super::workspace::{Workspace, resolve_in};
use crate::domain::{TenantId, ToolDefinition, ToolPolicy};

/// More entries than this are cut, with a note saying so.
const MAX_ENTRIES: usize = 1000;

/// Lists a directory under the tenant's workspace directory; directories end with '/'.
pub struct ListDir {
    workspace: Workspace,
    definition: ToolDefinition,
}

impl ListDir {
    pub fn new(workspace: Workspace) -> Self {
        Self {
            workspace,
            definition: ToolDefinition {
                name: "list_dir".into(),
                description:
                    "Lists a directory of the workspace. `path` is relative to the workspace root (default: the root)."
                        .into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"path": {"type": "string", "description": "relative path of the directory"}},
                    "additionalProperties": false
                }),
            },
        }
    }
}

#[async_trait]
impl Tool for ListDir {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn policy(&self) -> ToolPolicy {
        ToolPolicy { requires_approval: true, idempotent: true, external: false }
    }

    async fn call(&self, tenant: &TenantId, arguments: serde_json::Value) -> Result<String, ToolError> {
        let root = self.workspace.dir(tenant).await?;
        let relative = arguments.get("path").and_then(|p| p.as_str()).unwrap_or(".");
        let dir = resolve_in(&root, relative)?;
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(|e| ToolError(format!("{relative}: {e}")))?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| ToolError(format!("{relative}: {e}")))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            names.push(if is_dir { format!("{name}/") } else { name });
        }
        names.sort();
        let total = names.len();
        names.truncate(MAX_ENTRIES);
        let mut listing = names.join("\n");
        if total > MAX_ENTRIES {
            listing.push_str(&format!("\n[{} more entries not shown]", total - MAX_ENTRIES));
        }
        Ok(listing)
    }
}
