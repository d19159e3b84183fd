use super::*;
use crate::domain::Seq;
use crate::domain::{
    Approval, CheckedToolCall, Context, ContextConfig, ContextId, ContextKey, FsmState, Message, MessageId,
    MessageStatus, Phase, RequestedToolCall, Role, TenantId, Timestamp, ToolCallId, ToolOutcome, ToolPolicy,
    ToolResult, Usage,
};
use crate::fsm::WordWindow;
use std::cell::Cell;

mod branches;
mod busy;
mod window;

struct Policies;

impl ToolCatalog for Policies {
    fn policy(&self, name: &str) -> Option<ToolPolicy> {
        match name {
            "clock" => Some(ToolPolicy { requires_approval: false, idempotent: true, external: false }),
            "read_file" => Some(ToolPolicy { requires_approval: true, idempotent: true, external: false }),
            "launch" => Some(ToolPolicy { requires_approval: true, idempotent: false, external: false }),
            _ => None,
        }
    }
}

/// Drives a context through commands the way the actor does, minus the I/O.
struct Harness {
    ctx: Context,
    ids: Cell<u128>,
    window: WordWindow,
}

impl Harness {
    fn new(config: ContextConfig) -> Self {
        let ctx = Context::new(
            ContextKey::new(TenantId::default_tenant(), ContextId::from_bytes([1; 16])),
            String::new(),
            "t".into(),
            config,
            Timestamp::from_micros(1),
        );
        Self { ctx, ids: Cell::new(1), window: WordWindow::UNBOUNDED }
    }

    fn try_apply(&mut self, command: Command) -> Result<Outcome, Rejection> {
        let new_id = || {
            let next = self.ids.get() + 1;
            self.ids.set(next);
            MessageId::from_bytes(next.to_be_bytes())
        };
        let env = Env {
            now: Timestamp::from_micros(2),
            tools: &Policies,
            max_llm_attempts: 3,
            default_model: "m",
            new_id: &new_id,
            window: &self.window,
        };
        let outcome = apply(&self.ctx, command, &env)?;
        // The same two functions the runtime applies outcomes with.
        if let Some(text) = outcome.delta() {
            self.ctx.append_delta(text).expect("a delta only while a message streams");
        }
        if let Some(change) = outcome.change() {
            self.ctx = self.ctx.apply(change, Timestamp::from_micros(2));
        }
        Ok(outcome)
    }

    fn apply(&mut self, command: Command) -> Outcome {
        self.try_apply(command).expect("command accepted")
    }

    fn send(&mut self, text: &str) -> Outcome {
        self.apply(Command::Send {
            content: text.into(),
            client_message_id: None,
            expected_revision: None,
            on_busy: Default::default(),
        })
    }

    fn state(&self) -> FsmState {
        self.ctx.state()
    }

    fn last(&self) -> &Message {
        self.ctx.messages.last().expect("a message")
    }

    /// Sends `text` and lets the model answer with `calls`.
    fn reply_with_tools(&mut self, calls: &[(&str, &str)]) {
        self.send("use tools");
        self.apply(Command::Continue);
        let tool_calls = calls
            .iter()
            .map(|(id, name)| {
                CheckedToolCall::passed(RequestedToolCall {
                    id: (*id).into(),
                    name: (*name).into(),
                    arguments_json: "{}".into(),
                })
            })
            .collect();
        self.apply(Command::LlmFinished { reply: LlmReply { tool_calls, ..LlmReply::default() } });
    }
}

#[test]
fn a_turn_walks_every_state_and_saves_each_step() {
    let mut h = Harness::new(ContextConfig::default());
    assert_eq!(h.ctx.revision, 1);

    let sent = h.send("hello");
    assert_eq!(h.state(), FsmState::ProcessingUserMessage);
    assert_eq!(sent.effects(), vec![Effect::Continue]);
    assert_eq!((h.last().role, h.last().text_content()), (Role::User, "hello".to_owned()));
    assert_eq!(h.ctx.revision, 2);

    assert_eq!(h.apply(Command::Continue).effects(), vec![Effect::CallLlm { attempt: 1 }]);
    assert_eq!(h.state(), FsmState::AwaitingLlmResponse);

    let first = h.apply(Command::LlmDelta { text: "You ".into() });
    assert!(first.change().is_some(), "the first piece creates the streaming message durably");
    assert_eq!(h.state(), FsmState::StreamingLlmResponse);
    assert_eq!(h.last().status, MessageStatus::Streaming);
    let revision = h.ctx.revision;

    let next = h.apply(Command::LlmDelta { text: "said".into() });
    assert!(next.change().is_none(), "later pieces are not saved one by one");
    assert_eq!(next.delta(), Some("said"));
    assert_eq!(h.ctx.revision, revision);
    assert_eq!(h.last().text_content(), "You said");

    let usage = Usage { prompt_tokens: 3, completion_tokens: 2 };
    let done =
        h.apply(Command::LlmFinished { reply: LlmReply { usage: Some(usage), duration_ms: 7, ..LlmReply::default() } });
    assert_eq!(done.effects(), vec![Effect::Continue]);
    assert_eq!(h.state(), FsmState::ProcessingLlmResponse);
    let reply = h.last().clone();
    assert_eq!(
        (reply.status, reply.text_content(), reply.usage, reply.duration_ms),
        (MessageStatus::Complete, "You said".into(), Some(usage), 7)
    );

    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::Idle);
    assert_eq!(h.ctx.revision, 6, "created + 5 transitions");
    assert_eq!(h.ctx.messages.len(), 2);

    // Results of effects that no longer apply change nothing.
    for stale in [Command::LlmDelta { text: "x".into() }, Command::RetryDue, Command::Continue] {
        assert_eq!(h.apply(stale), Outcome::default());
    }
}

#[test]
fn send_is_idempotent_checks_revisions_and_refuses_busy_contexts() {
    let mut h = Harness::new(ContextConfig::default());
    let send = |id: &str, expected: Option<u64>| Command::Send {
        content: "hi".into(),
        client_message_id: Some(id.into()),
        expected_revision: expected,
        on_busy: Default::default(),
    };
    assert_eq!(h.try_apply(send("a", Some(7))), Err(Rejection::StaleRevision { expected: 7, actual: 1 }));
    h.apply(send("a", Some(1)));
    assert_eq!(h.state(), FsmState::ProcessingUserMessage);
    assert_eq!(h.try_apply(send("b", None)), Err(Rejection::Busy { state: FsmState::ProcessingUserMessage }));
    assert_eq!(h.apply(send("a", Some(1))), Outcome::default(), "a resend is answered, even with a stale revision");
    assert_eq!(h.ctx.messages.len(), 1);
    assert_eq!(h.ctx.client_ids.get("a"), Some(&Seq::new(0)));
}

#[test]
fn tools_needing_approval_wait_for_a_decision_of_every_call() {
    let mut h = Harness::new(ContextConfig::default());
    h.reply_with_tools(&[("c1", "read_file"), ("c2", "clock"), ("c3", "read_file")]);
    let approvals: Vec<Approval> = h.last().tool_calls.iter().map(|c| c.approval).collect();
    assert_eq!(approvals, [Approval::Pending, Approval::AutoApproved, Approval::Pending]);
    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::AwaitingToolApproval);
    let pending: Vec<String> = h.ctx.pending_tool_calls().into_iter().map(|c| c.id.into_string()).collect();
    assert_eq!(pending, ["c1", "c3"]);

    let approve = |approved: &[&str], denied: &[&str]| Command::Approve {
        approved: approved.iter().map(|s| (*s).into()).collect(),
        denied: denied.iter().map(|s| (*s).into()).collect(),
    };
    let revision = h.ctx.revision;
    assert_eq!(h.try_apply(approve(&["c1"], &[])), Err(Rejection::Undecided { ids: vec!["c3".into()] }));
    assert_eq!(h.try_apply(approve(&["c1", "zz"], &["c3"])), Err(Rejection::UnknownToolCall { id: "zz".into() }));
    assert_eq!(h.try_apply(approve(&["c1"], &["c1", "c3"])), Err(Rejection::DuplicateDecision { id: "c1".into() }));
    assert_eq!(h.try_apply(approve(&["c2", "c1"], &["c3"])), Err(Rejection::AlreadyDecided { id: "c2".into() }));
    assert_eq!(h.ctx.revision, revision, "refused decisions change nothing");

    let decided = h.apply(approve(&["c1"], &["c3"]));
    assert_eq!(h.state(), FsmState::ExecutingTools);
    let Some(Effect::RunTools { calls }) = decided.effects().first() else { panic!("tools must run") };
    let running: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(running, ["c1", "c2"]);
    assert_eq!(
        (
            h.last().tool_call_id.as_ref().map(ToolCallId::as_str),
            h.last().text_content(),
            h.last().is_error(),
            h.last().tool_outcome
        ),
        (Some("c3"), DENIED.into(), true, Some(ToolOutcome::Denied))
    );
    assert_eq!(
        h.try_apply(approve(&["c1"], &[])),
        Err(Rejection::WrongState { action: "ApproveTools", state: FsmState::ExecutingTools })
    );

    h.apply(Command::ToolFinished { call_id: "c2".into(), result: ToolResult::ok("noon") });
    assert_eq!(h.state(), FsmState::ExecutingTools, "one call still runs");
    assert_eq!(
        h.apply(Command::ToolFinished { call_id: "c2".into(), result: ToolResult::ok("again") }),
        Outcome::default()
    );
    let finished = h.apply(Command::ToolFinished { call_id: "c1".into(), result: ToolResult::error("boom") });
    assert_eq!(finished.effects(), vec![Effect::Continue]);
    assert_eq!(h.state(), FsmState::ProcessingToolResults);
    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::GeneratingResponse);
    assert_eq!(h.apply(Command::Continue).effects(), vec![Effect::CallLlm { attempt: 1 }]);
    let tool_messages = h.ctx.messages.iter().filter(|m| m.role == Role::Tool).count();
    assert_eq!(tool_messages, 3, "every call has exactly one answer");
}

#[test]
fn denying_everything_goes_straight_to_the_follow_up_and_auto_approval_skips_asking() {
    let mut h = Harness::new(ContextConfig::default());
    h.reply_with_tools(&[("c1", "read_file")]);
    h.apply(Command::Continue);
    let denied = h.apply(Command::Approve { approved: vec![], denied: vec!["c1".into()] });
    assert_eq!(h.state(), FsmState::GeneratingResponse);
    assert_eq!(denied.effects(), vec![Effect::Continue]);

    let config = ContextConfig { auto_approve_tools: vec!["read_file".into()], ..ContextConfig::default() };
    let mut h = Harness::new(config);
    h.reply_with_tools(&[("c1", "read_file"), ("c2", "no_such_tool")]);
    let started = h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::ExecutingTools);
    assert!(matches!(started.effects(), [Effect::RunTools { calls }] if calls.len() == 2));
}

#[test]
fn llm_failures_retry_then_fail_and_retry_run_starts_over() {
    let mut h = Harness::new(ContextConfig::default());
    h.send("hi");
    h.apply(Command::Continue);
    h.apply(Command::LlmDelta { text: "partial".into() });
    let failed = h.apply(Command::LlmFailed { error: "503".into(), transient: true, retry_after_ms: None });
    assert_eq!(failed.effects(), vec![Effect::ScheduleRetry { attempt: 1, at_least_ms: None }]);
    assert_eq!(h.state(), FsmState::TransientFailure);
    assert_eq!(h.ctx.phase.error(), Some("503"));
    assert_eq!(h.last().status, MessageStatus::Error, "text of a failed attempt is not an answer");

    assert_eq!(h.apply(Command::RetryDue).effects(), vec![Effect::CallLlm { attempt: 2 }]);
    h.apply(Command::LlmFailed { error: "503".into(), transient: true, retry_after_ms: None });
    h.apply(Command::RetryDue);
    assert_eq!(h.ctx.phase, Phase::AwaitingLlmResponse { attempt: 3 });
    let gave_up = h.apply(Command::LlmFailed { error: "503".into(), transient: true, retry_after_ms: None });
    assert!(gave_up.effects().is_empty());
    assert_eq!(h.ctx.phase, Phase::Failed { error: "503 (gave up after 3 attempts)".into() });

    assert_eq!(h.apply(Command::Retry).effects(), vec![Effect::CallLlm { attempt: 1 }]);
    h.apply(Command::LlmFailed { error: "401 unauthorized".into(), transient: false, retry_after_ms: None });
    assert_eq!(h.ctx.phase, Phase::Failed { error: "401 unauthorized".into() }, "permanent errors are not retried");
    assert_eq!(h.try_apply(Command::Retry).map(|o| o.effects().to_vec()), Ok(vec![Effect::CallLlm { attempt: 1 }]));
    assert_eq!(
        h.try_apply(Command::Retry),
        Err(Rejection::WrongState { action: "RetryRun", state: FsmState::AwaitingLlmResponse })
    );
}

#[test]
fn cancel_keeps_partial_text_closes_open_calls_and_rests() {
    let mut h = Harness::new(ContextConfig::default());
    assert_eq!(h.try_apply(Command::Cancel), Err(Rejection::WrongState { action: "CancelRun", state: FsmState::Idle }));
    h.send("hi");
    h.apply(Command::Continue);
    h.apply(Command::LlmDelta { text: "par".into() });
    h.apply(Command::LlmDelta { text: "tial".into() });
    let cancelled = h.apply(Command::Cancel);
    assert_eq!(cancelled.effects(), vec![Effect::AbortRun]);
    assert_eq!(h.state(), FsmState::Idle);
    assert_eq!((h.last().status, h.last().text_content()), (MessageStatus::Cancelled, "partial".into()));

    h.reply_with_tools(&[("c1", "read_file"), ("c2", "clock")]);
    h.apply(Command::Continue);
    h.apply(Command::Cancel);
    assert_eq!(h.state(), FsmState::Idle);
    let assistant = h.ctx.messages.iter().rev().find(|m| m.role == Role::Assistant).expect("assistant");
    assert_eq!(assistant.tool_calls[0].approval, Approval::Denied);
    let answers: Vec<(Option<&str>, String, Option<ToolOutcome>)> = h
        .ctx
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| (m.tool_call_id.as_ref().map(ToolCallId::as_str), m.text_content(), m.tool_outcome))
        .collect();
    let cancelled = Some(ToolOutcome::Cancelled);
    assert_eq!(answers, [(Some("c1"), CANCELLED.into(), cancelled), (Some("c2"), CANCELLED.into(), cancelled)]);

    h.send("/fail");
    h.apply(Command::Continue);
    h.apply(Command::LlmFailed { error: "bad".into(), transient: false, retry_after_ms: None });
    assert_eq!(h.state(), FsmState::Failed);
    assert!(h.apply(Command::Cancel).effects().is_empty());
    assert_eq!(h.state(), FsmState::Idle);
}

#[test]
fn resume_reissues_llm_calls_and_reruns_only_idempotent_tools() {
    let mut h = Harness::new(ContextConfig::default());
    h.send("hi");
    h.apply(Command::Continue);
    h.apply(Command::LlmDelta { text: "half".into() });
    let resumed = h.apply(Command::Resume);
    assert_eq!(resumed.effects(), vec![Effect::CallLlm { attempt: 1 }]);
    assert_eq!(h.state(), FsmState::AwaitingLlmResponse);
    assert_eq!(h.last().status, MessageStatus::Error);
    assert_eq!(h.apply(Command::Resume).effects(), vec![Effect::CallLlm { attempt: 1 }]);

    let mut h = Harness::new(ContextConfig::default());
    h.reply_with_tools(&[("c1", "launch"), ("c2", "read_file")]);
    h.apply(Command::Continue);
    h.apply(Command::Approve { approved: vec!["c1".into(), "c2".into()], denied: vec![] });
    let resumed = h.apply(Command::Resume);
    assert_eq!(h.state(), FsmState::ExecutingTools);
    let Some(Effect::RunTools { calls }) = resumed.effects().first() else { panic!("idempotent tools rerun") };
    assert_eq!(calls.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c2"]);
    assert_eq!(
        (h.last().tool_call_id.as_ref().map(ToolCallId::as_str), h.last().text_content(), h.last().tool_outcome),
        (Some("c1"), INTERRUPTED.into(), Some(ToolOutcome::Interrupted))
    );
    assert!(
        h.apply(Command::Resume).effects().iter().all(|e| matches!(e, Effect::RunTools { calls } if calls.len() == 1))
    );

    h.apply(Command::ToolFinished { call_id: "c2".into(), result: ToolResult::ok("text") });
    assert_eq!(h.state(), FsmState::ProcessingToolResults);
    assert_eq!(h.apply(Command::Resume).effects(), vec![Effect::Continue]);
}

#[test]
fn calls_refused_before_saving_are_answered_in_the_same_change_and_never_pending() {
    let mut h = Harness::new(ContextConfig::default());
    h.send("use tools");
    h.apply(Command::Continue);
    // The runtime checks each call before the reply arrives; arguments that are not JSON fail.
    let call = |id: &str, name: &str, arguments: &str| CheckedToolCall {
        call: RequestedToolCall { id: id.into(), name: name.into(), arguments_json: arguments.into() },
        refused: (arguments == "not json").then(|| "invalid arguments: not JSON".to_owned()),
    };
    let tool_calls =
        vec![call("c1", "read_file", "not json"), call("c2", "read_file", "{}"), call("c3", "clock", "{}")];
    let finished = h.apply(Command::LlmFinished { reply: LlmReply { tool_calls, ..LlmReply::default() } });
    let saved = finished.change().expect("a change");
    assert_eq!(saved.messages.len(), 2, "the reply and the answer to the refused call, together");
    let answer = &saved.messages[1];
    assert_eq!(
        (answer.tool_call_id.as_ref().map(ToolCallId::as_str), answer.tool_outcome),
        (Some("c1"), Some(ToolOutcome::Failed))
    );
    assert_eq!(answer.text_content(), "invalid arguments: not JSON");
    let reply = h.ctx.message(saved.messages[0].seq).expect("reply").clone();
    let approvals: Vec<Approval> = reply.tool_calls.iter().map(|c| c.approval).collect();
    assert_eq!(approvals, [Approval::AutoApproved, Approval::Pending, Approval::AutoApproved]);

    h.apply(Command::Continue);
    assert_eq!(h.state(), FsmState::AwaitingToolApproval);
    let pending: Vec<String> = h.ctx.pending_tool_calls().into_iter().map(|c| c.id.into_string()).collect();
    assert_eq!(pending, ["c2"], "a refused call is never pending");
    let approved = h.apply(Command::Approve { approved: vec!["c2".into()], denied: vec![] });
    let Some(Effect::RunTools { calls }) = approved.effects().first() else { panic!("tools run") };
    assert_eq!(calls.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c2", "c3"], "the answered call does not run");
    assert_eq!(h.ctx.pending_tool_calls().len(), 2);

    // Every call refused: straight on to the follow-up, nothing to run or wait for.
    let mut h = Harness::new(ContextConfig::default());
    h.send("use tools");
    h.apply(Command::Continue);
    let tool_calls = vec![call("c1", "clock", "not json")];
    h.apply(Command::LlmFinished { reply: LlmReply { tool_calls, ..LlmReply::default() } });
    assert_eq!(h.apply(Command::Continue).effects(), [Effect::Continue]);
    assert_eq!(h.state(), FsmState::ProcessingToolResults);
}

#[test]
fn an_untitled_context_is_named_after_its_first_message_once() {
    let mut h = Harness::new(ContextConfig::default());
    h.ctx.title = String::new();
    let sent = h.send("  \n  Plan   the trip to Lisbon\nwith details");
    assert_eq!(sent.change().and_then(|c| c.title.as_deref()), Some("Plan the trip to Lisbon"));
    assert_eq!(h.ctx.title, "Plan the trip to Lisbon");
    h.apply(Command::Cancel);
    assert!(h.send("a second message").change().is_some_and(|c| c.title.is_none()), "named once");

    let mut h = Harness::new(ContextConfig::default());
    h.ctx.title = String::new();
    let long = "word ".repeat(30);
    h.send(&long);
    assert!(h.ctx.title.ends_with('…') && h.ctx.title.chars().count() <= 61, "{}", h.ctx.title);
    let mut h = Harness::new(ContextConfig::default());
    h.ctx.title = String::new();
    h.send(&"x".repeat(100));
    assert_eq!(h.ctx.title.chars().count(), 61, "one long word is cut too");

    let mut titled = Harness::new(ContextConfig::default());
    titled.send("hello");
    assert_eq!(titled.ctx.title, "t", "a title a client chose stays");
}
