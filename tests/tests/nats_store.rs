//! What only the NATS store has to show: the engine, not the process, keeps one writer per
//! context, and ctxd waits for a cluster that is not up yet.

use ctxd_tests::nats::NatsCluster;
use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use tonic::Code;

async fn on(cluster: &NatsCluster) -> Server {
    let urls = cluster.urls();
    Server::start(0, &["--store", "nats", "--nats-url", &urls]).await
}

#[tokio::test]
async fn two_processes_that_both_hold_a_context_can_never_interleave_their_saves() {
    let cluster = NatsCluster::start(3).await;
    let (a, b) = (on(&cluster).await, on(&cluster).await);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let id = create(&mut ca, "shared").await;
    // Both processes now hold the context in memory, at the same revision.
    let seen_by_b = get(&mut cb, &id).await;
    assert_eq!(seen_by_b, get(&mut ca, &id).await);

    let after_a = send(&mut ca, &id, "from a").await;
    assert_eq!(after_a.messages.len(), 2);

    // B did not see A's saves: JetStream refuses B's, and B changes nothing.
    let refused = cb.send_message(send_request(&id, "from b", true)).await.expect_err("a stale writer is refused");
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert!(refused.message().contains("another ctxd process"), "{}", refused.message());
    // Its memory of the context is stale, so it keeps refusing rather than guess.
    let again = cb.send_message(send_request(&id, "from b again", true)).await.expect_err("still fenced");
    assert_eq!(again.code(), Code::Aborted);

    // What is stored is A's history alone, and a third process reads exactly that.
    let c = on(&cluster).await;
    let mut cc = c.client().await;
    let stored = get(&mut cc, &id).await;
    assert_eq!(stored, get(&mut ca, &id).await);
    let texts: Vec<String> = stored.messages.iter().map(text).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(texts[0], "from a");
    assert!(!texts.iter().any(|t| t.contains("from b")), "{texts:?}");
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
