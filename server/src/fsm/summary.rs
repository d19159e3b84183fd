//! Summarising the oldest part of a conversation before an LLM call that would outgrow the
//! model's window: a step of its own (SUMMARIZING_HISTORY), saved, resumable, cancellable.

use super::effect::Effect;
use super::env::Env;
use super::outcome::Outcome;
use super::steps::{call_llm, call_llm_with};
use crate::domain::{Change, Context, Message, Phase, Role, Usage};

/// Limits of the calibration (per mille), so that one odd report cannot make ctxd think a
/// window far larger or smaller than it is.
const CALIBRATION_RANGE: (u64, u64) = (500, 3000);

/// The first LLM call of a run step: after a summary when the request would pass the
/// context's `summarize_at`, else at once.
pub(super) fn next_call(ctx: &Context, env: &Env) -> Outcome {
    match ctx.summarize_through(&env.window.budget(ctx)) {
        Some(through) => {
            Outcome::then(Change::to(Phase::SummarizingHistory { through }), Effect::Summarize { through })
        }
        None => call_llm(1),
    }
}

/// The summary arrived: it joins the active path, and the call it was made for goes out.
pub(super) fn finished(ctx: &Context, text: String, usage: Option<Usage>, model: String, env: &Env) -> Outcome {
    let Phase::SummarizingHistory { through } = ctx.phase else { return Outcome::default() };
    let Some(covered) = ctx.message(through) else { return call_llm(1) };
    let mut summary = Message::text((env.new_id)(), ctx.place(0), Role::Summary, text, env.now);
    summary.summary_through = Some(covered.id);
    summary.usage = usage;
    summary.model = model;
    call_llm_with(Change::to(Phase::AwaitingLlmResponse { attempt: 1 }).with(summary), 1)
}

/// Summarising failed after its retries: the call goes out without it (the request is
/// truncated to fit instead), rather than failing the user's turn.
pub(super) fn failed(ctx: &Context) -> Outcome {
    match ctx.phase {
        Phase::SummarizingHistory { .. } => call_llm(1),
        _ => Outcome::default(),
    }
}

/// The provider's count per 1,000 of ctxd's, from a reply's usage and what ctxd counted for
/// its request.
pub(super) fn calibration(usage: Option<Usage>, counted: u64) -> Option<u32> {
    let reported = u64::from(usage?.prompt_tokens);
    if reported == 0 || counted == 0 {
        return None;
    }
    let ratio = (reported * 1000 / counted).clamp(CALIBRATION_RANGE.0, CALIBRATION_RANGE.1);
    u32::try_from(ratio).ok()
}
