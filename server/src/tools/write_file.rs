use std::path::{Component, Path};

use async_trait::async_trait;
use serde_json::json;

use super::tool::{Tool, ToolError};
use super::workspace::{Workspace, resolve_in};
use crate::domain::{TenantId, ToolDefinition, ToolPolicy};

/// Writes a UTF-8 text file under the tenant's workspace directory (its directory must exist).
pub struct WriteFile {
    workspace: Workspace,
    definition: ToolDefinition,
}

impl WriteFile {
    pub fn new(workspace: Workspace) -> Self {
        Self {
            workspace,
            definition: ToolDefinition {
                name: "write_file".into(),
                description: "Writes text to a file of the workspace, replacing it if it exists. `path` is relative to the workspace root.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "relative path of the file"},
                        "content": {"type": "string", "description": "the whole new content"}
                    },
                    "required": ["path", "content"],
                    "additionalProperties": false
                }),
            },
        }
    }
}

#[async_trait]
impl Tool for WriteFile {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn policy(&self) -> ToolPolicy {
        // Writing the same content twice leaves the same file.
        ToolPolicy { requires_approval: true, idempotent: true, external: false }
    }

    async fn call(&self, tenant: &TenantId, arguments: serde_json::Value) -> Result<String, ToolError> {
        let root = self.workspace.dir(tenant).await?;
        let relative = arguments.get("path").and_then(|p| p.as_str()).unwrap_or_default();
        let content = arguments.get("content").and_then(|c| c.as_str()).unwrap_or_default();
        let path = Path::new(relative);
        let (Some(parent), Some(Component::Normal(name))) = (path.parent(), path.components().next_back()) else {
            return Err(ToolError(format!("path {relative:?} must name a file")));
        };
        let parent = if parent.as_os_str().is_empty() { "." } else { parent.to_str().unwrap_or_default() };
        let target = resolve_in(&root, parent)?.join(name);
        // An existing entry may be a symlink pointing out of the workspace.
        if tokio::fs::symlink_metadata(&target).await.is_ok() {
            resolve_in(&root, relative)?;
        }
        tokio::fs::write(&target, content).await.map_err(|e| ToolError(format!("{relative}: {e}")))?;
        Ok(format!("wrote {} bytes to {relative}", content.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_stay_inside_the_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("ws");
        std::fs::create_dir_all(&root).expect("fixture");
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).expect("fixture");
        let tool = WriteFile::new(Workspace::new(dir.path().to_owned(), true));
        let tenant = TenantId::parse("ws").expect("tenant");
        let write = |path: &str| tool.call(&tenant, json!({"path": path, "content": "hi"}));
        assert!(write("a.txt").await.is_ok());
        assert_eq!(std::fs::read_to_string(root.join("a.txt")).ok().as_deref(), Some("hi"));
        for bad in ["../x.txt", "/tmp/x.txt", "missing/x.txt", "", "link"] {
            assert!(write(bad).await.is_err(), "{bad} must be refused");
        }
        assert!(!dir.path().join("outside").exists());
    }
}
