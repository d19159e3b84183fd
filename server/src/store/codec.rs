//! Value encoding: one format byte, then the prost bytes of a storage schema that is
//! separate from the wire API, so the two can evolve independently.

use std::sync::Arc;

use super::error::Error;
use crate::domain::{
    Approval, ContentPart, Context, ContextConfig, ContextId, ContextKey, ExternalTool, Message, MessageId,
    MessageStatus, PathShape, Phase, Role, Segment, Sibling, Timestamp, ToolCall, ToolOutcome, Usage,
};

/// The only format written so far; readers refuse values of formats they do not know.
const FORMAT_V1: u8 = 1;

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

/// The node whose children are the versions at depth `seq` of a loaded path (`None`: the
/// first messages).
pub fn parent_at(path: &[Message], seq: u64) -> Option<u64> {
    seq.checked_sub(1).and_then(|before| path.get(usize::try_from(before).ok()?)).map(|m| m.node)
}

/// A stored message id; `whose` names what holds it, for the error.
pub fn message_id(bytes: &[u8], whose: impl std::fmt::Display) -> Result<MessageId, Error> {
    let id: [u8; 16] = bytes.try_into().map_err(|_| Error::Corrupt(format!("{whose}: bad id")))?;
    Ok(MessageId::from_bytes(id))
}

pub fn encode(value: &impl prost::Message) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + value.encoded_len());
    bytes.push(FORMAT_V1);
    value.encode_raw(&mut bytes);
    bytes
}

pub fn decode<T: prost::Message + Default>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => T::decode(body).map_err(|e| Error::Corrupt(format!("{what}: {e}"))),
        Some((format, _)) => Err(Error::Corrupt(format!("{what}: unknown value format {format}"))),
        None => Err(Error::Corrupt(format!("{what}: empty value"))),
    }
}

pub fn context_to_stored(ctx: &Context) -> StoredContext {
    StoredContext {
        title: ctx.title.clone(),
        system_prompt: ctx.config.system_prompt.clone(),
        model: ctx.config.model.clone(),
        auto_approve_tools: ctx.config.auto_approve_tools.clone(),
        revision: ctx.revision,
        created_at_us: ctx.created_at.as_micros(),
        updated_at_us: ctx.updated_at.as_micros(),
        message_count: ctx.next_seq(),
        next_node: ctx.next_node,
        phase: Some(phase_to_stored(&ctx.phase)),
        external_tools: ctx
            .config
            .external_tools
            .iter()
            .map(|t| StoredExternalTool {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters_json_schema: t.parameters_json_schema.clone(),
                requires_approval: t.requires_approval,
                idempotent: t.idempotent,
                timeout_ms: t.timeout_ms,
            })
            .collect(),
        created_by: ctx.created_by.clone(),
    }
}

pub fn path_to_stored(shape: &PathShape) -> StoredPath {
    StoredPath {
        segments: shape.segments.iter().map(|s| StoredSegment { seq: s.seq, node: s.node }).collect(),
        forks: shape.forks.keys().copied().collect(),
    }
}

/// The segments of a saved path; a context saved before branches has one, from node 0.
pub fn segments_from_stored(stored: Option<&StoredPath>) -> Vec<Segment> {
    match stored {
        Some(path) => path.segments.iter().map(|s| Segment { seq: s.seq, node: s.node }).collect(),
        None => vec![Segment { seq: 0, node: 0 }],
    }
}

/// Rebuilds a context from its saved metadata, the messages of its active path (depth 0,
/// 1, ...) and the versions at the depths that have them.
pub fn context_from_stored(
    key: ContextKey,
    stored: StoredContext,
    messages: Vec<Message>,
    forks: Vec<(u64, Arc<[Sibling]>)>,
) -> Result<Context, Error> {
    let StoredContext {
        title,
        system_prompt,
        model,
        auto_approve_tools,
        revision,
        created_at_us,
        updated_at_us,
        message_count,
        phase,
        external_tools,
        created_by,
        next_node,
    } = stored;
    if messages.len() as u64 != message_count {
        return Err(Error::Corrupt(format!(
            "context {key}: metadata counts {message_count} messages but {} are stored",
            messages.len()
        )));
    }
    let phase = phase_from_stored(phase.unwrap_or_default())?;
    let mut ctx = Context::new(
        key,
        created_by,
        title,
        ContextConfig {
            system_prompt,
            model,
            auto_approve_tools,
            external_tools: external_tools
                .into_iter()
                .map(
                    |StoredExternalTool {
                         name,
                         description,
                         parameters_json_schema,
                         requires_approval,
                         idempotent,
                         timeout_ms,
                     }| ExternalTool {
                        name,
                        description,
                        parameters_json_schema,
                        requires_approval,
                        idempotent,
                        timeout_ms,
                    },
                )
                .collect(),
        },
        Timestamp::from_micros(created_at_us),
    );
    ctx.phase = phase;
    ctx.revision = revision;
    ctx.updated_at = Timestamp::from_micros(updated_at_us);
    for message in messages {
        ctx.put_message(Arc::new(message));
    }
    ctx.next_node = ctx.next_node.max(next_node);
    if !forks.is_empty() {
        let shape = Arc::make_mut(&mut ctx.shape);
        shape.forks = forks.into_iter().collect();
    }
    Ok(ctx)
}

fn phase_to_stored(phase: &Phase) -> StoredPhase {
    let (state, attempt, message, error) = match phase {
        Phase::Idle => (1, 0, 0, ""),
        Phase::ProcessingUserMessage => (2, 0, 0, ""),
        Phase::AwaitingLlmResponse { attempt } => (3, *attempt, 0, ""),
        Phase::StreamingLlmResponse { attempt, message } => (4, *attempt, *message, ""),
        Phase::ProcessingLlmResponse { message } => (5, 0, *message, ""),
        Phase::AwaitingToolApproval { message } => (6, 0, *message, ""),
        Phase::ExecutingTools { message } => (7, 0, *message, ""),
        Phase::ProcessingToolResults => (8, 0, 0, ""),
        Phase::GeneratingResponse => (9, 0, 0, ""),
        Phase::TransientFailure { attempt, error } => (10, *attempt, 0, error.as_str()),
        Phase::Failed { error } => (11, 0, 0, error.as_str()),
    };
    StoredPhase { state, attempt, message, error: error.to_owned() }
}

fn phase_from_stored(stored: StoredPhase) -> Result<Phase, Error> {
    let StoredPhase { state, attempt, message, error } = stored;
    Ok(match state {
        1 => Phase::Idle,
        2 => Phase::ProcessingUserMessage,
        3 => Phase::AwaitingLlmResponse { attempt },
        4 => Phase::StreamingLlmResponse { attempt, message },
        5 => Phase::ProcessingLlmResponse { message },
        6 => Phase::AwaitingToolApproval { message },
        7 => Phase::ExecutingTools { message },
        8 => Phase::ProcessingToolResults,
        9 => Phase::GeneratingResponse,
        10 => Phase::TransientFailure { attempt, error },
        11 => Phase::Failed { error },
        other => return Err(Error::Corrupt(format!("unknown stored state {other}"))),
    })
}

pub fn message_to_stored(message: &Message) -> StoredMessage {
    StoredMessage {
        id: message.id.as_bytes().to_vec(),
        role: match message.role {
            Role::User => 1,
            Role::Assistant => 2,
            Role::System => 3,
            Role::Tool => 4,
        },
        content: message
            .content
            .iter()
            .map(|part| match part {
                ContentPart::Text(text) => StoredPart { kind: 1, value: text.clone() },
                ContentPart::ImageUrl(url) => StoredPart { kind: 2, value: url.clone() },
            })
            .collect(),
        tool_calls: message
            .tool_calls
            .iter()
            .map(|call| StoredToolCall {
                id: call.id.clone(),
                name: call.name.clone(),
                arguments_json: call.arguments_json.clone(),
                approval: match call.approval {
                    Approval::Pending => 1,
                    Approval::Approved => 2,
                    Approval::Denied => 3,
                    Approval::AutoApproved => 4,
                },
                external: call.external,
            })
            .collect(),
        tool_call_id: message.tool_call_id.clone(),
        client_message_id: message.client_message_id.clone(),
        status: match message.status {
            MessageStatus::Streaming => 1,
            MessageStatus::Complete => 2,
            MessageStatus::Cancelled => 3,
            MessageStatus::Error => 4,
        },
        is_error: message.is_error(),
        tool_outcome: message.tool_outcome.map_or(0, |outcome| match outcome {
            ToolOutcome::Ok => 1,
            ToolOutcome::Failed => 2,
            ToolOutcome::TimedOut => 3,
            ToolOutcome::Denied => 4,
            ToolOutcome::Cancelled => 5,
            ToolOutcome::Interrupted => 6,
        }),
        usage: message
            .usage
            .map(|u| StoredUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens }),
        duration_ms: message.duration_ms,
        model: message.model.clone(),
        created_at_us: message.created_at.as_micros(),
        depth: Some(message.seq),
        parent: message.parent,
    }
}

/// The message saved as node `node`.
pub fn message_from_stored(node: u64, stored: StoredMessage) -> Result<Message, Error> {
    let StoredMessage {
        id,
        role,
        content,
        tool_calls,
        tool_call_id,
        client_message_id,
        status,
        is_error,
        usage,
        duration_ms,
        created_at_us,
        model,
        depth,
        parent,
        tool_outcome,
    } = stored;
    let corrupt = |what: &str, value: i32| Error::Corrupt(format!("message {node}: unknown {what} {value}"));
    // Saved before outcomes were: a tool message's `is_error` tells ok from failed.
    let tool_outcome = match tool_outcome {
        0 if role == 4 || is_error => Some(if is_error { ToolOutcome::Failed } else { ToolOutcome::Ok }),
        0 => None,
        1 => Some(ToolOutcome::Ok),
        2 => Some(ToolOutcome::Failed),
        3 => Some(ToolOutcome::TimedOut),
        4 => Some(ToolOutcome::Denied),
        5 => Some(ToolOutcome::Cancelled),
        6 => Some(ToolOutcome::Interrupted),
        other => return Err(corrupt("tool outcome", other)),
    };
    let id = message_id(&id, format_args!("message {node}"))?;
    // Saved before branches: node = depth, and each message follows the one before.
    let (seq, parent) = match depth {
        Some(depth) => (depth, parent),
        None => (node, node.checked_sub(1)),
    };
    Ok(Message {
        id,
        seq,
        node,
        parent,
        role: match role {
            1 => Role::User,
            2 => Role::Assistant,
            3 => Role::System,
            4 => Role::Tool,
            other => return Err(corrupt("role", other)),
        },
        content: content
            .into_iter()
            .map(|StoredPart { kind, value }| match kind {
                1 => Ok(ContentPart::Text(value)),
                2 => Ok(ContentPart::ImageUrl(value)),
                other => Err(corrupt("content kind", other)),
            })
            .collect::<Result<_, _>>()?,
        tool_calls: tool_calls
            .into_iter()
            .map(|StoredToolCall { id, name, arguments_json, approval, external }| {
                let approval = match approval {
                    1 => Approval::Pending,
                    2 => Approval::Approved,
                    3 => Approval::Denied,
                    4 => Approval::AutoApproved,
                    other => return Err(corrupt("approval", other)),
                };
                Ok(ToolCall { id, name, arguments_json, approval, external })
            })
            .collect::<Result<_, _>>()?,
        tool_call_id,
        client_message_id,
        status: match status {
            1 => MessageStatus::Streaming,
            2 => MessageStatus::Complete,
            3 => MessageStatus::Cancelled,
            4 => MessageStatus::Error,
            other => return Err(corrupt("status", other)),
        },
        tool_outcome,
        usage: usage.map(|u| Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens }),
        duration_ms,
        model,
        created_at: Timestamp::from_micros(created_at_us),
    })
}

pub fn summary_from_stored(id: ContextId, stored: &StoredContext) -> Result<crate::domain::ContextSummary, Error> {
    Ok(crate::domain::ContextSummary {
        id,
        title: stored.title.clone(),
        state: phase_from_stored(stored.phase.clone().unwrap_or_default())?.state(),
        revision: stored.revision,
        message_count: stored.message_count,
        created_at: Timestamp::from_micros(stored.created_at_us),
        updated_at: Timestamp::from_micros(stored.updated_at_us),
    })
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
