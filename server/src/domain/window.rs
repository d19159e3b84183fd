//! The model's context window: what a request costs, what it sends when the conversation no
//! longer fits, and when to summarise. Pure arithmetic over the token count saved with each
//! message, summed along the active path as messages join it ([`Mark`]), so every decision
//! costs O(log n) plus the current turn: never a walk through the history.

use std::cmp::Reverse;

use super::context::{Context, ContextConfig};
use super::ids::{MessageId, Seq};
use super::message::{Message, MessageStatus, Role};

/// What a context does when its conversation outgrows the model's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The oldest part is summarised by the model, and the summary sent in its place.
    #[default]
    Summarize,
    /// The oldest messages are left out of what the model is sent.
    Truncate,
}

/// Running sums along the active path, one per message, beside [`Context::messages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// Tokens of the path's messages up to this one included, as a request sends them.
    pub through: u64,
    /// The newest summary at or before this message.
    pub summary: Option<Seq>,
    /// The newest user message at or before this one.
    pub user: Option<Seq>,
}

impl Mark {
    /// The mark of `message`, following `previous` (the mark of the message before it).
    pub fn after(previous: Option<&Mark>, message: &Message) -> Self {
        let previous = previous.copied().unwrap_or_default();
        Self {
            through: previous.through + message.sent_tokens(),
            summary: if message.role == Role::Summary { Some(message.seq) } else { previous.summary },
            user: if message.role == Role::User { Some(message.seq) } else { previous.user },
        }
    }
}

/// The smallest context window ctxd works with: room for a system prompt, a message and a
/// reply.
pub const MIN_WINDOW: u32 = 256;
/// The share of the room (per mille) past which a context summarises when it sets none.
pub const DEFAULT_SUMMARIZE_AT: u32 = 800;
/// Bytes a token, where a count is estimated rather than made with the model's tokenizer.
pub const BYTES_PER_TOKEN: u64 = 4;

/// Share of the room (per mille) a summary leaves unsummarised: the newest messages, sent as
/// they are. Letta keeps about 70 % of the window after compacting; ctxd keeps less so that a
/// summary is not needed again two turns later.
const KEEP_AFTER_SUMMARY: u32 = 400;
/// The smallest a message is cut to, in tokens, so that the model still sees what it was.
const MIN_CUT: u64 = 16;
/// What sending a summary adds to its own count: the header it is sent under, after the
/// system prompt.
const SUMMARY_FRAMING: u64 = 24;

/// What a request must fit in, in ctxd's own count (before calibration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The model's context window.
    pub window: u32,
    /// Kept free for the reply.
    pub reserve: u32,
    /// What every request holds besides the conversation: the system prompt, the tool
    /// definitions, the framing.
    pub fixed: u32,
    /// The provider's count per 1,000 of ctxd's, learnt from `usage.prompt_tokens`.
    pub calibration: u32,
    /// A request past this share of the room (per mille) is summarised first.
    pub summarize_at: u32,
    pub overflow: Overflow,
}

impl Budget {
    /// The budget of `ctx` in a `window` with `reserve` kept for the reply and `fixed` tokens
    /// in every request: the context's own calibration, threshold and strategy.
    pub fn of(ctx: &Context, window: u32, reserve: u32, fixed: u32) -> Self {
        let ContextConfig { summarize_at, overflow, .. } = &ctx.config;
        Self {
            window,
            reserve,
            fixed,
            calibration: ctx.calibration,
            summarize_at: if *summarize_at == 0 { DEFAULT_SUMMARIZE_AT } else { *summarize_at },
            overflow: overflow.unwrap_or_default(),
        }
    }

    /// The room for a request, in ctxd's count: `share` (per mille) of the window less the
    /// reply's reserve, corrected by the calibration.
    pub fn room(&self, share: u32) -> u64 {
        let room = u64::from(self.window.saturating_sub(self.reserve)) * u64::from(share) / 1000;
        room * 1000 / u64::from(self.calibration.max(1))
    }

    /// ctxd's count in the provider's.
    pub fn calibrated(&self, tokens: u64) -> u64 {
        tokens * u64::from(self.calibration) / 1000
    }
}

/// What one request sends: the system prompt, the summary if any, the active path from
/// `start`, some messages cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The summary sent (with the system prompt), by depth.
    pub summary: Option<Seq>,
    /// The first message sent as it is.
    pub start: Seq,
    /// Messages sent cut to this many tokens (the saved message stays whole).
    pub cuts: Vec<(Seq, u64)>,
    /// The request's size, in ctxd's count.
    pub counted: u64,
    /// The request's size, in the provider's count as far as ctxd knows it.
    pub tokens: u64,
}

/// Even the system prompt and the latest user message do not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the system prompt and the latest message need about {needed} tokens, more than the {room} the model's \
     context window leaves for a request; shorten them or choose a model with a larger window"
)]
pub struct TooLong {
    pub needed: u64,
    pub room: u64,
}

/// What the next request holds, as clients are shown it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextUsage {
    pub tokens: u64,
    pub window_tokens: u32,
    /// The oldest message the model sees as it is.
    pub first_in_window: Option<MessageId>,
    /// The summary the model sees instead of the messages before.
    pub summary: Option<MessageId>,
}

/// The newest summary of the active path: where it is, what it costs, and the first message
/// after what it covers.
#[derive(Debug, Clone, Copy)]
struct Summary {
    seq: Seq,
    tokens: u64,
    after: Seq,
}

impl Message {
    /// What the message costs in a request: nothing for what is never sent as a message
    /// (failed attempts, queued messages, summaries, which go with the system prompt).
    pub fn sent_tokens(&self) -> u64 {
        match (self.role, self.status) {
            (Role::Summary, _) | (_, MessageStatus::Error | MessageStatus::Queued) => 0,
            _ => u64::from(self.token_count()),
        }
    }

    /// The saved count, or an estimate ([`BYTES_PER_TOKEN`], and a few for the framing) for
    /// messages saved before ctxd counted.
    pub fn token_count(&self) -> u32 {
        if self.tokens > 0 {
            return self.tokens;
        }
        let calls: usize = self.tool_calls.iter().map(|c| c.name.len() + c.arguments_json.len()).sum();
        let bytes = (self.text_content().len() + calls) as u64;
        u32::try_from(bytes / BYTES_PER_TOKEN + 4).unwrap_or(u32::MAX)
    }
}

impl Context {
    /// Tokens of the active path's messages before depth `seq`.
    fn tokens_before(&self, seq: Seq) -> u64 {
        match seq.index().min(self.marks.len()) {
            0 => 0,
            n => self.marks.get(n - 1).map_or(0, |m| m.through),
        }
    }

    /// Tokens of the active path's messages at depths `from` up to (not including) `to`.
    pub fn tokens_between(&self, from: Seq, to: Seq) -> u64 {
        self.tokens_before(to).saturating_sub(self.tokens_before(from))
    }

    /// The newest summary on the active path, and the first message after what it covers.
    pub fn last_summary(&self) -> Option<(&Message, Seq)> {
        let summary = self.message(self.marks.last()?.summary?)?;
        let through = self.on_path(summary.summary_through?)?.seq;
        Some((summary, through.next()))
    }

    fn latest_summary(&self) -> Option<Summary> {
        let (summary, after) = self.last_summary()?;
        Some(Summary { seq: summary.seq, tokens: u64::from(summary.token_count()) + SUMMARY_FRAMING, after })
    }

    /// The newest user message at or after `from`, or `from`.
    fn turn_start(&self, from: Seq) -> Seq {
        self.marks.last().and_then(|m| m.user).unwrap_or(from).max(from)
    }

    /// The first depth in `from..=to` from which the messages up to `to` fit in `room`.
    fn first_fitting(&self, from: Seq, to: Seq, room: u64) -> Seq {
        let (mut low, mut high) = (from.get(), to.get());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.tokens_between(Seq::new(middle), to) <= room {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Seq::new(low)
    }

    /// From `start`, the first message that is not the result of a call left out.
    fn past_orphans(&self, mut start: Seq, limit: Seq) -> Seq {
        while start < limit && self.message(start).is_some_and(|m| m.role == Role::Tool) {
            start = start.next();
        }
        start
    }

    /// What the next request sends within `share` (per mille) of the room: everything since
    /// the newest summary when it fits; else the latest user message and what followed it,
    /// then as many messages before it as fit (the summary first, if it fits), never a tool
    /// result without its call; the turn's largest messages cut short when the turn alone is
    /// too big.
    pub fn plan(&self, budget: &Budget, share: u32) -> Result<Plan, TooLong> {
        let end = self.next_seq();
        let room = budget.room(share);
        let fixed = u64::from(budget.fixed);
        let summary = self.latest_summary();
        let from = summary.map_or(Seq::FIRST, |s| s.after);
        let summary_tokens = summary.map_or(0, |s| s.tokens);
        let whole = fixed + summary_tokens + self.tokens_between(from, end);
        if whole <= room {
            let (counted, tokens) = (whole, budget.calibrated(whole));
            return Ok(Plan { summary: summary.map(|s| s.seq), start: from, cuts: Vec::new(), counted, tokens });
        }
        let turn = self.turn_start(from);
        let asked = fixed + self.tokens_between(turn, turn.next());
        if asked > room {
            return Err(TooLong { needed: budget.calibrated(asked), room: budget.calibrated(room) });
        }
        let turn_tokens = self.tokens_between(turn, end);
        if fixed + turn_tokens > room {
            return self.cut_turn(budget, turn, fixed + turn_tokens - room, room);
        }
        let mut left = room - fixed - turn_tokens;
        let summary = summary.filter(|s| s.tokens <= left);
        left -= summary.map_or(0, |s| s.tokens);
        let start = self.past_orphans(self.first_fitting(from, turn, left), turn);
        let counted = fixed + summary.map_or(0, |s| s.tokens) + self.tokens_between(start, end);
        let tokens = budget.calibrated(counted);
        Ok(Plan { summary: summary.map(|s| s.seq), start, cuts: Vec::new(), counted, tokens })
    }

    /// The turn from `turn` on, its largest messages (after the user's) cut until `excess`
    /// tokens are saved.
    fn cut_turn(&self, budget: &Budget, turn: Seq, mut excess: u64, room: u64) -> Result<Plan, TooLong> {
        let mut largest: Vec<(Seq, u64)> = self.path_from(turn.next()).map(|m| (m.seq, m.sent_tokens())).collect();
        largest.sort_by_key(|(_, tokens)| Reverse(*tokens));
        let mut cuts = Vec::new();
        for (seq, tokens) in largest {
            if excess == 0 {
                break;
            }
            let keep = tokens.saturating_sub(excess).max(MIN_CUT);
            if keep < tokens {
                excess -= tokens - keep;
                cuts.push((seq, keep));
            }
        }
        if excess > 0 {
            return Err(TooLong { needed: budget.calibrated(room + excess), room: budget.calibrated(room) });
        }
        Ok(Plan { summary: None, start: turn, cuts, counted: room, tokens: budget.calibrated(room) })
    }

    /// When the next request would pass the budget's `summarize_at`, the depth through which
    /// to summarise: the oldest messages since the last summary, keeping the newest that fit
    /// in [`KEEP_AFTER_SUMMARY`] of the room, always the latest user message and what
    /// followed it, and never a tool result apart from its call. `None`: no summary is
    /// needed, or there is nothing before the current turn left to summarise.
    pub fn summarize_through(&self, budget: &Budget) -> Option<Seq> {
        if budget.overflow != Overflow::Summarize {
            return None;
        }
        let end = self.next_seq();
        let summary = self.latest_summary();
        let from = summary.map_or(Seq::FIRST, |s| s.after);
        let whole = u64::from(budget.fixed) + summary.map_or(0, |s| s.tokens) + self.tokens_between(from, end);
        if whole <= budget.room(budget.summarize_at) {
            return None;
        }
        let turn = self.turn_start(from);
        let kept = self.first_fitting(from, end, budget.room(KEEP_AFTER_SUMMARY)).min(turn);
        let through = self.past_orphans(kept, turn).before()?;
        let covers_anything = self.tokens_between(from, through.next()) > 0;
        (through >= from && covers_anything).then_some(through)
    }

    /// What the next request holds, for clients: see [`ContextUsage`].
    pub fn usage(&self, budget: &Budget) -> ContextUsage {
        let window_tokens = budget.window;
        match self.plan(budget, 1000) {
            Ok(plan) => ContextUsage {
                tokens: plan.tokens,
                window_tokens,
                first_in_window: self.path_from(plan.start).find(|m| m.role != Role::Summary).map(|m| m.id),
                summary: plan.summary.and_then(|seq| self.message(seq)).map(|m| m.id),
            },
            Err(TooLong { needed, .. }) => {
                ContextUsage { tokens: needed, window_tokens, first_in_window: None, summary: None }
            }
        }
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
