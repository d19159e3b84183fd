//! Paged reads against the real binary: GetState and WatchState with a message_limit hold
//! only the last messages, and ListPathMessages pages back through a path exactly once, in
//! order, even when the active path moves to another branch between pages.

use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use tonic::Code;

fn ids(messages: &[pb::Message]) -> Vec<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

async fn edit(client: &mut Client, id: &str, message_id: &str, content: &str) -> pb::ContextState {
    let request = edit_request(id, message_id, content);
    client.edit_message(request).await.expect("edit").into_inner().state.expect("state")
}

#[tokio::test]
async fn a_path_reads_in_pages_exactly_once_even_when_the_active_path_moves_meanwhile() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "paging").await;
    for n in 0..12 {
        send(&mut client, &id, &format!("question {n}")).await;
    }
    let full = get(&mut client, &id).await;
    assert_eq!(full.messages.len(), 24);
    assert_eq!(full.earlier_message_count, 0);

    // The last 5, and how many come before them.
    let last = limited(&mut client, &id, 5).await;
    assert_eq!(ids(&last.messages), ids(&full.messages[19..]));
    assert_eq!(last.earlier_message_count, 19);
    assert_eq!(last.revision, full.revision);
    assert_eq!(limited(&mut client, &id, 100).await.messages.len(), 24, "a limit above the path is the path");

    // Back from the first one held, 7 at a time: each message once, in order.
    let first = page(&mut client, &id, &last.messages[0].id, 7, "").await;
    assert_eq!(ids(&first.messages), ids(&full.messages[12..19]));
    let before = back_to_the_start(&mut client, &id, first, 7).await;
    assert_eq!(ids(&before), ids(&full.messages[..19]));
    // From the end of the active path when no message is named.
    let tail = page(&mut client, &id, "", 7, "").await;
    assert_eq!(ids(&tail.messages), ids(&full.messages[17..]));

    // A reader half way back when the active path moves to another branch (the 3rd question
    // edited) goes on along the path it was reading: that message's, which never changes.
    let first = page(&mut client, &id, &last.messages[0].id, 3, "").await;
    assert_eq!(ids(&first.messages), ids(&full.messages[16..19]));
    let edited = edit(&mut client, &id, &full.messages[4].id, "question 2, reworded").await;
    assert_eq!(edited.messages.len(), 6, "two questions and answers kept, then the new version and its reply");
    let old_path = back_to_the_start(&mut client, &id, first, 3).await;
    assert_eq!(ids(&old_path), ids(&full.messages[..19]));
    let edited_away = &old_path[4];
    assert_eq!((edited_away.sibling_count, edited_away.sibling_index), (2, 0), "versions read off the active path");
    assert_eq!(edited_away.parent_id, full.messages[3].id);

    // The new active path reads back whole the same way.
    let now = get(&mut client, &id).await;
    let newest = page(&mut client, &id, "", 4, "").await;
    let new_path = back_to_the_start(&mut client, &id, newest, 4).await;
    assert_eq!(ids(&new_path), ids(&now.messages));
    assert_eq!((new_path[4].sibling_count, new_path[4].sibling_index), (2, 1));
    // Above the first message there is nothing.
    let nothing = page(&mut client, &id, &now.messages[0].id, 4, "").await;
    assert!(nothing.messages.is_empty() && nothing.next_page_token.is_empty());
}

#[tokio::test]
async fn bad_paging_requests_get_a_clear_status_and_change_nothing() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "paging").await;
    let state = send(&mut client, &id, "hello").await;
    let lister = client.clone();
    let list = |before: &str, size: i32, token: &str| {
        let request = pb::ListPathMessagesRequest {
            context_id: id.clone(),
            before_message_id: before.into(),
            page_size: size,
            page_token: token.into(),
        };
        let mut client = lister.clone();
        async move { client.list_path_messages(request).await.map(|r| r.into_inner()) }
    };
    let code = |result: Result<pb::ListPathMessagesResponse, tonic::Status>| result.expect_err("refused").code();
    assert_eq!(code(list("", 1001, "").await), Code::InvalidArgument, "page_size over 1000");
    assert_eq!(code(list("", -1, "").await), Code::InvalidArgument);
    assert_eq!(code(list("", 10, "not-a-token").await), Code::InvalidArgument);
    assert_eq!(code(list("nope", 10, "").await), Code::InvalidArgument, "a malformed id");
    assert_eq!(code(list(&uuid::Uuid::new_v4().to_string(), 10, "").await), Code::NotFound, "no such message");
    let other = pb::ListPathMessagesRequest { context_id: uuid::Uuid::new_v4().to_string(), ..Default::default() };
    assert_eq!(client.list_path_messages(other).await.expect_err("unknown context").code(), Code::NotFound);
    // A ListMessages token is not a ListPathMessages one.
    let children = pb::ListMessagesRequest { context_id: id.clone(), page_size: 1, ..Default::default() };
    let children = client.list_messages(children).await.expect("children").into_inner();
    assert!(!children.next_page_token.is_empty() || children.messages.len() == 1);
    if !children.next_page_token.is_empty() {
        assert_eq!(code(list("", 10, &children.next_page_token).await), Code::InvalidArgument);
    }
    assert_eq!(get(&mut client, &id).await.revision, state.revision, "nothing changed");
}

async fn next(events: &mut tonic::Streaming<pb::WatchStateResponse>) -> pb::watch_state_response::Kind {
    tokio::time::timeout(std::time::Duration::from_secs(10), events.message())
        .await
        .expect("an event in time")
        .expect("the stream")
        .expect("open")
        .kind
        .expect("a kind")
}

#[tokio::test]
async fn a_watch_with_a_message_limit_starts_short_and_a_long_switch_comes_as_a_short_snapshot() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "paging").await;
    for n in 0..5 {
        send(&mut client, &id, &format!("question {n}")).await;
    }
    let full = get(&mut client, &id).await;
    let request = pb::WatchStateRequest { context_id: id.clone(), from_revision: 0, message_limit: 3 };
    let mut events = client.watch_state(request).await.expect("watch").into_inner();
    let pb::watch_state_response::Kind::Snapshot(first) = next(&mut events).await else { panic!("a snapshot first") };
    assert_eq!(ids(&first.messages), ids(&full.messages[7..]));
    assert_eq!(first.earlier_message_count, 7);

    // A new first question: a branch of two messages, sent as the branch switch it is.
    let short = edit(&mut client, &id, &full.messages[0].id, "question 0, again").await;
    assert_eq!(short.messages.len(), 2);
    let switched = loop {
        match next(&mut events).await {
            pb::watch_state_response::Kind::BranchSwitched(switched) => break switched,
            pb::watch_state_response::Kind::Snapshot(_) => panic!("a short switch is not a snapshot"),
            _ => {}
        }
    };
    assert_eq!(switched.kept, 0);

    // Back to the old first question: ten messages come back, more than the watcher holds.
    let request = pb::SwitchBranchRequest {
        context_id: id.clone(),
        message_id: full.messages[0].id.clone(),
        ..Default::default()
    };
    let back = client.switch_branch(request).await.expect("switch").into_inner().state.expect("state");
    assert_eq!(ids(&back.messages), ids(&full.messages));
    let snapshot = loop {
        match next(&mut events).await {
            pb::watch_state_response::Kind::Snapshot(snapshot) => break snapshot,
            pb::watch_state_response::Kind::BranchSwitched(_) => panic!("a long switch comes as a snapshot"),
            _ => {}
        }
    };
    assert_eq!(ids(&snapshot.messages), ids(&full.messages[7..]));
    assert_eq!((snapshot.earlier_message_count, snapshot.revision), (7, back.revision));
}
