use std::sync::Arc;

use ::rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch};

use super::keys;
use super::{Store, Writer};
use crate::domain::{
    Approval, Change, Context, ContextConfig, ContextId, ContextKey, ExternalTool, Message, MessageId, MessageStatus,
    Phase, Place, Role, TenantId, Timestamp, ToolCall, Usage,
};
use crate::store::{Error, Save};

fn context(n: u8, at: i64) -> Context {
    context_of("default", n, at)
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

fn context_of(tenant_name: &str, n: u8, at: i64) -> Context {
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
    let key = ContextKey::new(tenant(tenant_name), ContextId::from_bytes([n; 16]));
    Context::new(key, "alice".into(), format!("ctx {n}"), config, Timestamp::from_micros(at))
}

fn change(phase: Phase, messages: &[Arc<Message>]) -> Change {
    Change { messages: messages.to_vec(), ..Change::to(phase) }
}

/// The save that takes `before` to `after` by writing `messages`.
fn save(before: &Context, after: &Context, messages: &[Arc<Message>]) -> Save {
    Save {
        before: Some(Arc::new(before.clone())),
        after: Arc::new(after.clone()),
        messages: messages.to_vec(),
        joined: Vec::new(),
    }
}

fn all(ctx: &Context) -> Vec<Arc<Message>> {
    ctx.messages.iter().cloned().collect()
}

fn message(seq: u64, text: &str) -> Arc<Message> {
    let place = Place { seq, node: seq, parent: seq.checked_sub(1) };
    let mut m = Message::text(MessageId::new(), place, Role::Assistant, text.into(), Timestamp::from_micros(5));
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
    assert!(store.exists(&ctx.key()).expect("exists"));
    assert_eq!(store.load(&ctx.key()).expect("load"), Some(ctx.clone()));

    let first = message(0, "one");
    let streaming = ctx
        .apply(&change(Phase::StreamingLlmResponse { attempt: 2, message: 0 }, &[first]), Timestamp::from_micros(20));
    store.commit(&save(&ctx, &streaming, &all(&streaming))).expect("commit");
    assert_eq!(store.interrupted().expect("active"), vec![ctx.key()], "a context saved mid-run is indexed");

    // Replace message 0 and append message 1 in one batch.
    let mut replaced = (*message(0, "one, final")).clone();
    replaced.status = MessageStatus::Cancelled;
    let changed = [Arc::new(replaced), message(1, "two")];
    let idle = streaming.apply(&change(Phase::Failed { error: "x".into() }, &changed), Timestamp::from_micros(30));
    store.commit(&save(&streaming, &idle, &changed)).expect("commit");
    let loaded = store.load(&ctx.key()).expect("load").expect("exists");
    assert_eq!(loaded, idle);
    assert_eq!(loaded.messages[0].text_content(), "one, final");
    assert_eq!(loaded.client_ids.get("client"), Some(&1));
    assert!(store.interrupted().expect("active").is_empty(), "resting contexts leave the index");

    let (listed, _) = store.list(&ctx.tenant, None, 10).expect("list");
    assert_eq!(listed.len(), 1, "the old by-updated key was removed");
    assert_eq!((listed[0].revision, listed[0].message_count), (3, 2));

    store.delete(&loaded).expect("delete");
    assert_eq!(store.load(&ctx.key()).expect("load"), None);
    assert!(store.list(&ctx.tenant, None, 10).expect("list").0.is_empty());
    let messages = store.family(keys::CF_MESSAGES).expect("cf");
    assert!(store.db.iterator_cf(messages, IteratorMode::Start).next().is_none(), "every message was deleted");
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
        let (page, next) = store.list(&tenant("default"), cursor, 10).expect("list");
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
        let save = save(ctx, &after, &changed);
        async move { writer.commit(save).await.map(|_bytes| after) }
    });
    let saved = futures::future::join_all(saves).await;
    for after in saved {
        let after = after.expect("saved");
        assert_eq!(store.load(&after.key()).expect("load").as_ref(), Some(&*after));
    }
    let (listed, _) = store.list(&tenant("default"), None, 100).expect("list");
    assert_eq!(listed.len(), 40, "the by-updated index moved with each save");

    writer.stop();
    let late = writer.commit(save(&contexts[0], &contexts[0], &[])).await;
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

/// The same client-chosen id in two tenants is two contexts; nothing of one is listed,
/// counted or loaded through the other.
#[test]
fn tenants_share_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), true).expect("open");
    let (acme, globex) = (context_of("acme", 1, 10), context_of("globex", 1, 20));
    assert_eq!(acme.id, globex.id);
    store.insert(&acme).expect("insert");
    assert!(!store.exists(&globex.key()).expect("exists"), "globex has no such context yet");
    assert_eq!(store.load(&globex.key()).expect("load"), None);
    store.insert(&globex).expect("insert");
    store.insert(&context_of("acme", 2, 30)).expect("insert");
    // "a" is a prefix of "acme" as text but not as a key prefix.
    store.insert(&context_of("a", 3, 40)).expect("insert");

    let running = globex.apply(
        &change(Phase::StreamingLlmResponse { attempt: 1, message: 0 }, &[message(0, "x")]),
        Timestamp::from_micros(50),
    );
    store.commit(&save(&globex, &running, &all(&running))).expect("commit");
    assert_eq!(store.load(&acme.key()).expect("load"), Some(acme.clone()), "acme's context is untouched");
    assert_eq!(store.load(&globex.key()).expect("load"), Some(running.clone()));
    assert_eq!(store.interrupted().expect("active"), vec![globex.key()]);

    let titles = |name: &str| {
        let (page, _) = store.list(&tenant(name), None, 10).expect("list");
        page.iter().map(|s| s.title.clone()).collect::<Vec<_>>()
    };
    assert_eq!(titles("acme"), ["ctx 2", "ctx 1"]);
    assert_eq!(titles("globex"), ["ctx 1"]);
    assert_eq!(titles("a"), ["ctx 3"]);
    assert!(titles("nobody").is_empty());
    assert_eq!((store.count(&tenant("acme")).expect("count"), store.count(&tenant("a")).expect("count")), (2, 1));

    store.delete(&running).expect("delete");
    assert_eq!(store.load(&acme.key()).expect("load"), Some(acme), "deleting globex's context left acme's");
    assert_eq!(store.load(&globex.key()).expect("load"), None);
}

/// A data dir written before tenants (keys without the tenant prefix, in the old families)
/// opens with everything in the tenant `default`, the old families gone; opening again
/// changes nothing.
#[test]
fn data_saved_before_tenants_moves_into_the_default_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (context(1, 10), context(2, 20));
    let running = first.apply(
        &change(Phase::StreamingLlmResponse { attempt: 1, message: 0 }, &[message(0, "x")]),
        Timestamp::from_micros(30),
    );
    {
        let store = Store::open(dir.path(), true).expect("open");
        store.insert(&first).expect("insert");
        store.insert(&second).expect("insert");
        store.commit(&save(&first, &running, &all(&running))).expect("commit");
    }
    // Rewrite the data dir in the legacy layout: every key without its tenant prefix.
    {
        let prefix = keys::tenant_prefix(&tenant("default"));
        let mut options = Options::default();
        options.create_missing_column_families(true);
        let names = keys::ALL_FAMILIES.into_iter().chain(keys::legacy::MOVES.map(|(old, _)| old));
        let descriptors = names.map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir.path(), descriptors).expect("raw open");
        let mut batch = WriteBatch::default();
        for (old, new) in keys::legacy::MOVES {
            let (from, to) = (db.cf_handle(new).expect("cf"), db.cf_handle(old).expect("cf"));
            for item in db.iterator_cf(from, IteratorMode::Start) {
                let (key, value) = item.expect("entry");
                batch.put_cf(to, key.strip_prefix(prefix.as_slice()).expect("prefixed"), value);
                batch.delete_cf(from, key);
            }
        }
        db.write(batch).expect("write");
    }
    for _ in 0..2 {
        let store = Store::open(dir.path(), true).expect("open");
        let default = tenant("default");
        assert_eq!(store.load(&running.key()).expect("load"), Some(running.clone()));
        assert_eq!(store.load(&second.key()).expect("load"), Some(second.clone()));
        assert_eq!(store.interrupted().expect("active"), vec![running.key()]);
        let (listed, _) = store.list(&default, None, 10).expect("list");
        assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), [running.id, second.id]);
        let families = DB::list_cf(&Options::default(), dir.path()).expect("families");
        assert!(keys::legacy::MOVES.iter().all(|(old, _)| !families.iter().any(|f| f == old)), "{families:?}");
    }
}
