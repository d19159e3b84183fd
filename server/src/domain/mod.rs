//! The domain model: what a context is, independent of the wire (proto) and of storage.

mod branch;
mod change;
mod context;
mod fork;
mod ids;
mod message;
mod phase;
mod shown;
mod tenant;
mod time;
mod tool;
mod tree;
mod window;

pub use branch::{Branch, BranchError, Child, TreeReader};
pub use change::{Change, PathMove, QueueChange};
pub use context::{Context, ContextConfig, ContextSummary, ExternalTool, ListPosition};
pub use fork::ForkError;
pub use ids::{ContextId, InvalidId, MessageId, NodeId, Seq, ToolCallId};
pub use message::{Approval, ContentPart, Message, MessageStatus, Role, ToolCall, Usage};
pub use phase::{FsmState, Phase};
pub use shown::{SHOWN_CHARS, Shown, shown};
pub use tenant::{ContextKey, InvalidTenant, MAX_TENANT_LEN, TenantId};
pub use time::Timestamp;
pub use tool::{CheckedToolCall, RequestedToolCall, ToolDefinition, ToolOutcome, ToolPolicy, ToolResult};
pub use tree::{PathPoint, PathShape, Place, Segment, Sibling, Versions};
pub use window::{
    BYTES_PER_TOKEN, Budget, ContextUsage, DEFAULT_SUMMARIZE_AT, MIN_WINDOW, Mark, Overflow, Plan, TooLong,
};
