//! The per-context state machine: pure transitions, no I/O.
//!
//! [`apply`] takes the current context and a [`Command`] and returns an [`Outcome`]: the
//! change to save (at most one per command; the runtime saves it atomically, together with
//! the changes of commands that follow in the same instant) and the effects to run once it
//! is saved. Everything it needs from the outside world (time, ids, tool
//! policies) comes in through [`Env`], so the whole machine is testable without a server.

mod command;
mod effect;
mod rejection;
#[cfg(test)]
mod tests;

pub use command::{Command, LlmReply, RequestedToolCall, ToolResult};
pub use effect::Effect;
pub use rejection::Rejection;

use crate::domain::{
    Approval, Context, ContextConfig, Message, MessageId, MessageStatus, Phase, Role, Timestamp, ToolCall,
};

/// What the state machine needs to know about a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolPolicy {
    /// A person must approve each call (unless the context auto-approves the tool).
    pub requires_approval: bool,
    /// Running it twice does no harm, so a call interrupted by a restart is run again.
    pub idempotent: bool,
    /// Another service runs it and delivers the result with SubmitToolResult.
    pub external: bool,
}

/// A tool's policy: the context's external tools first, then the server's tools.
fn policy(ctx: &Context, env: &Env, name: &str) -> Option<ToolPolicy> {
    match ctx.config.external_tool(name) {
        Some(tool) => {
            Some(ToolPolicy { requires_approval: tool.requires_approval, idempotent: tool.idempotent, external: true })
        }
        None => env.tools.policy(name),
    }
}

/// Looks up tool policies by name; `None` for tools the server does not have.
pub trait ToolPolicies {
    fn policy(&self, name: &str) -> Option<ToolPolicy>;
}

/// The outside world, as far as the state machine sees it.
pub struct Env<'a> {
    pub now: Timestamp,
    pub tools: &'a dyn ToolPolicies,
    /// LLM attempts per call before the run fails (the first try included).
    pub max_llm_attempts: u32,
    pub new_id: &'a dyn Fn() -> MessageId,
}

/// A change to save: the new phase, the messages that are new or changed, and a new title
/// or config when those change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub phase: Phase,
    pub messages: Vec<Message>,
    pub title: Option<String>,
    pub config: Option<ContextConfig>,
}

/// The result of applying a command.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// `None`: nothing to save (a duplicate send, a stale effect result, a delta).
    pub change: Option<Change>,
    /// Text to append, in memory only, to the message that is streaming.
    pub delta: Option<String>,
    pub effects: Vec<Effect>,
}

impl Outcome {
    fn none() -> Self {
        Self::default()
    }

    fn to(phase: Phase) -> Self {
        Self { change: Some(Change { phase, messages: Vec::new(), title: None, config: None }), ..Self::default() }
    }

    fn with(mut self, message: Message) -> Self {
        if let Some(change) = &mut self.change {
            change.messages.push(message);
        }
        self
    }

    fn with_all(self, messages: impl IntoIterator<Item = Message>) -> Self {
        messages.into_iter().fold(self, Outcome::with)
    }

    fn effect(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }
}

/// Text of the tool message that answers a denied call.
pub const DENIED: &str = "denied by the user";
/// Text of the tool message that answers a call left open by CancelRun.
pub const CANCELLED: &str = "cancelled by the user";
/// Text of the tool message that answers a non-idempotent call a restart interrupted.
pub const INTERRUPTED: &str = "interrupted by restart";

/// Applies `command` to `ctx`. Deterministic: the same inputs give the same outcome.
pub fn apply(ctx: &Context, command: Command, env: &Env) -> Result<Outcome, Rejection> {
    match command {
        Command::Send { content, client_message_id, expected_revision } => {
            send(ctx, content, client_message_id, expected_revision, env)
        }
        Command::Approve { approved, denied } => approve(ctx, &approved, &denied, env),
        Command::Update { title, config, expected_revision } => {
            check_revision(ctx, expected_revision)?;
            let mut outcome = Outcome::to(ctx.phase.clone());
            if let Some(change) = &mut outcome.change {
                change.title = title;
                change.config = config;
            }
            Ok(outcome)
        }
        Command::Cancel => cancel(ctx, env),
        Command::Retry => match ctx.phase {
            Phase::Failed { .. } => Ok(call_llm(1)),
            _ => Err(Rejection::WrongState { action: "RetryRun", state: ctx.state() }),
        },
        Command::Continue => Ok(continue_run(ctx)),
        Command::Resume => Ok(resume(ctx, env)),
        Command::LlmDelta { text } => Ok(delta(ctx, text, env)),
        Command::LlmFinished { reply } => Ok(finished(ctx, reply, env)),
        Command::LlmFailed { error, transient, retry_after_ms } => {
            Ok(failed(ctx, error, transient, retry_after_ms, env))
        }
        Command::SubmitToolResult { call_id, result } => submit(ctx, call_id, result, env),
        Command::ToolFinished { call_id, result } => Ok(tool_finished(ctx, &call_id, result, env)),
        Command::RetryDue => Ok(match ctx.phase {
            Phase::TransientFailure { attempt, .. } => call_llm(attempt + 1),
            _ => Outcome::none(),
        }),
    }
}

fn call_llm(attempt: u32) -> Outcome {
    Outcome::to(Phase::AwaitingLlmResponse { attempt }).effect(Effect::CallLlm { attempt })
}

fn send(
    ctx: &Context,
    content: String,
    client_message_id: Option<String>,
    expected_revision: Option<u64>,
    env: &Env,
) -> Result<Outcome, Rejection> {
    // A resend of a message that was saved is answered with the current state, whatever
    // happened since: that is what makes retrying a send safe.
    if client_message_id.as_ref().is_some_and(|id| ctx.client_ids.contains_key(id)) {
        return Ok(Outcome::none());
    }
    check_revision(ctx, expected_revision)?;
    if !matches!(ctx.phase, Phase::Idle | Phase::Failed { .. }) {
        return Err(Rejection::Busy { state: ctx.state() });
    }
    let mut message = Message::text((env.new_id)(), ctx.next_seq(), Role::User, content, env.now);
    message.client_message_id = client_message_id;
    Ok(Outcome::to(Phase::ProcessingUserMessage).with(message).effect(Effect::Continue))
}

fn check_revision(ctx: &Context, expected_revision: Option<u64>) -> Result<(), Rejection> {
    match expected_revision {
        Some(expected) if expected != ctx.revision => Err(Rejection::StaleRevision { expected, actual: ctx.revision }),
        _ => Ok(()),
    }
}

fn continue_run(ctx: &Context) -> Outcome {
    match ctx.phase {
        Phase::ProcessingUserMessage | Phase::GeneratingResponse => call_llm(1),
        Phase::ProcessingToolResults => Outcome::to(Phase::GeneratingResponse).effect(Effect::Continue),
        Phase::ProcessingLlmResponse { message } => {
            let calls = ctx.message(message).map(|m| m.tool_calls.as_slice()).unwrap_or_default();
            if calls.is_empty() {
                Outcome::to(Phase::Idle)
            } else if calls.iter().any(|c| c.approval == Approval::Pending) {
                Outcome::to(Phase::AwaitingToolApproval { message })
            } else {
                Outcome::to(Phase::ExecutingTools { message }).effect(Effect::RunTools { calls: runnable(calls) })
            }
        }
        _ => Outcome::none(),
    }
}

fn runnable(calls: &[ToolCall]) -> Vec<ToolCall> {
    calls.iter().filter(|c| c.approval.allows_run()).cloned().collect()
}

fn delta(ctx: &Context, text: String, env: &Env) -> Outcome {
    match ctx.phase {
        Phase::AwaitingLlmResponse { attempt } => {
            let message = ctx.next_seq();
            let mut reply = Message::text((env.new_id)(), message, Role::Assistant, text, env.now);
            reply.status = MessageStatus::Streaming;
            Outcome::to(Phase::StreamingLlmResponse { attempt, message }).with(reply)
        }
        Phase::StreamingLlmResponse { .. } => Outcome { delta: Some(text), ..Outcome::none() },
        _ => Outcome::none(),
    }
}

fn finished(ctx: &Context, reply: LlmReply, env: &Env) -> Outcome {
    let mut message = match ctx.phase {
        Phase::AwaitingLlmResponse { .. } => {
            let mut message = Message::text((env.new_id)(), ctx.next_seq(), Role::Assistant, String::new(), env.now);
            message.content.clear();
            message
        }
        Phase::StreamingLlmResponse { message, .. } => match ctx.message(message) {
            Some(streamed) => streamed.clone(),
            None => return Outcome::none(),
        },
        _ => return Outcome::none(),
    };
    message.status = MessageStatus::Complete;
    message.usage = reply.usage;
    message.duration_ms = reply.duration_ms;
    message.tool_calls = reply
        .tool_calls
        .into_iter()
        .map(|call| {
            let policy = policy(ctx, env, &call.name);
            let external = policy.is_some_and(|p| p.external);
            let approval = match policy {
                Some(policy) if policy.requires_approval && !ctx.config.auto_approve_tools.contains(&call.name) => {
                    Approval::Pending
                }
                // Unknown tools need no approval: running one only yields an error result.
                _ => Approval::AutoApproved,
            };
            ToolCall { id: call.id, name: call.name, arguments_json: call.arguments_json, approval, external }
        })
        .collect();
    let seq = message.seq;
    Outcome::to(Phase::ProcessingLlmResponse { message: seq }).with(message).effect(Effect::Continue)
}

fn failed(ctx: &Context, error: String, transient: bool, retry_after_ms: Option<u64>, env: &Env) -> Outcome {
    let (attempt, streamed) = match ctx.phase {
        Phase::AwaitingLlmResponse { attempt } => (attempt, None),
        Phase::StreamingLlmResponse { attempt, message } => (attempt, ctx.message(message)),
        _ => return Outcome::none(),
    };
    // Text of a failed attempt stays visible but is never taken as the answer.
    let discarded = streamed.map(|m| Message { status: MessageStatus::Error, ..m.clone() });
    let outcome = if transient && attempt < env.max_llm_attempts {
        Outcome::to(Phase::TransientFailure { attempt, error })
            .effect(Effect::ScheduleRetry { attempt, at_least_ms: retry_after_ms })
    } else {
        let error = if transient { format!("{error} (gave up after {attempt} attempts)") } else { error };
        Outcome::to(Phase::Failed { error })
    };
    outcome.with_all(discarded)
}

fn approve(ctx: &Context, approved: &[String], denied: &[String], env: &Env) -> Result<Outcome, Rejection> {
    let Phase::AwaitingToolApproval { message: seq } = ctx.phase else {
        return Err(Rejection::WrongState { action: "ApproveTools", state: ctx.state() });
    };
    let Some(original) = ctx.message(seq) else {
        return Err(Rejection::WrongState { action: "ApproveTools", state: ctx.state() });
    };
    let mut message = original.clone();
    let mut seen = std::collections::HashSet::new();
    let decisions =
        approved.iter().map(|id| (id, Approval::Approved)).chain(denied.iter().map(|id| (id, Approval::Denied)));
    for (id, decision) in decisions {
        if !seen.insert(id.as_str()) {
            return Err(Rejection::DuplicateDecision { id: id.clone() });
        }
        let call = message
            .tool_calls
            .iter_mut()
            .find(|c| &c.id == id)
            .ok_or_else(|| Rejection::UnknownToolCall { id: id.clone() })?;
        if call.approval != Approval::Pending {
            return Err(Rejection::AlreadyDecided { id: id.clone() });
        }
        call.approval = decision;
    }
    let undecided: Vec<String> =
        message.tool_calls.iter().filter(|c| c.approval == Approval::Pending).map(|c| c.id.clone()).collect();
    if !undecided.is_empty() {
        return Err(Rejection::Undecided { ids: undecided });
    }

    let denied = message.tool_calls.iter().filter(|c| c.approval == Approval::Denied);
    let denials = error_answers(ctx, denied, DENIED, env);
    let calls = runnable(&message.tool_calls);
    let outcome = if calls.is_empty() {
        Outcome::to(Phase::GeneratingResponse).effect(Effect::Continue)
    } else {
        Outcome::to(Phase::ExecutingTools { message: seq }).effect(Effect::RunTools { calls })
    };
    Ok(outcome.with(message).with_all(denials))
}

fn tool_message(call: &ToolCall, result: &ToolResult, seq: u64, env: &Env) -> Message {
    let mut message = Message::text((env.new_id)(), seq, Role::Tool, result.output.clone(), env.now);
    message.tool_call_id = Some(call.id.clone());
    message.is_error = result.is_error;
    message
}

/// Error answers to `calls`, appended in order after the context's last message.
fn error_answers<'a>(
    ctx: &Context,
    calls: impl IntoIterator<Item = &'a ToolCall>,
    text: &str,
    env: &Env,
) -> Vec<Message> {
    let error = ToolResult::error(text);
    calls.into_iter().zip(ctx.next_seq()..).map(|(call, seq)| tool_message(call, &error, seq, env)).collect()
}

fn tool_finished(ctx: &Context, call_id: &str, result: ToolResult, env: &Env) -> Outcome {
    let Phase::ExecutingTools { message: seq } = ctx.phase else {
        return Outcome::none();
    };
    let pending = ctx.pending_tool_calls();
    let Some(call) = pending.iter().find(|c| c.id == call_id) else {
        // Already answered (a duplicate) or never runnable: nothing to record.
        return Outcome::none();
    };
    let answer = tool_message(call, &result, ctx.next_seq(), env);
    if pending.len() == 1 {
        Outcome::to(Phase::ProcessingToolResults).with(answer).effect(Effect::Continue)
    } else {
        Outcome::to(Phase::ExecutingTools { message: seq }).with(answer)
    }
}

fn submit(ctx: &Context, call_id: String, result: ToolResult, env: &Env) -> Result<Outcome, Rejection> {
    let answer =
        ctx.messages.iter().rev().find(|m| m.role == Role::Tool && m.tool_call_id.as_deref() == Some(&call_id));
    if let Some(answer) = answer {
        // The same result again is a retry of a delivery that worked.
        return if answer.text_content() == result.output && answer.is_error == result.is_error {
            Ok(Outcome::none())
        } else {
            Err(Rejection::ToolCallAnswered { id: call_id })
        };
    }
    let waiting = matches!(ctx.phase, Phase::ExecutingTools { .. })
        && ctx.pending_tool_calls().iter().any(|c| c.id == call_id && c.external);
    if !waiting {
        return Err(Rejection::NoResultExpected { id: call_id, state: ctx.state() });
    }
    Ok(tool_finished(ctx, &call_id, result, env))
}

/// Answers every call of message `seq` that has no result yet with `text`, marking calls
/// that were still waiting for approval as denied.
fn close_open_calls(ctx: &Context, seq: u64, text: &str, env: &Env) -> Vec<Message> {
    let Some(original) = ctx.message(seq) else {
        return Vec::new();
    };
    let answered = ctx.answered_calls(seq);
    let open: Vec<&ToolCall> = original.tool_calls.iter().filter(|c| !answered.contains(c.id.as_str())).collect();
    if open.is_empty() {
        return Vec::new();
    }
    let mut changed = Vec::with_capacity(open.len() + 1);
    if original.tool_calls.iter().any(|c| c.approval == Approval::Pending) {
        let mut message = original.clone();
        for call in &mut message.tool_calls {
            if call.approval == Approval::Pending {
                call.approval = Approval::Denied;
            }
        }
        changed.push(message);
    }
    changed.extend(error_answers(ctx, open, text, env));
    changed
}

fn cancel(ctx: &Context, env: &Env) -> Result<Outcome, Rejection> {
    let messages = match ctx.phase {
        Phase::Idle => return Err(Rejection::WrongState { action: "CancelRun", state: ctx.state() }),
        // Nothing runs in FAILED; cancelling dismisses the error.
        Phase::Failed { .. } => return Ok(Outcome::to(Phase::Idle)),
        Phase::StreamingLlmResponse { message, .. } => ctx
            .message(message)
            .map(|m| vec![Message { status: MessageStatus::Cancelled, ..m.clone() }])
            .unwrap_or_default(),
        Phase::ProcessingLlmResponse { message }
        | Phase::AwaitingToolApproval { message }
        | Phase::ExecutingTools { message } => close_open_calls(ctx, message, CANCELLED, env),
        Phase::ProcessingUserMessage
        | Phase::AwaitingLlmResponse { .. }
        | Phase::ProcessingToolResults
        | Phase::GeneratingResponse
        | Phase::TransientFailure { .. } => Vec::new(),
    };
    Ok(Outcome::to(Phase::Idle).with_all(messages).effect(Effect::AbortRun))
}

fn resume(ctx: &Context, env: &Env) -> Outcome {
    match ctx.phase {
        Phase::ProcessingUserMessage
        | Phase::ProcessingLlmResponse { .. }
        | Phase::ProcessingToolResults
        | Phase::GeneratingResponse => Outcome::none().effect(Effect::Continue),
        Phase::AwaitingLlmResponse { attempt } => Outcome::none().effect(Effect::CallLlm { attempt }),
        Phase::StreamingLlmResponse { attempt, message } => {
            // The streamed text was not saved past its first piece: ask again from the
            // saved conversation and keep the interrupted reply out of it.
            let interrupted = ctx.message(message).map(|m| Message { status: MessageStatus::Error, ..m.clone() });
            call_llm(attempt).with_all(interrupted)
        }
        Phase::TransientFailure { attempt, .. } => {
            Outcome::none().effect(Effect::ScheduleRetry { attempt, at_least_ms: None })
        }
        Phase::ExecutingTools { message } => {
            let (rerun, lost): (Vec<ToolCall>, Vec<ToolCall>) = ctx
                .pending_tool_calls()
                .into_iter()
                .partition(|c| policy(ctx, env, &c.name).is_none_or(|p| p.idempotent));
            if lost.is_empty() {
                return Outcome::none().effect(Effect::RunTools { calls: rerun });
            }
            let answers = error_answers(ctx, &lost, INTERRUPTED, env);
            if rerun.is_empty() {
                Outcome::to(Phase::ProcessingToolResults).with_all(answers).effect(Effect::Continue)
            } else {
                Outcome::to(Phase::ExecutingTools { message })
                    .with_all(answers)
                    .effect(Effect::RunTools { calls: rerun })
            }
        }
        Phase::Idle | Phase::AwaitingToolApproval { .. } | Phase::Failed { .. } => Outcome::none(),
    }
}
