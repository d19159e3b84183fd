//! Sending while a reply runs, against the real binary: refused by default, or with
//! ON_BUSY_INTERRUPT the run stops as CancelRun stops it and the new message runs, in one
//! save, so the history stays valid.

use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use pb::FsmState;
use tonic::Code;

fn interrupting(id: &str, content: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest { on_busy: pb::OnBusy::Interrupt as i32, ..send_request(id, content, true) }
}

fn roles(state: &pb::ContextState) -> Vec<pb::Role> {
    state.messages.iter().map(role).collect()
}

/// A message the mock (at 40 ms a word) answers for most of a second.
const LONG: &str = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";

/// Sends [`LONG`] and returns the state once its reply is streaming, a few words in.
async fn streaming_a_long_reply(client: &mut Client, id: &str) -> pb::ContextState {
    client.send_message(send_request(id, LONG, false)).await.expect("send");
    wait_until(client, id, |s| {
        state_of(s) == FsmState::StreamingLlmResponse && s.messages.get(1).is_some_and(|m| text(m).len() > 12)
    })
    .await
}

/// A context whose model asked for a call of a tool that needs approval, waiting for it.
async fn awaiting_approval(client: &mut Client) -> (String, pb::ContextState) {
    let deploy = pb::ExternalTool {
        name: "deploy".into(),
        description: "Deploys a service".into(),
        parameters_json_schema: r#"{"type": "object"}"#.into(),
        requires_approval: true,
        idempotent: false,
        timeout_ms: 0,
    };
    let config = pb::ContextConfig { external_tools: vec![deploy], ..Default::default() };
    let request = pb::CreateContextRequest { config: Some(config), ..Default::default() };
    let id = client.create_context(request).await.expect("create").into_inner().state.expect("state").context_id;
    let asked = send(client, &id, r#"/tool deploy {"service": "api"}"#).await;
    assert_eq!(state_of(&asked), FsmState::AwaitingToolApproval);
    (id, asked)
}

#[tokio::test]
async fn sending_during_a_streaming_reply_is_refused_by_default_and_interrupts_it_when_asked() {
    let server = Server::start(40, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "busy").await;
    let streaming = streaming_a_long_reply(&mut client, &id).await;

    let refused = client.send_message(send_request(&id, "not now", false)).await.expect_err("busy");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let unknown = pb::SendMessageRequest { on_busy: 9, ..send_request(&id, "?", false) };
    assert_eq!(client.send_message(unknown).await.expect_err("bad on_busy").code(), Code::InvalidArgument);
    assert_eq!(get(&mut client, &id).await.messages.len(), 2, "neither changed anything");

    let request = interrupting(&id, "stop, and answer this");
    let again = request.clone();
    let done = client.send_message(request).await.expect("interrupt").into_inner().state.expect("state");
    assert_eq!(state_of(&done), FsmState::Idle);
    assert_eq!(roles(&done), [pb::Role::User, pb::Role::Assistant, pb::Role::User, pb::Role::Assistant]);
    let partial = &done.messages[1];
    assert_eq!(status(partial), pb::MessageStatus::Cancelled);
    let partial_text = text(partial);
    let full = format!("You said: {LONG}");
    assert!(full.starts_with(&partial_text) && partial_text.len() < full.len(), "{partial_text:?}");
    assert!(partial_text.len() >= text(&streaming.messages[1]).len(), "the text streamed before is kept");
    assert_eq!(text(&done.messages[3]), "You said: stop, and answer this");
    assert_eq!(status(&done.messages[3]), pb::MessageStatus::Complete);

    // The same send again (a client retrying it) adds nothing; the old run sent nothing more.
    let retried = client.send_message(again).await.expect("retry").into_inner().state.expect("state");
    assert_eq!(retried.revision, done.revision);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(get(&mut client, &id).await, done, "nothing of the stopped run arrives after it");

    // At rest, an interrupting send is an ordinary one.
    let calm = client.send_message(interrupting(&id, "and one more")).await.expect("send").into_inner();
    let calm = calm.state.expect("state");
    assert_eq!(calm.messages.len(), 6);
    assert_eq!(status(&calm.messages[5]), pb::MessageStatus::Complete);
}

#[tokio::test]
async fn interrupting_a_tool_approval_denies_the_calls_and_answers_them() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let (id, _) = awaiting_approval(&mut client).await;

    let done = client.send_message(interrupting(&id, "never mind")).await.expect("interrupt").into_inner();
    let done = done.state.expect("state");
    assert_eq!(state_of(&done), FsmState::Idle);
    assert!(done.pending_tool_calls.is_empty());
    assert_eq!(
        roles(&done),
        [pb::Role::User, pb::Role::Assistant, pb::Role::Tool, pb::Role::User, pb::Role::Assistant],
        "the call is answered before the new message, so the history stays valid"
    );
    assert_eq!(done.messages[1].tool_calls[0].approval, pb::ApprovalStatus::Denied as i32);
    assert_eq!(done.messages[2].tool_call_id, done.messages[1].tool_calls[0].id);
    assert_eq!(text(&done.messages[4]), "You said: never mind");
}

/// At rest, nothing queued, and the path ends with a reply (the events of one save arrive
/// one by one: the queue empties before the state says a run started).
fn answered_all(state: &pb::ContextState) -> bool {
    state_of(state) == FsmState::Idle
        && state.queued_messages.is_empty()
        && state.messages.last().is_some_and(|m| role(m) == pb::Role::Assistant)
}

fn enqueuing(id: &str, content: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest { on_busy: pb::OnBusy::Enqueue as i32, ..send_request(id, content, false) }
}

#[tokio::test]
async fn messages_sent_during_a_run_queue_once_each_in_order_and_one_next_turn_answers_them_all() {
    let server = Server::start(40, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "queue").await;
    streaming_a_long_reply(&mut client, &id).await;

    // 30 at once, each acknowledged with the queue as it stood after it was saved.
    let requests: Vec<pb::SendMessageRequest> = (0..30).map(|n| enqueuing(&id, &format!("queued {n}"))).collect();
    let sends = requests.iter().cloned().map(|request| {
        let mut client = client.clone();
        async move { client.send_message(request).await.expect("enqueue").into_inner().state.expect("state") }
    });
    let answers = futures::future::join_all(sends).await;
    let mut saved_at = Vec::new();
    for (request, answer) in requests.iter().zip(&answers) {
        let position = answer.queued_messages.iter().position(|m| m.client_message_id == request.client_message_id);
        if let Some(position) = position {
            assert_eq!(status(&answer.queued_messages[position]), pb::MessageStatus::Queued);
            saved_at.push((answer.revision, text(&answer.queued_messages[position])));
        } else {
            // Acknowledged after the run ended and the queue joined the path.
            assert!(answer.messages.iter().any(|m| m.client_message_id == request.client_message_id));
        }
    }
    // A retried send adds nothing, queued or not.
    client.send_message(requests[7].clone()).await.expect("retry");

    let done = wait_until(&mut client, &id, answered_all).await;
    let users: Vec<String> = done.messages.iter().filter(|m| role(m) == pb::Role::User).map(text).collect();
    assert_eq!(users.len(), 31, "each queued message joined the path once");
    // In the order they were saved (each answer's revision is when its message was saved).
    saved_at.sort();
    let saved_order: Vec<String> = saved_at.into_iter().map(|(_, text)| text).collect();
    let joined: Vec<String> = users[1..].iter().filter(|t| saved_order.contains(t)).cloned().collect();
    assert_eq!(joined, saved_order);
    let replies = done.messages.iter().filter(|m| role(m) == pb::Role::Assistant).count();
    assert_eq!(replies, 2, "the first reply, then one reply to all the queued messages");
    assert_eq!(role(done.messages.last().expect("a reply")), pb::Role::Assistant);
    assert!(done.messages.iter().all(|m| status(m) != pb::MessageStatus::Queued));
}

#[tokio::test]
async fn a_message_queued_during_a_tool_approval_waits_for_the_decision() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let (id, asked) = awaiting_approval(&mut client).await;

    let queued = client.send_message(enqueuing(&id, "and then this")).await.expect("enqueue").into_inner();
    let queued = queued.state.expect("state");
    assert_eq!(state_of(&queued), FsmState::AwaitingToolApproval, "the decision comes first");
    assert_eq!(queued.queued_messages.len(), 1);
    assert_eq!(queued.messages.len(), asked.messages.len(), "not on the path yet");

    let call = asked.pending_tool_calls[0].id.clone();
    let deny =
        pb::ApproveToolsRequest { context_id: id.clone(), denied_tool_call_ids: vec![call], ..Default::default() };
    client.approve_tools(deny).await.expect("deny");
    let done = wait_until(&mut client, &id, answered_all).await;
    let users: Vec<String> = done.messages.iter().filter(|m| role(m) == pb::Role::User).map(text).collect();
    assert_eq!(users.last().map(String::as_str), Some("and then this"));
    assert_eq!(text(done.messages.last().expect("reply")), "You said: and then this");
}

#[tokio::test]
async fn queued_messages_survive_kill_9_and_the_resumed_run_answers_them() {
    let mut server = Server::start(40, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "queue").await;
    streaming_a_long_reply(&mut client, &id).await;
    let queued = client.send_message(enqueuing(&id, "after the restart")).await.expect("enqueue").into_inner();
    assert_eq!(queued.state.expect("state").queued_messages.len(), 1);

    server.kill9().await;
    server.restart().await;
    let mut client = server.client().await;
    let done = wait_until(&mut client, &id, answered_all).await;
    let users: Vec<String> = done.messages.iter().filter(|m| role(m) == pb::Role::User).map(text).collect();
    assert_eq!(users, [LONG, "after the restart"]);
    assert_eq!(text(done.messages.last().expect("reply")), "You said: after the restart");
}
