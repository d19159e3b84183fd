//! A message: domain ↔ stored.

use super::message_id;
use super::schema::*;
use crate::domain::{
    Approval, ContentPart, Message, MessageStatus, NodeId, Place, Role, Seq, Timestamp, ToolCall, ToolCallId,
    ToolOutcome, Usage,
};
use crate::store::error::Error;

pub fn message_to_stored(message: &Message) -> StoredMessage {
    StoredMessage {
        id: message.id.as_bytes().to_vec(),
        role: match message.role {
            Role::User => 1,
            Role::Assistant => 2,
            Role::System => 3,
            Role::Tool => 4,
            Role::Summary => 5,
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
                id: call.id.as_str().to_owned(),
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
        tool_call_id: message.tool_call_id.as_ref().map(|id| id.as_str().to_owned()),
        client_message_id: message.client_message_id.clone(),
        status: match message.status {
            MessageStatus::Streaming => 1,
            MessageStatus::Complete => 2,
            MessageStatus::Cancelled => 3,
            MessageStatus::Error => 4,
            MessageStatus::Queued => 5,
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
        depth: Some(message.seq.get()),
        parent: message.parent.map(NodeId::get),
        tokens: message.tokens,
        summary_through: message.summary_through.map(|id| id.as_bytes().to_vec()),
    }
}

/// The message saved as node `node`.
pub fn message_from_stored(node: NodeId, stored: StoredMessage) -> Result<Message, Error> {
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
        tokens,
        summary_through,
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
    // Saved before branches: the conversation was straight.
    let Place { seq, parent, .. } = match depth {
        Some(depth) => Place { seq: Seq::new(depth), node, parent: parent.map(NodeId::new) },
        None => Place::straight(Seq::new(node.get())),
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
            5 => Role::Summary,
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
                Ok(ToolCall { id: id.into(), name, arguments_json, approval, external })
            })
            .collect::<Result<_, _>>()?,
        tool_call_id: tool_call_id.map(ToolCallId::from),
        client_message_id,
        status: match status {
            1 => MessageStatus::Streaming,
            2 => MessageStatus::Complete,
            3 => MessageStatus::Cancelled,
            4 => MessageStatus::Error,
            5 => MessageStatus::Queued,
            other => return Err(corrupt("status", other)),
        },
        tool_outcome,
        usage: usage.map(|u| Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens }),
        duration_ms,
        model,
        created_at: Timestamp::from_micros(created_at_us),
        tokens,
        summary_through: summary_through
            .map(|through| message_id(&through, format_args!("message {node}'s summary")))
            .transpose()?,
    })
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
