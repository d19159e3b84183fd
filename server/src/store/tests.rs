use std::sync::Arc;

use ::rocksdb::{Direction, IteratorMode};

use super::keys;
use super::{Error, Store, Writer};
use crate::domain::{
    Approval, Change, Context, ContextConfig, ContextId, ExternalTool, Message, MessageId, MessageStatus, Phase, Role,
    Timestamp, ToolCall, Usage,
};

fn context(n: u8, at: i64) -> Context {
    let config = ContextConfig {
        system_prompt: "be brief".into(),
        model: "m".into(),
        auto_approve_tools: vec!["clock".into()],
        external_tools: vec![ExternalTool {
            name: "deploy".into(),
            description: "ships it".into(),
            parameters_json_schema: r#"{"type": "object"}"#.into(),
            requires_approval: true,
            idempotent: false,
            timeout_ms: 5000,
        }],
    };
    Context::new(ContextId::from_bytes([n; 16]), format!("ctx {n}"), config, Timestamp::from_micros(at))
}

fn change(phase: Phase, messages: &[Arc<Message>]) -> Change {
    Change { messages: messages.to_vec(), ..Change::to(phase) }
}

fn message(seq: u64, text: &str) -> Arc<Message> {
    let mut m = Message::text(MessageId::new(), seq, Role::Assistant, text.into(), Timestamp::from_micros(5));
    m.tool_calls = vec![ToolCall {
        id: "c".into(),
        name: "clock".into(),
        arguments_json: "{}".into(),
        approval: Approval::Denied,
        external: true,
    }];
    m.usage = Some(Usage { prompt_tokens: 1, completion_tokens: 2 });
    m.client_message_id = Some("client".into());
    Arc::new(m)
}

#[test]
fn commits_round_trip_and_write_only_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), true).expect("open");
    let ctx = context(1, 10);
    store.insert(&ctx).expect("insert");
    assert!(store.exists(ctx.id).expect("exists"));
    assert_eq!(store.load(ctx.id).expect("load"), Some(ctx.clone()));

    let first = message(0, "one");
    let streaming = ctx
        .apply(&change(Phase::StreamingLlmResponse { attempt: 2, message: 0 }, &[first]), Timestamp::from_micros(20));
    store.commit(ctx.updated_at, &streaming, &streaming.messages.iter().cloned().collect::<Vec<_>>()).expect("commit");
    assert_eq!(store.interrupted().expect("active"), vec![ctx.id], "a context saved mid-run is indexed");

    // Replace message 0 and append message 1 in one batch.
    let mut replaced = (*message(0, "one, final")).clone();
    replaced.status = MessageStatus::Cancelled;
    let changed = [Arc::new(replaced), message(1, "two")];
    let idle = streaming.apply(&change(Phase::Failed { error: "x".into() }, &changed), Timestamp::from_micros(30));
    store.commit(streaming.updated_at, &idle, &changed).expect("commit");
    let loaded = store.load(ctx.id).expect("load").expect("exists");
    assert_eq!(loaded, idle);
    assert_eq!(loaded.messages[0].text_content(), "one, final");
    assert_eq!(loaded.client_ids.get("client"), Some(&1));
    assert!(store.interrupted().expect("active").is_empty(), "resting contexts leave the index");

    let (listed, _) = store.list(None, 10).expect("list");
    assert_eq!(listed.len(), 1, "the old by-updated key was removed");
    assert_eq!((listed[0].revision, listed[0].message_count), (3, 2));

    store.delete(&loaded).expect("delete");
    assert_eq!(store.load(ctx.id).expect("load"), None);
    assert!(store.list(None, 10).expect("list").0.is_empty());
    let (start, end) = keys::message_range(ctx.id);
    let messages = store.family(keys::CF_MESSAGES).expect("cf");
    assert!(store.db.iterator_cf(messages, IteratorMode::From(&start, Direction::Forward)).next().is_none());
    assert!(end > start);
}

#[test]
fn list_pages_newest_first_and_a_second_open_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), false).expect("open");
    for n in 1..=25u8 {
        store.insert(&context(n, i64::from(n) * 100)).expect("insert");
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = store.list(cursor, 10).expect("list");
        seen.extend(page.iter().map(|s| s.updated_at.as_micros()));
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<i64> = (1..=25).rev().map(|n| n * 100).collect();
    assert_eq!(seen, expected);

    match Store::open(dir.path(), true) {
        Err(Error::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second open of the same data dir must fail"),
    }
}

/// Saves of many contexts sent at once share writes, and each lands whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_groups_saves_of_many_contexts_and_each_lands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), true).expect("open");
    let writer = Writer::start(store.clone()).expect("writer");
    let contexts: Vec<Context> = (0..40).map(|n| context(n, 10)).collect();
    for ctx in &contexts {
        store.insert(ctx).expect("insert");
    }
    let saves = contexts.iter().map(|ctx| {
        let changed = vec![message(0, &format!("reply to {}", ctx.title))];
        let after = Arc::new(ctx.apply(&change(Phase::Idle, &changed), Timestamp::from_micros(30)));
        let writer = writer.clone();
        let before = ctx.updated_at;
        async move { writer.commit(before, Arc::clone(&after), changed).await.map(|_bytes| after) }
    });
    let saved = futures::future::join_all(saves).await;
    for after in saved {
        let after = after.expect("saved");
        assert_eq!(store.load(after.id).expect("load").as_ref(), Some(&*after));
    }
    let (listed, _) = store.list(None, 100).expect("list");
    assert_eq!(listed.len(), 40, "the by-updated index moved with each save");

    writer.stop();
    let late = writer.commit(contexts[0].updated_at, Arc::new(contexts[0].clone()), Vec::new()).await;
    assert!(matches!(late, Err(Error::WriterStopped)), "{late:?}");
}

/// Dropping the last handle ends the thread and closes the database at once, so a server
/// that ends on an error path never leaves RocksDB open under a live thread.
#[test]
fn dropping_the_writer_releases_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), true).expect("open");
    let writer = Writer::start(store.clone()).expect("writer");
    let copy = writer.clone();
    drop((store, writer));
    assert!(matches!(Store::open(dir.path(), true), Err(Error::Locked { .. })), "a handle is still alive");
    drop(copy);
    Store::open(dir.path(), true).expect("reopened: the writer let go of the database");
}
