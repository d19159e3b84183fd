//! The domain model: what a context is, independent of the wire (proto) and of storage.

mod context;
mod ids;
mod message;
mod phase;
mod time;

pub use context::{Context, ContextConfig, ContextSummary, ExternalTool};
pub use ids::{ContextId, InvalidId, MessageId};
pub use message::{Approval, ContentPart, Message, MessageStatus, Role, ToolCall, Usage};
pub use phase::{FsmState, Phase};
pub use time::Timestamp;
