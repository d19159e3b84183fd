use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use serde_json::json;

use super::tool::{Tool, ToolError};
use crate::domain::{ToolDefinition, ToolPolicy};

/// Files larger than this are refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a UTF-8 text file under the workspace root. Paths that leave the root (`..`,
/// absolute paths, symlinks pointing outside) are refused.
pub struct ReadFile {
    root: PathBuf,
    definition: ToolDefinition,
}

impl ReadFile {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
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

/// Resolves `relative` under `root`, refusing anything that ends up outside it.
pub fn resolve_in(root: &Path, relative: &str) -> Result<PathBuf, ToolError> {
    let requested = Path::new(relative);
    if relative.is_empty() || requested.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(ToolError(format!(
            "path {relative:?} must be relative to the workspace and must not contain '..'"
        )));
    }
    let root = root.canonicalize().map_err(|e| ToolError(format!("workspace is not accessible: {e}")))?;
    let resolved = root.join(requested).canonicalize().map_err(|e| ToolError(format!("{relative}: {e}")))?;
    if !resolved.starts_with(&root) {
        return Err(ToolError(format!("path {relative:?} leaves the workspace")));
    }
    Ok(resolved)
}

#[async_trait]
impl Tool for ReadFile {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn policy(&self) -> ToolPolicy {
        ToolPolicy { requires_approval: true, idempotent: true, external: false }
    }

    async fn call(&self, arguments: serde_json::Value) -> Result<String, ToolError> {
        let Some(relative) = arguments.get("path").and_then(|p| p.as_str()) else {
            return Err(ToolError("invalid arguments: `path` (a string) is required".into()));
        };
        let path = resolve_in(&self.root, relative)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_workspace_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("ws");
        std::fs::create_dir_all(root.join("sub")).expect("fixture");
        std::fs::write(root.join("sub/a.txt"), "hi").expect("fixture");
        std::fs::write(dir.path().join("secret"), "no").expect("fixture");
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).expect("fixture");

        assert!(resolve_in(&root, "sub/a.txt").is_ok());
        assert!(resolve_in(&root, "./sub/a.txt").is_ok());
        for bad in ["../secret", "sub/../../secret", "/etc/passwd", "", "escape"] {
            assert!(resolve_in(&root, bad).is_err(), "{bad} must be refused");
        }
    }
}
