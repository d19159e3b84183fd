//! The workspace the file tools work in: one directory per tenant, `<workspace>/<tenant>/`,
//! so tenants never see each other's files; paths resolve inside it or are refused.

use std::path::{Component, Path, PathBuf};

use super::tool::ToolError;
use crate::domain::TenantId;

/// The tenant's directory under `root`, created when first needed. Tenant names are safe as
/// directory names (never `.`, `..` or with a separator).
pub async fn tenant_root(root: &Path, tenant: &TenantId) -> Result<PathBuf, ToolError> {
    let dir = root.join(tenant.as_str());
    tokio::fs::create_dir_all(&dir).await.map_err(|e| ToolError(format!("workspace is not accessible: {e}")))?;
    Ok(dir)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tenants_get_directories_of_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acme = tenant_root(dir.path(), &TenantId::parse("acme").expect("tenant")).await.expect("created");
        assert_eq!(acme, dir.path().join("acme"));
        assert!(acme.is_dir());
        assert!(resolve_in(&acme, "../globex").is_err());
    }

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
