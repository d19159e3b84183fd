//! Summarising before an LLM call that would outgrow the model's window: a step of its own,
//! resumable and cancellable, that never fails the user's turn.

use super::*;

/// A harness whose window (a word a token, four a message) fills after a few turns.
fn small_window() -> Harness {
    let mut h = Harness::new(ContextConfig::default());
    h.window = WordWindow { window: 100, reserve: 0 };
    h
}

/// A finished turn: `text` sent and answered with as many words.
fn turn(h: &mut Harness, text: &str) {
    h.send(text);
    h.apply(Command::Continue);
    h.apply(Command::LlmDelta { text: text.into() });
    h.apply(Command::LlmFinished { reply: LlmReply::default() });
    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::Idle);
}

const TEN_WORDS: &str = "one two three four five six seven eight nine ten";

#[test]
fn a_call_that_would_pass_summarize_at_is_summarised_first_then_made() {
    let mut h = small_window();
    turn(&mut h, TEN_WORDS);
    turn(&mut h, TEN_WORDS);
    // 4 messages of 14: 56 of 100; with the next, 70 (under 80).
    h.send(TEN_WORDS);
    assert_eq!(h.apply(Command::Continue).effects(), vec![Effect::CallLlm { attempt: 1 }]);
    h.apply(Command::LlmFinished { reply: LlmReply::default() });
    h.apply(Command::Continue);

    h.send(TEN_WORDS);
    let through = Seq::new(3);
    assert_eq!(h.apply(Command::Continue).effects(), vec![Effect::Summarize { through }]);
    assert_eq!(h.ctx.phase, Phase::SummarizingHistory { through });
    let revision = h.ctx.revision;
    assert_eq!(h.apply(Command::Resume).effects(), vec![Effect::Summarize { through }], "resumed after a restart");

    let model = "summariser".to_owned();
    let done = h.apply(Command::SummaryFinished { text: "a summary".into(), usage: None, model: model.clone() });
    assert_eq!(done.effects(), vec![Effect::CallLlm { attempt: 1 }]);
    assert_eq!((h.state(), h.ctx.revision), (FsmState::AwaitingLlmResponse, revision + 1), "one transition");
    let summary = h.last().clone();
    assert_eq!((summary.role, summary.text_content(), summary.model), (Role::Summary, "a summary".into(), model));
    assert_eq!(summary.summary_through, Some(h.ctx.messages[3].id));
    assert_eq!(summary.seq, Seq::new(7), "after the turn's user message");
    h.apply(Command::LlmFinished { reply: LlmReply::default() });
    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::Idle);
}

#[test]
fn a_failed_summary_makes_the_call_anyway_and_a_cancel_stops_it() {
    let mut h = small_window();
    for _ in 0..3 {
        turn(&mut h, TEN_WORDS);
    }
    h.send(TEN_WORDS);
    assert!(matches!(h.apply(Command::Continue).effects()[..], [Effect::Summarize { .. }]));
    assert_eq!(h.apply(Command::SummaryFailed).effects(), vec![Effect::CallLlm { attempt: 1 }]);
    assert!(!h.ctx.messages.iter().any(|m| m.role == Role::Summary));
    h.apply(Command::LlmFinished { reply: LlmReply::default() });
    h.apply(Command::Continue);

    h.send(TEN_WORDS);
    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::SummarizingHistory);
    assert_eq!(h.apply(Command::Cancel).effects(), vec![Effect::AbortRun]);
    assert_eq!(h.state(), FsmState::Idle);
    let late = h.apply(Command::SummaryFinished { text: "late".into(), usage: None, model: String::new() });
    assert!(late.change().is_none(), "a summary of a cancelled run is dropped");
}

#[test]
fn a_reply_calibrates_the_count_from_the_provider_usage() {
    let mut h = Harness::new(ContextConfig::default());
    h.send("hi");
    h.apply(Command::Continue);
    let usage = Usage { prompt_tokens: 150, completion_tokens: 1 };
    let reply = LlmReply { usage: Some(usage), counted_prompt_tokens: 100, ..LlmReply::default() };
    h.apply(Command::LlmFinished { reply });
    assert_eq!(h.ctx.calibration, 1500);
    h.apply(Command::Continue);
    h.send("again");
    h.apply(Command::Continue);
    let absurd = Usage { prompt_tokens: 100_000, completion_tokens: 1 };
    h.apply(Command::LlmFinished {
        reply: LlmReply { usage: Some(absurd), counted_prompt_tokens: 10, ..LlmReply::default() },
    });
    assert_eq!(h.ctx.calibration, 3000, "one odd report moves it only so far");
}
