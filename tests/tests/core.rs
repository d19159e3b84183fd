//! ContextService against the real binary: CRUD, turns, tools, cancel, failures,
//! idempotency, races, restarts and bad input.

use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use pb::FsmState;
use tonic::Code;

#[tokio::test]
async fn contexts_are_created_listed_in_pages_and_deleted() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;

    let id = uuid::Uuid::new_v4().to_string();
    let config = pb::ContextConfig {
        system_prompt: "be brief".into(),
        model: "mock".into(),
        auto_approve_tools: vec!["clock".into()],
        ..Default::default()
    };
    let created = client
        .create_context(pb::CreateContextRequest {
            context_id: id.clone(),
            title: "first".into(),
            config: Some(config.clone()),
        })
        .await
        .expect("create")
        .into_inner()
        .state
        .expect("state");
    assert_eq!((created.context_id.as_str(), created.revision, state_of(&created)), (id.as_str(), 1, FsmState::Idle));
    assert_eq!(created.config.as_ref(), Some(&config));
    #[allow(deprecated)]
    let branch = created.active_branch.as_str();
    assert_eq!(branch, "main", "kept for clients that read it");
    let again = client
        .create_context(pb::CreateContextRequest { context_id: id.clone(), ..Default::default() })
        .await
        .expect_err("same id twice");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert_eq!(get(&mut client, &id).await, created);

    let mut ids = vec![id.clone()];
    for n in 1..120 {
        ids.push(create(&mut client, &format!("context {n}")).await);
    }
    // Touch the first context so it becomes the most recently updated.
    send(&mut client, &id, "hello").await;

    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_contexts(pb::ListContextsRequest { page_size: 50, page_token: token.clone() })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.contexts.len() <= 50);
        listed.extend(page.contexts);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages >= 3, "120 contexts in pages of 50");
    assert_eq!(listed.len(), 120);
    assert_eq!(listed[0].context_id, id, "newest-updated first");
    assert_eq!((listed[0].message_count, listed[0].title.as_str()), (2, "first"));
    let times: Vec<_> =
        listed.iter().map(|c| c.updated_at.expect("updated_at")).map(|t| (t.seconds, t.nanos)).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "sorted by updated_at, newest first");
    let mut unique: Vec<_> = listed.iter().map(|c| c.context_id.clone()).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 120, "no context twice across pages");

    client.delete_context(pb::DeleteContextRequest { context_id: id.clone() }).await.expect("delete");
    let gone = client
        .get_state(pb::GetStateRequest { context_id: id.clone(), ..Default::default() })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    let twice = client.delete_context(pb::DeleteContextRequest { context_id: id.clone() }).await.expect_err("deleted");
    assert_eq!(twice.code(), Code::NotFound);
    let after = client
        .list_contexts(pb::ListContextsRequest { page_size: 1000, page_token: String::new() })
        .await
        .expect("list");
    assert_eq!(after.into_inner().contexts.len(), 119);
}

#[tokio::test]
async fn a_turn_streams_the_reply_and_saves_every_transition_once() {
    let server = Server::start(1, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "turn").await;

    let sent = client.send_message(send_request(&id, "hello there world", false)).await.expect("send").into_inner();
    let sent = sent.state.expect("state");
    assert_eq!(state_of(&sent), FsmState::ProcessingUserMessage, "wait=false answers after the first saved transition");
    assert_eq!(sent.revision, 2);

    let done = wait_until(&mut client, &id, |s| state_of(s) == FsmState::Idle).await;
    assert_eq!(done.messages.len(), 2);
    let (user, reply) = (&done.messages[0], &done.messages[1]);
    assert_eq!((role(user), text(user).as_str()), (pb::Role::User, "hello there world"));
    assert!(!user.client_message_id.is_empty());
    assert_eq!((role(reply), status(reply)), (pb::Role::Assistant, pb::MessageStatus::Complete));
    assert_eq!(text(reply), "You said: hello there world");
    assert_eq!((reply.model.as_str(), user.model.as_str()), ("mock", ""), "the model that wrote the reply");
    assert!(reply.usage.is_some_and(|u| u.completion_tokens == 5));
    // created, PROCESSING_USER_MESSAGE, AWAITING_LLM, STREAMING, PROCESSING_LLM, IDLE
    assert_eq!(done.revision, 6);

    // One line per save. Transitions of the same instant share a save (the send and the
    // LLM call it starts always do); together the lines name every transition once.
    server.log_matching(&["auto-saved", &id, "revision=6 "], 1).await;
    let saves = server.log_matching(&["auto-saved", &id], 1).await;
    let field = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!(" {name}="))? + name.len() + 2;
        Some(line[start..].split_whitespace().next().unwrap_or_default().to_owned())
    };
    let revisions: Vec<String> = saves.iter().filter_map(|l| field(l, "revision")).collect();
    assert_eq!(revisions.first().map(String::as_str), Some("1"), "{saves:#?}");
    assert_eq!(revisions.last().map(String::as_str), Some("6"), "{saves:#?}");
    let mut path: Vec<String> = saves.get(1).and_then(|l| field(l, "from")).into_iter().collect();
    for line in &saves[1..] {
        assert_eq!(field(line, "from").as_ref(), path.last(), "each save starts where the last ended: {saves:#?}");
        if let Some(via) = field(line, "via") {
            path.extend(via.split(',').map(str::to_owned));
        }
        path.extend(field(line, "to"));
    }
    let expected = [
        "IDLE",
        "PROCESSING_USER_MESSAGE",
        "AWAITING_LLM_RESPONSE",
        "STREAMING_LLM_RESPONSE",
        "PROCESSING_LLM_RESPONSE",
        "IDLE",
    ];
    assert_eq!(path, expected, "{saves:#?}");
    assert!(saves[1].contains("via=PROCESSING_USER_MESSAGE"), "{saves:#?}");
    assert!(saves.len() < 6, "fewer saves than transitions: {saves:#?}");

    let again = send(&mut client, &id, "second").await;
    assert_eq!((state_of(&again), again.messages.len()), (FsmState::Idle, 4));
    assert_eq!(text(&again.messages[3]), "You said: second");

    // The BASIC view carries only the newest message, whatever the conversation's length.
    let basic = client
        .get_state(pb::GetStateRequest { context_id: id.clone(), view: pb::StateView::Basic as i32, message_limit: 0 })
        .await
        .expect("get basic")
        .into_inner()
        .state
        .expect("state");
    assert_eq!((basic.revision, basic.messages.len()), (again.revision, 1));
    assert_eq!(basic.messages[0], again.messages[3]);
    let mut request = send_request(&id, "third", false);
    request.view = pb::StateView::Basic as i32;
    let sent = client.send_message(request).await.expect("send").into_inner().state.expect("state");
    assert_eq!((sent.messages.len(), text(&sent.messages[0]).as_str()), (1, "third"), "the message just sent");
    let bad = client
        .get_state(pb::GetStateRequest { context_id: id.clone(), view: 99, message_limit: 0 })
        .await
        .expect_err("bad view");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn tool_calls_are_approved_or_denied_and_the_model_sees_the_result() {
    let workspace = workspace_with(&[("notes.txt", "remember the milk")]);
    let ws = workspace.path().to_str().expect("utf-8");
    let server = Server::start(0, &["--workspace", ws]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "tools").await;

    // A tool that needs no approval runs at once.
    let clock = send(&mut client, &id, "/tool clock {}").await;
    assert_eq!(state_of(&clock), FsmState::Idle);
    let tool = &clock.messages[2];
    assert_eq!((role(tool), tool.is_error), (pb::Role::Tool, false));
    assert!(text(&clock.messages[3]).starts_with("Tool clock returned: 20"), "{:?}", clock.messages[3]);
    let approval = clock.messages[1].tool_calls[0].approval;
    assert_eq!(approval, pb::ApprovalStatus::AutoApproved as i32);

    // read_file waits for a person.
    let asked = send(&mut client, &id, r#"/tool read_file {"path": "notes.txt"}"#).await;
    assert_eq!(state_of(&asked), FsmState::AwaitingToolApproval);
    assert_eq!(asked.pending_tool_calls.len(), 1);
    let call = asked.pending_tool_calls[0].clone();
    assert_eq!((call.name.as_str(), call.approval), ("read_file", pb::ApprovalStatus::Pending as i32));
    assert_eq!(call.arguments_json, r#"{"path": "notes.txt"}"#);
    let busy = client.send_message(send_request(&id, "hello?", false)).await.expect_err("busy");
    assert_eq!(busy.code(), Code::FailedPrecondition);

    let approved = client
        .approve_tools(pb::ApproveToolsRequest {
            context_id: id.clone(),
            approved_tool_call_ids: vec![call.id.clone()],
            denied_tool_call_ids: vec![],
            wait: true,
            ..Default::default()
        })
        .await
        .expect("approve")
        .into_inner()
        .state
        .expect("state");
    assert_eq!(state_of(&approved), FsmState::Idle);
    let n = approved.messages.len();
    assert_eq!(text(&approved.messages[n - 2]), "remember the milk");
    assert_eq!(approved.messages[n - 2].tool_call_id, call.id);
    assert_eq!(text(&approved.messages[n - 1]), "Tool read_file returned: remember the milk");
    let decided = approved.messages.iter().find(|m| m.tool_calls.iter().any(|c| c.id == call.id)).expect("assistant");
    assert_eq!(decided.tool_calls[0].approval, pb::ApprovalStatus::Approved as i32);

    let twice = client
        .approve_tools(pb::ApproveToolsRequest {
            context_id: id.clone(),
            approved_tool_call_ids: vec![call.id.clone()],
            ..Default::default()
        })
        .await
        .expect_err("not awaiting approval any more");
    assert_eq!(twice.code(), Code::FailedPrecondition);

    // Denied: the model is told so.
    let asked = send(&mut client, &id, r#"/tool read_file {"path": "../etc/passwd"}"#).await;
    let call = asked.pending_tool_calls[0].clone();
    let denied = client
        .approve_tools(pb::ApproveToolsRequest {
            context_id: id.clone(),
            approved_tool_call_ids: vec![],
            denied_tool_call_ids: vec![call.id.clone()],
            wait: true,
            ..Default::default()
        })
        .await
        .expect("deny")
        .into_inner()
        .state
        .expect("state");
    let n = denied.messages.len();
    assert!(denied.messages[n - 2].is_error);
    assert_eq!(text(&denied.messages[n - 1]), "Tool read_file returned: denied by the user");

    // Approved but refused by the tool itself: path traversal.
    let asked = send(&mut client, &id, r#"/tool read_file {"path": "../../etc/passwd"}"#).await;
    let call = asked.pending_tool_calls[0].clone();
    let refused = client
        .approve_tools(pb::ApproveToolsRequest {
            context_id: id.clone(),
            approved_tool_call_ids: vec![call.id],
            wait: true,
            ..Default::default()
        })
        .await
        .expect("approve")
        .into_inner()
        .state
        .expect("state");
    let n = refused.messages.len();
    assert!(refused.messages[n - 2].is_error, "{:?}", refused.messages[n - 2]);
    assert!(!text(&refused.messages[n - 2]).contains("root:"), "nothing outside the workspace is read");
}

#[tokio::test]
async fn cancel_mid_stream_keeps_the_partial_text_marked_cancelled() {
    let server = Server::start(40, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "cancel").await;
    let long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";
    client.send_message(send_request(&id, long, false)).await.expect("send");
    wait_until(&mut client, &id, |s| {
        state_of(s) == FsmState::StreamingLlmResponse && s.messages.get(1).is_some_and(|m| text(m).len() > 12)
    })
    .await;

    let cancelled = client
        .cancel_run(pb::CancelRunRequest { context_id: id.clone(), wait: true, ..Default::default() })
        .await
        .expect("cancel")
        .into_inner()
        .state
        .expect("state");
    assert_eq!(state_of(&cancelled), FsmState::Idle);
    let partial = &cancelled.messages[1];
    assert_eq!(status(partial), pb::MessageStatus::Cancelled);
    let partial_text = text(partial);
    let full = format!("You said: {long}");
    assert!(
        full.starts_with(&partial_text) && partial_text.len() > 12 && partial_text.len() < full.len(),
        "{partial_text:?}"
    );

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(get(&mut client, &id).await, cancelled, "nothing arrives after the cancel");
    let idle = client
        .cancel_run(pb::CancelRunRequest { context_id: id.clone(), wait: false, ..Default::default() })
        .await
        .expect_err("idle");
    assert_eq!(idle.code(), Code::FailedPrecondition);
    assert!(idle.message().contains("IDLE"), "{}", idle.message());
}

#[tokio::test]
async fn provider_failures_are_retried_then_fail_and_retry_run_reissues() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "failures").await;

    let recovered = send(&mut client, &id, "/fail-once").await;
    assert_eq!(state_of(&recovered), FsmState::Idle);
    assert_eq!(text(&recovered.messages[1]), "You said: /fail-once");
    assert!(recovered.last_error.is_empty());

    let failed = send(&mut client, &id, "/fail").await;
    assert_eq!(state_of(&failed), FsmState::Failed);
    assert!(
        failed.last_error.contains("mock provider failure") && failed.last_error.contains("3 attempts"),
        "{}",
        failed.last_error
    );
    let saves_before = server.log_matching(&["to=TRANSIENT_FAILURE", &id], 3).await.len();
    assert_eq!(saves_before, 3, "one retry for /fail-once, two for /fail before giving up");

    let retried = client
        .retry_run(pb::RetryRunRequest { context_id: id.clone(), wait: true, ..Default::default() })
        .await
        .expect("retry")
        .into_inner()
        .state
        .expect("state");
    assert_eq!(state_of(&retried), FsmState::Failed, "/fail fails again");
    assert!(retried.revision > failed.revision);
    assert_eq!(retried.messages.len(), failed.messages.len(), "a retry adds no user message");

    let dismissed = client
        .cancel_run(pb::CancelRunRequest { context_id: id.clone(), wait: false, ..Default::default() })
        .await
        .expect("cancel");
    let dismissed = dismissed.into_inner().state.expect("state");
    assert_eq!((state_of(&dismissed), dismissed.last_error.as_str()), (FsmState::Idle, ""));
    let after = send(&mut client, &id, "back to normal").await;
    assert_eq!(text(after.messages.last().expect("reply")), "You said: back to normal");
}

#[tokio::test]
async fn resends_stale_revisions_and_racing_sends_never_duplicate_a_message() {
    // Replies take a while, so every racing send arrives while the winner's run is active.
    let server = Server::start(20, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "races").await;

    let mut request = send_request(&id, "once", true);
    let first = client.send_message(request.clone()).await.expect("send").into_inner().state.expect("state");
    request.expected_revision = Some(1);
    let resent = client.send_message(request).await.expect("resend").into_inner().state.expect("state");
    assert_eq!(resent.messages.iter().filter(|m| text(m) == "once").count(), 1);
    assert_eq!(resent.revision, first.revision, "a resend changes nothing");

    let mut stale = send_request(&id, "stale", false);
    stale.expected_revision = Some(first.revision - 1);
    let conflict = client.send_message(stale).await.expect_err("stale revision");
    assert_eq!(conflict.code(), Code::Aborted, "{conflict:?}");
    let mut current = send_request(&id, "current", true);
    current.expected_revision = Some(first.revision);
    client.send_message(current).await.expect("current revision accepted");

    let other = create(&mut client, "race").await;
    let sends = (0..50).map(|n| {
        let mut client = client.clone();
        let request = send_request(&other, &format!("racer {n}"), false);
        tokio::spawn(async move { client.send_message(request).await })
    });
    let results = futures::future::join_all(sends).await;
    let (won, lost): (Vec<_>, Vec<_>) = results.into_iter().map(|r| r.expect("task")).partition(Result::is_ok);
    assert_eq!(won.len(), 1, "exactly one concurrent send wins");
    assert!(lost.iter().all(|r| {
        r.as_ref().err().is_some_and(|s| s.code() == Code::FailedPrecondition && s.message().contains("busy"))
    }));
    let settled = wait_until(&mut client, &other, |s| state_of(s) == FsmState::Idle).await;
    assert_eq!(settled.messages.iter().filter(|m| role(m) == pb::Role::User).count(), 1);
}

#[tokio::test]
async fn a_clean_restart_keeps_every_context_exactly() {
    let mut server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "durable").await;
    send(&mut client, &id, "remember me").await;
    let before = get(&mut client, &id).await;
    let listed_before = client.list_contexts(pb::ListContextsRequest::default()).await.expect("list").into_inner();

    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    assert_eq!(server.log_matching(&["ctxd::server: stopped"], 1).await.len(), 1, "a clean stop is logged");
    server.restart().await;
    let mut client = server.client().await;
    assert_eq!(get(&mut client, &id).await, before);
    let listed_after = client.list_contexts(pb::ListContextsRequest::default()).await.expect("list").into_inner();
    assert_eq!(listed_after, listed_before);

    // A second server on the same data dir refuses to start, at once and clearly. (On the
    // NATS store there is no directory to hold: the engine fences writers per context.)
    if ctxd_tests::nats::nats_under_test() {
        return;
    }
    let output = tokio::time::timeout(PATIENCE, server.command().output()).await.expect("exits at once").expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another ctxd process"), "{stderr}");
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_saved_message_and_the_run_resumes() {
    let mut server = Server::start(60, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "crash").await;
    let first = send(&mut client, &id, "before the crash").await;
    client
        .send_message(send_request(&id, "a long message that is streaming when the server dies", false))
        .await
        .expect("send");
    wait_until(&mut client, &id, |s| state_of(s) == FsmState::StreamingLlmResponse).await;

    server.kill9().await;
    server.restart().await;
    let mut client = server.client().await;
    let done = wait_until(&mut client, &id, |s| state_of(s) == FsmState::Idle).await;
    let resumed = server.log_matching(&["resuming interrupted run"], 1).await;
    assert_eq!(resumed.len(), 1, "{}", server.log());

    assert_eq!(&done.messages[..2], &first.messages[..], "saved messages are intact");
    let users: Vec<String> = done.messages.iter().filter(|m| role(m) == pb::Role::User).map(text).collect();
    assert_eq!(users, ["before the crash", "a long message that is streaming when the server dies"]);
    let replies: Vec<&pb::Message> = done.messages.iter().skip(2).filter(|m| role(m) == pb::Role::Assistant).collect();
    assert_eq!(status(replies[0]), pb::MessageStatus::Error, "the interrupted reply is kept, marked");
    let last = replies.last().expect("a reply");
    assert_eq!(status(last), pb::MessageStatus::Complete);
    assert_eq!(text(last), "You said: a long message that is streaming when the server dies");
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_and_changes_nothing() {
    let server = Server::start(0, &["--max-message-bytes", "100"]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "strict").await;
    let missing = uuid::Uuid::new_v4().to_string();
    let before = get(&mut client, &id).await;

    let send = |context_id: &str, content: &str| pb::SendMessageRequest {
        context_id: context_id.into(),
        content: content.into(),
        ..Default::default()
    };
    type Case = (&'static str, Result<tonic::Response<pb::SendMessageResponse>, tonic::Status>, Code);
    let cases: Vec<Case> = vec![
        ("invalid uuid", client.send_message(send("not-a-uuid", "hi")).await, Code::InvalidArgument),
        ("missing id", client.send_message(send("", "hi")).await, Code::InvalidArgument),
        ("empty content", client.send_message(send(&id, "  ")).await, Code::InvalidArgument),
        ("oversized content", client.send_message(send(&id, &"x".repeat(101))).await, Code::InvalidArgument),
        ("unknown context", client.send_message(send(&missing, "hi")).await, Code::NotFound),
    ];
    for (what, result, code) in cases {
        let status = result.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(!status.message().is_empty(), "{what}");
    }
    let oversized = client.send_message(send(&id, &"x".repeat(101))).await.expect_err("oversized");
    assert!(
        oversized.message().contains("101 bytes") && oversized.message().contains("100"),
        "{}",
        oversized.message()
    );

    let list = |page_size, page_token: &str| pb::ListContextsRequest { page_size, page_token: page_token.into() };
    for (request, what) in [
        (list(1001, ""), "page_size too big"),
        (list(-1, ""), "negative page_size"),
        (list(10, "garbage"), "bad token"),
    ] {
        let status = client.list_contexts(request).await.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}");
    }

    let approve = |approved: Vec<String>| pb::ApproveToolsRequest {
        context_id: id.clone(),
        approved_tool_call_ids: approved,
        ..Default::default()
    };
    let wrong_state = client.approve_tools(approve(vec!["x".into()])).await.expect_err("idle");
    assert_eq!(wrong_state.code(), Code::FailedPrecondition);
    assert!(wrong_state.message().contains("IDLE"), "{}", wrong_state.message());
    let retry = client
        .retry_run(pb::RetryRunRequest { context_id: id.clone(), wait: false, ..Default::default() })
        .await
        .expect_err("idle");
    assert_eq!(retry.code(), Code::FailedPrecondition);
    let unknown_tool = client
        .create_context(pb::CreateContextRequest {
            config: Some(pb::ContextConfig { auto_approve_tools: vec!["rm_rf".into()], ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect_err("unknown tool");
    assert_eq!(unknown_tool.code(), Code::InvalidArgument);
    assert_eq!(get(&mut client, &id).await, before, "refused input changed nothing");

    // Approval errors, once a call is pending.
    let asked = ctxd_tests::send(&mut client, &id, "/tool no_such_tool {}").await;
    assert_eq!(state_of(&asked), FsmState::Idle, "unknown tools need no approval; they yield an error result");
    assert!(asked.messages[2].is_error);
    let workspace_less = client.create_context(pb::CreateContextRequest::default()).await.expect("create");
    let other = workspace_less.into_inner().state.expect("state").context_id;
    let asked = ctxd_tests::send(&mut client, &other, "/tool clock {}").await;
    assert_eq!(state_of(&asked), FsmState::Idle);

    let revision = get(&mut client, &id).await.revision;
    let bogus = client.approve_tools(approve(vec!["".into()])).await.expect_err("empty id");
    assert_eq!(bogus.code(), Code::InvalidArgument);
    assert_eq!(get(&mut client, &id).await.revision, revision);
}

#[tokio::test]
async fn waits_are_bounded_by_the_deadline_and_idle_contexts_unload_and_reload() {
    let server = Server::start(50, &["--idle-unload-secs", "1"]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "deadline").await;

    let mut request = tonic::Request::new(send_request(&id, "a reply that takes longer than the caller waits", true));
    request.set_timeout(std::time::Duration::from_millis(300));
    let late = client.send_message(request).await.expect_err("deadline");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert!(late.message().contains("was saved"), "{}", late.message());
    let done = wait_until(&mut client, &id, |s| state_of(s) == FsmState::Idle).await;
    assert_eq!(done.messages.len(), 2, "the message was saved and the run finished all the same");

    // Deleting a context mid-run stops the run.
    client.send_message(send_request(&id, "one two three four five six", false)).await.expect("send");
    wait_until(&mut client, &id, |s| state_of(s) == FsmState::StreamingLlmResponse).await;
    client.delete_context(pb::DeleteContextRequest { context_id: id.clone() }).await.expect("delete mid-run");
    let gone = client
        .get_state(pb::GetStateRequest { context_id: id.clone(), ..Default::default() })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);

    let kept = create(&mut client, "kept").await;
    let before = send(&mut client, &kept, "hi").await;
    let unloaded = async {
        while !server.log().contains(&format!("unloaded idle context context={kept}")) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, unloaded).await.expect("an idle context unloads");
    assert_eq!(get(&mut client, &kept).await, before, "and reloads as it was");
    let after = send(&mut client, &kept, "again").await;
    assert_eq!(after.messages.len(), 4);
}

#[tokio::test]
async fn update_context_renames_and_reconfigures_and_watchers_see_it() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "before").await;
    let mut events = watch(&mut client, &id, 0).await;
    let mut folded = Folded::default();
    folded.apply(&events.message().await.expect("stream").expect("snapshot")).expect("snapshot");
    let mut list = client.watch_contexts(pb::WatchContextsRequest::default()).await.expect("list").into_inner();
    list.message().await.expect("stream").expect("reset");

    let config = pb::ContextConfig {
        system_prompt: "Be brief.".into(),
        auto_approve_tools: vec!["clock".into()],
        ..Default::default()
    };
    let request = pb::UpdateContextRequest {
        context_id: id.clone(),
        title: Some("after".into()),
        config: Some(config.clone()),
        expected_revision: Some(1),
        ..Default::default()
    };
    let updated = client.update_context(request.clone()).await.expect("update").into_inner().state.expect("state");
    assert_eq!((updated.title.as_str(), updated.revision), ("after", 2));
    assert_eq!(updated.config, Some(config.clone()));

    let stale = client.update_context(request).await.expect_err("stale revision");
    assert_eq!(stale.code(), Code::Aborted);
    let bad = client
        .update_context(pb::UpdateContextRequest {
            context_id: id.clone(),
            config: Some(pb::ContextConfig { auto_approve_tools: vec!["rm_rf".into()], ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect_err("unknown tool");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let renamed_only = client
        .update_context(pb::UpdateContextRequest {
            context_id: id.clone(),
            title: Some("again".into()),
            ..Default::default()
        })
        .await
        .expect("rename")
        .into_inner()
        .state
        .expect("state");
    assert_eq!(renamed_only.config, Some(config), "a rename keeps the config");

    while folded.revision < renamed_only.revision {
        let event = events.message().await.expect("stream").expect("event");
        folded.apply(&event).expect("consistent");
    }
    assert_eq!(folded.state.as_ref(), Some(&get(&mut client, &id).await), "watchers fold the update");
    use pb::watch_contexts_response::Kind as ListKind;
    let Some(ListKind::Upserted(summary)) = list.message().await.expect("stream").expect("event").kind else {
        panic!("an upsert");
    };
    assert_eq!(summary.title, "after");
}

#[tokio::test]
async fn an_untitled_context_takes_its_first_message_as_title_and_watchers_see_it() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "").await;
    let mut events = watch(&mut client, &id, 0).await;
    let mut folded = Folded::default();
    let mut list = client.watch_contexts(pb::WatchContextsRequest::default()).await.expect("list").into_inner();
    list.message().await.expect("stream").expect("reset");

    let done = send(&mut client, &id, "Plan the trip to Lisbon\nwith all the details").await;
    assert_eq!(done.title, "Plan the trip to Lisbon");
    while folded.revision < done.revision {
        folded.apply(&events.message().await.expect("stream").expect("event")).expect("consistent");
    }
    assert_eq!(folded.state.as_ref(), Some(&done), "watchers fold the new title");
    use pb::watch_contexts_response::Kind as ListKind;
    let Some(ListKind::Upserted(summary)) = list.message().await.expect("stream").expect("event").kind else {
        panic!("an upsert");
    };
    assert_eq!(summary.title, "Plan the trip to Lisbon");

    // Named once; a client's title is never replaced.
    client
        .update_context(pb::UpdateContextRequest {
            context_id: id.clone(),
            title: Some("Lisbon".into()),
            ..Default::default()
        })
        .await
        .expect("rename");
    assert_eq!(send(&mut client, &id, "and Porto").await.title, "Lisbon");
    let titled = create(&mut client, "chosen").await;
    assert_eq!(send(&mut client, &titled, "hello").await.title, "chosen");
}

#[tokio::test]
async fn a_fork_copies_the_history_through_a_message_and_leaves_the_source_untouched() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "source").await;
    send(&mut client, &id, "one").await;
    let source = send(&mut client, &id, "two").await;
    assert_eq!(source.messages.len(), 4);
    let through = source.messages[1].id.clone();

    let fork = |message_id: &str, new_context_id: &str| pb::ForkContextRequest {
        context_id: id.clone(),
        message_id: message_id.into(),
        title: String::new(),
        new_context_id: new_context_id.into(),
    };
    let new_id = uuid::Uuid::new_v4().to_string();
    let forked = client.fork_context(fork(&through, &new_id)).await.expect("fork").into_inner().state.expect("state");
    assert_eq!((forked.context_id.as_str(), forked.title.as_str(), forked.revision), (new_id.as_str(), "source", 1));
    assert_eq!(state_of(&forked), FsmState::Idle);
    assert_eq!(forked.messages.iter().map(text).collect::<Vec<_>>(), ["one", "You said: one"]);
    assert!(
        forked.messages.iter().zip(&source.messages).all(|(new, old)| new.id != old.id),
        "copies have ids of their own"
    );
    assert_eq!(forked.config, source.config);

    // The two go their own ways.
    let continued = send(&mut client, &new_id, "three").await;
    assert_eq!(text(&continued.messages[3]), "You said: three");
    assert_eq!(get(&mut client, &id).await, source, "the source is untouched");

    let everything = client.fork_context(fork("", "")).await.expect("fork all").into_inner().state.expect("state");
    assert_eq!(everything.messages.len(), 4);
    let listed = client.list_contexts(pb::ListContextsRequest::default()).await.expect("list").into_inner();
    assert_eq!(listed.contexts.len(), 3);

    let taken = client.fork_context(fork(&through, &new_id)).await.expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    let unknown = client.fork_context(fork(&uuid::Uuid::new_v4().to_string(), "")).await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("has no message"), "{}", unknown.message());
    let malformed = client.fork_context(fork("not-an-id", "")).await.expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
}
