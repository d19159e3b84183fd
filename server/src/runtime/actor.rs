//! The actor of one live context: the only writer of that context. It applies commands
//! through the state machine, saves each change before anything else sees it, publishes
//! the new state, then runs the effects the change asked for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::batch::{Batch, Save, Step};
use super::feed::{self, EventKind, Feed};
use super::{ActorHandle, Error, Gone, ListEvent, Request, Result, Shared, Slot, prompt};
use crate::domain::ToolResult;
use crate::domain::{Context, ContextId, FsmState, MessageId, Timestamp};
use crate::fsm::{Command, Effect, Env, LlmReply};
use crate::llm::{LlmEvent, LlmStream};
use crate::tools::ExternalTools;

/// Effect results waiting to be applied can pile up this far before producers wait.
const EVENT_CAPACITY: usize = 64;

/// At most this many commands are saved in one batch, so a fast producer cannot hold
/// back what has already happened.
const MAX_BATCH: usize = 64;

type Reply = oneshot::Sender<Result<Arc<Context>>>;

type Event = (u64, Command);

pub(super) struct Actor {
    id: ContextId,
    instance: u64,
    shared: Arc<Shared>,
    mailbox: mpsc::Receiver<Request>,
    state: watch::Sender<Slot>,
    feed: Arc<Feed>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    /// Tasks of the current run: the LLM call, tools, the retry timer.
    run: JoinSet<()>,
    /// Bumped when a run is aborted, so late results of its tasks are ignored.
    generation: u64,
    /// Commands to apply before taking the next request (automatic steps of a run).
    queue: VecDeque<Command>,
}

impl Actor {
    pub(super) fn new(id: ContextId, instance: u64, shared: Arc<Shared>) -> (ActorHandle, Self) {
        let (mailbox_tx, mailbox) = mpsc::channel(shared.settings.mailbox_capacity);
        let (state, state_rx) = watch::channel(Slot::Loading);
        let (events_tx, events) = mpsc::channel(EVENT_CAPACITY);
        let feed = Arc::new(Feed::new());
        let handle = ActorHandle { mailbox: mailbox_tx, state: state_rx, feed: Arc::clone(&feed), instance };
        let actor = Self {
            id,
            instance,
            shared,
            mailbox,
            state,
            feed,
            events_tx,
            events,
            run: JoinSet::new(),
            generation: 0,
            queue: VecDeque::new(),
        };
        (handle, actor)
    }

    /// Answers everything with "shutting down" (started after shutdown began).
    pub(super) async fn refuse(mut self) {
        self.stop(Gone::Stopped("the server is shutting down".into()), |_| Error::ShuttingDown);
    }

    pub(super) async fn run(mut self) {
        let store = self.shared.store.clone();
        let id = self.id;
        let loaded = tokio::task::spawn_blocking(move || store.load(id)).await;
        match loaded {
            Ok(Ok(Some(ctx))) => {
                let ctx = Arc::new(ctx);
                self.feed.start(Arc::clone(&ctx));
                self.state.send_replace(Slot::Live(Arc::clone(&ctx)));
                Live { actor: self, ctx }.serve().await;
            }
            Ok(Ok(None)) => self.stop(Gone::NotFound, Error::NotFound),
            Ok(Err(e)) => {
                tracing::error!(context = %id, error = %e, "could not load context");
                let reason = format!("could not load: {e}");
                self.stop(Gone::Stopped(reason.clone()), |id| Error::Stopped { id, reason: reason.clone() });
            }
            Err(e) => {
                let reason = format!("load task failed: {e}");
                self.stop(Gone::Stopped(reason.clone()), |id| Error::Stopped { id, reason: reason.clone() });
            }
        }
    }

    /// Leaves the registry, answers every queued request with `error`, and tells watchers.
    fn stop(&mut self, gone: Gone, error: impl Fn(ContextId) -> Error) {
        self.shared.unregister(self.id, self.instance);
        self.mailbox.close();
        while let Ok(request) = self.mailbox.try_recv() {
            // A caller that went away needs no answer.
            let _ = match request {
                Request::Act { reply, .. } => reply.send(Err(error(self.id))).map_err(drop),
                Request::Delete { reply } => reply.send(Err(error(self.id))).map_err(drop),
            };
        }
        self.run.abort_all();
        self.feed.end(if matches!(gone, Gone::Deleted) { EventKind::Deleted } else { EventKind::Closed });
        self.state.send_replace(Slot::Gone(gone));
    }
}

/// An actor with its context loaded.
struct Live {
    actor: Actor,
    /// Always what is saved, plus the text of a message that is streaming.
    ctx: Arc<Context>,
}

impl Live {
    async fn serve(mut self) {
        if !self.ctx.phase.is_resting() {
            tracing::info!(context = %self.actor.id, state = %self.ctx.state(), "resuming interrupted run");
            if !self.step(Command::Resume, None).await {
                return;
            }
        }
        loop {
            while let Some(command) = self.actor.queue.pop_front() {
                if !self.step(command, None).await {
                    return;
                }
            }
            let idle = self.ctx.phase.is_resting() && self.actor.run.is_empty();
            let unload_after = self.actor.shared.settings.idle_unload;
            tokio::select! {
                biased;
                () = self.actor.shared.shutdown.cancelled() => {
                    self.actor.stop(Gone::Stopped("the server is shutting down".into()), |_| Error::ShuttingDown);
                    return;
                }
                request = self.actor.mailbox.recv() => match request {
                    Some(Request::Act { command, reply }) => {
                        if !self.step(command, Some(reply)).await {
                            return;
                        }
                    }
                    Some(Request::Delete { reply }) => {
                        self.delete(reply).await;
                        return;
                    }
                    None => return,
                },
                Some((generation, command)) = self.actor.events.recv() => {
                    if generation == self.actor.generation && !self.step(command, None).await {
                        return;
                    }
                }
                Some(_) = self.actor.run.join_next(), if !self.actor.run.is_empty() => {}
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
    async fn step(&mut self, command: Command, reply: Option<Reply>) -> bool {
        let shared = Arc::clone(&self.actor.shared);
        let env = |now| Env {
            now,
            tools: &*shared.tools,
            max_llm_attempts: shared.settings.max_llm_attempts,
            new_id: &MessageId::new,
        };
        let mut batch = Batch::new(Arc::clone(&self.ctx));
        if let Err(rejection) = batch.apply(command, &env(Timestamp::now())) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(rejection.into()));
            }
            return true;
        }
        // A client is answered with the state its own action produced.
        let answer = reply.is_some().then(|| Arc::clone(batch.current()));
        while batch.len() < MAX_BATCH {
            if batch.take_continue() {
                // A rejected automatic step changes nothing, as when it ran on its own.
                let _ = batch.apply(Command::Continue, &env(Timestamp::now()));
                continue;
            }
            // A client's action is saved on its own, so that its failure cannot take a run's
            // results with it; effects start only once what asked for them is saved.
            if reply.is_some() || batch.has_effects() {
                break;
            }
            match self.actor.events.try_recv() {
                Ok((generation, command)) if generation == self.actor.generation => {
                    let _ = batch.apply(command, &env(Timestamp::now()));
                }
                Ok(_stale) => {}
                Err(_) => break,
            }
        }
        if let Some(save) = batch.save()
            && let Err(error) = self.commit(save).await
        {
            match reply {
                // The action fails and nothing changed: memory is still what is on disk.
                Some(reply) => {
                    let _ = reply.send(Err(error));
                    return true;
                }
                // A run's own step could not be saved: stop, so that the next access reloads
                // the context from disk and resumes from its last saved transition.
                None => {
                    tracing::error!(context = %self.actor.id, %error, "save failed; unloading the context");
                    let reason = format!("a save failed: {error}");
                    self.actor.stop(Gone::Stopped(reason.clone()), |id| Error::Stopped { id, reason: reason.clone() });
                    return false;
                }
            }
        }
        let (ctx, steps, effects) = batch.finish();
        self.ctx = ctx;
        // The feed first: whoever learns of a revision (from the answer, a read or a wait)
        // and then watches from it must find it there.
        let path = self.publish(steps);
        self.actor.state.send_replace(Slot::Live(Arc::clone(&self.ctx)));
        if let (Some(reply), Some(answer)) = (reply, answer) {
            let _ = reply.send(Ok(answer));
        }
        self.announce(&path);
        for effect in effects {
            self.start(effect);
        }
        true
    }

    /// Writes one batch atomically (synced unless configured otherwise).
    async fn commit(&self, save: Save) -> Result<()> {
        let Save { before_updated_at, after, messages } = save;
        Ok(self.actor.shared.writer.commit(before_updated_at, after, messages).await?)
    }

    /// Tells watchers about saved transitions and streamed text, in the order they
    /// happened. Returns the states the saved transitions went through (none: nothing saved).
    fn publish(&self, steps: Vec<Step>) -> Vec<FsmState> {
        let mut path: Vec<FsmState> = Vec::new();
        for step in steps {
            match step {
                Step::Transition { before, after, messages } => {
                    if path.is_empty() {
                        path.push(before.state());
                    }
                    path.push(after.state());
                    let events = feed::change_events(&before, &after, &messages);
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
    fn announce(&self, path: &[FsmState]) {
        let (Some(from), Some(to)) = (path.first(), path.last()) else {
            return;
        };
        let (id, revision, transitions) = (self.actor.id, self.ctx.revision, path.len() - 1);
        // `via` names the states a save of several transitions went through.
        if let [_, via @ .., _] = path
            && !via.is_empty()
        {
            let via = via.iter().map(FsmState::to_string).collect::<Vec<_>>().join(",");
            tracing::info!(context = %id, revision, transitions, %from, %to, %via, "auto-saved");
        } else {
            tracing::info!(context = %id, revision, transitions, %from, %to, "auto-saved");
        }
        self.actor.shared.list_changed(ListEvent::Upserted(self.ctx.summary()));
    }

    fn start(&mut self, effect: Effect) {
        let actor = &mut self.actor;
        let events = actor.events_tx.clone();
        let generation = actor.generation;
        match effect {
            Effect::Continue => actor.queue.push_back(Command::Continue),
            Effect::CallLlm { attempt } => {
                let settings = &actor.shared.settings;
                let request =
                    prompt::request(&self.ctx, &settings.default_model, actor.shared.tools.definitions(), attempt);
                let stream = actor.shared.llm.stream(request);
                actor.run.spawn(pump_llm(stream, events, generation));
            }
            Effect::ScheduleRetry { attempt, at_least_ms } => {
                let delay = backoff(attempt, actor.shared.settings.retry_base, actor.shared.settings.retry_max)
                    .max(Duration::from_millis(at_least_ms.unwrap_or(0)));
                actor.run.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = events.send((generation, Command::RetryDue)).await;
                });
            }
            Effect::RunTools { calls } => {
                for call in calls {
                    let events = events.clone();
                    let external = call.external.then(|| self.ctx.config.external_tool(&call.name)).flatten();
                    match external {
                        // Another service runs it: wait for SubmitToolResult, up to the timeout.
                        Some(tool) => {
                            let checked = ExternalTools::check(tool, &call.arguments_json);
                            let timeout = match tool.timeout_ms {
                                0 => actor.shared.settings.external_tool_timeout,
                                ms => Duration::from_millis(u64::from(ms)),
                            };
                            actor.run.spawn(async move {
                                let result = match checked {
                                    Err(problem) => ToolResult::error(problem),
                                    Ok(()) => {
                                        tokio::time::sleep(timeout).await;
                                        ToolResult::error(format!(
                                            "no result from the external tool within {} ms",
                                            timeout.as_millis()
                                        ))
                                    }
                                };
                                let _ =
                                    events.send((generation, Command::ToolFinished { call_id: call.id, result })).await;
                            });
                        }
                        None => {
                            let tools = Arc::clone(&actor.shared.tools);
                            actor.run.spawn(async move {
                                let result = tools.run(&call.name, &call.arguments_json).await;
                                let _ =
                                    events.send((generation, Command::ToolFinished { call_id: call.id, result })).await;
                            });
                        }
                    }
                }
            }
            Effect::AbortRun => {
                actor.run.abort_all();
                actor.generation += 1;
            }
        }
    }

    async fn delete(&mut self, reply: oneshot::Sender<Result<()>>) {
        self.actor.run.abort_all();
        self.actor.generation += 1;
        let store = self.actor.shared.store.clone();
        let ctx = Arc::clone(&self.ctx);
        let deleted = tokio::task::spawn_blocking(move || store.delete(&ctx))
            .await
            .map_err(|e| Error::Internal(format!("storage task failed: {e}")))
            .and_then(|r| r.map_err(Error::from));
        match deleted {
            Ok(()) => {
                tracing::info!(context = %self.actor.id, revision = self.ctx.revision, "deleted");
                self.actor.stop(Gone::Deleted, Error::NotFound);
                self.actor.shared.list_changed(ListEvent::Removed(self.actor.id));
                let _ = reply.send(Ok(()));
            }
            Err(error) => {
                // The run was aborted but the context still exists: unload it, so the next
                // access reloads it and resumes the run from what is saved.
                let reason = format!("delete failed: {error}");
                let _ = reply.send(Err(error));
                self.actor.stop(Gone::Stopped(reason.clone()), |id| Error::Stopped { id, reason: reason.clone() });
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
        tracing::info!(context = %self.actor.id, revision = self.ctx.revision, "unloaded idle context");
        true
    }
}

/// Turns a provider's stream into commands for the actor.
async fn pump_llm(mut stream: LlmStream, events: mpsc::Sender<Event>, generation: u64) {
    let started = Instant::now();
    let mut reply = LlmReply::default();
    while let Some(event) = stream.next().await {
        let command = match event {
            Ok(LlmEvent::Text(text)) if text.is_empty() => continue,
            Ok(LlmEvent::Text(text)) => Command::LlmDelta { text },
            Ok(LlmEvent::ToolCall(call)) => {
                reply.tool_calls.push(call);
                continue;
            }
            Ok(LlmEvent::Usage(usage)) => {
                reply.usage = Some(usage);
                continue;
            }
            Err(error) => {
                let retry_after_ms = error.retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let failed = Command::LlmFailed { error: error.message, transient: error.transient, retry_after_ms };
                let _ = events.send((generation, failed)).await;
                return;
            }
        };
        if events.send((generation, command)).await.is_err() {
            return;
        }
    }
    reply.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let _ = events.send((generation, Command::LlmFinished { reply })).await;
}

/// Exponential backoff with jitter: base × 2^(attempt-1), capped, then scaled by 50–100 %.
fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exponential.min(max).mul_f64(rand::random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 1..40 {
            let delay = backoff(attempt, base, max);
            let ceiling = base.saturating_mul(1 << (attempt - 1).min(16)).min(max);
            assert!(delay <= ceiling && delay >= ceiling / 2, "attempt {attempt}: {delay:?}");
        }
    }
}
