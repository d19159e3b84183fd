//! The storage schema (`ctxd.storage.v1`): the records the engines hold, prost messages
//! written by hand beside the wire API's generated ones. Tags are never reused.

/// A context without its messages, as saved under `contexts`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredContext {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub system_prompt: String,
    #[prost(string, tag = "3")]
    pub model: String,
    #[prost(string, repeated, tag = "4")]
    pub auto_approve_tools: Vec<String>,
    #[prost(uint64, tag = "5")]
    pub revision: u64,
    #[prost(int64, tag = "6")]
    pub created_at_us: i64,
    #[prost(int64, tag = "7")]
    pub updated_at_us: i64,
    #[prost(uint64, tag = "8")]
    pub message_count: u64,
    #[prost(message, optional, tag = "9")]
    pub phase: Option<StoredPhase>,
    #[prost(message, repeated, tag = "10")]
    pub external_tools: Vec<StoredExternalTool>,
    /// The subject that created the context (empty: saved before authentication existed).
    /// The tenant is not here: it is part of the key.
    #[prost(string, tag = "11")]
    pub created_by: String,
    /// The number the next new message gets (0: saved before branches, when the messages
    /// were numbered 0, 1, ... and it was `message_count`).
    #[prost(uint64, tag = "12")]
    pub next_node: u64,
}

/// The active path's shape, under `paths`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredPath {
    #[prost(message, repeated, tag = "1")]
    pub segments: Vec<StoredSegment>,
    /// Depths where the active path's message has versions (or, at the path's end, where the
    /// last message has replies off the path).
    #[prost(uint64, repeated, tag = "2")]
    pub forks: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredSegment {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(uint64, tag = "2")]
    pub node: u64,
}

/// One child under `children`: the key names its parent and node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredChild {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub active_at: u64,
}

/// A message's node, under `message_ids`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredNode {
    #[prost(uint64, tag = "1")]
    pub node: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredExternalTool {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(string, tag = "3")]
    pub parameters_json_schema: String,
    #[prost(bool, tag = "4")]
    pub requires_approval: bool,
    #[prost(bool, tag = "5")]
    pub idempotent: bool,
    #[prost(uint32, tag = "6")]
    pub timeout_ms: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredPhase {
    /// Storage's own numbering (see `phase_to_stored`), not the wire enum's.
    #[prost(int32, tag = "1")]
    pub state: i32,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
    #[prost(uint64, tag = "3")]
    pub message: u64,
    #[prost(string, tag = "4")]
    pub error: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredMessage {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub role: i32,
    #[prost(message, repeated, tag = "3")]
    pub content: Vec<StoredPart>,
    #[prost(message, repeated, tag = "4")]
    pub tool_calls: Vec<StoredToolCall>,
    #[prost(string, optional, tag = "5")]
    pub tool_call_id: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub client_message_id: Option<String>,
    #[prost(int32, tag = "7")]
    pub status: i32,
    #[prost(bool, tag = "8")]
    pub is_error: bool,
    #[prost(message, optional, tag = "9")]
    pub usage: Option<StoredUsage>,
    #[prost(uint64, tag = "10")]
    pub duration_ms: u64,
    #[prost(int64, tag = "11")]
    pub created_at_us: i64,
    #[prost(string, tag = "12")]
    pub model: String,
    /// Depth in the tree; absent on messages saved before branches, whose depth is their
    /// node and whose parent is the node before.
    #[prost(uint64, optional, tag = "13")]
    pub depth: Option<u64>,
    /// The parent's node; absent for first messages.
    #[prost(uint64, optional, tag = "14")]
    pub parent: Option<u64>,
    /// On tool messages: how the call ended (1 ok, 2 failed, 3 timed out, 4 denied, 5
    /// cancelled, 6 interrupted); 0 on messages saved before outcomes were, whose `is_error`
    /// says ok or failed.
    #[prost(int32, tag = "15")]
    pub tool_outcome: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredPart {
    /// 1 = text, 2 = image URL.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredToolCall {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub arguments_json: String,
    #[prost(int32, tag = "4")]
    pub approval: i32,
    #[prost(bool, tag = "5")]
    pub external: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredUsage {
    #[prost(uint32, tag = "1")]
    pub prompt_tokens: u32,
    #[prost(uint32, tag = "2")]
    pub completion_tokens: u32,
}
