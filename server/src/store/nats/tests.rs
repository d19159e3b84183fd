//! The NATS store against a real `nats-server` (one server, JetStream, replicas 1): what
//! every engine does (`crate::store::contract`), then NATS' own: a context copied whole from
//! RocksDB across several batches, a copy cut short, retried and stale saves, tenants'
//! lists on demand, run markers, and the layout's checks.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Nats, NatsOptions};
use crate::domain::{
    Change, Context, ContextConfig, ContextId, ContextKey, Message, MessageId, Phase, Role, TenantId, Timestamp,
};
use crate::store::codec::{StoredNodeMessage, StoredRecord};
use crate::store::contract::{backend_contract, commit, save_of};
use crate::store::{Backend, Change as Saved, Dump, Error, Inserted, Rocks, codec};

/// A JetStream server on a free loopback port, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = tempfile::tempdir().expect("store dir");
        // What the Makefile names, else what `make setup` installs in the project's venv.
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv-nats/bin/nats-server");
        let binary = std::env::var("CTXD_NATS_SERVER").unwrap_or_else(|_| venv.into());
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (`make setup` installs it; or set CTXD_NATS_SERVER)");
        Self { child, port, _dir: dir }
    }

    async fn open(&self) -> Nats {
        let options = NatsOptions::plain(vec![format!("nats://127.0.0.1:{}", self.port)], "test", 1, 4);
        tokio::time::timeout(Duration::from_secs(30), Nats::open(&options)).await.expect("NATS ready").expect("open")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

backend_contract!({
    let server = Server::start();
    let nats = server.open().await;
    (server, std::sync::Arc::new(nats) as std::sync::Arc<dyn Backend>)
});

/// A context of 40 turns with 40 KiB replies (about 1.6 MB: several records), saved in
/// RocksDB the way the runtime saves it, and read back whole.
async fn long_context_on_rocks(dir: &std::path::Path) -> Dump {
    let rocks = Rocks::open_dir(dir.to_path_buf(), false).await.expect("open rocksdb");
    let key = ContextKey::new(TenantId::parse("acme").expect("tenant"), ContextId::from_bytes([7; 16]));
    let mut ctx =
        Context::new(key.clone(), "alice".into(), "long".into(), ContextConfig::default(), Timestamp::from_micros(1));
    rocks.insert(std::sync::Arc::new(ctx.clone())).await.expect("insert");
    let reply = "word ".repeat(8 * 1024);
    for turn in 0..40u64 {
        let now = Timestamp::from_micros(i64::try_from(turn).unwrap_or(0) + 10);
        let question = Message::text(MessageId::new(), ctx.place(0), Role::User, format!("question {turn}"), now);
        let answer = Message::text(MessageId::new(), ctx.place(1), Role::Assistant, reply.clone(), now);
        ctx = commit(&rocks, &ctx, Change::to(Phase::Idle).with(question).with(answer)).await;
    }
    let dump = rocks.dump(&key).await.expect("read").expect("there");
    rocks.close().await;
    assert_eq!(dump.messages.len(), 80);
    dump
}

/// The long context, read from RocksDB, and a NATS server with the store open on it.
async fn long_context_and_a_server() -> (Dump, Server, Nats) {
    let rocks_dir = tempfile::tempdir().expect("dir");
    let dump = long_context_on_rocks(rocks_dir.path()).await;
    let server = Server::start();
    let nats = server.open().await;
    (dump, server, nats)
}

#[tokio::test]
async fn a_long_context_restores_across_batches_and_reads_back_identical() {
    let (dump, server, nats) = long_context_and_a_server().await;
    let key = dump.context.key();
    assert_eq!(nats.restore(&dump).await.expect("restore"), Inserted::Saved);
    let stream = &nats.streams[nats.layout.partition(&key) as usize];
    let stored = stream.clone().info().await.expect("info").state.messages;
    // 80 messages, 80 ids, the child lists, the entry, the marker-less head.
    assert!(stored >= 160, "{stored} messages stored");
    let copy = nats.dump(&key).await.expect("read").expect("there");
    assert_eq!(copy.checksum(), dump.checksum());
    assert_eq!(nats.restore(&dump).await.expect("again"), Inserted::Taken);
    assert_eq!(nats.keys().await.expect("keys"), vec![key.clone()]);

    // A fresh process lists it, reading the tenant's entries on demand.
    drop(nats);
    let nats = server.open().await;
    assert_eq!(nats.list(&key.tenant, None, 10).await.expect("list").0.len(), 1);
    assert_eq!(nats.count(&key.tenant).await.expect("count"), 1);
    assert_eq!(nats.dump(&key).await.expect("read").expect("there").checksum(), dump.checksum());
}

#[tokio::test]
async fn a_copy_cut_short_is_never_a_context_and_the_next_restore_starts_again() {
    let (dump, _server, nats) = long_context_and_a_server().await;
    let key = dump.context.key();
    // What a restore killed after its first batch leaves: messages, and no head.
    let record = StoredRecord {
        messages: dump.messages[..10]
            .iter()
            .map(|m| StoredNodeMessage { node: m.node.get(), message: Some(codec::message_to_stored(m)) })
            .collect(),
        ..Default::default()
    };
    let first = nats.tree_writes(&key, &record, None).await.expect("writes");
    nats.publish_batch(&first).await.expect("first batch");

    assert!(nats.load(&key).await.expect("load").is_none(), "not a context");
    assert!(nats.list(&key.tenant, None, 10).await.expect("list").0.is_empty(), "not listed");
    assert!(nats.interrupted().await.expect("interrupted").is_empty(), "nothing to resume");

    assert_eq!(nats.restore(&dump).await.expect("restore"), Inserted::Saved);
    let copy = nats.dump(&key).await.expect("read").expect("there");
    assert_eq!(copy.checksum(), dump.checksum());
}

#[tokio::test]
async fn a_retried_save_is_acknowledged_once_and_a_different_one_is_refused() {
    let server = Server::start();
    let nats = server.open().await;
    let key = ContextKey::new(TenantId::parse("acme").expect("tenant"), ContextId::from_bytes([8; 16]));
    let batch = |n: u8| {
        vec![
            super::batch::Put::new(nats.layout.entry(&key), vec![n]),
            super::batch::Put::new(nats.layout.head(&key), vec![1, n]),
        ]
    };
    let first = nats.save(&key, batch(1), 0, true).await.expect("save");
    // The same batch again, as a retry after a lost answer: the same head back, stored once.
    nats.set_head(&key, None);
    assert_eq!(nats.save(&key, batch(1), 0, true).await.expect("retry"), first);
    // A different batch on the same expectation: the head moved on.
    assert!(matches!(nats.save(&key, batch(2), 0, true).await, Err(Error::Conflict { .. })));
    let stream = &nats.streams[nats.layout.partition(&key) as usize];
    // The layout's stream is another; this one holds the entry and the head, once.
    assert_eq!(stream.clone().info().await.expect("info").state.messages, 2);
}

#[tokio::test]
async fn a_second_writer_is_refused_and_every_process_sees_every_save_of_a_watched_tenant() {
    let server = Server::start();
    let (a, b) = (server.open().await, server.open().await);
    let key = ContextKey::new(TenantId::parse("acme").expect("tenant"), ContextId::from_bytes([9; 16]));
    let mut reported = b.watch(&key.tenant).await.expect("watch").expect("a shared store reports saves");
    let ctx =
        Context::new(key.clone(), "alice".into(), "shared".into(), ContextConfig::default(), Timestamp::from_micros(1));
    assert_eq!(a.insert(std::sync::Arc::new(ctx.clone())).await.expect("insert"), Inserted::Saved);
    // B watches the tenant: its list and its reports have A's context.
    let first = tokio::time::timeout(Duration::from_secs(10), reported.recv()).await.expect("reported").expect("open");
    assert!(
        matches!(&first, Saved::Saved { key: k, summary } if *k == key && summary.revision == ctx.revision),
        "{first:?}"
    );
    assert_eq!(b.list(&key.tenant, None, 10).await.expect("list").0.len(), 1);
    let mut other = b.watch(&TenantId::parse("other").expect("tenant")).await.expect("watch").expect("reports");

    // Both hold it; A saves first, so B's save, made without seeing A's, is refused.
    let held_by_b = b.load(&key).await.expect("load").expect("there");
    let say = |ctx: &Context, text: &str| {
        let message = Message::text(MessageId::new(), ctx.place(0), Role::User, text.into(), Timestamp::from_micros(5));
        Change::to(Phase::Idle).with(message)
    };
    let held_by_a = a.load(&key).await.expect("load").expect("there");
    let (after_a, save) = save_of(&held_by_a, say(&held_by_a, "from a"));
    a.commit(save).await.expect("a saves");
    let (_, stale) = save_of(&held_by_b, say(&held_by_b, "from b"));
    let refused = b.commit(stale).await;
    assert!(matches!(refused, Err(Error::Conflict { .. })), "a stale writer is refused: {refused:?}");
    // Once B lets the context go and reads it again, it follows A's save.
    b.settle(&key).await;
    let reread = b.load(&key).await.expect("load").expect("there");
    assert_eq!(reread.messages, after_a.messages);
    let (after_b, save) = save_of(&reread, say(&reread, "from b, having read a"));
    b.commit(save).await.expect("b saves after reading");
    a.settle(&key).await;
    let texts: Vec<String> =
        a.load(&key).await.expect("load").expect("there").messages.iter().map(|m| m.text_content()).collect();
    assert_eq!(texts, ["from a", "from b, having read a"]);
    assert_eq!(after_b.revision, reread.revision + 1);

    // Deleting tells the tenant's watchers; another tenant's hear nothing of it.
    a.delete(std::sync::Arc::new(a.load(&key).await.expect("load").expect("there"))).await.expect("delete");
    let removed = loop {
        match tokio::time::timeout(Duration::from_secs(10), reported.recv()).await.expect("reported").expect("open") {
            Saved::Removed(k) => break k,
            Saved::Saved { .. } => continue,
        }
    };
    assert_eq!(removed, key);
    assert!(b.list(&key.tenant, None, 10).await.expect("list").0.is_empty());
    assert!(other.try_recv().is_err(), "another tenant's watchers are not told");
    assert!(!a.exists(&key).await.expect("exists"));
}

#[tokio::test]
async fn a_run_saved_mid_way_is_found_and_forgotten_once_it_ends() {
    let server = Server::start();
    let nats = server.open().await;
    let key = ContextKey::new(TenantId::parse("acme").expect("tenant"), ContextId::from_bytes([5; 16]));
    let ctx =
        Context::new(key.clone(), "alice".into(), "run".into(), ContextConfig::default(), Timestamp::from_micros(1));
    nats.insert(std::sync::Arc::new(ctx.clone())).await.expect("insert");
    assert!(nats.interrupted().await.expect("interrupted").is_empty());
    let question = Message::text(MessageId::new(), ctx.place(0), Role::User, "hi".into(), Timestamp::from_micros(2));
    let running = commit(&nats, &ctx, Change::to(Phase::AwaitingLlmResponse { attempt: 1 }).with(question)).await;
    assert_eq!(nats.interrupted().await.expect("interrupted"), vec![key.clone()]);
    let answer =
        Message::text(MessageId::new(), running.place(1), Role::Assistant, "hello".into(), Timestamp::from_micros(3));
    commit(&nats, &running, Change::to(Phase::Idle).with(answer)).await;
    // The marker of the ended run says so at once, and expires.
    assert!(nats.interrupted().await.expect("interrupted").is_empty());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let partition = nats.layout.partition(&key);
    let markers = nats.scan(partition, &nats.layout.runs(partition)).await.expect("scan");
    assert!(markers.is_empty(), "the marker expired");
}

#[tokio::test]
async fn a_cluster_made_with_other_partitions_or_on_an_old_layout_is_refused() {
    let server = Server::start();
    drop(server.open().await);
    let url = vec![format!("nats://127.0.0.1:{}", server.port)];
    let error = Nats::open(&NatsOptions::plain(url.clone(), "test", 1, 8)).await.err().expect("refused").to_string();
    assert!(error.contains("made with 4 partitions") && error.contains("--nats-partitions 8"), "{error}");
    // A stream of layout 1 under the prefix.
    let client = async_nats::connect(url[0].as_str()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "old_log".into(),
        subjects: vec!["old.log.>".into()],
        ..Default::default()
    })
    .await
    .expect("old stream");
    let error = Nats::open(&NatsOptions::plain(url, "old", 1, 4)).await.err().expect("refused").to_string();
    assert!(error.contains("previous NATS layout") && error.contains("ctxd migrate"), "{error}");
}

#[tokio::test]
async fn a_node_whose_partition_was_taken_over_cannot_write_there_again() {
    let server = Server::start();
    let (a, b) = (server.open().await, server.open().await);
    a.require_leases();
    b.require_leases();
    let key = ContextKey::new(TenantId::parse("acme").expect("tenant"), ContextId::from_bytes([4; 16]));
    let partition = a.layout.partition(&key);
    let ctx =
        Context::new(key.clone(), "alice".into(), "fenced".into(), ContextConfig::default(), Timestamp::from_micros(1));
    // Creating needs no lease; saving does.
    assert_eq!(a.insert(std::sync::Arc::new(ctx.clone())).await.expect("insert"), Inserted::Saved);
    let say = |ctx: &Context, text: &str| {
        let message = Message::text(MessageId::new(), ctx.place(0), Role::User, text.into(), Timestamp::from_micros(5));
        Change::to(Phase::Idle).with(message)
    };
    let (_, unleased) = save_of(&ctx, say(&ctx, "without a lease"));
    assert!(matches!(a.commit(unleased).await, Err(Error::Conflict { .. })), "no lease, no save");

    let free = a.lease(partition).await.expect("lease");
    assert_eq!((free.term, free.node.as_str()), (0, ""));
    let term = a.write_lease(partition, "a", "e1", 0).await.expect("take").expect("taken");
    assert_eq!(a.write_lease(partition, "b", "e2", 0).await.expect("race"), None, "one of two takes wins");
    let held = a.lease(partition).await.expect("lease");
    assert_eq!((held.term, held.node.as_str(), held.epoch.as_str()), (term, "a", "e1"));
    let ctx = a.load(&key).await.expect("load").expect("there");
    let ctx = commit(&a, &ctx, say(&ctx, "under a's lease")).await;

    // B finds A gone and takes the partition: A, still running, can write nothing more.
    let mut lost = a.lost_leases();
    b.write_lease(partition, "b", "e2", term).await.expect("take over").expect("taken");
    let (_, zombie) = save_of(&ctx, say(&ctx, "from the zombie"));
    assert!(matches!(a.commit(zombie).await, Err(Error::Conflict { .. })), "the old holder is fenced");
    assert_eq!(lost.try_recv().expect("told"), partition);
    let (_, again) = save_of(&ctx, say(&ctx, "and again"));
    assert!(matches!(a.commit(again).await, Err(Error::Conflict { .. })), "and stays fenced");
    let at_b = b.load(&key).await.expect("load").expect("there");
    assert_eq!(crate::store::contract::texts(&at_b), ["under a's lease"]);
    commit(&b, &at_b, say(&at_b, "under b's lease")).await;
}

#[tokio::test]
async fn saves_of_many_contexts_in_one_leased_partition_all_land() {
    let server = Server::start();
    let nats = std::sync::Arc::new(server.open().await);
    nats.require_leases();
    for partition in 0..nats.partitions() {
        nats.write_lease(partition, "a", "e1", 0).await.expect("take").expect("taken");
    }
    let tenant = TenantId::parse("acme").expect("tenant");
    let saves = (0..24u8).map(|n| {
        let nats = std::sync::Arc::clone(&nats);
        let key = ContextKey::new(tenant.clone(), ContextId::from_bytes([n; 16]));
        async move {
            let mut ctx =
                Context::new(key, "alice".into(), "many".into(), ContextConfig::default(), Timestamp::from_micros(1));
            nats.insert(std::sync::Arc::new(ctx.clone())).await.expect("insert");
            for turn in 0..5 {
                let message = Message::text(
                    MessageId::new(),
                    ctx.place(0),
                    Role::User,
                    format!("{turn}"),
                    Timestamp::from_micros(5),
                );
                ctx = commit(&*nats, &ctx, Change::to(Phase::Idle).with(message)).await;
            }
        }
    });
    futures::future::join_all(saves).await;
    assert_eq!(nats.count(&tenant).await.expect("count"), 24);
}

/// Writes `ctx` the way layout 1 held it: its log record, each message by node and id, the
/// snapshot saying the tree holds the record.
async fn save_in_layout_1(js: &async_nats::jetstream::Context, prefix: &str, ctx: &Context) {
    use async_nats::jetstream::stream::Config;
    for (name, subjects) in [("log", "log"), ("tree", "tree"), ("contexts", "ctx")] {
        js.create_stream(Config {
            name: format!("{prefix}_{name}"),
            subjects: vec![format!("{prefix}.{subjects}.>")],
            ..Default::default()
        })
        .await
        .expect("layout-1 stream");
    }
    let tokens = ctx.key().tokens();
    let record = StoredRecord::of(&crate::store::save::Save::new_context(std::sync::Arc::new(ctx.clone())));
    let publish = |subject: String, payload: Vec<u8>| async move {
        js.publish(subject, payload.into()).await.expect("publish").await.expect("ack").sequence
    };
    let sequence = publish(format!("{prefix}.log.{tokens}"), codec::encode(&record)).await;
    for message in &ctx.messages {
        let node = message.node;
        publish(format!("{prefix}.tree.{tokens}.m.{node}"), codec::encode(&codec::message_to_stored(message))).await;
        let id = hex::encode(message.id.as_bytes());
        publish(format!("{prefix}.tree.{tokens}.i.{id}"), codec::encode(&codec::StoredNode { node: node.get() })).await;
    }
    let snapshot = codec::StoredSnapshot { context: record.context.clone(), log_seq: sequence };
    publish(format!("{prefix}.ctx.{tokens}"), codec::encode(&snapshot)).await;
}

#[tokio::test]
async fn the_previous_layout_is_copied_in_place_and_then_retired() {
    let server = Server::start();
    // Up (another prefix's store, which is none of this test's business).
    drop(server.open().await);
    let url = vec![format!("nats://127.0.0.1:{}", server.port)];
    let client = async_nats::connect(url[0].as_str()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let key = ContextKey::new(TenantId::parse("acme").expect("tenant"), ContextId::from_bytes([3; 16]));
    let mut ctx =
        Context::new(key.clone(), "alice".into(), "old".into(), ContextConfig::default(), Timestamp::from_micros(1));
    for turn in 0..3u64 {
        let now = Timestamp::from_micros(i64::try_from(turn).unwrap_or(0) + 10);
        let question = Message::text(MessageId::new(), ctx.place(0), Role::User, format!("q{turn}"), now);
        let answer = Message::text(MessageId::new(), ctx.place(1), Role::Assistant, format!("a{turn}"), now);
        ctx.put_message(std::sync::Arc::new(question));
        ctx.put_message(std::sync::Arc::new(answer));
    }
    save_in_layout_1(&js, "old", &ctx).await;

    // A node refuses to start beside it; a migration reads it.
    let options = NatsOptions::plain(url, "old", 1, 4);
    assert!(Nats::open(&options).await.is_err(), "no node beside layout 1");
    let (source, layout_1) = super::open_source(&options).await.expect("source");
    assert!(layout_1);
    assert_eq!(source.keys().await.expect("keys"), vec![key.clone()]);
    let dump = source.dump(&key).await.expect("dump").expect("there");
    assert_eq!(dump.messages.len(), 6);
    let copy = Nats::open(&NatsOptions { beside_layout_1: true, ..options.clone() }).await.expect("beside");
    assert_eq!(copy.restore(&dump).await.expect("restore"), Inserted::Saved);
    assert_eq!(copy.dump(&key).await.expect("read").expect("there").checksum(), dump.checksum());

    // Retired, the copy is what a node serves.
    super::delete_layout_1(&options).await.expect("retire");
    let node = Nats::open(&options).await.expect("a node starts on the copy");
    let loaded = node.load(&key).await.expect("load").expect("there");
    assert_eq!(crate::store::contract::texts(&loaded), ["q0", "a0", "q1", "a1", "q2", "a2"]);
}
