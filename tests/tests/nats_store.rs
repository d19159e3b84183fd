//! What only the NATS store has to show: processes sharing a cluster serve a context as one
//! (tests/cluster.rs has the rest); a server killed mid-turn (the stream leader among them)
//! loses nothing; without a quorum actions fail UNAVAILABLE and change nothing; ctxd waits
//! for a cluster not up yet.

use ctxd_tests::nats::NatsCluster;
use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use tonic::Code;

async fn on(cluster: &NatsCluster) -> Server {
    let urls = cluster.urls();
    Server::start(0, &["--store", "nats", "--nats-url", &urls]).await
}

#[tokio::test]
async fn two_processes_on_one_cluster_serve_a_context_as_one() {
    let cluster = NatsCluster::start(3).await;
    let (a, b) = (on(&cluster).await, on(&cluster).await);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let id = create(&mut ca, "shared").await;
    // B reads what A runs (B sends the call to A, which holds the context), and the same.
    let seen_by_b = get(&mut cb, &id).await;
    assert_eq!(seen_by_b, get(&mut ca, &id).await);

    let after_a = send(&mut ca, &id, "from a").await;
    assert_eq!(after_a.messages.len(), 2);
    // B's turn follows A's: one writer, whichever process the call reached.
    let after_b = send(&mut cb, &id, "from b").await;
    let texts: Vec<String> = after_b.messages.iter().map(text).collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!((texts[0].as_str(), texts[2].as_str()), ("from a", "from b"));
    // A third process reads exactly that.
    let c = on(&cluster).await;
    let mut cc = c.client().await;
    assert_eq!(get(&mut cc, &id).await, get(&mut ca, &id).await);
}

#[tokio::test]
async fn a_context_created_on_one_process_cannot_be_created_again_on_another() {
    let cluster = NatsCluster::start(3).await;
    let (a, b) = (on(&cluster).await, on(&cluster).await);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let id = uuid::Uuid::new_v4().to_string();
    let request =
        |title: &str| pb::CreateContextRequest { context_id: id.clone(), title: title.into(), ..Default::default() };
    ca.create_context(request("first")).await.expect("create on a");
    let taken = cb.create_context(request("second")).await.expect_err("the id is taken");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert_eq!(get(&mut cb, &id).await.title, "first");
}

/// A turn long enough to kill a server in the middle of (20 ms a word).
fn long_question(turn: usize) -> String {
    format!("turn {turn}: {}", "tell me more about it ".repeat(6))
}

#[tokio::test]
async fn a_server_killed_mid_turn_loses_nothing_and_the_turn_completes() {
    let mut cluster = NatsCluster::start(3).await;
    let server = Server::start(20, &["--store", "nats", "--nats-url", &cluster.urls()]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "survivor").await;
    // Each server in turn, so one of them is the leader of the log stream (and the one
    // ctxd is connected to) when it dies.
    for turn in 0..3 {
        client.send_message(send_request(&id, &long_question(turn), false)).await.expect("send");
        wait_until(&mut client, &id, |s| state_of(s) == pb::FsmState::StreamingLlmResponse).await;
        cluster.kill9(turn).await;
        let done = wait_until(&mut client, &id, |s| state_of(s) == pb::FsmState::Idle).await;
        assert_eq!(done.messages.len(), 2 * (turn + 1), "{:?}", done.messages.iter().map(text).collect::<Vec<_>>());
        assert_eq!(text(&done.messages[2 * turn]), long_question(turn));
        assert_eq!(status(&done.messages[2 * turn + 1]), pb::MessageStatus::Complete);
        cluster.restart(turn);
        // Back in the cluster before the next one goes.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    // Everything acknowledged is stored: a process that never held the context reads it all.
    let fresh = on(&cluster).await;
    let stored = get(&mut fresh.client().await, &id).await;
    assert_eq!(stored, get(&mut client, &id).await);
}

#[tokio::test]
async fn without_a_quorum_actions_fail_unavailable_change_nothing_and_work_again_once_it_is_back() {
    let mut cluster = NatsCluster::start(3).await;
    let server = Server::start(0, &["--store", "nats", "--nats-url", &cluster.urls()]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "quorum").await;
    let before = send(&mut client, &id, "before").await;

    cluster.kill9(1).await;
    cluster.kill9(2).await;
    let refused = client.send_message(send_request(&id, "while down", true)).await.expect_err("no quorum");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("NATS cluster did not take the save"), "{}", refused.message());
    // A failed save changes nothing. (Once its heartbeat has failed for most of a lease TTL,
    // the node gives its contexts up, since another node could take them: reads are then
    // UNAVAILABLE too until the cluster is back.)
    match client.get_state(pb::GetStateRequest { context_id: id.clone(), ..Default::default() }).await {
        Ok(response) => {
            assert_eq!(response.into_inner().state.as_ref(), Some(&before), "a failed save changes nothing")
        }
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
    }

    cluster.restart(1);
    cluster.restart(2);
    // Once the servers have elected leaders again, the same action (the same idempotency
    // key: a save given up on may still have reached the log) goes through.
    let again = send_request(&id, "after", true);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let after = loop {
        match client.send_message(again.clone()).await {
            Ok(response) => break response.into_inner().state.expect("state"),
            Err(status) if matches!(status.code(), Code::Unavailable | Code::Aborted | Code::FailedPrecondition) => {
                assert!(tokio::time::Instant::now() < deadline, "the cluster did not come back: {status:?}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    let after =
        wait_until(&mut client, &id, |s| state_of(s) == pb::FsmState::Idle && s.revision >= after.revision).await;
    let texts: Vec<String> = after.messages.iter().map(text).collect();
    assert_eq!(texts[..2], before.messages.iter().map(text).collect::<Vec<_>>()[..]);
    assert_eq!(texts.iter().filter(|t| *t == "after").count(), 1, "{texts:?}");
    assert!(after.messages.iter().all(|m| status(m) == pb::MessageStatus::Complete), "{texts:?}");
    // Nothing half-written: a process that never held the context reads exactly this (once
    // the recovered cluster answers its reads again).
    let fresh = on(&cluster).await;
    let mut reader = fresh.client().await;
    let request = pb::GetStateRequest { context_id: id.clone(), ..Default::default() };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let stored = loop {
        match reader.get_state(request.clone()).await {
            Ok(response) => break response.into_inner().state.expect("state"),
            Err(status) if status.code() == Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "the cluster did not come back: {status:?}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    assert_eq!(stored, after);
}

#[tokio::test]
async fn ctxd_started_before_the_cluster_waits_for_it_and_then_serves() {
    let mut cluster = NatsCluster::start(3).await;
    for i in 0..3 {
        cluster.kill9(i).await;
    }
    let data = tempfile::tempdir().expect("dir");
    let mut child = tokio::process::Command::new(binary())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off", "--store", "nats", "--nats-url", &cluster.urls()])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ctxd");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stderr.take().expect("stderr")));
    let mut until = async |needle: &str| -> String {
        let found = async {
            while let Some(line) = lines.next_line().await.expect("read log") {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("ctxd exited before logging {needle:?}");
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), found).await.expect("the line in time")
    };
    let waiting = until("waiting for the NATS cluster; retrying in 1 s").await;
    assert!(waiting.contains(&cluster.urls()), "names the servers: {waiting}");
    assert!(child.try_wait().expect("status").is_none(), "still running, not crashed");
    for i in 0..3 {
        cluster.restart(i);
    }
    let listening = until("ctxd listening on ").await;
    let addr = listening.split("ctxd listening on ").nth(1).and_then(|a| a.split_whitespace().next()).expect("address");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = client_for(channel);
    let id = create(&mut client, "after the wait").await;
    assert_eq!(send(&mut client, &id, "hello").await.messages.len(), 2);
}
