//! WatchState and WatchContexts against the real binary: every kind of event, resuming,
//! many watchers, a stuck watcher, and the list of contexts.

use std::collections::BTreeSet;
use std::time::Instant;

use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use pb::FsmState;
use pb::watch_state_response::Kind;
use tonic::Code;

type Events = tonic::Streaming<pb::WatchStateResponse>;

/// Reads events into `folded` (and `seen`) until the folded state satisfies `done`.
async fn follow(
    events: &mut Events,
    folded: &mut Folded,
    seen: &mut Vec<pb::WatchStateResponse>,
    done: impl Fn(&pb::ContextState) -> bool,
) {
    let read = async {
        while let Some(event) = events.message().await.expect("stream") {
            folded.apply(&event).unwrap_or_else(|e| panic!("{e}: {event:?}"));
            seen.push(event);
            if folded.state.as_ref().is_some_and(&done) {
                return;
            }
        }
        panic!("stream ended early");
    };
    tokio::time::timeout(PATIENCE, read).await.expect("in time");
}

fn kind_name(event: &pb::WatchStateResponse) -> &'static str {
    match event.kind.as_ref().expect("kind") {
        Kind::Snapshot(_) => "snapshot",
        Kind::MessageAppended(_) => "message_appended",
        Kind::MessageDelta(_) => "message_delta",
        Kind::MessageUpdated(_) => "message_updated",
        Kind::StateChanged(_) => "state_changed",
        Kind::ContextDeleted(_) => "context_deleted",
        Kind::ContextUpdated(_) => "context_updated",
        Kind::BranchSwitched(_) => "branch_switched",
        Kind::QueueChanged(_) => "queue_changed",
    }
}

fn resting(state: FsmState) -> impl Fn(&pb::ContextState) -> bool {
    move |s| state_of(s) == state
}

#[tokio::test]
async fn a_watcher_sees_every_kind_in_revision_order_and_the_fold_equals_get_state() {
    let workspace = workspace_with(&[("a.txt", "alpha")]);
    let server = Server::start(1, &["--workspace", workspace.path().to_str().expect("utf-8")]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "watched").await;

    let mut events = watch(&mut client, &id, 0).await;
    let mut folded = Folded::default();
    let mut seen = Vec::new();
    follow(&mut events, &mut folded, &mut seen, |_| true).await;
    assert_eq!(kind_name(&seen[0]), "snapshot");

    let asked = send(&mut client, &id, r#"/tool read_file {"path": "a.txt"}"#).await;
    follow(&mut events, &mut folded, &mut seen, resting(FsmState::AwaitingToolApproval)).await;
    let call = asked.pending_tool_calls[0].id.clone();
    let mut other = server.client().await;
    other
        .approve_tools(pb::ApproveToolsRequest {
            context_id: id.clone(),
            approved_tool_call_ids: vec![call],
            wait: true,
            ..Default::default()
        })
        .await
        .expect("approve from another client");
    follow(&mut events, &mut folded, &mut seen, |s| state_of(s) == FsmState::Idle && s.messages.len() == 4).await;
    send(&mut client, &id, "and now some streamed words please").await;
    follow(&mut events, &mut folded, &mut seen, |s| state_of(s) == FsmState::Idle && s.messages.len() == 6).await;

    let kinds: BTreeSet<&str> = seen.iter().map(kind_name).collect();
    for kind in ["snapshot", "message_appended", "message_delta", "message_updated", "state_changed"] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    let revisions: Vec<u64> = seen.iter().map(|e| e.revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "revisions never go back: {revisions:?}");
    let saved: BTreeSet<u64> = seen.iter().filter(|e| kind_name(e) != "message_delta").map(|e| e.revision).collect();
    let expected: BTreeSet<u64> = (seen[0].revision..=folded.revision).collect();
    assert_eq!(saved, expected, "every saved revision arrives, with no gaps");
    assert_eq!(folded.state.as_ref(), Some(&get(&mut client, &id).await), "folding the events gives GetState");

    client.delete_context(pb::DeleteContextRequest { context_id: id.clone() }).await.expect("delete");
    let last = tokio::time::timeout(PATIENCE, events.message()).await.expect("in time").expect("stream");
    assert_eq!(last.as_ref().map(kind_name), Some("context_deleted"));
    let end = tokio::time::timeout(PATIENCE, events.message()).await.expect("in time").expect("clean end");
    assert!(end.is_none(), "the stream ends after context_deleted");

    let missing =
        client.watch_state(pb::WatchStateRequest { context_id: id.clone(), from_revision: 0, message_limit: 0 }).await;
    assert_eq!(missing.expect_err("deleted").code(), Code::NotFound);
    let invalid = client
        .watch_state(pb::WatchStateRequest { context_id: "nope".into(), from_revision: 0, message_limit: 0 })
        .await;
    assert_eq!(invalid.expect_err("invalid").code(), Code::InvalidArgument);
}

#[tokio::test]
async fn resuming_replays_what_was_missed_or_falls_back_to_a_snapshot() {
    let mut server = Server::start(1, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "resume").await;

    let mut events = watch(&mut client, &id, 0).await;
    let mut folded = Folded::default();
    let mut seen = Vec::new();
    send(&mut client, &id, "first turn").await;
    follow(&mut events, &mut folded, &mut seen, |s| state_of(s) == FsmState::Idle && s.messages.len() == 2).await;
    drop(events);
    let held = folded.clone();

    // Missed a whole turn, and part of a second one that is still streaming.
    send(&mut client, &id, "second turn").await;
    let long = (0..200).map(|n| format!("w{n}")).collect::<Vec<_>>().join(" ");
    client.send_message(send_request(&id, &long, false)).await.expect("send");
    wait_until(&mut client, &id, |s| state_of(s) == FsmState::StreamingLlmResponse).await;

    let mut resumed = watch(&mut client, &id, held.revision).await;
    let mut folded = held.clone();
    let mut replayed = Vec::new();
    follow(&mut resumed, &mut folded, &mut replayed, |s| state_of(s) == FsmState::Idle && s.messages.len() == 6).await;
    assert_ne!(kind_name(&replayed[0]), "snapshot", "a recent revision is replayed, not re-sent whole");
    assert_eq!(replayed[0].revision, held.revision + 1);
    assert_eq!(folded.state.as_ref(), Some(&get(&mut client, &id).await));
    assert_eq!(text(&folded.state.as_ref().expect("state").messages[5]), format!("You said: {long}"));

    // From the present: nothing to replay; the next change arrives.
    let current = get(&mut client, &id).await;
    let mut quiet = watch(&mut client, &id, current.revision).await;
    send(&mut client, &id, "third").await;
    let next = tokio::time::timeout(PATIENCE, quiet.message()).await.expect("in time").expect("stream").expect("event");
    assert_eq!((kind_name(&next), next.revision), ("message_appended", current.revision + 1));

    // A revision the server cannot replay (ahead of it, or from before a restart): a snapshot.
    let mut ahead = watch(&mut client, &id, 10_000).await;
    let first = ahead.message().await.expect("stream").expect("event");
    assert_eq!(kind_name(&first), "snapshot");
    server.terminate().await;
    server.restart().await;
    let mut client = server.client().await;
    let mut after_restart = watch(&mut client, &id, held.revision).await;
    let first = after_restart.message().await.expect("stream").expect("event");
    assert_eq!(kind_name(&first), "snapshot");
    let Some(Kind::Snapshot(state)) = first.kind else { unreachable!() };
    assert_eq!(state, get(&mut client, &id).await);
}

#[tokio::test]
async fn two_hundred_watchers_all_reach_the_same_final_revision() {
    let server = Server::start(1, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "crowd").await;
    let mut watchers = Vec::new();
    let mut connection = client.clone();
    for n in 0..200 {
        // Several connections of 50 streams, as many clients would have.
        if n % 50 == 0 {
            connection = server.client().await;
        }
        let mut events = watch(&mut connection, &id, 0).await;
        watchers.push(tokio::spawn(async move {
            let mut folded = Folded::default();
            let mut seen = Vec::new();
            follow(&mut events, &mut folded, &mut seen, |s| state_of(s) == FsmState::Idle && s.messages.len() == 4)
                .await;
            folded.state.expect("state")
        }));
    }
    send(&mut client, &id, "hello crowd").await;
    send(&mut client, &id, "hello again").await;
    let expected = get(&mut client, &id).await;
    for watcher in watchers {
        assert_eq!(watcher.await.expect("watcher"), expected);
    }
}

#[tokio::test]
async fn a_stuck_watcher_neither_slows_the_writer_nor_grows_memory_and_then_gets_a_snapshot() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "stuck").await;
    send(&mut client, &id, "warm up").await;

    // A connection with small flow-control windows: the watcher stops being able to take
    // events after a few KiB, as a client that stopped reading would.
    let channel =
        server.endpoint().initial_stream_window_size(Some(16 * 1024)).initial_connection_window_size(Some(16 * 1024));
    let mut stuck_client = server.client_on(channel.connect().await.expect("connect"));
    let mut stuck = watch(&mut stuck_client, &id, 0).await;

    // Many turns, far more events than the feed's ring holds (each turn sends at least 9:
    // 3 for the user message, 2 for the reply appearing, its text, 3 for it ending).
    const TURNS: usize = 60;
    let rss_before = server.rss_kib();
    let words = (0..200).map(|n| format!("word{n}")).collect::<Vec<_>>().join(" ");
    let started = Instant::now();
    let mut turn = None;
    for _ in 0..TURNS {
        turn = Some(send(&mut client, &id, &words).await);
    }
    let turns_took = started.elapsed();
    let rss_after = server.rss_kib();
    println!("{TURNS} turns with a stuck watcher: {turns_took:?}; RSS {rss_before} → {rss_after} KiB");
    assert_eq!(turn.map(|t| state_of(&t)), Some(FsmState::Idle), "the writer finished while the watcher was stuck");
    assert!(rss_after < rss_before + 64 * 1024, "memory stays bounded: {rss_before} → {rss_after} KiB");

    // Reading again: what fitted in the window, then a fresh snapshot, then live events.
    let mut folded = Folded::default();
    let mut seen = Vec::new();
    let expected = get(&mut client, &id).await;
    follow(&mut stuck, &mut folded, &mut seen, |s| s.revision == expected.revision).await;
    let snapshots = seen.iter().filter(|e| kind_name(e) == "snapshot").count();
    assert!(snapshots >= 2, "a fresh snapshot after falling behind ({} events read)", seen.len());
    assert!(seen.len() < TURNS * 9, "the backlog was dropped, not delivered ({} events read)", seen.len());
    assert_eq!(folded.state, Some(expected));
}

#[tokio::test]
async fn watch_contexts_keeps_a_sidebar_current() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let existing = create(&mut client, "existing").await;
    let mut list = client.watch_contexts(pb::WatchContextsRequest { page_size: 10 }).await.expect("watch").into_inner();
    use pb::watch_contexts_response::Kind as ListKind;
    // A change may come again after the page showed it (subscribed first, then the page read;
    // on NATS the store reports saves a moment after they are acknowledged): summaries carry
    // revisions, and a client skips what it already has, as this does.
    let mut known: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut next = async || loop {
        let event =
            tokio::time::timeout(PATIENCE, list.message()).await.expect("in time").expect("stream").expect("event");
        match &event.kind {
            Some(ListKind::Reset(page)) => {
                known.extend(page.contexts.iter().map(|c| (c.context_id.clone(), c.revision)));
            }
            Some(ListKind::Upserted(summary)) => {
                if known.get(&summary.context_id).is_some_and(|r| *r >= summary.revision) {
                    continue;
                }
                known.insert(summary.context_id.clone(), summary.revision);
            }
            _ => {}
        }
        return event;
    };

    let Some(ListKind::Reset(first)) = next().await.kind else { panic!("a reset first") };
    assert_eq!(first.contexts.iter().map(|c| c.context_id.as_str()).collect::<Vec<_>>(), [existing.as_str()]);

    let id = create(&mut client, "new one").await;
    let Some(ListKind::Upserted(created)) = next().await.kind else { panic!("an upsert") };
    assert_eq!((created.context_id.as_str(), created.title.as_str(), created.revision), (id.as_str(), "new one", 1));

    send(&mut client, &id, "hi").await;
    let mut states = Vec::new();
    loop {
        let Some(ListKind::Upserted(summary)) = next().await.kind else { panic!("upserts while it runs") };
        assert_eq!(summary.context_id, id);
        states.push(summary.state);
        if summary.state == FsmState::Idle as i32 && summary.message_count == 2 {
            break;
        }
    }
    // Transitions saved together show as one upsert of the newest summary; the run shows.
    assert!(states.iter().any(|s| *s != FsmState::Idle as i32), "the run shows: {states:?}");

    client.delete_context(pb::DeleteContextRequest { context_id: id.clone() }).await.expect("delete");
    let Some(ListKind::RemovedContextId(removed)) = next().await.kind else { panic!("a removal") };
    assert_eq!(removed, id);
    let bad = client.watch_contexts(pb::WatchContextsRequest { page_size: 5000 }).await;
    assert_eq!(bad.expect_err("page size").code(), Code::InvalidArgument);
}

#[tokio::test]
async fn thousands_of_idle_watchers_cost_little_memory_each() {
    const STREAMS: usize = 2000;
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let ids = [create(&mut client, "one").await, create(&mut client, "two").await];
    // Load both contexts and warm the server up before measuring.
    for id in &ids {
        send(&mut client, id, "warm").await;
    }
    let mut connections = Vec::new();
    for _ in 0..STREAMS / 200 {
        connections.push(server.client().await);
    }
    let before = server.rss_kib();
    let mut streams = Vec::with_capacity(STREAMS);
    for n in 0..STREAMS {
        let count = connections.len();
        let client = &mut connections[n % count];
        let mut events = watch(client, &ids[n % 2], 0).await;
        events.message().await.expect("stream").expect("snapshot");
        streams.push(events);
    }
    let after = server.rss_kib();
    let per_stream = (after.saturating_sub(before) * 1024) / STREAMS as u64;
    println!("{STREAMS} idle WatchState streams: RSS {before} → {after} KiB, {per_stream} bytes per stream");
    assert!(per_stream < 16 * 1024, "an idle stream costs {per_stream} bytes");

    // They are all live: one change reaches every one of them.
    send(&mut client, &ids[0], "ping").await;
    for events in streams.iter_mut().step_by(2).take(50) {
        let event = tokio::time::timeout(PATIENCE, events.message()).await.expect("in time").expect("stream");
        assert!(event.is_some());
    }
}
