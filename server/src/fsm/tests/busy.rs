//! Sends while a run is in progress: interrupting it, or queueing for the next turn.

use super::*;

#[test]
fn an_interrupting_send_stops_the_run_as_a_cancel_and_sends_in_one_change() {
    let interrupt = |text: &str| Command::Send {
        content: text.into(),
        client_message_id: None,
        expected_revision: None,
        on_busy: OnBusy::Interrupt,
    };
    let mut h = Harness::new(ContextConfig::default());
    h.send("hi");
    h.apply(Command::Continue);
    h.apply(Command::LlmDelta { text: "par".into() });
    let revision = h.ctx.revision;
    let stopped = h.apply(interrupt("instead"));
    assert_eq!(stopped.effects(), vec![Effect::AbortRun, Effect::Continue]);
    assert_eq!((h.state(), h.ctx.revision), (FsmState::ProcessingUserMessage, revision + 1), "one transition");
    let texts: Vec<(Role, String, MessageStatus)> =
        h.ctx.messages.iter().map(|m| (m.role, m.text_content(), m.status)).collect();
    assert_eq!(
        texts,
        [
            (Role::User, "hi".into(), MessageStatus::Complete),
            (Role::Assistant, "par".into(), MessageStatus::Cancelled),
            (Role::User, "instead".into(), MessageStatus::Complete),
        ]
    );

    // The new message's run ends; then, awaiting approval, the calls are denied and answered
    // before the new message.
    h.apply(Command::Continue);
    h.apply(Command::LlmFinished { reply: LlmReply::default() });
    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::Idle);
    h.reply_with_tools(&[("c1", "read_file")]);
    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::AwaitingToolApproval);
    h.apply(interrupt("never mind"));
    let tail: Vec<Role> = h.ctx.messages.iter().skip(5).map(|m| m.role).collect();
    assert_eq!(tail, [Role::Assistant, Role::Tool, Role::User]);
    assert_eq!(h.ctx.messages[5].tool_calls[0].approval, Approval::Denied);
    assert_eq!(h.ctx.messages[6].tool_outcome, Some(ToolOutcome::Cancelled));

    // At rest it is an ordinary send; refused by default while busy.
    h.apply(Command::Continue);
    let send = |text: &str| Command::Send {
        content: text.into(),
        client_message_id: None,
        expected_revision: None,
        on_busy: OnBusy::Reject,
    };
    assert!(matches!(h.try_apply(send("busy")), Err(Rejection::Busy { .. })));
}

#[test]
fn queued_messages_join_the_path_together_at_rest_or_before_an_interrupting_one() {
    let with = |text: &str, on_busy| Command::Send {
        content: text.into(),
        client_message_id: Some(text.into()),
        expected_revision: None,
        on_busy,
    };
    let mut h = Harness::new(ContextConfig::default());
    h.send("hi");
    h.apply(Command::Continue);
    h.apply(Command::LlmDelta { text: "par".into() });
    for text in ["q1", "q2"] {
        let queued = h.apply(with(text, OnBusy::Enqueue));
        assert!(queued.effects().is_empty(), "the run goes on");
    }
    assert_eq!(h.state(), FsmState::StreamingLlmResponse);
    assert!(h.apply(with("q1", OnBusy::Enqueue)).change().is_none(), "a repeated send adds nothing");
    let queued: Vec<String> = h.ctx.queued.iter().map(|m| m.text_content()).collect();
    assert_eq!((queued, h.ctx.messages.len()), (vec!["q1".to_owned(), "q2".to_owned()], 2));

    // The run ends: at rest, the queue starts the next run at once, in order.
    let rested = h.apply(Command::LlmFinished { reply: LlmReply::default() });
    assert_eq!(h.state(), FsmState::ProcessingLlmResponse);
    assert_eq!(rested.effects(), vec![Effect::Continue]);
    let idle = h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::Idle);
    assert_eq!(idle.effects(), vec![Effect::Continue]);
    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::ProcessingUserMessage);
    assert!(h.ctx.queued.is_empty());
    let path: Vec<(Role, String)> = h.ctx.messages.iter().map(|m| (m.role, m.text_content())).collect();
    assert_eq!(&path[2..], [(Role::User, "q1".into()), (Role::User, "q2".into())]);
    assert!(h.ctx.messages.iter().all(|m| m.status != MessageStatus::Queued));

    // Queued before an interrupting send: they go first.
    h.apply(Command::Continue);
    h.apply(Command::LlmDelta { text: "x".into() });
    h.apply(with("q3", OnBusy::Enqueue));
    h.apply(with("now", OnBusy::Interrupt));
    let tail: Vec<String> = h.ctx.messages.iter().skip(4).map(|m| m.text_content()).collect();
    assert_eq!(tail, ["x", "q3", "now"]);
    assert!(h.ctx.queued.is_empty());
}
