//! Branches, against the real binary: edit a sent message, regenerate a reply, move between
//! versions, read the tree, and keep the active path across restarts.

use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use pb::FsmState;
use tonic::Code;

async fn switch(client: &mut Client, id: &str, message_id: &str) -> pb::ContextState {
    let request =
        pb::SwitchBranchRequest { context_id: id.into(), message_id: message_id.into(), ..Default::default() };
    client.switch_branch(request).await.expect("switch").into_inner().state.expect("state")
}

async fn regenerate(client: &mut Client, id: &str, message_id: &str) -> pb::ContextState {
    let request = pb::RegenerateReplyRequest {
        context_id: id.into(),
        message_id: message_id.into(),
        wait: true,
        ..Default::default()
    };
    client.regenerate_reply(request).await.expect("regenerate").into_inner().state.expect("state")
}

fn texts(state: &pb::ContextState) -> Vec<String> {
    state.messages.iter().map(text).collect()
}

/// (sibling_count, sibling_index) of each message of the active path.
fn versions(state: &pb::ContextState) -> Vec<(u32, u32)> {
    state.messages.iter().map(|m| (m.sibling_count, m.sibling_index)).collect()
}

#[tokio::test]
async fn edits_and_regenerates_keep_every_version_and_switches_move_between_them() {
    let mut server = Server::start(1, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "branches").await;
    send(&mut client, &id, "first question").await;
    let straight = send(&mut client, &id, "second question").await;
    assert_eq!(versions(&straight), [(1, 0); 4], "nobody branched: one version each");
    assert_eq!(straight.messages[1].parent_id, straight.messages[0].id);
    assert_eq!(straight.messages[0].parent_id, "");
    let (q1, a1, q2) = (straight.messages[0].clone(), straight.messages[1].clone(), straight.messages[2].clone());

    // Edit the second question: a new version and its reply; the old one stays a version.
    let edited = client.edit_message(edit_request(&id, &q2.id, "second, reworded")).await.expect("edit");
    let edited = edited.into_inner().state.expect("state");
    assert_eq!(state_of(&edited), FsmState::Idle);
    assert_eq!(
        texts(&edited),
        ["first question", "You said: first question", "second, reworded", "You said: second, reworded"]
    );
    assert_eq!(versions(&edited)[2..], [(2, 1), (1, 0)]);
    assert_eq!(edited.messages[2].previous_sibling_id, q2.id);
    assert_eq!(edited.messages[2].parent_id, a1.id);
    assert_eq!(edited.messages[..2], straight.messages[..2], "the shared history is the same messages");

    // Regenerate the last reply (empty id): a third path, with two replies to choose from.
    let regenerated = regenerate(&mut client, &id, "").await;
    let (old_reply, new_reply) = (&edited.messages[3], &regenerated.messages[3]);
    assert_ne!(old_reply.id, new_reply.id);
    assert_eq!(
        (new_reply.sibling_count, new_reply.sibling_index, &new_reply.previous_sibling_id),
        (2, 1, &old_reply.id)
    );

    // ‹ 1/2 › on the question: back to the original branch, as it was.
    let back = switch(&mut client, &id, &q2.id).await;
    assert_eq!(
        back.messages,
        straight
            .messages
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if m.id == q2.id {
                    (m.sibling_count, m.next_sibling_id) = (2, edited.messages[2].id.clone());
                }
                m
            })
            .collect::<Vec<_>>(),
        "the original branch, and its question now knows the edit"
    );
    assert_eq!(get(&mut client, &id).await, back);
    // › again: the edit's branch continues down its most recently active reply.
    let forward = switch(&mut client, &id, &back.messages[2].next_sibling_id).await;
    assert_eq!(forward.messages[3].id, new_reply.id);
    // A message already on the path: nothing changes, not even the revision.
    let same = switch(&mut client, &id, &q1.id).await;
    assert_eq!(same.revision, forward.revision);

    // The tree, read a page at a time: the versions of the second question.
    let first_page = client
        .list_messages(pb::ListMessagesRequest {
            context_id: id.clone(),
            parent_id: a1.id.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(first_page.messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [q2.id.as_str()]);
    assert_eq!((first_page.messages[0].sibling_count, first_page.messages[0].sibling_index), (2, 0));
    let second_page = client
        .list_messages(pb::ListMessagesRequest {
            context_id: id.clone(),
            parent_id: a1.id.clone(),
            page_size: 1,
            page_token: first_page.next_page_token.clone(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(second_page.messages[0].id, edited.messages[2].id);
    let roots = client
        .list_messages(pb::ListMessagesRequest { context_id: id.clone(), ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!((roots.messages.len(), roots.next_page_token.as_str()), (1, ""));

    // The active path, the versions and the tree survive a restart.
    let before = get(&mut client, &id).await;
    server.terminate().await;
    server.restart().await;
    let mut client = server.client().await;
    assert_eq!(get(&mut client, &id).await, before);
    let again = switch(&mut client, &id, &old_reply.id).await;
    assert_eq!(again.messages[3].id, old_reply.id);
    assert_eq!(
        (again.messages[3].sibling_count, again.messages[3].next_sibling_id.as_str()),
        (2, new_reply.id.as_str())
    );

    // Forks copy the active path only.
    let fork = client
        .fork_context(pb::ForkContextRequest { context_id: id.clone(), ..Default::default() })
        .await
        .expect("fork")
        .into_inner()
        .state
        .expect("state");
    assert_eq!(texts(&fork), texts(&again));
    assert_eq!(versions(&fork), [(1, 0); 4], "a fork is a straight conversation");
}

#[tokio::test]
async fn branch_actions_refuse_what_they_cannot_do_and_change_nothing() {
    let server = Server::start(20, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "refusals").await;
    let state = send(&mut client, &id, "hello").await;
    let (user, reply) = (state.messages[0].id.clone(), state.messages[1].id.clone());
    let unknown = uuid::Uuid::new_v4().to_string();

    let refused =
        |result: Result<tonic::Response<pb::EditMessageResponse>, tonic::Status>| result.expect_err("refused");
    let wrong_role = refused(client.edit_message(edit_request(&id, &reply, "x")).await);
    assert_eq!(wrong_role.code(), Code::InvalidArgument, "{wrong_role:?}");
    assert!(wrong_role.message().contains("user messages"), "{}", wrong_role.message());
    let off_path = refused(client.edit_message(edit_request(&id, &unknown, "x")).await);
    assert_eq!(off_path.code(), Code::NotFound, "{off_path:?}");
    assert!(off_path.message().contains("not on the active path"), "{}", off_path.message());
    let malformed = refused(client.edit_message(edit_request(&id, "not-a-uuid", "x")).await);
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let empty = refused(client.edit_message(edit_request(&id, &user, " ")).await);
    assert_eq!(empty.code(), Code::InvalidArgument);
    let stale = refused(
        client
            .edit_message(pb::EditMessageRequest { expected_revision: Some(1), ..edit_request(&id, &user, "x") })
            .await,
    );
    assert_eq!(stale.code(), Code::Aborted);

    let regenerate_user = client
        .regenerate_reply(pb::RegenerateReplyRequest {
            context_id: id.clone(),
            message_id: user.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a user message is not a reply");
    assert_eq!(regenerate_user.code(), Code::InvalidArgument);
    let unknown_switch = client
        .switch_branch(pb::SwitchBranchRequest {
            context_id: id.clone(),
            message_id: unknown.clone(),
            ..Default::default()
        })
        .await
        .expect_err("no such message");
    assert_eq!(unknown_switch.code(), Code::NotFound, "{unknown_switch:?}");
    let unknown_parent = client
        .list_messages(pb::ListMessagesRequest { context_id: id.clone(), parent_id: unknown, ..Default::default() })
        .await
        .expect_err("no such parent");
    assert_eq!(unknown_parent.code(), Code::NotFound);
    let bad_token = client
        .list_messages(pb::ListMessagesRequest { context_id: id.clone(), page_token: "x".into(), ..Default::default() })
        .await
        .expect_err("a made-up token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    assert_eq!(get(&mut client, &id).await, state, "every refusal changed nothing");

    // Mid-run, every branch action is refused naming the state; the run is not disturbed.
    client.send_message(send_request(&id, "a long one to keep the run going for a while", false)).await.expect("send");
    let busy = refused(client.edit_message(edit_request(&id, &user, "x")).await);
    assert_eq!(busy.code(), Code::FailedPrecondition);
    assert!(busy.message().contains("EditMessage is not allowed in state"), "{}", busy.message());
    let busy = client
        .regenerate_reply(pb::RegenerateReplyRequest { context_id: id.clone(), ..Default::default() })
        .await
        .expect_err("busy");
    assert_eq!(busy.code(), Code::FailedPrecondition);
    let busy = client
        .switch_branch(pb::SwitchBranchRequest {
            context_id: id.clone(),
            message_id: reply.clone(),
            ..Default::default()
        })
        .await
        .expect_err("busy");
    assert_eq!(busy.code(), Code::FailedPrecondition, "{busy:?}");
    let done = wait_until(&mut client, &id, |s| state_of(s) == FsmState::Idle).await;
    assert_eq!(done.messages.len(), 4);
}

#[tokio::test]
async fn a_tool_call_awaiting_approval_is_not_regenerated_and_kill_9_mid_run_resumes_on_the_new_branch() {
    let workspace = workspace_with(&[("f.txt", "file text")]);
    let mut server = Server::start(60, &["--workspace", workspace.path().to_str().expect("utf-8")]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "crash on a branch").await;
    let asked = send(&mut client, &id, r#"/tool read_file {"path": "f.txt"}"#).await;
    assert_eq!(state_of(&asked), FsmState::AwaitingToolApproval);
    let refused = client
        .regenerate_reply(pb::RegenerateReplyRequest { context_id: id.clone(), ..Default::default() })
        .await
        .expect_err("cancel first");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    client
        .cancel_run(pb::CancelRunRequest { context_id: id.clone(), wait: true, ..Default::default() })
        .await
        .expect("cancel");
    let question = get(&mut client, &id).await.messages[0].id.clone();

    // An edit whose reply streams when the server dies.
    let long = "an edited question long enough that its reply is still streaming when the server is killed";
    let request = pb::EditMessageRequest { wait: false, ..edit_request(&id, &question, long) };
    client.edit_message(request).await.expect("edit");
    wait_until(&mut client, &id, |s| state_of(s) == FsmState::StreamingLlmResponse).await;
    server.kill9().await;
    server.restart().await;
    let mut client = server.client().await;
    let done = wait_until(&mut client, &id, |s| state_of(s) == FsmState::Idle).await;
    assert_eq!(text(&done.messages[0]), long, "resumed on the new branch");
    assert_eq!((done.messages[0].sibling_count, done.messages[0].sibling_index), (2, 1));
    let last = done.messages.last().expect("a reply");
    assert_eq!((status(last), text(last)), (pb::MessageStatus::Complete, format!("You said: {long}")));
    // The old branch, with its cancelled call, is one switch away.
    let old = switch(&mut client, &id, &question).await;
    assert_eq!(old.messages.len(), asked.messages.len() + 1, "the call and its 'cancelled' answer");
    assert_eq!(state_of(&old), FsmState::Idle);
    assert!(old.pending_tool_calls.is_empty(), "a switched-to branch never runs old calls");
}
