//! The effect driver: runs what a saved transition asked for (the LLM call, tool calls, the
//! wait for an external tool's result, the retry timer) as tasks whose results come back
//! to the actor as commands. Every task belongs to a run's generation; aborting a run
//! bumps it, so results of the old run that were already on their way are ignored.
//!
//! Each tool call has a handle of its own: a call stops as soon as no state waits for it
//! any more (a result delivered by SubmitToolResult ends the external call's timer), so an
//! idle context holds no task and nothing late arrives from a call that was answered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use metrics::{counter, histogram};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{Instrument as _, Span};

use super::prompt;
use super::settings::Settings;
use super::shared::Shared;
use super::summary;
use crate::domain::{Context, Phase, TooLong, ToolCall, ToolCallId, ToolOutcome, ToolResult};
use crate::fsm::{Command, Effect, LlmReply};
use crate::llm::{LlmError, LlmEvent, LlmProvider, LlmRequest, LlmStream};
use crate::telemetry::{names, traces};
use crate::tools::{NO_EXTERNAL_RESULT, ToolRegistry};

/// Effect results waiting to be applied can pile up this far before producers wait.
const EVENT_CAPACITY: usize = 64;

/// A command for the actor, tagged with the generation of the run that produced it.
pub(super) type Event = (u64, Command);

pub(super) struct Driver {
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    tasks: JoinSet<()>,
    /// The running tool calls (and external waits), by call id.
    calls: HashMap<ToolCallId, AbortHandle>,
    generation: u64,
}

impl Driver {
    /// A driver and the receiver its results arrive on.
    pub fn new(shared: Arc<Shared>) -> (Self, mpsc::Receiver<Event>) {
        let (events, results) = mpsc::channel(EVENT_CAPACITY);
        (Self { shared, events, tasks: JoinSet::new(), calls: HashMap::new(), generation: 0 }, results)
    }

    /// Whether a result belongs to the current run (not to one that was aborted).
    pub fn is_current(&self, generation: u64) -> bool {
        generation == self.generation
    }

    /// Nothing is running.
    pub fn is_idle(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for the next task to end (for the actor's select; pending while idle).
    pub async fn reap(&mut self) {
        if self.tasks.join_next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Starts the work `effect` asks for on `ctx`, which is saved. `Continue` is the
    /// actor's own and never reaches here.
    /// `run` is the run's span; the calls made for it are spans inside it.
    pub fn start(&mut self, effect: Effect, ctx: &Arc<Context>, run: &Span) {
        match effect {
            Effect::Continue => {}
            Effect::CallLlm { attempt } => {
                let (shared, saved) = (Arc::clone(&self.shared), Arc::clone(ctx));
                let build: Build = Box::new(move |share| prompt::reply(&saved, &shared, attempt, share));
                let (events, generation) = (self.events.clone(), self.generation);
                let (request, counted) = match build(FULL_ROOM) {
                    Ok(built) => built,
                    Err(too_long) => {
                        tracing::warn!(error = %too_long, "the request cannot fit the model's context window");
                        let failed = cannot_fit(too_long);
                        self.tasks.spawn(async move {
                            let _ = events.send((generation, failed)).await;
                        });
                        return;
                    }
                };
                let settings = &self.shared.settings;
                let labels = LlmLabels::of(self.shared.llm.name(&request.model), &request.model, settings);
                let span = if traces::enabled() {
                    tracing::info_span!(
                        parent: run,
                        "llm_call",
                        llm.provider = labels.provider,
                        llm.model = %request.model,
                        llm.attempt = attempt,
                        llm.time_to_first_token_ms = tracing::field::Empty,
                        llm.prompt_tokens = tracing::field::Empty,
                        llm.completion_tokens = tracing::field::Empty,
                        outcome = tracing::field::Empty,
                    )
                } else {
                    Span::none()
                };
                let stream = self.shared.llm.stream(request);
                let call = Call { llm: Arc::clone(&self.shared.llm), build, share: FULL_ROOM, counted };
                let checks = Checks { tools: Arc::clone(&self.shared.tools), ctx: Arc::clone(ctx) };
                self.tasks.spawn(pump_llm(stream, call, labels, checks, events, generation).instrument(span));
            }
            Effect::Summarize { through } => {
                let (shared, ctx) = (Arc::clone(&self.shared), Arc::clone(ctx));
                let (events, generation) = (self.events.clone(), self.generation);
                let span = if traces::enabled() {
                    tracing::info_span!(parent: run, "summarize", outcome = tracing::field::Empty)
                } else {
                    Span::none()
                };
                self.tasks.spawn(
                    async move {
                        let command = summary::summarize(&shared, &ctx, through).await;
                        let _ = events.send((generation, command)).await;
                    }
                    .instrument(span),
                );
            }
            Effect::ScheduleRetry { attempt, at_least_ms } => {
                let settings = &self.shared.settings;
                let backoff = settings.llm_retry.pause(attempt);
                let asked = Duration::from_millis(at_least_ms.unwrap_or(0));
                counter!(names::LLM_RETRIES).increment(1);
                if asked > backoff {
                    counter!(names::LLM_RETRY_AFTER_SECONDS).increment(asked.as_secs());
                }
                let delay = backoff.max(asked);
                let (events, generation) = (self.events.clone(), self.generation);
                self.tasks.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = events.send((generation, Command::RetryDue)).await;
                });
            }
            Effect::RunTools { calls } => {
                for call in calls {
                    let span = if traces::enabled() {
                        let tool = if call.external { "external" } else { call.name.as_str() };
                        tracing::info_span!(parent: run, "tool_call", tool, tool.call_id = %call.id, outcome = tracing::field::Empty)
                    } else {
                        Span::none()
                    };
                    self.run_tool(call, ctx, span);
                }
            }
            Effect::AbortRun => self.abort_all(),
        }
    }

    /// Stops everything the run has in flight; results already on their way are ignored.
    pub fn abort_all(&mut self) {
        self.tasks.abort_all();
        self.calls.clear();
        self.generation += 1;
    }

    /// Stops the tool calls `ctx` no longer waits for: answered, or of a run that moved on.
    pub fn settle(&mut self, ctx: &Context) {
        if self.calls.is_empty() {
            return;
        }
        let waiting: Vec<ToolCallId> = match ctx.phase {
            Phase::ExecutingTools { .. } => ctx.pending_tool_calls().into_iter().map(|c| c.id).collect(),
            _ => Vec::new(),
        };
        self.calls.retain(|id, task| {
            let keep = waiting.contains(id) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
    }

    fn run_tool(&mut self, call: ToolCall, ctx: &Context, span: Span) {
        let (events, generation) = (self.events.clone(), self.generation);
        let id = call.id.clone();
        let external = call.external.then(|| ctx.config.external_tool(&call.name)).flatten();
        let task = match external {
            // Another service runs it: wait for SubmitToolResult, up to the timeout.
            Some(tool) => {
                let timeout = match tool.timeout_ms {
                    0 => self.shared.settings.external_tool_timeout,
                    ms => Duration::from_millis(u64::from(ms)),
                };
                self.tasks.spawn(
                    async move {
                        // Its arguments were checked before the call was saved.
                        tokio::time::sleep(timeout).await;
                        let text = format!("{NO_EXTERNAL_RESULT} {} ms", timeout.as_millis());
                        let result = ToolResult::ended(ToolOutcome::TimedOut, text);
                        Span::current().record("outcome", "timeout");
                        tracing::warn!(tool = %call.name, call = %call.id, "no result from the external tool in time");
                        let _ = events.send((generation, Command::ToolFinished { call_id: call.id, result })).await;
                    }
                    .instrument(span),
                )
            }
            None => {
                let tools = Arc::clone(&self.shared.tools);
                let tenant = ctx.tenant.clone();
                self.tasks.spawn(
                    async move {
                        let started = Instant::now();
                        let result = tools.run(&tenant, &call.name, &call.arguments_json).await;
                        histogram!(names::TOOL_SECONDS, "tool" => call.name.clone())
                            .record(started.elapsed().as_secs_f64());
                        Span::current().record("outcome", result.outcome.label());
                        if result.is_error() {
                            tracing::warn!(tool = %call.name, call = %call.id, error = %result.output, "tool call failed");
                        }
                        let _ = events.send((generation, Command::ToolFinished { call_id: call.id, result })).await;
                    }
                    .instrument(span),
                )
            }
        };
        self.calls.insert(id, task);
    }
}

/// The labels of one LLM call's metrics.
struct LlmLabels {
    provider: &'static str,
    model: String,
}

impl LlmLabels {
    fn of(provider: &'static str, model: &str, settings: &Settings) -> Self {
        let model = if settings.metered_models.iter().any(|m| m == model) { model } else { "other" };
        Self { provider, model: model.to_owned() }
    }

    /// Provider and model: the labels of the call's timings.
    fn pair(&self) -> [(&'static str, String); 2] {
        [("provider", self.provider.to_owned()), ("model", self.model.clone())]
    }

    /// The pair and one more label.
    fn with(&self, key: &'static str, value: &'static str) -> [(&'static str, String); 3] {
        let [provider, model] = self.pair();
        [provider, model, (key, value.to_owned())]
    }

    fn request(&self, outcome: &'static str) {
        counter!(names::LLM_REQUESTS, &self.with("outcome", outcome)).increment(1);
    }
}

/// What the tool calls of a reply are checked against: the server's tools and the context's
/// external ones.
struct Checks {
    tools: Arc<ToolRegistry>,
    ctx: Arc<Context>,
}

/// Builds a reply's request within a share (per mille) of the room the window leaves, with
/// ctxd's count of it.
type Build = Box<dyn Fn(u32) -> Result<(LlmRequest, u64), TooLong> + Send>;

/// The whole room.
pub(super) const FULL_ROOM: u32 = 1000;

/// One LLM call: what asks the provider again, smaller, when it says the request was longer
/// than the model's window.
struct Call {
    llm: Arc<dyn LlmProvider>,
    build: Build,
    share: u32,
    /// ctxd's count of the request sent last.
    counted: u64,
}

impl Call {
    /// The same request, a clear margin smaller; `None` once it would be too small to help.
    fn shrink(&mut self, error: &LlmError) -> Option<Result<LlmStream, TooLong>> {
        self.share = smaller(self.share)?;
        tracing::warn!(share = self.share, error = %error.message, "the provider found the request too long; sending it smaller");
        Some((self.build)(self.share).map(|(request, counted)| {
            self.counted = counted;
            self.llm.stream(request)
        }))
    }
}

/// The smallest share of the room a shrunk request is sent in.
const MIN_SHARE: u32 = 250;

/// The share of the room a request the provider found too long is sent again in: a quarter
/// less, counted; `None` below [`MIN_SHARE`], where shrinking no longer helps.
pub(super) fn smaller(share: u32) -> Option<u32> {
    let share = share * 3 / 4;
    (share >= MIN_SHARE).then(|| {
        counter!(names::LLM_SHRINKS).increment(1);
        share
    })
}

/// The run fails: not even the system prompt and the latest message fit the window.
fn cannot_fit(too_long: TooLong) -> Command {
    Command::LlmFailed { error: too_long.to_string(), transient: false, retry_after_ms: None }
}

/// Turns a provider's stream into commands for the actor.
async fn pump_llm(
    mut stream: LlmStream,
    mut call: Call,
    labels: LlmLabels,
    checks: Checks,
    events: mpsc::Sender<Event>,
    generation: u64,
) {
    let started = Instant::now();
    let mut first_text = true;
    let mut reply = LlmReply::default();
    let mut requested = Vec::new();
    while let Some(event) = stream.next().await {
        let command = match event {
            Ok(LlmEvent::Text(text)) if text.is_empty() => continue,
            Ok(LlmEvent::Text(text)) => {
                if std::mem::take(&mut first_text) {
                    let first = started.elapsed();
                    histogram!(names::LLM_FIRST_TOKEN_SECONDS, &labels.pair()).record(first.as_secs_f64());
                    Span::current().record("llm.time_to_first_token_ms", first.as_millis() as u64);
                }
                Command::LlmDelta { text }
            }
            Ok(LlmEvent::ToolCall(call)) => {
                requested.push(call);
                continue;
            }
            Ok(LlmEvent::Usage(usage)) => {
                reply.usage = Some(usage);
                continue;
            }
            Ok(LlmEvent::Model(model)) => {
                reply.model = Some(model);
                continue;
            }
            // Nothing was shown yet: the same call goes out again, smaller.
            Err(error)
                if error.too_long
                    && first_text
                    && let Some(again) = call.shrink(&error) =>
            {
                labels.request("too_long");
                match again {
                    Ok(smaller) => stream = smaller,
                    Err(too_long) => {
                        let _ = events.send((generation, cannot_fit(too_long))).await;
                        return;
                    }
                }
                continue;
            }
            Err(error) => {
                let outcome = if error.transient { "transient_error" } else { "error" };
                labels.request(outcome);
                Span::current().record("outcome", outcome);
                tracing::warn!(
                    provider = labels.provider,
                    model = %labels.model,
                    transient = error.transient,
                    error = %error.message,
                    "LLM call failed"
                );
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
    labels.request("ok");
    Span::current().record("outcome", "ok");
    histogram!(names::LLM_STREAM_SECONDS, &labels.pair()).record(started.elapsed().as_secs_f64());
    if let Some(usage) = reply.usage {
        counter!(names::LLM_TOKENS, &labels.with("kind", "prompt")).increment(u64::from(usage.prompt_tokens));
        counter!(names::LLM_TOKENS, &labels.with("kind", "completion")).increment(u64::from(usage.completion_tokens));
        Span::current().record("llm.prompt_tokens", usage.prompt_tokens);
        Span::current().record("llm.completion_tokens", usage.completion_tokens);
    }
    reply.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    reply.counted_prompt_tokens = call.counted;
    reply.tool_calls = checks.tools.check_calls(checks.ctx, requested).await;
    let _ = events.send((generation, Command::LlmFinished { reply })).await;
}
