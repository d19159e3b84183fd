//! Building blocks the transitions share: what a run's next LLM call is, and the checks and
//! messages of actions that add a user message (send, edit).

use super::effect::Effect;
use super::env::Env;
use super::outcome::Outcome;
use super::rejection::Rejection;
use crate::domain::{Change, Context, Message, Phase, Place, Role};

/// `change` (which moves to AWAITING_LLM_RESPONSE), then the LLM call.
pub(super) fn call_llm_with(change: Change, attempt: u32) -> Outcome {
    Outcome::then(change, Effect::CallLlm { attempt })
}

/// The LLM call of attempt `attempt`, moving to AWAITING_LLM_RESPONSE.
pub(super) fn call_llm(attempt: u32) -> Outcome {
    call_llm_with(Change::to(Phase::AwaitingLlmResponse { attempt }), attempt)
}

/// Whether the user message with this idempotency key was saved: a resend (of a send or
/// an edit) is answered with the current state, whatever happened since. That is what makes
/// retrying safe.
pub(super) fn already_saved(ctx: &Context, client_message_id: Option<&str>) -> bool {
    client_message_id.is_some_and(|id| {
        ctx.client_ids.contains_key(id) || ctx.queued.iter().any(|m| m.client_message_id.as_deref() == Some(id))
    })
}

/// A user message at `place`, carrying the client's idempotency key.
pub(super) fn user_message(place: Place, content: String, client_message_id: Option<String>, env: &Env) -> Message {
    let mut message = Message::text((env.new_id)(), place, Role::User, content, env.now);
    message.client_message_id = client_message_id;
    message
}

pub(super) fn check_revision(ctx: &Context, expected_revision: Option<u64>) -> Result<(), Rejection> {
    match expected_revision {
        Some(expected) if expected != ctx.revision => Err(Rejection::StaleRevision { expected, actual: ctx.revision }),
        _ => Ok(()),
    }
}
