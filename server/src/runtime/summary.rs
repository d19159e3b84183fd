//! Writing a summary (the work behind `Effect::Summarize`): one LLM call, retried like any
//! other, its text collected rather than streamed. What a summary covers and where it goes
//! is the state machine's; what it is sent is the prompt's.

use futures::StreamExt;
use metrics::counter;
use tracing::Span;

use super::driver::{FULL_ROOM, smaller};
use super::prompt;
use super::shared::Shared;
use crate::domain::{Context, Seq, Usage};
use crate::fsm::Command;
use crate::llm::{LlmError, LlmEvent};
use crate::telemetry::names;

/// Summarises `ctx`'s active path through `through`: `SummaryFinished`, or `SummaryFailed`
/// once the retries are spent (the call then goes out truncated instead).
pub(super) async fn summarize(shared: &Shared, ctx: &Context, through: Seq) -> Command {
    let (mut attempt, mut share) = (1, FULL_ROOM);
    let started = std::time::Instant::now();
    loop {
        let request = prompt::summary(ctx, shared, through, share);
        let model = request.model.clone();
        let error = match collect(shared, request).await {
            Ok((text, usage, answered)) if !text.trim().is_empty() => {
                counter!(names::SUMMARIES, "outcome" => "ok").increment(1);
                Span::current().record("outcome", "ok");
                let took_us = started.elapsed().as_micros() as u64;
                tracing::info!(context = %ctx.id, through = through.get(), took_us, "summarised the oldest messages");
                return Command::SummaryFinished {
                    text: text.trim().to_owned(),
                    usage,
                    model: answered.unwrap_or(model),
                };
            }
            Ok(_) => LlmError::permanent("the model wrote an empty summary"),
            Err(error) => error,
        };
        if error.too_long
            && let Some(less) = smaller(share)
        {
            share = less;
            continue;
        }
        if error.transient && attempt < shared.settings.max_llm_attempts {
            let pause = shared.settings.llm_retry.pause(attempt).max(error.retry_after.unwrap_or_default());
            tokio::time::sleep(pause).await;
            attempt += 1;
            continue;
        }
        counter!(names::SUMMARIES, "outcome" => "fallback").increment(1);
        Span::current().record("outcome", "fallback");
        tracing::warn!(context = %ctx.id, error = %error.message, "could not summarise; the call goes out truncated");
        return Command::SummaryFailed;
    }
}

/// A reply's text, usage and model, all of it.
async fn collect(
    shared: &Shared,
    request: crate::llm::LlmRequest,
) -> Result<(String, Option<Usage>, Option<String>), LlmError> {
    let mut stream = shared.llm.stream(request);
    let (mut text, mut usage, mut model) = (String::new(), None, None);
    while let Some(event) = stream.next().await {
        match event? {
            LlmEvent::Text(piece) => text.push_str(&piece),
            LlmEvent::Usage(reported) => usage = Some(reported),
            LlmEvent::Model(name) => model = Some(name),
            LlmEvent::ToolCall(_) => {}
        }
    }
    Ok((text, usage, model))
}
