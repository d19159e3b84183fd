//! The workspace the file tools work in. With authentication on, one directory per tenant,
//! `<workspace>/<tenant>/`, so tenants never see each other's files; without it there is one
//! tenant and it has the whole workspace, as before tenants. Paths resolve inside the
//! tenant's directory or are refused.

use std::path::{Component, Path, PathBuf};

use super::tool::ToolError;
use crate::domain::TenantId;

#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    per_tenant: bool,
}

impl Workspace {
    /// `per_tenant`: each tenant gets `<root>/<tenant>/` (with authentication on).
    pub fn new(root: PathBuf, per_tenant: bool) -> Self {
        Self { root, per_tenant }
    }

    /// The directory `tenant`'s file tools work in, created when first needed. Tenant names
    /// are safe as directory names (never `.`, `..` or with a separator).
    pub async fn dir(&self, tenant: &TenantId) -> Result<PathBuf, ToolError> {
        if !self.per_tenant {
            return Ok(self.root.clone());
        }
        let dir = self.root.join(tenant.as_str());
        tokio::fs::create_dir_all(&dir).await.map_err(|e| ToolError(format!("workspace is not accessible: {e}")))?;
        Ok(dir)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tenants_get_directories_of_their_own_with_authentication() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acme = TenantId::parse("acme").expect("tenant");
        let shared = Workspace::new(dir.path().to_owned(), false);
        assert_eq!(shared.dir(&acme).await.expect("the root"), dir.path());
        let per_tenant = Workspace::new(dir.path().to_owned(), true);
        let own = per_tenant.dir(&acme).await.expect("created");
        assert_eq!(own, dir.path().join("acme"));
        assert!(own.is_dir());
        assert!(resolve_in(&own, "../globex").is_err());
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
