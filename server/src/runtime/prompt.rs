//! Builds the LLM requests for a context from what is saved: the next reply's, within the
//! model's window, and a summary's.

use std::sync::Arc;

use super::shared::Shared;
use crate::domain::{ContentPart, Context, Message, MessageId, MessageStatus, Place, Role, Seq, TooLong};
use crate::fsm::ContextWindow as _;
use crate::llm::{Encoding, LlmRequest, Purpose};
use crate::tools::ExternalTools;

/// What the summary is sent under, after the system prompt.
const SUMMARY_HEADER: &str = "Summary of the earlier conversation (its messages are not shown):";
/// What a summariser is asked; `{words}` is its length.
const SUMMARY_INSTRUCTIONS: &str = "You condense conversations so that an assistant can continue them without \
    the full history. Summarise the conversation below in at most {words} words: the user's goals and \
    preferences, facts, names and numbers, decisions, results of tool calls that still matter, and open \
    questions. If an earlier summary is given, fold it in. Write only the summary.";
/// Shares of the room a summary may take and be asked for (per mille of the room).
const SUMMARY_SHARE: u64 = 125;
/// What a transcript line adds to its message's count (`#12 assistant: `).
const LINE_FRAMING: u64 = 6;
/// How a message cut to fit ends, in what the model sees (the saved message stays whole).
const CUT_MARKER: &str = "\n[… cut by ctxd to fit the model's context window]";

/// The next reply's request for `ctx`, within `share` (per mille) of the room the model's
/// window leaves. O(log n) in the history plus what is sent: the path is shared, not copied.
pub fn reply(ctx: &Context, shared: &Shared, attempt: u32, share: u32) -> Result<(LlmRequest, u64), TooLong> {
    let windows = &shared.windows;
    let model = windows.model(ctx);
    let plan = ctx.plan(&windows.budget(ctx), share)?;
    let encoding = Encoding::of(model);
    let mut history = ctx.messages.skip(plan.start.index());
    for (seq, keep) in &plan.cuts {
        let i = seq.index() - plan.start.index();
        if let Some(message) = history.get(i) {
            let cut = cut(message, *keep, encoding);
            history.set(i, Arc::new(cut));
        }
    }
    let mut system_prompt = ctx.config.system_prompt.clone();
    if let Some(summary) = plan.summary.and_then(|seq| ctx.message(seq)) {
        if !system_prompt.is_empty() {
            system_prompt.push_str("\n\n");
        }
        system_prompt.push_str(SUMMARY_HEADER);
        system_prompt.push('\n');
        system_prompt.push_str(&summary.text_content());
    }
    let builtin = shared.tools.definitions();
    let tools = if ctx.config.external_tools.is_empty() {
        builtin
    } else {
        builtin.iter().cloned().chain(ExternalTools::definitions(&ctx.config)).collect()
    };
    let request = LlmRequest {
        model: model.to_owned(),
        system_prompt,
        history,
        tools,
        attempt,
        max_tokens: (ctx.config.max_output_tokens > 0).then_some(ctx.config.max_output_tokens),
        purpose: Purpose::Reply,
    };
    Ok((request, plan.counted))
}

/// `message` as the model is sent it when only `keep` tokens of it fit: the start of its text
/// and a marker saying it was cut.
fn cut(message: &Message, keep: u64, encoding: Encoding) -> Message {
    let text = message.text_content();
    let content = vec![ContentPart::Text(cut_text(&text, keep, encoding.text(&text)))];
    Message { content, ..message.clone() }
}

/// The request that summarises `ctx`'s active path through depth `through`: the earlier
/// summary, if any, and the messages since, as a transcript in one user message (any model
/// reads that, whatever its rules for tool messages). When they do not all fit the summary
/// model's window, the newest are kept and the oldest left out.
pub fn summary(ctx: &Context, shared: &Shared, through: Seq, share: u32) -> LlmRequest {
    let windows = &shared.windows;
    let model = shared.settings.summary_model.as_deref().unwrap_or_else(|| windows.model(ctx));
    let encoding = Encoding::of(model);
    let budget = windows.budget_for(ctx, model);
    let room = budget.room(share);
    let words = (room * SUMMARY_SHARE / 1000 * 3 / 4).clamp(50, 800);
    let instructions = SUMMARY_INSTRUCTIONS.replace("{words}", &words.to_string());
    let (earlier, earlier_tokens, from) = match ctx.last_summary() {
        Some((summary, after)) => (Some(summary.text_content()), u64::from(summary.token_count()), after),
        None => (None, 0, Seq::FIRST),
    };
    // The instructions, the earlier summary, the reply, the framing: the rest is for the lines.
    let fixed = encoding.system(&instructions) + earlier_tokens + room * SUMMARY_SHARE / 1000 + 8;
    let mut left = room.saturating_sub(fixed);
    let mut lines = Vec::new();
    let mut seq = Some(through);
    while let Some(at) = seq.filter(|s| *s >= from && left > 0) {
        if let Some((message, line)) = ctx.message(at).and_then(|m| Some((m, transcript_line(m)?))) {
            // The count saved with the message, not the line counted again: a summary reads
            // thousands of tokens, and they were counted when they were saved.
            let tokens = u64::from(message.token_count()) + LINE_FRAMING;
            let line = if tokens <= left { line } else { cut_text(&line, left, tokens) };
            left = left.saturating_sub(tokens);
            lines.push(line);
        }
        seq = at.before();
    }
    lines.reverse();
    let mut transcript = String::new();
    if let Some(earlier) = earlier {
        transcript.push_str(&format!("Earlier summary:\n{earlier}\n\n"));
    }
    transcript.push_str("Conversation:\n");
    transcript.push_str(&lines.join("\n"));
    let asked = Message::text(MessageId::new(), Place::straight(Seq::FIRST), Role::User, transcript, ctx.updated_at);
    LlmRequest {
        model: model.to_owned(),
        system_prompt: instructions,
        history: imbl::vector![Arc::new(asked)],
        tools: Arc::from([]),
        attempt: 1,
        max_tokens: u32::try_from(room * SUMMARY_SHARE / 1000).ok(),
        purpose: Purpose::Summary,
    }
}

/// One message in a transcript, `#depth role: text`; none for what the model never saw.
fn transcript_line(message: &Message) -> Option<String> {
    if message.status == MessageStatus::Error || message.role == Role::Summary {
        return None;
    }
    let role = match message.role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::System => "system",
        Role::Tool => "tool result",
        Role::Summary => return None,
    };
    let mut line = format!("#{} {role}: {}", message.seq.get(), message.text_content());
    for call in &message.tool_calls {
        line.push_str(&format!(" [calls {} {}]", call.name, call.arguments_json));
    }
    Some(line)
}

/// The start of `text` (of `tokens` tokens) worth about `keep` tokens, and the marker.
fn cut_text(text: &str, keep: u64, tokens: u64) -> String {
    // A tenth less than the share of bytes: tokens are not spread evenly.
    let bytes = (text.len() as u64 * keep / tokens.max(1) * 9 / 10) as usize;
    let end = (0..=bytes.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    format!("{}{CUT_MARKER}", &text[..end])
}
