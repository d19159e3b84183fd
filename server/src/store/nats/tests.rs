//! The NATS store against a real `nats-server` (one server, JetStream, replicas 1): what
//! every engine does (`crate::store::contract`), then NATS' own: a context copied whole from
//! RocksDB across several records, a copy cut short, retried and stale saves.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::layout::{StoredNodeMessage, StoredRecord};
use super::{Nats, NatsOptions};
use crate::domain::{
    Change, Context, ContextConfig, ContextId, ContextKey, Message, MessageId, Phase, Role, TenantId, Timestamp,
};
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
        let options = NatsOptions::plain(vec![format!("nats://127.0.0.1:{}", self.port)], "test", 1);
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
async fn a_long_context_restores_across_records_and_reads_back_identical() {
    let (dump, server, nats) = long_context_and_a_server().await;
    let key = dump.context.key();
    assert_eq!(nats.restore(&dump).await.expect("restore"), Inserted::Saved);
    let records = nats.log.get_info().await.expect("info").state.messages;
    assert!(records > 4, "{records} records: a record holds at most 256 KiB of messages");
    let copy = nats.dump(&key).await.expect("read").expect("there");
    assert_eq!(copy.checksum(), dump.checksum());
    assert_eq!(nats.restore(&dump).await.expect("again"), Inserted::Taken);
    assert_eq!(nats.keys().await.expect("keys"), vec![key.clone()]);

    // A fresh process derives nothing again and lists it.
    drop(nats);
    let nats = server.open().await;
    assert_eq!(nats.list(&key.tenant, None, 10).await.expect("list").0.len(), 1);
    assert_eq!(nats.dump(&key).await.expect("read").expect("there").checksum(), dump.checksum());
}

#[tokio::test]
async fn a_copy_cut_short_is_never_a_context_and_the_next_restore_starts_again() {
    let (dump, _server, nats) = long_context_and_a_server().await;
    let key = dump.context.key();
    // What a restore killed after its first record leaves: messages, and no context.
    let first = dump.messages[..10]
        .iter()
        .map(|m| StoredNodeMessage { node: m.node.get(), message: Some(codec::message_to_stored(m)) })
        .collect();
    let record = StoredRecord { messages: first, ..Default::default() };
    nats.save(&key, record, 0, None).await.expect("first record");

    let loading = nats.load(&key).await.expect_err("not a context");
    assert!(matches!(&loading, Error::Unavailable(why) if why.contains("did not finish")), "{loading}");
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
    let record = codec::encode(&StoredRecord { new_from_node: 1, ..Default::default() });
    let first = nats.append(&key, record.clone(), false, 0).await.expect("append");
    // The same record again, as a retry after a lost acknowledgement: the same sequence back.
    assert_eq!(nats.append(&key, record, false, 0).await.expect("retry"), first);
    // A different record on the same expectation: the log moved on.
    let other = codec::encode(&StoredRecord { new_from_node: 2, ..Default::default() });
    assert_eq!(nats.append(&key, other, false, 0).await.expect("refused"), None);
    assert_eq!(nats.log.get_info().await.expect("info").state.messages, 1);
}

#[tokio::test]
async fn a_second_writer_is_refused_by_the_log_and_every_process_sees_every_save() {
    let server = Server::start();
    let (a, b) = (server.open().await, server.open().await);
    let mut reported = b.changes().expect("a shared store reports saves");
    let key = ContextKey::new(TenantId::parse("acme").expect("tenant"), ContextId::from_bytes([9; 16]));
    let ctx =
        Context::new(key.clone(), "alice".into(), "shared".into(), ContextConfig::default(), Timestamp::from_micros(1));
    assert_eq!(a.insert(std::sync::Arc::new(ctx.clone())).await.expect("insert"), Inserted::Saved);
    // B follows A's saves: its list and its reports have the context.
    let first = tokio::time::timeout(Duration::from_secs(10), reported.recv()).await.expect("reported").expect("open");
    assert!(
        matches!(&first, Saved::Saved { key: k, summary } if *k == key && summary.revision == ctx.revision),
        "{first:?}"
    );
    assert_eq!(b.list(&key.tenant, None, 10).await.expect("list").0.len(), 1);

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
    assert!(matches!(b.commit(stale).await, Err(Error::Conflict { .. })), "a stale writer is refused");
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
}
