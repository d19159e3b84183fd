//! The actions that move a conversation to another branch of its tree: an edited message, a
//! regenerated reply, a switch between versions. Each leaves the old branch in storage.

use super::effect::Effect;
use super::env::Env;
use super::outcome::Outcome;
use super::rejection::Rejection;
use super::steps::{already_saved, call_llm_with, check_revision, user_message};
use crate::domain::{Branch, Change, Context, Message, MessageId, PathMove, Phase, Role};

/// Branches move only while no run is going on.
pub fn allowed(ctx: &Context, action: &'static str, expected_revision: Option<u64>) -> Result<(), Rejection> {
    check_revision(ctx, expected_revision)?;
    match ctx.phase {
        Phase::Idle | Phase::Failed { .. } => Ok(()),
        _ => Err(Rejection::WrongState { action, state: ctx.state() }),
    }
}

/// The message `id` of the active path, if it has `role`.
fn target<'c>(ctx: &'c Context, id: MessageId, role: Role, action: &'static str) -> Result<&'c Message, Rejection> {
    let message = ctx.on_path(id).ok_or(Rejection::NotOnPath { message: id })?;
    if message.role != role {
        return Err(Rejection::WrongRole { action, message: id, role: message.role, wanted: role });
    }
    Ok(message)
}

/// A new version of user message `id` with `content` becomes active, and a run starts from it.
pub fn edit(
    ctx: &Context,
    id: MessageId,
    content: String,
    client_message_id: Option<String>,
    expected_revision: Option<u64>,
    env: &Env,
) -> Result<Outcome, Rejection> {
    if already_saved(ctx, client_message_id.as_deref()) {
        return Ok(Outcome::default());
    }
    allowed(ctx, "EditMessage", expected_revision)?;
    let seq = target(ctx, id, Role::User, "EditMessage")?.seq;
    let message = user_message(ctx.place_at(seq), content, client_message_id, env);
    let change = Change::to(Phase::ProcessingUserMessage).moving(PathMove::Cut(seq)).with(message);
    Ok(Outcome::then(change, Effect::Continue))
}

/// A new version of assistant message `id` (none: the last reply) is generated from the same
/// history; the old one stays a version. When the path ends with a user message (its reply
/// failed or was cancelled before any text), `None` generates that missing reply.
pub fn regenerate(ctx: &Context, id: Option<MessageId>, expected_revision: Option<u64>) -> Result<Outcome, Rejection> {
    allowed(ctx, "RegenerateReply", expected_revision)?;
    let cut = match id {
        Some(id) => Some(target(ctx, id, Role::Assistant, "RegenerateReply")?.seq),
        // A summary made for the reply that failed stays before it.
        None if ctx.messages.iter().rev().find(|m| m.role != Role::Summary).is_some_and(|m| m.role == Role::User) => {
            None
        }
        None => Some(
            ctx.messages.iter().rev().find(|m| m.role == Role::Assistant).ok_or(Rejection::NothingToRegenerate)?.seq,
        ),
    };
    let change = Change::to(Phase::AwaitingLlmResponse { attempt: 1 });
    let change = match cut {
        Some(seq) => change.moving(PathMove::Cut(seq)),
        None => change,
    };
    Ok(call_llm_with(change, 1))
}

/// Follows `branch` (read from storage by the runtime); `None`: the message asked for is on
/// the active path already, and nothing changes. A failure belongs to the branch it happened
/// on, so the context rests IDLE on the new one.
pub fn switch(ctx: &Context, branch: Option<Branch>, expected_revision: Option<u64>) -> Result<Outcome, Rejection> {
    allowed(ctx, "SwitchBranch", expected_revision)?;
    Ok(match branch {
        Some(branch) => Change::to(Phase::Idle).moving(PathMove::Switch(Box::new(branch))).into(),
        None => Outcome::default(),
    })
}
