//! What a tool is to ctxd.

use async_trait::async_trait;

use crate::domain::{TenantId, ToolDefinition, ToolPolicy};

/// Why a tool call produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

#[async_trait]
pub trait Tool: Send + Sync + 'static {
    fn definition(&self) -> &ToolDefinition;
    fn policy(&self) -> ToolPolicy;
    /// Runs one call for a context of `tenant` (file tools work in the tenant's directory).
    async fn call(&self, tenant: &TenantId, arguments: serde_json::Value) -> Result<String, ToolError>;
}
