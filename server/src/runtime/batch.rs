//! Transitions of one context that happen in the same instant, staged in memory and then
//! saved as one atomic batch: a command's automatic follow-ups (`Effect::Continue`), and
//! results of the run's tasks that were already waiting when the actor got to them.
//!
//! Every transition keeps its own revision and its own events; only the fsync is shared.
//! Nothing staged is visible to anyone before the batch is on disk, so "saved after every
//! transition" still holds for everything a client can observe.

use std::sync::Arc;

use crate::domain::{Change, Context, Message, MessageId, MessageStatus, PathMove};
use crate::fsm::{self, Command, Effect, Env, Outcome, Rejection};
use crate::store::Save;

/// What the batch did, in order, to publish once it is saved.
pub(super) enum Step {
    Transition {
        before: Arc<Context>,
        after: Arc<Context>,
        /// How the active path moved before `messages` were put, if it did.
        moved: Option<PathMove>,
        messages: Vec<Arc<Message>>,
    },
    /// Streamed text, held in memory only; `ctx` already holds it.
    Streamed { ctx: Arc<Context>, message_id: MessageId, text: String },
}

pub(super) struct Batch {
    saved: Arc<Context>,
    ctx: Arc<Context>,
    steps: Vec<Step>,
    /// Effects other than `Continue`, in the order the transitions asked for them.
    effects: Vec<Effect>,
    continues: usize,
    commands: usize,
}

impl Batch {
    /// A batch starting from `saved`, the state that is on disk.
    pub fn new(saved: Arc<Context>) -> Self {
        Self { ctx: Arc::clone(&saved), saved, steps: Vec::new(), effects: Vec::new(), continues: 0, commands: 0 }
    }

    /// Applies `command` to the staged state.
    pub fn apply(&mut self, command: Command, env: &Env) -> Result<(), Rejection> {
        let outcome = fsm::apply(&self.ctx, command, env)?;
        self.commands += 1;
        let effects = match outcome {
            Outcome::Unchanged(effects) => effects,
            Outcome::Streamed(text) => {
                self.stream(text);
                Vec::new()
            }
            Outcome::Changed(change, effects) => {
                self.transition(change, env);
                effects
            }
        };
        for effect in effects {
            match effect {
                Effect::Continue => self.continues += 1,
                other => self.effects.push(other),
            }
        }
        Ok(())
    }

    /// Takes one pending `Continue`, if a transition asked for one.
    pub fn take_continue(&mut self) -> bool {
        let pending = self.continues > 0;
        self.continues = self.continues.saturating_sub(1);
        pending
    }

    /// Transitions staged so far.
    pub fn transitions(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Transition { .. })).count()
    }

    /// Commands applied so far.
    pub fn len(&self) -> usize {
        self.commands
    }

    /// True once a transition asked for work outside the actor (an LLM call, tools, an
    /// abort): the batch ends there, because that work starts only once it is saved.
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// The staged state.
    pub fn current(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// What to write, or `None` when nothing needs saving (only streamed text): the metadata
    /// of the last transition, the newest version of every message any transition changed,
    /// and the messages a switch brought onto the active path.
    pub fn save(&self) -> Option<Save> {
        let mut messages: Vec<Arc<Message>> = Vec::new();
        let mut joined: Vec<Arc<Message>> = Vec::new();
        let mut after = None;
        for step in &self.steps {
            if let Step::Transition { after: ctx, messages: changed, moved, .. } = step {
                for message in changed {
                    match messages.iter_mut().find(|m| m.node == message.node) {
                        Some(older) => *older = Arc::clone(message),
                        None => messages.push(Arc::clone(message)),
                    }
                }
                if let Some(PathMove::Switch(branch)) = moved {
                    joined.extend(branch.tail.iter().cloned());
                }
                after = Some(Arc::clone(ctx));
            }
        }
        let after = after?;
        Some(Save { before: Some(Arc::clone(&self.saved)), after, messages, joined })
    }

    /// The final state, the steps to publish and the effects to start once saved, with a
    /// `Continue` for each automatic step the batch had no room left for.
    pub fn finish(self) -> (Arc<Context>, Vec<Step>, Vec<Effect>) {
        let mut effects = self.effects;
        effects.extend(std::iter::repeat_n(Effect::Continue, self.continues));
        (self.ctx, self.steps, effects)
    }

    /// Counts the tokens of the messages `change` saves (here, once: the count is saved with
    /// them), applies it, and works out what the next request would hold.
    fn transition(&mut self, mut change: Change, env: &Env) {
        // A reply that starts streaming is counted when it is saved whole (until then its
        // length stands in for it).
        for message in change.messages.iter_mut().filter(|m| m.status != MessageStatus::Streaming) {
            let tokens = env.window.count(&self.ctx, message);
            if message.tokens != tokens {
                Arc::make_mut(message).tokens = tokens;
            }
        }
        let mut after = self.ctx.apply(&change, env.now);
        after.usage = after.usage(&env.window.budget(&after));
        let after = Arc::new(after);
        let before = std::mem::replace(&mut self.ctx, Arc::clone(&after));
        self.steps.push(Step::Transition { before, after, moved: change.path, messages: change.messages });
    }

    /// Streamed text lives in memory until the message is saved whole. Text that arrives
    /// in the same instant as the previous delta joins it: watchers see the same text at
    /// the same moment, in one event instead of several.
    fn stream(&mut self, text: String) {
        let mut joined = String::new();
        if let Some(Step::Streamed { message_id, .. }) = self.steps.last()
            && self.ctx.streaming_message_id() == Some(*message_id)
            && let Some(Step::Streamed { text: earlier, .. }) = self.steps.pop()
        {
            // Dropping the popped step's copy of the context leaves the one below unshared,
            // so appending does not copy the message.
            joined = earlier;
        }
        let Some(message_id) = Arc::make_mut(&mut self.ctx).append_delta(&text) else {
            return;
        };
        joined.push_str(&text);
        self.steps.push(Step::Streamed { ctx: Arc::clone(&self.ctx), message_id, text: joined });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ToolPolicy;
    use crate::domain::{ContextConfig, ContextId, ContextKey, Role, TenantId, Timestamp};
    use crate::fsm::{LlmReply, ToolCatalog, WordWindow};

    struct NoTools;
    impl ToolCatalog for NoTools {
        fn policy(&self, _: &str) -> Option<ToolPolicy> {
            None
        }
    }

    fn env(tools: &NoTools) -> Env<'_> {
        Env {
            now: Timestamp::now(),
            tools,
            max_llm_attempts: 3,
            default_model: "m",
            new_id: &MessageId::new,
            window: &WordWindow::UNBOUNDED,
        }
    }

    fn send(text: &str) -> Command {
        Command::Send {
            content: text.into(),
            client_message_id: None,
            expected_revision: None,
            on_busy: Default::default(),
        }
    }

    /// A whole plain turn in one batch: every transition keeps its revision, one save holds
    /// the final metadata and the newest version of each message.
    fn new_context() -> Arc<Context> {
        let key = ContextKey::new(TenantId::default_tenant(), ContextId::new());
        Arc::new(Context::new(key, String::new(), "t".into(), ContextConfig::default(), Timestamp::now()))
    }

    #[test]
    fn a_turn_staged_in_one_batch_saves_each_message_once_in_its_final_form() {
        let tools = NoTools;
        let ctx = new_context();
        let mut batch = Batch::new(Arc::clone(&ctx));
        batch.apply(send("hi"), &env(&tools)).expect("send");
        assert!(batch.take_continue());
        batch.apply(Command::Continue, &env(&tools)).expect("continue");
        assert!(batch.has_effects(), "the LLM call ends a batch");
        for text in ["Hel", "lo"] {
            batch.apply(Command::LlmDelta { text: text.into() }, &env(&tools)).expect("delta");
        }
        batch.apply(Command::LlmFinished { reply: LlmReply::default() }, &env(&tools)).expect("finished");
        while batch.take_continue() {
            batch.apply(Command::Continue, &env(&tools)).expect("continue");
        }

        let save = batch.save().expect("something to save");
        assert!(save.before.as_ref().is_some_and(|before| Arc::ptr_eq(before, &ctx)), "the context as saved last");
        assert_eq!(save.after.revision, ctx.revision + 5, "PUM, ALR, streaming, PLR, idle");
        assert!(save.after.phase.is_resting());
        assert_eq!(save.messages.len(), 2, "the user message and the reply, once each");
        let reply = save.messages.iter().find(|m| m.role == Role::Assistant).expect("reply");
        assert_eq!(reply.text_content(), "Hello");

        let (last, steps, effects) = batch.finish();
        assert!(effects.iter().all(|e| !matches!(e, Effect::Continue)), "no automatic step left: {effects:?}");
        assert_eq!(last.revision, ctx.revision + 5);
        let revisions: Vec<u64> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Transition { after, .. } => Some(after.revision),
                Step::Streamed { .. } => None,
            })
            .collect();
        assert_eq!(revisions, (ctx.revision + 1..=ctx.revision + 5).collect::<Vec<_>>());
        assert_eq!(steps.iter().filter(|s| matches!(s, Step::Streamed { .. })).count(), 1, "the first delta opens it");
    }

    #[test]
    fn deltas_of_one_instant_need_no_save_and_are_published_as_one() {
        let tools = NoTools;
        let ctx = new_context();
        let mut first = Batch::new(ctx);
        for command in [send("hi"), Command::Continue, Command::LlmDelta { text: "a".into() }] {
            first.apply(command, &env(&tools)).expect("apply");
        }
        let streaming = Arc::clone(first.current());

        let mut batch = Batch::new(Arc::clone(&streaming));
        for text in ["b", "c"] {
            batch.apply(Command::LlmDelta { text: text.into() }, &env(&tools)).expect("delta");
        }
        assert!(batch.save().is_none());
        let (last, steps, effects) = batch.finish();
        assert_eq!(last.revision, streaming.revision);
        assert!(effects.is_empty());
        let texts: Vec<&str> = steps
            .iter()
            .map(|s| match s {
                Step::Streamed { text, .. } => text.as_str(),
                Step::Transition { .. } => "transition",
            })
            .collect();
        assert_eq!(texts, ["bc"], "one event with both, in order");
        assert_eq!(last.messages.last().map(|m| m.text_content()).as_deref(), Some("abc"));
    }
}
