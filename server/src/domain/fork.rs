//! What a fork takes from its source: the messages up to a cut, as a conversation of their
//! own that an LLM can be sent (nothing streaming, no tool call without its result).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::context::Context;
use super::ids::{MessageId, ToolCallId};
use super::message::{Message, MessageStatus, Role};
use super::tree::Place;

/// Why a context cannot be forked where asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForkError {
    #[error("context {context} has no message {message}")]
    UnknownMessage { context: String, message: MessageId },
    #[error("message {0} is still streaming; fork at an earlier message, or once it is complete")]
    Streaming(MessageId),
    #[error("tool calls before message {0} have no result yet; fork after their results, or before the call")]
    UnansweredCalls(MessageId),
}

impl Context {
    /// Copies of the messages up to and including `through` (none: all of them), with new
    /// ids from `new_id`; seqs, content and the rest are kept.
    pub fn fork_messages(
        &self,
        through: Option<MessageId>,
        new_id: &dyn Fn() -> MessageId,
    ) -> Result<Vec<Arc<Message>>, ForkError> {
        let end = match through {
            Some(id) => self
                .messages
                .iter()
                .position(|m| m.id == id)
                .ok_or_else(|| ForkError::UnknownMessage { context: self.id.to_string(), message: id })?,
            None if self.messages.is_empty() => return Ok(Vec::new()),
            None => self.messages.len() - 1,
        };
        let kept = self.messages.iter().take(end + 1);
        let last = &self.messages[end];
        if last.status == MessageStatus::Streaming {
            return Err(ForkError::Streaming(last.id));
        }
        let answered: HashSet<&ToolCallId> =
            kept.clone().filter(|m| m.role == Role::Tool).filter_map(|m| m.tool_call_id.as_ref()).collect();
        if kept.clone().flat_map(|m| &m.tool_calls).any(|call| !answered.contains(&call.id)) {
            return Err(ForkError::UnansweredCalls(last.id));
        }
        // A fork is a conversation of its own, straight: nodes in path order. A summary names
        // the last message it covers by id: its copy names that message's copy.
        let mut copies: HashMap<MessageId, MessageId> = HashMap::new();
        Ok(kept
            .map(|m| {
                let Place { node, parent, .. } = Place::straight(m.seq);
                let id = new_id();
                copies.insert(m.id, id);
                let summary_through = m.summary_through.and_then(|covered| copies.get(&covered).copied());
                Arc::new(Message { id, node, parent, summary_through, ..(**m).clone() })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Seq;
    use crate::domain::{Approval, ContextConfig, ContextId, ContextKey, Place, TenantId, Timestamp, ToolCall};

    fn message(seq: u64, role: Role, text: &str) -> Message {
        let place = Place::straight(Seq::new(seq));
        Message::text(MessageId::new(), place, role, text.into(), Timestamp::from_micros(1))
    }

    #[test]
    fn a_fork_copies_a_prefix_that_an_llm_can_continue() {
        let key = ContextKey::new(TenantId::default_tenant(), ContextId::new());
        let mut ctx = Context::new(key, String::new(), "t".into(), ContextConfig::default(), Timestamp::from_micros(1));
        let mut asking = message(1, Role::Assistant, "");
        asking.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "clock".into(),
            arguments_json: "{}".into(),
            approval: Approval::AutoApproved,
            external: false,
        }];
        let mut answer = message(2, Role::Tool, "12:00");
        answer.tool_call_id = Some("call_1".into());
        let mut streaming = message(3, Role::Assistant, "It is");
        streaming.status = MessageStatus::Streaming;
        for m in [message(0, Role::User, "time?"), asking, answer, streaming] {
            ctx.put_message(Arc::new(m));
        }
        let ids: Vec<MessageId> = ctx.messages.iter().map(|m| m.id).collect();

        let forked = ctx.fork_messages(Some(ids[2]), &MessageId::new).expect("after the tool result");
        assert_eq!(forked.len(), 3);
        assert!(forked.iter().zip(&ids).all(|(m, old)| m.id != *old), "new ids");
        assert_eq!(forked.iter().map(|m| m.seq.get()).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(forked[2].text_content(), "12:00");
        assert_eq!(ctx.fork_messages(Some(ids[0]), &MessageId::new).expect("the first").len(), 1);

        assert_eq!(ctx.fork_messages(Some(ids[1]), &MessageId::new), Err(ForkError::UnansweredCalls(ids[1])));
        assert_eq!(ctx.fork_messages(Some(ids[3]), &MessageId::new), Err(ForkError::Streaming(ids[3])));
        assert_eq!(ctx.fork_messages(None, &MessageId::new), Err(ForkError::Streaming(ids[3])));
        let unknown = MessageId::new();
        assert!(matches!(ctx.fork_messages(Some(unknown), &MessageId::new), Err(ForkError::UnknownMessage { .. })));
    }

    #[test]
    fn a_forked_summary_covers_the_copies_of_what_it_covered() {
        let key = ContextKey::new(TenantId::default_tenant(), ContextId::new());
        let mut ctx = Context::new(key, String::new(), "t".into(), ContextConfig::default(), Timestamp::from_micros(1));
        let first = message(0, Role::User, "hi");
        let mut summary = message(2, Role::Summary, "they said hi");
        summary.summary_through = Some(first.id);
        for m in [first, message(1, Role::Assistant, "hello"), summary] {
            ctx.put_message(Arc::new(m));
        }
        let forked = ctx.fork_messages(None, &MessageId::new).expect("fork");
        assert_eq!(forked[2].summary_through, Some(forked[0].id));
    }
}
