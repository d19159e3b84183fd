//! Loading a context and serving it: an actor with its context loaded takes requests and its driver's results one at a
//! time, and [`Live::step`] turns each into a saved batch of transitions, then publishes it.

use std::sync::Arc;

use metrics::{counter, gauge};
use tokio::sync::oneshot;
use tracing::{Instrument as _, Span};

use super::Actor;
use crate::domain::{BranchError, Context, FsmState, MessageId, Timestamp};
use crate::fsm::ContextWindow as _;
use crate::fsm::{self, Command, Effect, Env};
use crate::runtime::batch::{Batch, Step};
use crate::runtime::error::{Error, Result};
use crate::runtime::feed;
use crate::runtime::handle::{Action, Gone, Request, Slot};
use crate::runtime::meters;
use crate::runtime::shared::Shared;
use crate::runtime::tenants::RunSlot;
use crate::store::Change;
use crate::store::{self, Save, Tree};
use crate::telemetry::{names, traces};

/// At most this many commands are saved in one batch, so a fast producer cannot hold
/// back what has already happened.
const MAX_BATCH: usize = 64;

type Reply = oneshot::Sender<Result<Arc<Context>>>;

impl Actor {
    /// Loads the context and serves it until it stops.
    pub(in crate::runtime) async fn run(mut self) {
        match self.shared.store.load(&self.key).await {
            Ok(Some(mut ctx)) => {
                // Worked out, not saved: it depends on the server's windows.
                ctx.usage = ctx.usage(&self.shared.windows.budget(&ctx));
                let ctx = Arc::new(ctx);
                self.loaded = true;
                gauge!(names::CONTEXTS_LOADED).increment(1.0);
                self.count_run(ctx.state());
                self.feed.start(Arc::clone(&ctx));
                self.state.send_replace(Slot::Live(Arc::clone(&ctx)));
                // A run saved mid-way is in progress again: it counts, whatever the limit.
                let run_slot = (!ctx.phase.is_resting()).then(|| self.shared.runs.start(&ctx.tenant));
                Live { actor: self, ctx, run_span: Span::none(), run_slot }.serve().await;
            }
            Ok(None) => self.stop(Gone::NotFound, Error::NotFound),
            Err(e) => {
                tracing::error!(context = %self.key.id, tenant = %self.key.tenant, error = %e, "could not load context");
                self.fail(format!("could not load: {e}"));
            }
        }
    }
}

/// An actor with its context loaded.
struct Live {
    actor: Actor,
    /// Always what is saved, plus the text of a message that is streaming.
    ctx: Arc<Context>,
    /// The span of the run in progress (none while resting, or with tracing off).
    run_span: Span,
    /// The tenant's run slot this context holds while mid-run.
    run_slot: Option<RunSlot>,
}

/// What the state machine is given for one command.
fn env(shared: &Shared, now: Timestamp) -> Env<'_> {
    Env {
        now,
        tools: &*shared.tools,
        max_llm_attempts: shared.settings.max_llm_attempts,
        default_model: &shared.settings.default_model,
        new_id: &MessageId::new,
        window: &shared.windows,
    }
}

impl Live {
    async fn serve(mut self) {
        if !self.ctx.phase.is_resting() {
            tracing::info!(context = %self.actor.key.id, state = %self.ctx.state(), "resuming interrupted run");
            counter!(names::RUNS_RESUMED).increment(1);
            if !self.step(Command::Resume, None, Span::none()).await {
                return;
            }
        }
        loop {
            while let Some(command) = self.actor.queue.pop_front() {
                if !self.step(command, None, Span::none()).await {
                    return;
                }
            }
            let idle = self.ctx.phase.is_resting() && self.actor.driver.is_idle();
            let unload_after = self.actor.shared.settings.idle_unload;
            let actor = &mut self.actor;
            tokio::select! {
                biased;
                () = actor.shared.shutdown.cancelled() => {
                    actor.stop(Gone::Stopped("the server is shutting down".into()), |_| Error::ShuttingDown);
                    return;
                }
                request = actor.mailbox.recv() => match request {
                    Some(Request::Act { action, reply, span }) => {
                        let command = match action {
                            Action::Apply(command) => command,
                            Action::Switch { message_id, expected_revision } => {
                                match self.read_branch(message_id, expected_revision).await {
                                    Ok(command) => command,
                                    Err(error) => {
                                        let _ = reply.send(Err(error));
                                        continue;
                                    }
                                }
                            }
                        };
                        if !self.step(command, Some(reply), span).await {
                            return;
                        }
                    }
                    Some(Request::Delete { reply }) => {
                        self.delete(reply).await;
                        return;
                    }
                    None => return,
                },
                Some((generation, command)) = actor.results.recv() => {
                    if actor.driver.is_current(generation) && !self.step(command, None, Span::none()).await {
                        return;
                    }
                }
                () = actor.driver.reap() => {}
                changed = actor.standing.changed() => {
                    if changed.is_err() || !actor.in_standing() {
                        tracing::warn!(context = %actor.key.id, "this node no longer holds the context's partition (handed over, or lost); the node that holds it takes the context over");
                        actor.fail("the context moved to another node; try again".into());
                        return;
                    }
                }
                () = tokio::time::sleep(unload_after), if idle => {
                    if self.try_unload() {
                        return;
                    }
                }
            }
        }
    }

    /// Applies one command, and with it the transitions that follow in the same instant,
    /// saves them as one batch, then publishes them. Returns false when the actor had to stop.
    /// `cause` is the span of the client's call behind the command, if any.
    async fn step(&mut self, command: Command, reply: Option<Reply>, cause: Span) -> bool {
        let mut batch = Batch::new(Arc::clone(&self.ctx));
        if let Err(rejection) = batch.apply(command, &env(&self.actor.shared, Timestamp::now())) {
            answer(reply, Err(rejection.into()));
            return true;
        }
        let slot = match self.run_slot_for(&batch, reply.is_some()) {
            Ok(slot) => slot,
            Err(error) => {
                answer(reply, Err(error));
                return true;
            }
        };
        // A client is answered with the state its own action produced.
        let answered = reply.is_some().then(|| Arc::clone(batch.current()));
        self.fill(&mut batch, reply.is_some());
        if let Some(save) = batch.save()
            && let Err(error) = self.commit(save, batch.transitions(), &cause).await
        {
            return self.save_failed(error, reply);
        }
        let (ctx, steps, effects) = batch.finish();
        self.ctx = ctx;
        self.follow_run(slot, &cause);
        // The feed first: whoever learns of a revision (from the answer, a read or a wait)
        // and then watches from it must find it there.
        let path = self.publish(steps);
        self.actor.state.send_replace(Slot::Live(Arc::clone(&self.ctx)));
        if let Some(answered) = answered {
            answer(reply, Ok(answered));
        }
        // Inside the run's span (or the action's), so the line names its trace when tracing is on.
        let scope = if self.run_span.is_none() { cause } else { self.run_span.clone() };
        scope.in_scope(|| self.announce(&path));
        self.start(effects);
        true
    }

    /// The tenant's run slot a client's action takes when it starts a run; refused (the
    /// tenant runs its most), the action changes nothing. `None`: no new slot is needed.
    fn run_slot_for(&self, batch: &Batch, from_client: bool) -> Result<Option<RunSlot>> {
        if !from_client || self.run_slot.is_some() || batch.current().phase.is_resting() {
            return Ok(None);
        }
        let shared = &self.actor.shared;
        let max = shared.settings.max_runs_per_tenant;
        match shared.runs.try_start(&self.ctx.tenant, max) {
            Some(slot) => Ok(Some(slot)),
            None => {
                counter!(names::LIMIT_REFUSALS, "limit" => "runs").increment(1);
                Err(Error::TooManyRuns { tenant: self.ctx.tenant.clone(), max })
            }
        }
    }

    /// Adds to `batch` what follows in the same instant: its automatic steps, and results
    /// already waiting, up to [`MAX_BATCH`] commands.
    fn fill(&mut self, batch: &mut Batch, from_client: bool) {
        let shared = Arc::clone(&self.actor.shared);
        while batch.len() < MAX_BATCH {
            if batch.take_continue() {
                // A rejected automatic step changes nothing, as when it ran on its own.
                let _ = batch.apply(Command::Continue, &env(&shared, Timestamp::now()));
                continue;
            }
            // A client's action is saved on its own, so that its failure cannot take a run's
            // results with it; effects start only once what asked for them is saved.
            if from_client || batch.has_effects() {
                return;
            }
            match self.actor.results.try_recv() {
                Ok((generation, command)) if self.actor.driver.is_current(generation) => {
                    let _ = batch.apply(command, &env(&shared, Timestamp::now()));
                }
                Ok(_stale) => {}
                Err(_) => return,
            }
        }
    }

    /// Writes one batch of `transitions` atomically (synced unless configured otherwise),
    /// traced inside the run (or the call that caused it).
    async fn commit(&self, save: Save, transitions: usize, cause: &Span) -> Result<()> {
        let parent = if self.run_span.is_none() { cause } else { &self.run_span };
        let span = if traces::enabled() {
            tracing::info_span!(parent: parent, "save", transitions, context_id = %self.actor.key.id, bytes = tracing::field::Empty)
        } else {
            Span::none()
        };
        let bytes = self.actor.shared.store.commit(save).instrument(span.clone()).await?;
        span.record("bytes", bytes);
        Ok(())
    }

    /// What a failed save leaves: the client's action fails and nothing changed, or the
    /// actor stops so the next access reloads what is saved. Returns whether it goes on.
    fn save_failed(&mut self, error: Error, reply: Option<Reply>) -> bool {
        match reply {
            // Another writer (or a save this process gave up on that reached the log after
            // all) moved the context on: memory is stale, so unload it and let the next
            // access read the truth.
            Some(reply) if matches!(error, Error::Storage(store::Error::Conflict { .. })) => {
                let reason = error.to_string();
                let _ = reply.send(Err(error));
                self.actor.fail(reason);
                false
            }
            // The action fails and nothing changed: memory is still what is on disk.
            Some(reply) => {
                let _ = reply.send(Err(error));
                true
            }
            // A run's own step could not be saved: stop, so that the next access reloads the
            // context from disk and resumes from its last saved transition.
            None => {
                tracing::error!(context = %self.actor.key.id, %error, "save failed; unloading the context");
                self.actor.fail(format!("a save failed: {error}"));
                false
            }
        }
    }

    /// Keeps the run's slot and span with the saved state: held from the action that starts
    /// a run to rest (`slot`: the one that action took), one span whose calls nest in it.
    fn follow_run(&mut self, slot: Option<RunSlot>, cause: &Span) {
        if self.ctx.phase.is_resting() {
            self.run_slot = None;
            self.run_span = Span::none();
            return;
        }
        if self.run_slot.is_none() {
            self.run_slot = Some(slot.unwrap_or_else(|| self.actor.shared.runs.start(&self.ctx.tenant)));
        }
        if self.run_span.is_none() && traces::enabled() {
            let run = tracing::info_span!(parent: cause, "run", context_id = %self.actor.key.id, trace_id = tracing::field::Empty);
            run.record("trace_id", traces::trace_id(&run));
            self.run_span = run;
        }
    }

    /// Hands the saved batch's effects to the driver (automatic steps queue here).
    fn start(&mut self, effects: Vec<Effect>) {
        self.actor.driver.settle(&self.ctx);
        for effect in effects {
            match effect {
                Effect::Continue => self.actor.queue.push_back(Command::Continue),
                other => self.actor.driver.start(other, &self.ctx, &self.run_span),
            }
        }
    }

    /// The switch to the branch through `message_id`, read from storage. Only the actor
    /// writes this context, so what it reads is what it holds, and nothing changes meanwhile.
    async fn read_branch(&self, message_id: MessageId, expected_revision: Option<u64>) -> Result<Command> {
        // Refused before reading anything when the state does not allow it.
        fsm::branch_allowed(&self.ctx, "SwitchBranch", expected_revision)?;
        let key = self.ctx.key();
        let tree = Tree::new(&*self.actor.shared.store, &key);
        let branch = self.ctx.branch_through(&tree, message_id).await.map_err(|error| match error {
            BranchError::UnknownMessage { context, message } => Error::UnknownMessage { context, message },
            BranchError::Read(error) => Error::Storage(error),
        })?;
        Ok(Command::SwitchBranch { branch, expected_revision })
    }

    /// Tells watchers about saved transitions and streamed text, in the order they
    /// happened. Returns the states the saved transitions went through (none: nothing saved).
    fn publish(&self, steps: Vec<Step>) -> Vec<FsmState> {
        let mut path: Vec<FsmState> = Vec::new();
        for step in steps {
            match step {
                Step::Transition { before, after, moved, messages } => {
                    let (from, to) = (before.state(), after.state());
                    if path.is_empty() {
                        path.push(from);
                    }
                    path.push(to);
                    counter!(names::TRANSITIONS, "from" => from.name(), "to" => to.name()).increment(1);
                    if to == FsmState::Failed && from != FsmState::Failed {
                        counter!(names::RUNS_FAILED).increment(1);
                    }
                    meters::count_tool_answers(&after, &messages, &self.actor.shared.tools);
                    let events = feed::change_events(&before, &after, moved.as_ref(), &messages);
                    self.actor.feed.saved(after, events);
                }
                Step::Streamed { ctx, message_id, text } => {
                    self.actor.feed.streamed(ctx, message_id, text);
                }
            }
        }
        path
    }

    /// Logs a save (one line, whatever the transitions in it) and updates context lists.
    fn announce(&mut self, path: &[FsmState]) {
        let (Some(from), Some(to)) = (path.first(), path.last()) else {
            return;
        };
        self.actor.count_run(*to);
        let (id, revision, transitions) = (self.actor.key.id, self.ctx.revision, path.len() - 1);
        // `via` names the states a save of several transitions went through.
        if let [_, via @ .., _] = path
            && !via.is_empty()
        {
            let via = via.iter().map(FsmState::to_string).collect::<Vec<_>>().join(",");
            tracing::info!(context = %id, revision, transitions, %from, %to, %via, "auto-saved");
        } else {
            tracing::info!(context = %id, revision, transitions, %from, %to, "auto-saved");
        }
        self.actor.shared.list_changed(Change::Saved { key: self.ctx.key(), summary: self.ctx.summary() });
    }

    async fn delete(&mut self, reply: oneshot::Sender<Result<()>>) {
        self.actor.driver.abort_all();
        let shared = Arc::clone(&self.actor.shared);
        let _membership = shared.membership.lock().await;
        let deleted = shared.store.delete(Arc::clone(&self.ctx)).await.map_err(Error::from);
        match deleted {
            Ok(()) => {
                tracing::info!(context = %self.actor.key.id, revision = self.ctx.revision, "deleted");
                shared.members.removed(&self.ctx.tenant);
                self.actor.stop(Gone::Deleted, Error::NotFound);
                shared.list_changed(Change::Removed(self.ctx.key()));
                let _ = reply.send(Ok(()));
            }
            Err(error) => {
                // The run was aborted but the context still exists: unload it, so the next
                // access reloads it and resumes the run from what is saved.
                let reason = format!("delete failed: {error}");
                let _ = reply.send(Err(error));
                self.actor.fail(reason);
            }
        }
    }

    /// Unloads if nothing needs this actor: no queued request, nobody watching.
    fn try_unload(&mut self) -> bool {
        // The registry's handle holds one receiver; any other means someone is watching.
        if !self.actor.mailbox.is_empty() || self.actor.state.receiver_count() > 1 || self.actor.feed.watchers() > 0 {
            return false;
        }
        self.actor.stop(Gone::Unloaded, |_| Error::Unloaded);
        tracing::info!(context = %self.actor.key.id, revision = self.ctx.revision, "unloaded idle context");
        true
    }
}

/// Answers the client behind a command, if there is one (a caller that went away needs no
/// answer).
fn answer(reply: Option<Reply>, result: Result<Arc<Context>>) {
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}
