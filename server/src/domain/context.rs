use std::sync::Arc;

use super::ids::{ContextId, MessageId, NodeId, Seq, ToolCallId};
use super::message::{Approval, Message, Role, ToolCall};
use super::phase::{FsmState, Phase};
use super::tenant::{ContextKey, TenantId};
use super::time::Timestamp;
use super::tree::{PathShape, Place, Sibling, Versions};
use super::window::{ContextUsage, Mark, Overflow};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContextConfig {
    pub system_prompt: String,
    /// Empty: the server's default model.
    pub model: String,
    pub auto_approve_tools: Vec<String>,
    /// Tools another service executes for this context.
    pub external_tools: Vec<ExternalTool>,
    /// The model's context window in tokens; 0: the server's figure for the model.
    pub context_window_tokens: u32,
    /// Tokens kept free for the reply, and the most the model may write (sent as
    /// `max_tokens`); 0: a quarter of the window, at most 4,096, and not sent.
    pub max_output_tokens: u32,
    /// `None`: not chosen, the default (as the client set it, so it reads back the same).
    pub overflow: Option<Overflow>,
    /// The share of the room (per mille) past which the oldest messages are summarised;
    /// 0: 800.
    pub summarize_at: u32,
}

/// A tool executed outside ctxd; its result arrives with SubmitToolResult.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ExternalTool {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments object (validated when the context is created).
    pub parameters_json_schema: String,
    pub requires_approval: bool,
    pub idempotent: bool,
    /// 0: the server's default.
    pub timeout_ms: u32,
}

impl ContextConfig {
    /// The model this config asks for: its own, or `default` when it names none.
    pub fn model_or<'a>(&'a self, default: &'a str) -> &'a str {
        if self.model.is_empty() { default } else { &self.model }
    }

    pub fn external_tool(&self, name: &str) -> Option<&ExternalTool> {
        self.external_tools.iter().find(|t| t.name == name)
    }
}

/// A context as the server holds it: everything that is saved, plus the text of a
/// message that is still streaming (deltas are not saved one by one).
///
/// Cloning is cheap: messages live in a persistent vector that shares structure, so
/// readers get a consistent snapshot without copying the conversation or blocking the
/// writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub id: ContextId,
    /// Who owns the context; its id is unique only within the tenant.
    pub tenant: TenantId,
    /// The subject (user or service) that created it; empty when unknown (saved before
    /// authentication existed, or created by a server without it).
    pub created_by: String,
    pub title: String,
    pub config: ContextConfig,
    pub phase: Phase,
    /// +1 on every durable change.
    pub revision: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The active path, oldest first; `messages[i].seq == i`.
    pub messages: imbl::Vector<Arc<Message>>,
    /// client_message_id → seq of the user message that carried it. Keys of messages that
    /// left the active path stay until the context is reloaded: a resend still adds nothing.
    /// User messages sent during a run to go into the next turn, oldest first (status
    /// QUEUED; their place in the tree is given when they join the active path).
    pub queued: imbl::Vector<Arc<Message>>,
    pub client_ids: imbl::HashMap<String, Seq>,
    /// The number the next new message gets.
    pub next_node: NodeId,
    /// The branch the active path takes (replaced, never changed in place, when it changes:
    /// a save compares pointers to know whether to write it).
    pub shape: Arc<PathShape>,
    /// Message id → seq, for finding a message on the active path. Entries of messages that
    /// left the path may stay; [`Context::on_path`] checks.
    pub by_id: imbl::HashMap<MessageId, Seq>,
    /// Running token sums along the active path: `marks[i]` belongs to `messages[i]`.
    pub marks: imbl::Vector<Mark>,
    /// The provider's token count per 1,000 of ctxd's, from the last reply's usage; 1,000
    /// until a provider reports one.
    pub calibration: u32,
    /// What the next request holds; the runtime works it out after every change.
    pub usage: ContextUsage,
}

/// What a list of contexts shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSummary {
    pub id: ContextId,
    pub title: String,
    pub state: FsmState,
    pub revision: u64,
    pub message_count: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where a context stands in a list of contexts: most recently updated first, ties broken
/// by id. A page of a list ends at a position; the next page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    pub updated_at: Timestamp,
    pub id: ContextId,
}

impl ContextSummary {
    pub fn position(&self) -> ListPosition {
        ListPosition { updated_at: self.updated_at, id: self.id }
    }
}

impl Context {
    /// A new, empty context at revision 1 (its creation is its first saved change).
    pub fn new(key: ContextKey, created_by: String, title: String, config: ContextConfig, now: Timestamp) -> Self {
        let ContextKey { tenant, id } = key;
        Self {
            id,
            tenant,
            created_by,
            title,
            config,
            phase: Phase::Idle,
            revision: 1,
            created_at: now,
            updated_at: now,
            messages: imbl::Vector::new(),
            client_ids: imbl::HashMap::new(),
            queued: imbl::Vector::new(),
            next_node: NodeId::default(),
            shape: Arc::default(),
            by_id: imbl::HashMap::new(),
            marks: imbl::Vector::new(),
            calibration: 1000,
            usage: ContextUsage::default(),
        }
    }

    /// The place of the `k`-th message (from 0) appended after the active path's end now.
    pub fn place(&self, k: u64) -> Place {
        let parent = match k {
            0 => self.messages.last().map(|m| m.node),
            _ => Some(self.next_node.plus(k - 1)),
        };
        Place { seq: self.next_seq().plus(k), node: self.next_node.plus(k), parent }
    }

    /// The place of a new version of the message at depth `seq` of the active path: a new
    /// child of the message before it.
    pub fn place_at(&self, seq: Seq) -> Place {
        let parent = seq.before().and_then(|above| self.message(above)).map(|m| m.node);
        Place { seq, node: self.next_node, parent }
    }

    /// Message `id`, if it is on the active path.
    pub fn on_path(&self, id: MessageId) -> Option<&Message> {
        self.by_id.get(&id).and_then(|seq| self.message(*seq)).filter(|m| m.id == id)
    }

    /// How the message at depth `seq` of the active path stands among its versions.
    pub fn versions(&self, seq: Seq) -> Versions {
        let parent = seq.before().and_then(|above| self.message(above)).map(|m| m.id);
        match (self.shape.forks.get(&seq), self.message(seq)) {
            (Some(group), Some(message)) => Versions::within(group, message.node, parent),
            _ => Versions::only(parent),
        }
    }

    /// The versions at depth `seq` (children of the message before it), when there are others
    /// than the active path's.
    pub fn forks_at(&self, seq: Seq) -> Option<&[Sibling]> {
        self.shape.forks.get(&seq).map(|group| &**group)
    }

    pub fn key(&self) -> ContextKey {
        ContextKey::new(self.tenant.clone(), self.id)
    }

    pub fn state(&self) -> FsmState {
        self.phase.state()
    }

    /// The depth a message appended to the active path gets: its length.
    pub fn next_seq(&self) -> Seq {
        Seq::of_index(self.messages.len())
    }

    /// The active path's message at depth `seq`.
    pub fn message(&self, seq: Seq) -> Option<&Message> {
        self.messages.get(seq.index()).map(|m| m.as_ref())
    }

    /// The active path's messages at depths `from` up to (not including) `to`, oldest first,
    /// as far as the path goes. Found by position in the path's tree: the messages before
    /// `from` are not walked (`Iterator::skip` would step through each of them).
    pub fn path_between(&self, from: Seq, to: Seq) -> impl Iterator<Item = &Arc<Message>> {
        let end = to.index().min(self.messages.len());
        self.messages.focus().narrow(from.index().min(end)..end).into_iter()
    }

    /// The active path's messages from depth `from` to its end.
    pub fn path_from(&self, from: Seq) -> impl Iterator<Item = &Arc<Message>> {
        self.path_between(from, self.next_seq())
    }

    pub fn summary(&self) -> ContextSummary {
        ContextSummary {
            id: self.id,
            title: self.title.clone(),
            state: self.state(),
            revision: self.revision,
            message_count: self.next_seq().get(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// Whether the context waits on a client: it rests, or every call it still waits for is
    /// an external tool's, whose result another service must deliver.
    pub fn awaits_client(&self) -> bool {
        self.phase.is_resting()
            || (matches!(self.phase, Phase::ExecutingTools { .. })
                && self.pending_tool_calls().iter().all(|call| call.external))
    }

    /// Ids of the tool calls of message `seq` that already have a tool message answering them.
    pub fn answered_calls(&self, seq: Seq) -> std::collections::HashSet<&ToolCallId> {
        self.path_from(seq.next()).filter(|m| m.role == Role::Tool).filter_map(|m| m.tool_call_id.as_ref()).collect()
    }

    /// The tool calls a client is waiting on: undecided ones while awaiting approval, allowed
    /// ones without a result while tools execute.
    pub fn pending_tool_calls(&self) -> Vec<ToolCall> {
        match self.phase {
            Phase::AwaitingToolApproval { message } => self
                .message(message)
                .map(|m| m.tool_calls.iter().filter(|c| c.approval == Approval::Pending).cloned().collect())
                .unwrap_or_default(),
            Phase::ExecutingTools { message } => {
                self.message(message).map(|m| self.open_calls(message, &m.tool_calls)).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Those of `calls` (the calls of message `seq`, perhaps with new decisions) that may run
    /// and have no result yet.
    pub fn open_calls(&self, seq: Seq, calls: &[ToolCall]) -> Vec<ToolCall> {
        let answered = self.answered_calls(seq);
        calls.iter().filter(|c| c.approval.allows_run() && !answered.contains(&c.id)).cloned().collect()
    }
}
