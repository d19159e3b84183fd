use super::ids::{MessageId, NodeId, Seq, ToolCallId};
use super::time::Timestamp;
use super::tool::ToolOutcome;
use super::tree::Place;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    System,
    Tool,
    /// A summary of the earlier conversation, written by the model when the history outgrew
    /// its context window; the model is sent it instead of the messages it covers.
    Summary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Text is still arriving.
    Streaming,
    Complete,
    /// The run was cancelled while this message streamed; its text so far is kept.
    Cancelled,
    /// The attempt behind this message failed or was interrupted; never sent to the LLM again.
    Error,
    /// A user message sent during a run, waiting for it to end (not on the active path yet).
    Queued,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    Text(String),
    ImageUrl(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Pending,
    Approved,
    Denied,
    /// No approval needed: the tool does not require it, or the context auto-approves it.
    AutoApproved,
}

impl Approval {
    /// Whether the call may run (or already ran).
    pub fn allows_run(self) -> bool {
        matches!(self, Approval::Approved | Approval::AutoApproved)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: ToolCallId,
    pub name: String,
    pub arguments_json: String,
    pub approval: Approval,
    /// Executed by another service, which delivers the result with SubmitToolResult.
    pub external: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    /// Depth in the conversation tree, from 0: on the active path, its position.
    pub seq: Seq,
    /// Its number in the context, in creation order; also the storage key, so saving one
    /// message never rewrites the others.
    pub node: NodeId,
    /// The node of the message it follows; `None` for a first message.
    pub parent: Option<NodeId>,
    pub role: Role,
    pub content: Vec<ContentPart>,
    pub tool_calls: Vec<ToolCall>,
    /// On tool messages: the call this message answers.
    pub tool_call_id: Option<ToolCallId>,
    /// On user messages: the client's idempotency key.
    pub client_message_id: Option<String>,
    pub status: MessageStatus,
    /// On tool messages: how the call ended.
    pub tool_outcome: Option<ToolOutcome>,
    pub usage: Option<Usage>,
    pub duration_ms: u64,
    /// On assistant messages: the model that wrote it, as the provider reported it (as it
    /// was asked for until the provider says).
    pub model: String,
    pub created_at: Timestamp,
    /// What the message costs in the model's context window, counted once when it is saved;
    /// 0 when it was saved before ctxd counted (then estimated from its length).
    pub tokens: u32,
    /// On summaries: the last message of the active path the summary covers.
    pub summary_through: Option<MessageId>,
}

impl Message {
    /// A complete message holding one text part, at `place`.
    pub fn text(id: MessageId, place: Place, role: Role, text: String, now: Timestamp) -> Self {
        let Place { seq, node, parent } = place;
        Self {
            id,
            seq,
            node,
            parent,
            role,
            content: vec![ContentPart::Text(text)],
            tool_calls: Vec::new(),
            tool_call_id: None,
            client_message_id: None,
            status: MessageStatus::Complete,
            tool_outcome: None,
            usage: None,
            duration_ms: 0,
            model: String::new(),
            created_at: now,
            tokens: 0,
            summary_through: None,
        }
    }

    /// On tool messages: the tool failed, timed out, or was denied, cancelled or interrupted.
    pub fn is_error(&self) -> bool {
        self.tool_outcome.is_some_and(ToolOutcome::is_error)
    }

    pub fn place(&self) -> Place {
        Place { seq: self.seq, node: self.node, parent: self.parent }
    }

    /// All text parts joined.
    pub fn text_content(&self) -> String {
        self.content
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text(text) => Some(text.as_str()),
                ContentPart::ImageUrl(_) => None,
            })
            .collect()
    }

    /// Appends streamed text to the last text part (adding one if there is none).
    pub fn push_text(&mut self, delta: &str) {
        match self.content.last_mut() {
            Some(ContentPart::Text(text)) => text.push_str(delta),
            _ => self.content.push(ContentPart::Text(delta.to_owned())),
        }
    }
}
