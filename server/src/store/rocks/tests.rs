//! RocksDB's own behaviour: what its families hold, its lock, its writer thread, and older
//! layouts upgraded at open. What every engine does is `crate::store::contract`'s, run here
//! on a temp dir.

use std::sync::Arc;

use ::rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch};

use super::keys;
use super::{Rocks, Store, Writer};
use crate::domain::Seq;
use crate::domain::{Context, Message, Phase, Timestamp};
use crate::store::contract::{backend_contract, change, context_of, message, tenant};
use crate::store::{Backend, Error, Save};

backend_contract!({
    let dir = tempfile::tempdir().expect("tempdir");
    let rocks = Rocks::open_dir(dir.path().to_path_buf(), true).await.expect("open");
    (dir, Arc::new(rocks) as Arc<dyn Backend>)
});

fn context(n: u8, at: i64) -> Context {
    context_of("default", n, at)
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

/// A delete leaves no key of the context in any family, and a second open of a data dir in
/// use is refused.
#[test]
fn a_delete_leaves_nothing_behind_and_a_second_open_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), true).expect("open");
    let ctx = context(1, 10);
    store.insert(&ctx).expect("insert");
    let running = ctx.apply(
        &change(Phase::StreamingLlmResponse { attempt: 1, message: Seq::new(0) }, &[message(0, "x"), message(1, "y")]),
        Timestamp::from_micros(20),
    );
    store.commit(&save(&ctx, &running, &all(&running))).expect("commit");
    store.delete(&running).expect("delete");
    for family in keys::ALL_FAMILIES {
        let cf = store.family(family).expect("cf");
        let left: Vec<_> = store.db.iterator_cf(cf, IteratorMode::Start).collect();
        assert!(left.is_empty(), "{family} still holds {} keys", left.len());
    }
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

/// A data dir written before tenants (keys without the tenant prefix, in the old families)
/// opens with everything in the tenant `default`, the old families gone; opening again
/// changes nothing.
#[test]
fn data_saved_before_tenants_moves_into_the_default_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (context(1, 10), context(2, 20));
    let running = first.apply(
        &change(Phase::StreamingLlmResponse { attempt: 1, message: Seq::new(0) }, &[message(0, "x")]),
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
