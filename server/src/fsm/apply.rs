//! [`apply`]: one command against one context, and the transitions of a run.

use super::branches;
use super::command::{Command, LlmReply, OnBusy};
use super::effect::Effect;
use super::env::Env;
use super::outcome::Outcome;
use super::rejection::Rejection;
use super::steps::{already_saved, call_llm, call_llm_with, check_revision, user_message};
use super::summary::{self, next_call};
use super::tool_calls;
use crate::domain::{
    Approval, Change, Context, Message, MessageStatus, Phase, Place, QueueChange, Role, ToolCall, ToolOutcome,
};

/// Applies `command` to `ctx`. Deterministic: the same inputs give the same outcome.
pub fn apply(ctx: &Context, command: Command, env: &Env) -> Result<Outcome, Rejection> {
    let outcome = apply_command(ctx, command, env)?;
    Ok(drain_at_rest(ctx, outcome))
}

/// A change that brings the context to rest with messages queued goes on at once: the
/// queued messages start the next run (see [`continue_run`]).
fn drain_at_rest(ctx: &Context, outcome: Outcome) -> Outcome {
    let Outcome::Changed(change, mut effects) = outcome else { return outcome };
    let resting = matches!(change.phase, Phase::Idle | Phase::Failed { .. });
    let queued = match &change.queue {
        Some(QueueChange::Push(_)) => true,
        Some(QueueChange::Drain) => false,
        None => !ctx.queued.is_empty(),
    };
    if resting && queued && !effects.contains(&Effect::Continue) {
        effects.push(Effect::Continue);
    }
    Outcome::Changed(change, effects)
}

fn apply_command(ctx: &Context, command: Command, env: &Env) -> Result<Outcome, Rejection> {
    match command {
        Command::Send { content, client_message_id, expected_revision, on_busy } => {
            send(ctx, content, client_message_id, expected_revision, on_busy, env)
        }
        Command::Edit { message_id, content, client_message_id, expected_revision } => {
            branches::edit(ctx, message_id, content, client_message_id, expected_revision, env)
        }
        Command::Regenerate { message_id, expected_revision } => {
            branches::regenerate(ctx, message_id, expected_revision)
        }
        Command::SwitchBranch { branch, expected_revision } => branches::switch(ctx, branch, expected_revision),
        Command::Approve { approved, denied } => tool_calls::approve(ctx, &approved, &denied, env),
        Command::Update { title, config, expected_revision } => {
            check_revision(ctx, expected_revision)?;
            Ok(Change::to(ctx.phase.clone()).titled(title).configured(config).into())
        }
        Command::Cancel => cancel(ctx, env),
        Command::Retry => match ctx.phase {
            Phase::Failed { .. } => Ok(next_call(ctx, env)),
            _ => Err(Rejection::WrongState { action: "RetryRun", state: ctx.state() }),
        },
        Command::Continue => Ok(continue_run(ctx, env)),
        Command::Resume => Ok(resume(ctx, env)),
        Command::LlmDelta { text } => Ok(delta(ctx, text, env)),
        Command::LlmFinished { reply } => Ok(finished(ctx, reply, env)),
        Command::LlmFailed { error, transient, retry_after_ms } => {
            Ok(failed(ctx, error, transient, retry_after_ms, env))
        }
        Command::SubmitToolResult { call_id, result } => tool_calls::submit(ctx, call_id, result, env),
        Command::ToolFinished { call_id, result } => Ok(tool_calls::tool_finished(ctx, &call_id, result, env)),
        Command::RetryDue => Ok(match ctx.phase {
            Phase::TransientFailure { attempt, .. } => call_llm(attempt + 1),
            _ => Outcome::default(),
        }),
        Command::SummaryFinished { text, usage, model } => Ok(summary::finished(ctx, text, usage, model, env)),
        Command::SummaryFailed => Ok(summary::failed(ctx)),
    }
}

fn send(
    ctx: &Context,
    content: String,
    client_message_id: Option<String>,
    expected_revision: Option<u64>,
    on_busy: OnBusy,
    env: &Env,
) -> Result<Outcome, Rejection> {
    if already_saved(ctx, client_message_id.as_deref()) {
        return Ok(Outcome::default());
    }
    check_revision(ctx, expected_revision)?;
    if !matches!(ctx.phase, Phase::Idle | Phase::Failed { .. }) {
        return match on_busy {
            OnBusy::Reject => Err(Rejection::Busy { state: ctx.state() }),
            OnBusy::Interrupt => Ok(interrupt(ctx, content, client_message_id, env)),
            OnBusy::Enqueue => {
                // Its place in the tree is given when it joins the path.
                let mut message = user_message(ctx.place(0), content, client_message_id, env);
                message.status = MessageStatus::Queued;
                Ok(Change::to(ctx.phase.clone()).enqueued(message).into())
            }
        };
    }
    // A context nobody named is named after its first message, once: a title a client set
    // (at creation or with UpdateContext) is never replaced.
    let first = ctx.title.is_empty() && !ctx.messages.iter().any(|m| m.role == Role::User);
    let title = first.then(|| title_from(&content)).filter(|t| !t.is_empty());
    let message = user_message(ctx.place(0), content, client_message_id, env);
    let change = Change::to(Phase::ProcessingUserMessage).with(message).titled(title);
    Ok(Outcome::then(change, Effect::Continue))
}

/// Longest title taken from a message, in characters.
const MAX_TITLE_CHARS: usize = 60;

/// A title from a message: its first line, spaces folded, cut at a word near
/// [`MAX_TITLE_CHARS`] with an ellipsis.
fn title_from(content: &str) -> String {
    let line = content.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut title = String::new();
    for word in words {
        let len = title.chars().count() + usize::from(!title.is_empty()) + word.chars().count();
        if len > MAX_TITLE_CHARS {
            if title.is_empty() {
                title = word.chars().take(MAX_TITLE_CHARS).collect();
            }
            title.push('…');
            return title;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    title
}

fn continue_run(ctx: &Context, env: &Env) -> Outcome {
    match ctx.phase {
        // At rest with messages queued during the run: they start the next one, together.
        Phase::Idle | Phase::Failed { .. } if !ctx.queued.is_empty() => {
            let change = Change::to(Phase::ProcessingUserMessage).with_all(joined(ctx, 0)).draining();
            Outcome::then(change, Effect::Continue)
        }
        Phase::ProcessingUserMessage | Phase::GeneratingResponse => next_call(ctx, env),
        Phase::ProcessingToolResults => Outcome::then(Change::to(Phase::GeneratingResponse), Effect::Continue),
        Phase::ProcessingLlmResponse { message } => {
            let calls = ctx.message(message).map(|m| m.tool_calls.as_slice()).unwrap_or_default();
            if calls.is_empty() {
                Change::to(Phase::Idle).into()
            } else if calls.iter().any(|c| c.approval == Approval::Pending) {
                Change::to(Phase::AwaitingToolApproval { message }).into()
            } else {
                match ctx.open_calls(message, calls) {
                    // Every call was answered before it could run.
                    open if open.is_empty() => {
                        Outcome::then(Change::to(Phase::ProcessingToolResults), Effect::Continue)
                    }
                    calls => Outcome::then(Change::to(Phase::ExecutingTools { message }), Effect::RunTools { calls }),
                }
            }
        }
        _ => Outcome::default(),
    }
}

fn delta(ctx: &Context, text: String, env: &Env) -> Outcome {
    match ctx.phase {
        Phase::AwaitingLlmResponse { attempt } => {
            let place = ctx.place(0);
            let message = place.seq;
            let mut reply = Message::text((env.new_id)(), place, Role::Assistant, text, env.now);
            reply.status = MessageStatus::Streaming;
            reply.model = env.model(ctx).to_owned();
            Change::to(Phase::StreamingLlmResponse { attempt, message }).with(reply).into()
        }
        Phase::StreamingLlmResponse { .. } => Outcome::Streamed(text),
        _ => Outcome::default(),
    }
}

fn finished(ctx: &Context, reply: LlmReply, env: &Env) -> Outcome {
    // The k-th new message after the reply is at place(answers_from + k).
    let (mut message, answers_from) = match ctx.phase {
        Phase::AwaitingLlmResponse { .. } => {
            let mut message = Message::text((env.new_id)(), ctx.place(0), Role::Assistant, String::new(), env.now);
            message.content.clear();
            (message, 1)
        }
        Phase::StreamingLlmResponse { message, .. } => match ctx.message(message) {
            Some(streamed) => (streamed.clone(), 0),
            None => return Outcome::default(),
        },
        _ => return Outcome::default(),
    };
    message.status = MessageStatus::Complete;
    message.usage = reply.usage;
    message.duration_ms = reply.duration_ms;
    message.model = reply.model.unwrap_or_else(|| env.model(ctx).to_owned());
    let seq = message.seq;
    let (calls, refused) = tool_calls::decide(ctx, answers_from, reply.tool_calls, env);
    message.tool_calls = calls;
    let calibration = summary::calibration(reply.usage, reply.counted_prompt_tokens);
    let change = Change::to(Phase::ProcessingLlmResponse { message: seq })
        .with(message)
        .with_all(refused)
        .calibrated(calibration.filter(|c| *c != ctx.calibration));
    Outcome::then(change, Effect::Continue)
}

fn failed(ctx: &Context, error: String, transient: bool, retry_after_ms: Option<u64>, env: &Env) -> Outcome {
    let (attempt, streamed) = match ctx.phase {
        Phase::AwaitingLlmResponse { attempt } => (attempt, None),
        Phase::StreamingLlmResponse { attempt, message } => (attempt, ctx.message(message)),
        _ => return Outcome::default(),
    };
    // Text of a failed attempt stays visible but is never taken as the answer.
    let discarded = streamed.map(|m| Message { status: MessageStatus::Error, ..m.clone() });
    if transient && attempt < env.max_llm_attempts {
        let change = Change::to(Phase::TransientFailure { attempt, error }).with_all(discarded);
        Outcome::then(change, Effect::ScheduleRetry { attempt, at_least_ms: retry_after_ms })
    } else {
        let error = if transient { format!("{error} (gave up after {attempt} attempts)") } else { error };
        Change::to(Phase::Failed { error }).with_all(discarded).into()
    }
}

/// Stops the run in progress as a cancel does and sends `content`, as one transition: the
/// history stays valid (every call answered) and the new message follows what was kept.
fn interrupt(ctx: &Context, content: String, client_message_id: Option<String>, env: &Env) -> Outcome {
    let stopped = stop_run(ctx, env);
    // After the answers the stop adds (replaced messages keep their place), the messages
    // queued before this one, then this one.
    let added = stopped.iter().filter(|m| m.seq >= ctx.next_seq()).count() as u64;
    let queued = joined(ctx, added);
    let message = user_message(ctx.place(added + queued.len() as u64), content, client_message_id, env);
    let change = Change::to(Phase::ProcessingUserMessage).with_all(stopped).with_all(queued).draining();
    Outcome::Changed(change.with(message), vec![Effect::AbortRun, Effect::Continue])
}

/// The queued messages as they join the active path, from the `from`-th new place on.
fn joined(ctx: &Context, from: u64) -> Vec<Message> {
    ctx.queued
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let Place { seq, node, parent } = ctx.place(from + k as u64);
            Message { seq, node, parent, status: MessageStatus::Complete, ..(**m).clone() }
        })
        .collect()
}

fn cancel(ctx: &Context, env: &Env) -> Result<Outcome, Rejection> {
    match ctx.phase {
        Phase::Idle => Err(Rejection::WrongState { action: "CancelRun", state: ctx.state() }),
        // Nothing runs in FAILED; cancelling dismisses the error.
        Phase::Failed { .. } => Ok(Change::to(Phase::Idle).into()),
        _ => Ok(Outcome::then(Change::to(Phase::Idle).with_all(stop_run(ctx, env)), Effect::AbortRun)),
    }
}

/// What stopping the run in progress saves: the streaming reply kept as CANCELLED, and an
/// answer "cancelled" to every call without one (calls awaiting approval are denied).
fn stop_run(ctx: &Context, env: &Env) -> Vec<Message> {
    match ctx.phase {
        Phase::Idle | Phase::Failed { .. } => Vec::new(),
        Phase::StreamingLlmResponse { message, .. } => ctx
            .message(message)
            .map(|m| vec![Message { status: MessageStatus::Cancelled, ..m.clone() }])
            .unwrap_or_default(),
        Phase::ProcessingLlmResponse { message }
        | Phase::AwaitingToolApproval { message }
        | Phase::ExecutingTools { message } => tool_calls::close_open_calls(ctx, message, ToolOutcome::Cancelled, env),
        Phase::ProcessingUserMessage
        | Phase::AwaitingLlmResponse { .. }
        | Phase::ProcessingToolResults
        | Phase::GeneratingResponse
        | Phase::SummarizingHistory { .. }
        | Phase::TransientFailure { .. } => Vec::new(),
    }
}

fn resume(ctx: &Context, env: &Env) -> Outcome {
    match ctx.phase {
        Phase::ProcessingUserMessage
        | Phase::ProcessingLlmResponse { .. }
        | Phase::ProcessingToolResults
        | Phase::GeneratingResponse => Outcome::run(Effect::Continue),
        Phase::AwaitingLlmResponse { attempt } => Outcome::run(Effect::CallLlm { attempt }),
        Phase::StreamingLlmResponse { attempt, message } => {
            // The streamed text was not saved past its first piece: ask again from the
            // saved conversation and keep the interrupted reply out of it.
            let interrupted = ctx.message(message).map(|m| Message { status: MessageStatus::Error, ..m.clone() });
            call_llm_with(Change::to(Phase::AwaitingLlmResponse { attempt }).with_all(interrupted), attempt)
        }
        Phase::TransientFailure { attempt, .. } => Outcome::run(Effect::ScheduleRetry { attempt, at_least_ms: None }),
        Phase::SummarizingHistory { through } => Outcome::run(Effect::Summarize { through }),
        Phase::ExecutingTools { message } => {
            let (rerun, lost): (Vec<ToolCall>, Vec<ToolCall>) = ctx
                .pending_tool_calls()
                .into_iter()
                .partition(|c| env.policy(ctx, &c.name).is_none_or(|p| p.idempotent));
            if lost.is_empty() {
                return Outcome::run(Effect::RunTools { calls: rerun });
            }
            let answers = tool_calls::error_answers(ctx, &lost, ToolOutcome::Interrupted, env);
            if rerun.is_empty() {
                Outcome::then(Change::to(Phase::ProcessingToolResults).with_all(answers), Effect::Continue)
            } else {
                let change = Change::to(Phase::ExecutingTools { message }).with_all(answers);
                Outcome::then(change, Effect::RunTools { calls: rerun })
            }
        }
        Phase::Idle | Phase::AwaitingToolApproval { .. } | Phase::Failed { .. } => Outcome::default(),
    }
}
