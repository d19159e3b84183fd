//! A change to a context, and the one place that applies it.

use std::sync::Arc;

use super::branch::Branch;
use super::context::{Context, ContextConfig};
use super::ids::{MessageId, Seq};
use super::message::Message;
use super::phase::Phase;
use super::time::Timestamp;
use super::tree::{Segment, Sibling};
use super::window::Mark;

/// One saved transition: the new phase, the messages that are new or changed, and a new
/// title or config when those change. Messages can only be added to a change, so nothing
/// can carry messages without the transition that saves them.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub phase: Phase,
    /// How the active path moves first, if it does.
    pub path: Option<PathMove>,
    pub messages: Vec<Arc<Message>>,
    pub title: Option<String>,
    pub config: Option<ContextConfig>,
    /// How the queue of messages sent during a run changes, if it does.
    pub queue: Option<QueueChange>,
    /// A new calibration of ctxd's token count (see [`Context::calibration`]).
    pub calibration: Option<u32>,
}

/// A change to the messages waiting for the next turn.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueChange {
    /// One more, last.
    Push(Arc<Message>),
    /// All of them joined the active path (they are among the change's messages).
    Drain,
}

/// How a change moves the active path, before its messages are put.
#[derive(Debug, Clone, PartialEq)]
pub enum PathMove {
    /// Keep the first `n` messages; the message put next at depth `n` is a new version of
    /// the one cut there (EditMessage, RegenerateReply).
    Cut(Seq),
    /// Follow another branch of the tree (SwitchBranch).
    Switch(Box<Branch>),
}

impl Change {
    /// A move to `phase` that changes nothing else (yet).
    pub fn to(phase: Phase) -> Self {
        Self { phase, path: None, messages: Vec::new(), title: None, config: None, queue: None, calibration: None }
    }

    /// Also moves the active path first.
    pub fn moving(mut self, path: PathMove) -> Self {
        self.path = Some(path);
        self
    }

    /// Also saves `message` (new, or replacing the one with the same seq).
    pub fn with(mut self, message: Message) -> Self {
        self.messages.push(Arc::new(message));
        self
    }

    pub fn with_all(self, messages: impl IntoIterator<Item = Message>) -> Self {
        messages.into_iter().fold(self, Change::with)
    }

    /// Also adds `message` to the queue for the next turn.
    pub fn enqueued(mut self, message: Message) -> Self {
        self.queue = Some(QueueChange::Push(Arc::new(message)));
        self
    }

    /// Also empties the queue: its messages are among this change's.
    pub fn draining(mut self) -> Self {
        self.queue = Some(QueueChange::Drain);
        self
    }

    pub fn calibrated(mut self, calibration: Option<u32>) -> Self {
        self.calibration = calibration;
        self
    }

    pub fn titled(mut self, title: Option<String>) -> Self {
        self.title = title;
        self
    }

    pub fn configured(mut self, config: Option<ContextConfig>) -> Self {
        self.config = config;
        self
    }
}

impl Context {
    /// The context after `change`, saved at `now`: one revision more. `self` is untouched,
    /// so a save that fails leaves memory as it was.
    pub fn apply(&self, change: &Change, now: Timestamp) -> Self {
        let mut next = self.clone();
        match &change.path {
            Some(PathMove::Cut(keep)) => next.cut(*keep),
            Some(PathMove::Switch(branch)) => next.switch(branch),
            None => {}
        }
        for message in &change.messages {
            next.put_message(Arc::clone(message));
        }
        next.phase = change.phase.clone();
        if let Some(title) = &change.title {
            next.title.clone_from(title);
        }
        if let Some(config) = &change.config {
            next.config = config.clone();
        }
        match &change.queue {
            Some(QueueChange::Push(message)) => next.queued.push_back(Arc::clone(message)),
            Some(QueueChange::Drain) => next.queued.clear(),
            None => {}
        }
        if let Some(calibration) = change.calibration {
            next.calibration = calibration;
        }
        next.revision += 1;
        next.updated_at = now.max(self.updated_at);
        next
    }

    /// Appends streamed text, in memory only, to the message that is streaming; returns its
    /// id, or `None` when no message streams. Copies the message only if a reader shares it.
    pub fn append_delta(&mut self, text: &str) -> Option<MessageId> {
        let Phase::StreamingLlmResponse { message, .. } = self.phase else {
            return None;
        };
        let streaming = self.messages.get_mut(message.index())?;
        let streaming = Arc::make_mut(streaming);
        streaming.push_text(text);
        Some(streaming.id)
    }

    /// The id of the message that is streaming, if one is.
    pub fn streaming_message_id(&self) -> Option<MessageId> {
        let Phase::StreamingLlmResponse { message, .. } = self.phase else {
            return None;
        };
        self.message(message).map(|m| m.id)
    }

    /// Replaces the message with the same seq, or appends it when it is the next one.
    pub fn put_message(&mut self, message: Arc<Message>) {
        if let Some(client_id) = &message.client_message_id {
            self.client_ids.insert(client_id.clone(), message.seq);
        }
        self.by_id.insert(message.id, message.seq);
        let i = message.seq.index();
        if i < self.messages.len() {
            let replaced = self.messages.set(i, message);
            if replaced.id != self.messages[i].id {
                self.by_id.remove(&replaced.id);
            }
            self.remark_from(i);
        } else {
            self.join(message);
        }
    }

    /// Appends `message` (a new one, or one saved on another branch) to the active path. The
    /// shape is replaced only if the message starts a segment or is a new version.
    fn join(&mut self, message: Arc<Message>) {
        let after = self.messages.last().map(|m| m.node);
        let starts_segment = self.shape.segments.is_empty() || after.is_none_or(|a| a.next() != message.node);
        let new_version = self.shape.forks.get(&message.seq).is_some_and(|g| !g.iter().any(|s| s.node == message.node));
        if starts_segment || new_version {
            let shape = Arc::make_mut(&mut self.shape);
            if starts_segment {
                shape.segments.push(Segment { seq: message.seq, node: message.node });
            }
            if let Some(group) = shape.forks.get(&message.seq).filter(|_| new_version) {
                let grown = group.iter().copied().chain([Sibling { node: message.node, id: message.id }]).collect();
                shape.forks.insert(message.seq, grown);
            }
        }
        self.next_node = self.next_node.max(message.node.next());
        self.marks.push_back(Mark::after(self.marks.last(), &message));
        self.messages.push_back(message);
    }

    /// Works the marks out again from depth `i` on, after the message there was replaced;
    /// the ones after it only when its count changed (a message replaced mid-path, which is
    /// rare: usually the replaced one is the last).
    fn remark_from(&mut self, mut i: usize) {
        while let Some(message) = self.messages.get(i) {
            let mark = Mark::after(i.checked_sub(1).and_then(|p| self.marks.get(p)), message);
            if self.marks.get(i) == Some(&mark) {
                return;
            }
            self.marks.set(i, mark);
            i += 1;
        }
    }

    /// Cuts the active path back to its first `keep` messages; the one cut at `keep` becomes
    /// the first of the versions there, if there were none.
    fn cut(&mut self, keep: Seq) {
        let cut = self.message(keep).map(|m| Sibling { node: m.node, id: m.id });
        let shape = Arc::make_mut(&mut self.shape);
        if let Some(cut) = cut
            && !shape.forks.contains_key(&keep)
        {
            shape.forks.insert(keep, Arc::from([cut]));
        }
        shape.truncate(keep);
        self.messages.truncate(keep.index());
        self.marks.truncate(keep.index());
    }

    /// Follows `branch`: the path's first `branch.keep` messages, then its tail.
    fn switch(&mut self, branch: &Branch) {
        Arc::make_mut(&mut self.shape).truncate(branch.keep);
        self.messages.truncate(branch.keep.index());
        self.marks.truncate(branch.keep.index());
        for message in &branch.tail {
            self.put_message(Arc::clone(message));
        }
        let shape = Arc::make_mut(&mut self.shape);
        for (seq, group) in &branch.forks {
            shape.forks.insert(*seq, Arc::clone(group));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ContextId, ContextKey, MessageStatus, Place, Role, TenantId};

    fn message(seq: u64, text: &str) -> Message {
        let place = Place::straight(Seq::new(seq));
        Message::text(MessageId::new(), place, Role::Assistant, text.into(), Timestamp::from_micros(3))
    }

    #[test]
    fn ranges_of_the_path_are_read_by_position_and_stop_at_its_end() {
        let ctx = Context::new(
            ContextKey::new(TenantId::default_tenant(), ContextId::new()),
            String::new(),
            "path".into(),
            ContextConfig::default(),
            Timestamp::from_micros(5),
        );
        // Enough messages for the path to be a tree of chunks, not one chunk.
        let change = (0..300).fold(Change::to(Phase::Idle), |c, n| c.with(message(n, &n.to_string())));
        let ctx = ctx.apply(&change, Timestamp::from_micros(6));
        let texts = |range: Vec<&Arc<Message>>| range.iter().map(|m| m.text_content()).collect::<Vec<_>>();
        assert_eq!(texts(ctx.path_between(Seq::new(250), Seq::new(253)).collect()), ["250", "251", "252"]);
        assert_eq!(texts(ctx.path_from(Seq::new(298)).collect()), ["298", "299"]);
        assert_eq!(ctx.path_between(Seq::new(299), Seq::new(1000)).count(), 1, "clamped to the path's end");
        assert_eq!(ctx.path_from(Seq::new(400)).count(), 0);
        assert_eq!(ctx.path_between(Seq::new(5), Seq::new(2)).count(), 0);
    }

    #[test]
    fn a_change_moves_phase_messages_title_and_config_and_one_revision() {
        let ctx = Context::new(
            ContextKey::new(TenantId::default_tenant(), ContextId::new()),
            String::new(),
            "old".into(),
            ContextConfig::default(),
            Timestamp::from_micros(5),
        );
        let config = ContextConfig { system_prompt: "brief".into(), ..ContextConfig::default() };
        let change = Change::to(Phase::StreamingLlmResponse { attempt: 1, message: Seq::new(0) })
            .with(message(0, "a"))
            .titled(Some("new".into()))
            .configured(Some(config.clone()));
        let next = ctx.apply(&change, Timestamp::from_micros(4));
        assert_eq!((next.revision, next.title.as_str(), &next.config), (2, "new", &config));
        assert_eq!(next.updated_at, ctx.updated_at, "time never goes back");
        assert_eq!(ctx.revision, 1, "the original is untouched");

        let mut streaming = next.clone();
        assert_eq!(streaming.append_delta("bc"), Some(next.messages[0].id));
        assert_eq!(streaming.messages[0].text_content(), "abc");
        assert_eq!(next.messages[0].text_content(), "a", "a reader's copy is not changed under it");
        assert_eq!(streaming.revision, next.revision, "deltas are not saved changes");

        let mut replaced = message(0, "abc, done");
        replaced.status = MessageStatus::Complete;
        let done = streaming
            .apply(&Change::to(Phase::Idle).with(replaced).with(message(1, "more")), Timestamp::from_micros(9));
        assert_eq!(done.messages.iter().map(|m| m.text_content()).collect::<Vec<_>>(), ["abc, done", "more"]);
        assert_eq!(
            (done.title.as_str(), done.updated_at),
            ("new", Timestamp::from_micros(9)),
            "unchanged unless named"
        );
        let mut idle = done.clone();
        assert_eq!(idle.append_delta("x"), None, "no message streams");
    }
}
