//! Edits, regenerates and switches, against a tree kept the way storage keeps it.

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::*;
use crate::domain::Seq;
use crate::domain::{Child, NodeId, PathMove, TreeReader, Versions};

/// Every message ever saved, and when each last joined the active path: what storage holds.
#[derive(Default)]
struct Saved {
    messages: BTreeMap<NodeId, Message>,
    active_at: BTreeMap<NodeId, u64>,
}

impl Saved {
    /// Records what `change` saved, going from `before` to `after`.
    fn record(&mut self, before: &Context, after: &Context, change: &crate::domain::Change) {
        for message in &change.messages {
            if message.node >= before.next_node {
                self.active_at.insert(message.node, after.revision);
            }
            self.messages.insert(message.node, (**message).clone());
        }
        if let Some(PathMove::Switch(branch)) = &change.path {
            for message in &branch.tail {
                self.active_at.insert(message.node, after.revision);
            }
        }
    }
}

impl TreeReader for Saved {
    type Error = Infallible;

    async fn node_of(&self, id: MessageId) -> Result<Option<NodeId>, Infallible> {
        Ok(self.messages.values().find(|m| m.id == id).map(|m| m.node))
    }

    async fn message(&self, node: NodeId) -> Result<Message, Infallible> {
        Ok(self.messages[&node].clone())
    }

    async fn children(&self, parent: Option<NodeId>) -> Result<Vec<Child>, Infallible> {
        Ok(self
            .messages
            .values()
            .filter(|m| m.parent == parent)
            .map(|m| Child { node: m.node, id: m.id, active_at: self.active_at[&m.node] })
            .collect())
    }
}

struct Tree {
    h: Harness,
    saved: Saved,
}

impl Tree {
    fn new() -> Self {
        Self { h: Harness::new(ContextConfig::default()), saved: Saved::default() }
    }

    fn try_apply(&mut self, command: Command) -> Result<Outcome, Rejection> {
        let before = self.h.ctx.clone();
        let outcome = self.h.try_apply(command)?;
        if let Some(change) = outcome.change() {
            self.saved.record(&before, &self.h.ctx, change);
        }
        Ok(outcome)
    }

    fn apply(&mut self, command: Command) -> Outcome {
        self.try_apply(command).expect("command accepted")
    }

    fn send(&mut self, text: &str) {
        self.apply(Command::Send {
            content: text.into(),
            client_message_id: None,
            expected_revision: None,
            on_busy: Default::default(),
        });
    }

    /// Runs the LLM part of a turn: one streamed reply of `text`, to rest.
    fn reply(&mut self, text: &str) {
        if self.h.state() == FsmState::ProcessingUserMessage {
            self.apply(Command::Continue);
        }
        self.apply(Command::LlmDelta { text: text.into() });
        self.apply(Command::LlmFinished { reply: LlmReply::default() });
        self.apply(Command::Continue);
        assert_eq!(self.h.state(), FsmState::Idle);
    }

    fn texts(&self) -> Vec<String> {
        self.h.ctx.messages.iter().map(|m| m.text_content()).collect()
    }

    fn switch(&mut self, id: MessageId) -> Outcome {
        let branch = futures::executor::block_on(self.h.ctx.branch_through(&self.saved, id)).expect("known message");
        self.apply(Command::SwitchBranch { branch, expected_revision: None })
    }
}

#[test]
fn edits_and_regenerates_add_versions_and_switches_move_between_them() {
    let mut t = Tree::new();
    t.send("hello");
    t.reply("first answer");
    t.send("more");
    t.reply("second answer");
    let (hello, first, more) = (t.h.ctx.messages[0].id, t.h.ctx.messages[1].id, t.h.ctx.messages[2].id);
    assert_eq!(t.h.ctx.versions(Seq::new(1)), Versions::only(Some(hello)));

    // Regenerate the first answer: the path is cut there at once, and the new reply is a version.
    let regenerated = t.apply(Command::Regenerate { message_id: Some(first), expected_revision: None });
    assert_eq!(regenerated.effects(), vec![Effect::CallLlm { attempt: 1 }]);
    assert_eq!(t.texts(), ["hello"]);
    t.reply("another answer");
    assert_eq!(t.texts(), ["hello", "another answer"]);
    let another = t.h.ctx.messages[1].id;
    assert_eq!(
        t.h.ctx.versions(Seq::new(1)),
        Versions { parent: Some(hello), count: 2, index: 1, previous: Some(first), next: None }
    );

    // Edit the first message: a new user version, and a run from it.
    let edited = t.apply(Command::Edit {
        message_id: hello,
        content: "hi".into(),
        client_message_id: Some("edit-1".into()),
        expected_revision: None,
    });
    assert_eq!(edited.effects(), vec![Effect::Continue]);
    assert_eq!(t.h.state(), FsmState::ProcessingUserMessage);
    assert_eq!(t.texts(), ["hi"]);
    assert_eq!(t.h.ctx.versions(Seq::new(0)).count, 2);
    t.reply("answer to hi");
    let again = t.apply(Command::Edit {
        message_id: t.h.ctx.messages[0].id,
        content: "hi".into(),
        client_message_id: Some("edit-1".into()),
        expected_revision: None,
    });
    assert_eq!(again, Outcome::default(), "a resent edit adds nothing");

    // Back to the first version of the first message: its branch as last followed.
    let revision = t.h.ctx.revision;
    assert!(t.switch(hello).change().is_some());
    assert_eq!(t.texts(), ["hello", "another answer"], "the most recently active reply");
    assert_eq!(t.h.ctx.revision, revision + 1, "one saved change");
    assert_eq!(t.h.ctx.versions(Seq::new(0)).index, 0);
    assert_eq!(t.h.ctx.versions(Seq::new(1)).count, 2);
    // And to the old reply, which continues down to what followed it.
    t.switch(first);
    assert_eq!(t.texts(), ["hello", "first answer", "more", "second answer"]);
    assert_eq!(t.h.ctx.on_path(more).map(|m| m.seq), Some(Seq::new(2)));
    assert_eq!(t.switch(more), Outcome::default(), "a message on the path changes nothing");
    assert_eq!(t.h.ctx.on_path(another), None, "off the path now");

    // A send continues the active branch; a switch back finds it again.
    t.send("third");
    t.reply("third answer");
    t.switch(another);
    assert_eq!(t.texts(), ["hello", "another answer"]);
    t.switch(first);
    assert_eq!(t.texts().len(), 6, "the send was saved on this branch");
    assert_eq!(t.h.ctx.shape.segments.len(), 2, "one jump: after message 3, the send's nodes");
}

#[test]
fn branch_actions_are_refused_mid_run_and_for_the_wrong_message() {
    let mut t = Tree::new();
    t.send("hello");
    t.reply("answer");
    let (hello, answer) = (t.h.ctx.messages[0].id, t.h.ctx.messages[1].id);
    let edit =
        |id| Command::Edit { message_id: id, content: "x".into(), client_message_id: None, expected_revision: None };

    assert!(matches!(t.try_apply(edit(answer)), Err(Rejection::WrongRole { role: Role::Assistant, .. })));
    let regenerate = |id| Command::Regenerate { message_id: Some(id), expected_revision: None };
    assert!(matches!(t.try_apply(regenerate(hello)), Err(Rejection::WrongRole { role: Role::User, .. })));
    let unknown = MessageId::from_bytes([9; 16]);
    assert_eq!(t.try_apply(edit(unknown)), Err(Rejection::NotOnPath { message: unknown }));
    let stale = Command::Regenerate { message_id: None, expected_revision: Some(1) };
    assert!(matches!(t.try_apply(stale), Err(Rejection::StaleRevision { .. })));

    t.send("again");
    assert!(matches!(t.try_apply(edit(hello)), Err(Rejection::WrongState { action: "EditMessage", .. })));
    let switch = Command::SwitchBranch { branch: None, expected_revision: None };
    assert!(matches!(t.try_apply(switch), Err(Rejection::WrongState { action: "SwitchBranch", .. })));
    assert_eq!(t.texts(), ["hello", "answer", "again"], "nothing changed");

    // A reply that failed: regenerating with no id generates the missing one, no version.
    t.apply(Command::Continue);
    t.apply(Command::LlmFailed { error: "down".into(), transient: false, retry_after_ms: None });
    assert_eq!(t.h.state(), FsmState::Failed);
    let outcome = t.apply(Command::Regenerate { message_id: None, expected_revision: None });
    assert_eq!(outcome.change().and_then(|c| c.path.as_ref()), None, "nothing is cut");
    t.reply("late answer");
    assert_eq!(t.texts(), ["hello", "answer", "again", "late answer"]);
    assert_eq!(t.h.ctx.versions(Seq::new(3)).count, 1);
}

#[test]
fn a_switch_from_failed_rests_idle_and_the_abandoned_replies_stay_reachable() {
    let mut t = Tree::new();
    t.send("hello");
    t.reply("answer");
    let answer = t.h.ctx.messages[1].id;
    t.apply(Command::Regenerate { message_id: None, expected_revision: None });
    t.apply(Command::LlmFailed { error: "down".into(), transient: false, retry_after_ms: None });
    assert_eq!((t.h.state(), t.texts()), (FsmState::Failed, vec!["hello".to_owned()]));
    // The old reply is still a version at the path's end.
    assert_eq!(t.h.ctx.forks_at(Seq::new(1)).map(<[_]>::len), Some(1));
    t.switch(answer);
    assert_eq!((t.h.state(), t.texts()), (FsmState::Idle, vec!["hello".to_owned(), "answer".to_owned()]));
}
