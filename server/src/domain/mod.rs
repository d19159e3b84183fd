//! The domain model: what a context is, independent of the wire (proto) and of storage.

mod change;
mod context;
mod fork;
mod ids;
mod message;
mod phase;
mod tenant;
mod time;
mod tool;

pub use change::Change;
pub use context::{Context, ContextConfig, ContextSummary, ExternalTool, ListPosition};
pub use fork::ForkError;
pub use ids::{ContextId, InvalidId, MessageId};
pub use message::{Approval, ContentPart, Message, MessageStatus, Role, ToolCall, Usage};
pub use phase::{FsmState, Phase};
pub use tenant::{ContextKey, InvalidTenant, MAX_TENANT_LEN, TenantId};
pub use time::Timestamp;
pub use tool::{RequestedToolCall, ToolDefinition, ToolPolicy, ToolResult};
