//! Transitions of the tool calls a reply asked for: approvals, results from the server's
//! tools and from other services, and the answers written for calls that will not run.

use std::collections::HashSet;

use super::effect::Effect;
use super::env::Env;
use super::outcome::Outcome;
use super::rejection::Rejection;
use crate::domain::{
    Approval, Change, CheckedToolCall, Context, Message, Phase, Place, Role, Seq, ToolCall, ToolCallId, ToolOutcome,
    ToolResult,
};

/// Text of the tool message that answers a denied call.
pub const DENIED: &str = "denied by the user";
/// Text of the tool message that answers a call left open by CancelRun.
pub const CANCELLED: &str = "cancelled by the user";
/// Text of the tool message that answers a non-idempotent call a restart interrupted.
pub const INTERRUPTED: &str = "interrupted by restart";

/// The calls of a finished reply, each with its approval decided by its tool's policy, and
/// the error answers (the `answers_from`-th new message on) of the calls the check refused:
/// those are never pending, whatever their tool's policy.
pub fn decide(
    ctx: &Context,
    answers_from: u64,
    requested: Vec<CheckedToolCall>,
    env: &Env,
) -> (Vec<ToolCall>, Vec<Message>) {
    let mut answers = Vec::new();
    let calls = requested
        .into_iter()
        .map(|CheckedToolCall { call, refused }| {
            let policy = env.policy(ctx, &call.name);
            let approval = match policy {
                Some(policy)
                    if refused.is_none()
                        && policy.requires_approval
                        && !ctx.config.auto_approve_tools.contains(&call.name) =>
                {
                    Approval::Pending
                }
                _ => Approval::AutoApproved,
            };
            let external = policy.is_some_and(|p| p.external);
            let call =
                ToolCall { id: call.id, name: call.name, arguments_json: call.arguments_json, approval, external };
            if let Some(problem) = refused {
                let place = ctx.place(answers_from + answers.len() as u64);
                answers.push(tool_message(&call, &ToolResult::error(problem), place, env));
            }
            call
        })
        .collect();
    (calls, answers)
}

pub fn approve(ctx: &Context, approved: &[ToolCallId], denied: &[ToolCallId], env: &Env) -> Result<Outcome, Rejection> {
    let Phase::AwaitingToolApproval { message: seq } = ctx.phase else {
        return Err(Rejection::WrongState { action: "ApproveTools", state: ctx.state() });
    };
    let Some(original) = ctx.message(seq) else {
        return Err(Rejection::WrongState { action: "ApproveTools", state: ctx.state() });
    };
    let mut message = original.clone();
    let mut seen = HashSet::new();
    let decisions =
        approved.iter().map(|id| (id, Approval::Approved)).chain(denied.iter().map(|id| (id, Approval::Denied)));
    for (id, decision) in decisions {
        if !seen.insert(id) {
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
    let undecided: Vec<ToolCallId> =
        message.tool_calls.iter().filter(|c| c.approval == Approval::Pending).map(|c| c.id.clone()).collect();
    if !undecided.is_empty() {
        return Err(Rejection::Undecided { ids: undecided });
    }

    let denied = message.tool_calls.iter().filter(|c| c.approval == Approval::Denied);
    let denials = error_answers(ctx, denied, ToolOutcome::Denied, env);
    let calls = ctx.open_calls(seq, &message.tool_calls);
    Ok(if calls.is_empty() {
        Outcome::then(Change::to(Phase::GeneratingResponse).with(message).with_all(denials), Effect::Continue)
    } else {
        let change = Change::to(Phase::ExecutingTools { message: seq }).with(message).with_all(denials);
        Outcome::then(change, Effect::RunTools { calls })
    })
}

fn tool_message(call: &ToolCall, result: &ToolResult, place: Place, env: &Env) -> Message {
    let mut message = Message::text((env.new_id)(), place, Role::Tool, result.output.clone(), env.now);
    message.tool_call_id = Some(call.id.clone());
    message.tool_outcome = Some(result.outcome);
    message
}

/// The answer to a call that will not run (denied, cancelled or interrupted), with its text.
fn not_run(outcome: ToolOutcome) -> ToolResult {
    let text = match outcome {
        ToolOutcome::Denied => DENIED,
        ToolOutcome::Cancelled => CANCELLED,
        ToolOutcome::Interrupted => INTERRUPTED,
        other => other.label(),
    };
    ToolResult::ended(outcome, text)
}

/// The answers to `calls` that will not run, appended in order after the context's last
/// message.
pub fn error_answers<'a>(
    ctx: &Context,
    calls: impl IntoIterator<Item = &'a ToolCall>,
    outcome: ToolOutcome,
    env: &Env,
) -> Vec<Message> {
    let error = not_run(outcome);
    calls.into_iter().zip(0..).map(|(call, k)| tool_message(call, &error, ctx.place(k), env)).collect()
}

pub fn tool_finished(ctx: &Context, call_id: &ToolCallId, result: ToolResult, env: &Env) -> Outcome {
    let Phase::ExecutingTools { message: seq } = ctx.phase else {
        return Outcome::default();
    };
    let pending = ctx.pending_tool_calls();
    let Some(call) = pending.iter().find(|c| &c.id == call_id) else {
        // Already answered (a duplicate) or never runnable: nothing to record.
        return Outcome::default();
    };
    let answer = tool_message(call, &result, ctx.place(0), env);
    if pending.len() == 1 {
        Outcome::then(Change::to(Phase::ProcessingToolResults).with(answer), Effect::Continue)
    } else {
        Change::to(Phase::ExecutingTools { message: seq }).with(answer).into()
    }
}

pub fn submit(ctx: &Context, call_id: ToolCallId, result: ToolResult, env: &Env) -> Result<Outcome, Rejection> {
    let answer = ctx.messages.iter().rev().find(|m| m.role == Role::Tool && m.tool_call_id.as_ref() == Some(&call_id));
    if let Some(answer) = answer {
        // The same result again is a retry of a delivery that worked.
        return if answer.text_content() == result.output && answer.is_error() == result.is_error() {
            Ok(Outcome::default())
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

/// Answers every call of message `seq` that has no result yet as `outcome` (cancelled,
/// interrupted), marking calls that were still waiting for approval as denied.
pub fn close_open_calls(ctx: &Context, seq: Seq, outcome: ToolOutcome, env: &Env) -> Vec<Message> {
    let Some(original) = ctx.message(seq) else {
        return Vec::new();
    };
    let answered = ctx.answered_calls(seq);
    let open: Vec<&ToolCall> = original.tool_calls.iter().filter(|c| !answered.contains(&c.id)).collect();
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
    changed.extend(error_answers(ctx, open, outcome, env));
    changed
}
