use std::sync::Arc;

use super::*;
use crate::domain::{
    ContextConfig, ContextId, ContextKey, MessageId, NodeId, Place, RequestedToolCall, TenantId, Timestamp,
};

/// A context whose active path holds messages of these roles and token counts.
fn path(messages: &[(Role, u32)]) -> Context {
    let key = ContextKey::new(TenantId::default_tenant(), ContextId::new());
    let mut ctx = Context::new(key, String::new(), "t".into(), ContextConfig::default(), Timestamp::from_micros(1));
    for (role, tokens) in messages {
        put(&mut ctx, *role, *tokens);
    }
    ctx
}

fn put(ctx: &mut Context, role: Role, tokens: u32) -> MessageId {
    let place = ctx.place(0);
    let mut message = Message::text(MessageId::new(), place, role, "text".into(), Timestamp::from_micros(2));
    message.tokens = tokens;
    let id = message.id;
    ctx.put_message(Arc::new(message));
    id
}

fn budget(window: u32, overflow: Overflow) -> Budget {
    Budget { window, reserve: 0, fixed: 10, calibration: 1000, summarize_at: 800, overflow }
}

use Role::{Assistant, Tool, User};

#[test]
fn a_conversation_that_fits_is_sent_whole_and_counted_from_the_running_sums() {
    let ctx = path(&[(User, 20), (Assistant, 30), (User, 40)]);
    let plan = ctx.plan(&budget(1000, Overflow::Truncate), 1000).expect("fits");
    assert_eq!((plan.start, plan.summary, plan.counted), (Seq::FIRST, None, 100));
    assert_eq!(ctx.tokens_between(Seq::new(1), Seq::new(3)), 70);
    assert_eq!(ctx.tokens_between(Seq::new(2), Seq::new(99)), 40, "clamped to the path");
}

#[test]
fn truncation_keeps_the_newest_that_fit_and_never_starts_on_a_tool_result() {
    // 0 user, 1 assistant calling, 2 tool, 3 assistant, 4 user.
    let ctx = path(&[(User, 50), (Assistant, 50), (Tool, 50), (Assistant, 50), (User, 50)]);
    // Room 160 less 10 fixed: the user message and two before it would fit, but the first
    // of those two is a result whose call is left out.
    let plan = ctx.plan(&budget(160, Overflow::Truncate), 1000).expect("fits truncated");
    assert_eq!(plan.start, Seq::new(3));
    assert_eq!(plan.counted, 110);
    assert!(plan.cuts.is_empty());
    // Calibrated: the provider counts twice what ctxd does, so half as much fits.
    let doubled = Budget { calibration: 2000, ..budget(320, Overflow::Truncate) };
    let plan = ctx.plan(&doubled, 1000).expect("fits");
    assert_eq!((plan.start, plan.tokens), (Seq::new(3), 220));
}

#[test]
fn a_turn_too_big_on_its_own_is_cut_and_only_the_latest_message_must_fit() {
    let mut ctx = path(&[(User, 50), (User, 40), (Assistant, 20)]);
    put(&mut ctx, Tool, 5000);
    let plan = ctx.plan(&budget(500, Overflow::Truncate), 1000).expect("the turn is cut");
    assert_eq!(plan.start, Seq::new(1));
    assert_eq!(plan.cuts, vec![(Seq::new(3), 5000 - (10 + 40 + 20 + 5000 - 500))]);
    let refused = ctx.plan(&budget(45, Overflow::Truncate), 1000).expect_err("system and user do not fit");
    assert_eq!(refused.needed, 50);
}

#[test]
fn a_summary_is_due_past_summarize_at_and_covers_the_oldest_messages_before_the_turn() {
    let mut ctx = path(&[(User, 100), (Assistant, 100), (Tool, 100), (Assistant, 100), (User, 100)]);
    let summarize = budget(1000, Overflow::Summarize);
    assert_eq!(ctx.summarize_through(&summarize), None, "510 of 1000 is under 0.8");
    put(&mut ctx, Assistant, 100);
    put(&mut ctx, User, 250);
    // 860 > 800: keep at most 400 from the end (the user's 250 and the reply's 100); the
    // summary covers 0..=4 (5 would be a cut inside nothing: 5 is the reply).
    assert_eq!(ctx.summarize_through(&summarize), Some(Seq::new(4)));
    assert_eq!(ctx.summarize_through(&budget(1000, Overflow::Truncate)), None, "truncation never summarises");

    // The summary joins the path after the turn's user message; the plan sends it and what
    // came after what it covers.
    let through = ctx.message(Seq::new(4)).map(|m| m.id);
    let place = ctx.place(0);
    let mut summary = Message::text(MessageId::new(), place, Role::Summary, "s".into(), Timestamp::from_micros(3));
    summary.tokens = 30;
    summary.summary_through = through;
    ctx.put_message(Arc::new(summary));
    let plan = ctx.plan(&summarize, 1000).expect("fits");
    assert_eq!((plan.summary, plan.start), (Some(Seq::new(7)), Seq::new(5)));
    assert_eq!(plan.counted, 10 + 30 + SUMMARY_FRAMING + 350, "the summary message itself is not sent twice");
    assert_eq!(ctx.summarize_through(&summarize), None);
    let usage = ctx.usage(&summarize);
    assert_eq!(usage.first_in_window, ctx.message(Seq::new(5)).map(|m| m.id));
    assert_eq!(usage.summary, ctx.message(Seq::new(7)).map(|m| m.id));
}

#[test]
fn marks_follow_replaced_messages_and_cut_paths() {
    let mut ctx = path(&[(User, 10), (Assistant, 10), (User, 10)]);
    let mut longer = (*ctx.messages[1]).clone();
    longer.tokens = 110;
    ctx.put_message(Arc::new(longer));
    assert_eq!(ctx.marks.iter().map(|m| m.through).collect::<Vec<_>>(), [10, 120, 130]);
    assert_eq!(ctx.marks[2].user, Some(Seq::new(2)));
    let mut failed = (*ctx.messages[1]).clone();
    failed.status = MessageStatus::Error;
    ctx.put_message(Arc::new(failed));
    assert_eq!(ctx.tokens_between(Seq::FIRST, ctx.next_seq()), 20, "a failed attempt is never sent");
}

#[test]
fn messages_saved_before_counting_are_estimated_from_their_length() {
    let place = Place { seq: Seq::FIRST, node: NodeId::new(0), parent: None };
    let mut message = Message::text(MessageId::new(), place, User, "x".repeat(400), Timestamp::from_micros(1));
    assert_eq!(message.token_count(), 104);
    message.tool_calls.push(crate::domain::ToolCall {
        id: RequestedToolCall { id: "c".into(), name: "clock".into(), arguments_json: "{}".into() }.id,
        name: "clock".into(),
        arguments_json: "{}".repeat(6),
        approval: crate::domain::Approval::AutoApproved,
        external: false,
    });
    assert_eq!(message.token_count(), 108);
}
