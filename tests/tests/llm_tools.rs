//! A real OpenAI-compatible provider (a scripted fake on a real socket) and tools: streamed
//! deltas, tool-call assembly, retries and failures, cancel, external tools, restarts.

use std::time::Duration;

use ctxd_tests::fake_openai::{self, FakeOpenAi, Reply, split_every, sse, text_chunk, text_reply, tool_reply};
use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use pb::FsmState;
use pb::watch_state_response::Kind;
use tonic::Code;

async fn with_fake(extra: &[&str]) -> (FakeOpenAi, Server) {
    let fake = FakeOpenAi::start().await;
    let base = fake.base_url();
    let mut args =
        vec!["--openai-base-url", base.as_str(), "--default-model", "gpt-test", "--llm-idle-timeout-ms", "3000"];
    args.extend_from_slice(extra);
    let server = Server::start_with_env(0, &args, &[("CTXD_OPENAI_API_KEY", "sk-test-secret")]).await;
    (fake, server)
}

async fn create_with(client: &mut Client, config: pb::ContextConfig) -> String {
    let request = pb::CreateContextRequest { config: Some(config), ..Default::default() };
    client.create_context(request).await.expect("create").into_inner().state.expect("state").context_id
}

#[tokio::test]
async fn replies_stream_as_deltas_and_tool_calls_are_assembled_from_fragments() {
    let (fake, server) = with_fake(&[]).await;
    let mut client = server.client().await;
    let config = pb::ContextConfig { system_prompt: "You are terse.".into(), ..Default::default() };
    let id = create_with(&mut client, config).await;

    // Two tool calls in one reply, then a final answer with multi-byte characters, every
    // stream cut into 7-byte pieces so JSON and UTF-8 are split mid-way.
    fake.push(tool_reply(&[("call_a", "clock", "{}"), ("call_b", "calculator", r#"{"expression": "6 * 7"}"#)], 7));
    let answer = ["Il est ", "l'heure; ", "6×7 = 42 ", "✓ ", "déjà."];
    // Paced, so the pieces reach ctxd apart: pieces already waiting when the actor gets to
    // them are saved and sent as one delta, by design, which a loaded machine would show.
    fake.push(text_reply(&answer, 7, Duration::from_millis(5)));

    let mut events = watch(&mut client, &id, 0).await;
    let done = send(&mut client, &id, "what time is it, and 6*7?").await;
    assert_eq!(state_of(&done), FsmState::Idle, "{:?}", done.last_error);

    let calls = &done.messages[1].tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[1].id.as_str(), calls[1].name.as_str()), ("call_b", "calculator"));
    assert_eq!(calls[1].arguments_json, r#"{"expression": "6 * 7"}"#, "fragments joined");
    assert!(calls.iter().all(|c| c.approval == pb::ApprovalStatus::AutoApproved as i32));
    let results: Vec<(String, String)> =
        done.messages.iter().filter(|m| role(m) == pb::Role::Tool).map(|m| (m.tool_call_id.clone(), text(m))).collect();
    assert_eq!(results.len(), 2);
    assert!(results.contains(&("call_b".into(), "42".into())), "{results:?}");
    let reply = done.messages.last().expect("reply");
    assert_eq!(text(reply), answer.concat(), "text survives chunks split mid-UTF-8");
    assert_eq!(reply.usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((11, 5)));
    assert_eq!(reply.model, fake_openai::REPORTED_MODEL, "the model as the provider reported it");
    assert_eq!(done.config.as_ref().map(|c| c.model.as_str()), Some("gpt-test"), "the default, pinned at creation");

    let mut deltas = Vec::new();
    while deltas.concat() != answer.concat() {
        let event =
            tokio::time::timeout(PATIENCE, events.message()).await.expect("in time").expect("stream").expect("event");
        if let Some(Kind::MessageAppended(m)) = &event.kind
            && m.id == reply.id
        {
            deltas.push(text(m));
        }
        if let Some(Kind::MessageDelta(delta)) = event.kind {
            deltas.push(delta.text);
        }
    }
    assert!(deltas.len() >= 2, "the reply arrived in pieces, not at once: {deltas:?}");

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].authorization.as_deref(), Some("Bearer sk-test-secret"));
    assert!(!server.log().contains("sk-test-secret"), "the API key is never logged");
    let first = &requests[0].body;
    assert_eq!((first["model"].as_str(), first["stream"].as_bool()), (Some("gpt-test"), Some(true)));
    assert_eq!(first["messages"][0], serde_json::json!({"role": "system", "content": "You are terse."}));
    let tools: Vec<&str> =
        first["tools"].as_array().expect("tools").iter().filter_map(|t| t["function"]["name"].as_str()).collect();
    assert!(tools.contains(&"clock") && tools.contains(&"calculator"), "{tools:?}");
    let second = requests[1].body["messages"].as_array().expect("messages").clone();
    let tool_messages: Vec<&serde_json::Value> = second.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_messages.len(), 2, "the follow-up carries both results");
    assert!(
        second.iter().any(|m| m["role"] == "assistant" && m["tool_calls"].as_array().is_some_and(|c| c.len() == 2))
    );
}

#[tokio::test]
async fn provider_errors_are_retried_with_backoff_or_fail_at_once() {
    let (fake, server) = with_fake(&["--llm-retry-base-ms", "20"]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "errors").await;
    let requests_now = || fake.requests().len();

    // 500, then success.
    fake.push(Reply::Status { code: 500, retry_after: None, body: "boom".into() });
    fake.push(text_reply(&["fine"], 1000, Duration::ZERO));
    let recovered = send(&mut client, &id, "one").await;
    assert_eq!(
        (state_of(&recovered), text(recovered.messages.last().expect("reply")).as_str()),
        (FsmState::Idle, "fine")
    );
    assert_eq!(requests_now(), 2);

    // 429 with Retry-After: 1 is honoured.
    fake.push(Reply::Status { code: 429, retry_after: Some("1".into()), body: "slow down".into() });
    fake.push(text_reply(&["later"], 1000, Duration::ZERO));
    send(&mut client, &id, "two").await;
    let requests = fake.requests();
    let gap = requests[3].at - requests[2].at;
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}, before Retry-After");

    // 503 every time: FAILED after 3 attempts.
    for _ in 0..3 {
        fake.push(Reply::Status { code: 503, retry_after: None, body: "unavailable".into() });
    }
    let failed = send(&mut client, &id, "three").await;
    assert_eq!(state_of(&failed), FsmState::Failed);
    assert!(failed.last_error.contains("503") && failed.last_error.contains("3 attempts"), "{}", failed.last_error);
    assert_eq!(requests_now(), 4 + 3);

    // Other 4xx and malformed streams fail at once.
    fake.push(Reply::Status { code: 400, retry_after: None, body: r#"{"error": "bad model"}"#.into() });
    let rejected = send(&mut client, &id, "four").await;
    assert_eq!(state_of(&rejected), FsmState::Failed);
    assert!(
        rejected.last_error.contains("400") && rejected.last_error.contains("bad model"),
        "{}",
        rejected.last_error
    );
    assert_eq!(requests_now(), 8);

    let mut malformed = b"data: {\"choices\": [{\"delta\": {\"content\": \"part\"}}]}\n\n".to_vec();
    malformed.extend_from_slice(b"data: {not json\n\n");
    fake.push(Reply::Stream { chunks: vec![malformed], delay: Duration::ZERO });
    let broken = send(&mut client, &id, "five").await;
    assert_eq!(state_of(&broken), FsmState::Failed);
    assert!(broken.last_error.contains("malformed"), "{}", broken.last_error);
    assert_eq!(requests_now(), 9);
    let partial = broken.messages.last().expect("partial reply");
    assert_eq!(
        (text(partial).as_str(), status(partial)),
        ("part", pb::MessageStatus::Error),
        "partial text is not an answer"
    );

    // RetryRun re-issues; the model answers this time.
    fake.push(text_reply(&["recovered"], 1000, Duration::ZERO));
    let retried = client
        .retry_run(pb::RetryRunRequest { context_id: id.clone(), wait: true, ..Default::default() })
        .await
        .expect("retry");
    let retried = retried.into_inner().state.expect("state");
    assert_eq!(text(retried.messages.last().expect("reply")), "recovered");
    let last_request = fake.requests().last().expect("request").body.clone();
    let sent: Vec<&serde_json::Value> = last_request["messages"].as_array().expect("messages").iter().collect();
    assert!(!sent.iter().any(|m| m["content"] == "part"), "the failed attempt's text is not sent back");
}

#[tokio::test]
async fn cancel_mid_stream_drops_the_provider_connection() {
    let (fake, server) = with_fake(&[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "cancel").await;
    let pieces: Vec<String> = (0..100).map(|n| format!("w{n} ")).collect();
    let chunks: Vec<serde_json::Value> = pieces.iter().map(|p| text_chunk(p)).collect();
    fake.push(Reply::Stream { chunks: split_every(&sse(&chunks), 40), delay: Duration::from_millis(30) });

    client.send_message(send_request(&id, "talk", false)).await.expect("send");
    wait_until(&mut client, &id, |s| s.messages.get(1).is_some_and(|m| text(m).len() > 10)).await;
    let cancelled = client
        .cancel_run(pb::CancelRunRequest { context_id: id.clone(), wait: true, ..Default::default() })
        .await
        .expect("cancel");
    let cancelled = cancelled.into_inner().state.expect("state");
    assert_eq!(status(&cancelled.messages[1]), pb::MessageStatus::Cancelled);
    let gone = async {
        while fake.disconnects() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, gone).await.expect("the HTTP stream was dropped");
}

fn deploy_tool(idempotent: bool, timeout_ms: u32) -> pb::ExternalTool {
    pb::ExternalTool {
        name: "deploy".into(),
        description: "Deploys a service".into(),
        parameters_json_schema:
            r#"{"type": "object", "properties": {"service": {"type": "string"}}, "required": ["service"]}"#.into(),
        requires_approval: false,
        idempotent,
        timeout_ms,
    }
}

fn submit(id: &str, call: &str, result: &str) -> pb::SubmitToolResultRequest {
    pb::SubmitToolResultRequest {
        context_id: id.into(),
        tool_call_id: call.into(),
        outcome: Some(pb::submit_tool_result_request::Outcome::ResultJson(result.into())),
        wait: true,
        view: pb::StateView::Full as i32,
    }
}

#[tokio::test]
async fn external_tools_wait_for_another_service_and_time_out() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let config = pb::ContextConfig { external_tools: vec![deploy_tool(false, 0)], ..Default::default() };
    let id = create_with(&mut client, config).await;

    // wait=true returns once only the external service can move the context on.
    let waiting = send(&mut client, &id, r#"/tool deploy {"service": "api"}"#).await;
    assert_eq!(state_of(&waiting), FsmState::ExecutingTools);
    let call = waiting.pending_tool_calls[0].clone();
    assert!(call.external && call.name == "deploy", "{call:?}");

    let unknown = client.submit_tool_result(submit(&id, "call_nope", "{}")).await.expect_err("unknown call");
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    let not_json = client.submit_tool_result(submit(&id, &call.id, "{oops")).await.expect_err("not JSON");
    assert_eq!(not_json.code(), Code::InvalidArgument);

    let done = client.submit_tool_result(submit(&id, &call.id, r#"{"ok": true}"#)).await.expect("submit");
    let done = done.into_inner().state.expect("state");
    assert_eq!(state_of(&done), FsmState::Idle);
    assert_eq!(text(done.messages.last().expect("reply")), r#"Tool deploy returned: {"ok": true}"#);
    let again = client.submit_tool_result(submit(&id, &call.id, r#"{"ok": true}"#)).await.expect("same result again");
    assert_eq!(again.into_inner().state.expect("state").revision, done.revision, "a repeated delivery changes nothing");
    let different = client.submit_tool_result(submit(&id, &call.id, r#"{"ok": false}"#)).await.expect_err("answered");
    assert_eq!(different.code(), Code::FailedPrecondition);

    // Arguments that do not match the schema never reach the service.
    client.send_message(send_request(&id, r#"/tool deploy {"service": 7}"#, false)).await.expect("send");
    let invalid = wait_until(&mut client, &id, |s| state_of(s) == FsmState::Idle && s.messages.len() == 8).await;
    let answer = invalid.messages.iter().rev().find(|m| role(m) == pb::Role::Tool).expect("tool answer");
    assert!(answer.is_error && text(answer).contains("invalid arguments"), "{answer:?}");
    let calculator = send(&mut client, &id, r#"/tool calculator {"expr": "1 + 1"}"#).await;
    let answer = calculator.messages.iter().rev().find(|m| role(m) == pb::Role::Tool).expect("tool answer");
    assert!(answer.is_error && text(answer).contains("invalid arguments"), "built-in tools too: {answer:?}");

    // A result that never comes turns into an error after the tool's timeout.
    let config = pb::ContextConfig { external_tools: vec![deploy_tool(false, 200)], ..Default::default() };
    let quick = create_with(&mut client, config).await;
    send(&mut client, &quick, r#"/tool deploy {"service": "db"}"#).await;
    let timed_out = wait_until(&mut client, &quick, |s| state_of(s) == FsmState::Idle).await;
    let answer = timed_out.messages.iter().rev().find(|m| role(m) == pb::Role::Tool).expect("tool answer");
    assert!(answer.is_error && text(answer).contains("no result"), "{answer:?}");

    let bad_config = pb::ContextConfig {
        external_tools: vec![pb::ExternalTool { name: "clock".into(), ..deploy_tool(false, 0) }],
        ..Default::default()
    };
    let clash =
        client.create_context(pb::CreateContextRequest { config: Some(bad_config), ..Default::default() }).await;
    assert_eq!(clash.expect_err("shadows a built-in").code(), Code::InvalidArgument);
    let bad_schema = pb::ContextConfig {
        external_tools: vec![pb::ExternalTool {
            parameters_json_schema: "{\"type\": 5}".into(),
            ..deploy_tool(false, 0)
        }],
        ..Default::default()
    };
    let invalid =
        client.create_context(pb::CreateContextRequest { config: Some(bad_schema), ..Default::default() }).await;
    assert_eq!(invalid.expect_err("bad schema").code(), Code::InvalidArgument);
    let tools = client.list_tools(pb::ListToolsRequest {}).await.expect("list tools").into_inner().tools;
    assert!(tools.iter().any(|t| t.name == "calculator" && !t.requires_approval), "{tools:?}");
}

/// A call whose arguments break its external tool's schema is answered with the error in
/// the same save as the reply that asked for it: no watcher ever sees it pending, and
/// `wait=true` does not stop on it.
#[tokio::test]
async fn an_external_call_with_bad_arguments_is_never_pending() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let crm_lookup = pb::ExternalTool {
        name: "crm_lookup".into(),
        description: "Looks a customer up".into(),
        parameters_json_schema: r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#.into(),
        requires_approval: false,
        idempotent: true,
        timeout_ms: 0,
    };
    let id =
        create_with(&mut client, pb::ContextConfig { external_tools: vec![crm_lookup], ..Default::default() }).await;
    let mut events = watch(&mut client, &id, 0).await;

    let done = send(&mut client, &id, r#"/tool crm_lookup {"id": "x"}"#).await;
    assert_eq!(state_of(&done), FsmState::Idle, "wait=true runs on to the end: {done:?}");
    assert!(done.pending_tool_calls.is_empty());
    let answer = done.messages.iter().find(|m| role(m) == pb::Role::Tool).expect("tool answer");
    assert!(answer.is_error && text(answer).contains("invalid arguments"), "{answer:?}");
    let reply = text(done.messages.last().expect("reply"));
    assert!(reply.starts_with("Tool crm_lookup returned: invalid arguments"), "{reply}");

    let mut folded = Folded::default();
    let mut states = Vec::new();
    while folded.revision < done.revision {
        let event = tokio::time::timeout(PATIENCE, events.message()).await.expect("in time").expect("stream");
        let event = event.expect("event");
        if let Some(Kind::StateChanged(changed)) = &event.kind {
            assert!(changed.pending_tool_calls.is_empty(), "a watcher saw the bad call pending: {changed:?}");
            states.push(changed.state);
        }
        folded.apply(&event).expect("consistent");
    }
    assert!(!states.contains(&(FsmState::ExecutingTools as i32)), "nothing waited for the service: {states:?}");
    assert_eq!(folded.state.as_ref(), Some(&done));
}

/// A delivered result ends the wait for it: the timer of an answered call neither keeps the
/// context loaded nor sends anything later.
#[tokio::test]
async fn an_answered_external_call_leaves_nothing_running() {
    // The default wait (10 minutes) is far beyond this test's patience: an answered call
    // whose timer kept running would keep its context from unloading.
    let server = Server::start(0, &["--idle-unload-secs", "1", "--external-tool-timeout-ms", "600000"]).await;
    let mut client = server.client().await;
    let config = pb::ContextConfig { external_tools: vec![deploy_tool(false, 0)], ..Default::default() };
    let id = create_with(&mut client, config).await;
    let waiting = send(&mut client, &id, r#"/tool deploy {"service": "api"}"#).await;
    let call = waiting.pending_tool_calls[0].id.clone();
    let done = client.submit_tool_result(submit(&id, &call, r#""deployed""#)).await.expect("submit");
    assert_eq!(state_of(&done.into_inner().state.expect("state")), FsmState::Idle);
    let unloaded = server.log_matching(&["unloaded idle context", &id], 1).await;
    assert_eq!(unloaded.len(), 1, "the context unloads on the idle timer once the run ends:\n{}", server.log());

    // A watched context stays loaded; past its call's timeout nothing more arrives.
    let config = pb::ContextConfig { external_tools: vec![deploy_tool(false, 500)], ..Default::default() };
    let watched = create_with(&mut client, config).await;
    let waiting = send(&mut client, &watched, r#"/tool deploy {"service": "db"}"#).await;
    let call = waiting.pending_tool_calls[0].id.clone();
    let mut events = watch(&mut client, &watched, waiting.revision).await;
    let done = client.submit_tool_result(submit(&watched, &call, r#""deployed""#)).await.expect("submit");
    let done = done.into_inner().state.expect("state");
    let mut last = waiting.revision;
    while last < done.revision {
        last = events.message().await.expect("stream").expect("event").revision;
    }
    let late = tokio::time::timeout(Duration::from_millis(1500), events.message()).await;
    assert!(late.is_err(), "nothing arrives after the run ended: {late:?}");
    assert_eq!(get(&mut client, &watched).await, done, "and nothing changed");
}

#[tokio::test]
async fn a_restart_mid_tool_reruns_only_idempotent_tools() {
    let mut server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let once = create_with(
        &mut client,
        pb::ContextConfig { external_tools: vec![deploy_tool(false, 0)], ..Default::default() },
    )
    .await;
    let again = create_with(
        &mut client,
        pb::ContextConfig { external_tools: vec![deploy_tool(true, 0)], ..Default::default() },
    )
    .await;
    for id in [&once, &again] {
        client.send_message(send_request(id, r#"/tool deploy {"service": "api"}"#, false)).await.expect("send");
        wait_until(&mut client, id, |s| state_of(s) == FsmState::ExecutingTools).await;
    }

    server.kill9().await;
    server.restart().await;
    let mut client = server.client().await;

    // Not idempotent: answered "interrupted by restart", and the run goes on.
    let resumed = wait_until(&mut client, &once, |s| state_of(s) == FsmState::Idle).await;
    let answer = resumed.messages.iter().find(|m| role(m) == pb::Role::Tool).expect("tool answer");
    assert!(answer.is_error && text(answer) == "interrupted by restart", "{answer:?}");
    assert_eq!(text(resumed.messages.last().expect("reply")), "Tool deploy returned: interrupted by restart");

    // Idempotent: still waiting for its result, which completes the run.
    let waiting = get(&mut client, &again).await;
    assert_eq!(state_of(&waiting), FsmState::ExecutingTools);
    let call = waiting.pending_tool_calls[0].id.clone();
    let done = client.submit_tool_result(submit(&again, &call, r#""deployed""#)).await.expect("submit after restart");
    assert_eq!(state_of(&done.into_inner().state.expect("state")), FsmState::Idle);
}

#[tokio::test]
async fn approvals_given_before_a_restart_are_not_asked_again() {
    let workspace = workspace_with(&[("a.txt", "alpha")]);
    let ws = workspace.path().to_str().expect("utf-8");
    let mut server = Server::start(0, &["--workspace", ws]).await;
    let mut client = server.client().await;
    let approve_first = pb::ExternalTool { requires_approval: true, ..deploy_tool(true, 0) };
    let id =
        create_with(&mut client, pb::ContextConfig { external_tools: vec![approve_first], ..Default::default() }).await;
    let asked = send(&mut client, &id, r#"/tool deploy {"service": "api"}"#).await;
    assert_eq!(state_of(&asked), FsmState::AwaitingToolApproval);
    let call = asked.pending_tool_calls[0].id.clone();
    let request = pb::ApproveToolsRequest {
        context_id: id.clone(),
        approved_tool_call_ids: vec![call.clone()],
        ..Default::default()
    };
    client.approve_tools(request).await.expect("approve");
    wait_until(&mut client, &id, |s| state_of(s) == FsmState::ExecutingTools).await;

    server.kill9().await;
    server.restart().await;
    let mut client = server.client().await;
    let after = get(&mut client, &id).await;
    assert_eq!(state_of(&after), FsmState::ExecutingTools, "not back to AWAITING_TOOL_APPROVAL");
    assert_eq!(after.messages[1].tool_calls[0].approval, pb::ApprovalStatus::Approved as i32);
    let done = client.submit_tool_result(submit(&id, &call, "1")).await.expect("submit");
    assert_eq!(state_of(&done.into_inner().state.expect("state")), FsmState::Idle);
}

#[tokio::test]
async fn an_unreachable_provider_is_retried_then_fails_and_the_mock_still_answers() {
    // A port nothing listens on: bind one, then close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let base = format!("http://{closed}/v1");
    let server = Server::start(0, &["--openai-base-url", &base, "--openai-models", "gpt-test"]).await;
    let mut client = server.client().await;
    let remote = create_with(&mut client, pb::ContextConfig { model: "gpt-test".into(), ..Default::default() }).await;
    let failed = send(&mut client, &remote, "hello?").await;
    assert_eq!(state_of(&failed), FsmState::Failed);
    assert!(
        failed.last_error.contains("cannot reach") && failed.last_error.contains("3 attempts"),
        "{}",
        failed.last_error
    );

    // Other contexts on the same server use the mock by model name.
    let local = create_with(&mut client, pb::ContextConfig { model: "mock".into(), ..Default::default() }).await;
    let answered = send(&mut client, &local, "hello").await;
    assert_eq!(text(answered.messages.last().expect("reply")), "You said: hello");
    let unknown = client
        .create_context(pb::CreateContextRequest {
            config: Some(pb::ContextConfig { model: "gpt-other".into(), ..Default::default() }),
            ..Default::default()
        })
        .await;
    assert_eq!(unknown.expect_err("no provider serves it").code(), Code::InvalidArgument);
}
