//! The conversation tree in RocksDB: versions saved beside each other, a load that reads the
//! active path only, switches read from storage, and stores saved before branches.

use std::sync::Arc;

use ::rocksdb::{ColumnFamilyDescriptor, DB, Options};

use super::{Store, keys};
use crate::domain::{
    Change, Context, ContextConfig, ContextId, ContextKey, Message, MessageId, PathMove, Phase, Role, TenantId,
    Timestamp,
};
use crate::store::{Save, codec};

fn new_context() -> Context {
    let key = ContextKey::new(TenantId::default_tenant(), ContextId::from_bytes([3; 16]));
    Context::new(key, String::new(), "tree".into(), ContextConfig::default(), Timestamp::from_micros(1))
}

/// Applies `change` to `ctx` and commits it the way the runtime does; returns the new state.
pub(crate) fn commit(store: &Store, ctx: &Context, change: Change) -> Context {
    let (after, save) = save_of(ctx, change);
    store.commit(&save).expect("commit");
    after
}

/// The state after `change`, and the save the runtime would make of it.
pub(crate) fn save_of(ctx: &Context, change: Change) -> (Context, Save) {
    let after = ctx.apply(&change, Timestamp::from_micros(i64::try_from(ctx.revision).unwrap_or(0) + 10));
    let joined = match &change.path {
        Some(PathMove::Switch(branch)) => branch.tail.clone(),
        _ => Vec::new(),
    };
    let save = Save {
        before: Some(Arc::new(ctx.clone())),
        after: Arc::new(after.clone()),
        messages: change.messages.clone(),
        joined,
    };
    (after, save)
}

fn say(ctx: &Context, k: u64, role: Role, text: &str) -> Message {
    Message::text(MessageId::new(), ctx.place(k), role, text.into(), Timestamp::from_micros(2))
}

fn texts(ctx: &Context) -> Vec<String> {
    ctx.messages.iter().map(|m| m.text_content()).collect()
}

/// What must survive a reload: the path, its shape and the numbering.
fn same_path(loaded: &Context, held: &Context) {
    assert_eq!(loaded.messages, held.messages);
    assert_eq!(loaded.shape, held.shape);
    assert_eq!((loaded.next_node, loaded.revision), (held.next_node, held.revision));
}

#[test]
fn versions_are_saved_beside_each_other_and_a_switch_reads_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), true).expect("open");
    let ctx = new_context();
    store.insert(&ctx).expect("insert");
    let turn = Change::to(Phase::Idle).with(say(&ctx, 0, Role::User, "q")).with(say(&ctx, 1, Role::Assistant, "a1"));
    let ctx = commit(&store, &ctx, turn);
    let first_reply = ctx.messages[1].id;

    // A regenerated reply: the cut and the new version, as two saves.
    let ctx = commit(&store, &ctx, Change::to(Phase::AwaitingLlmResponse { attempt: 1 }).moving(PathMove::Cut(1)));
    let cut = store.load(&ctx.key()).expect("load").expect("exists");
    same_path(&cut, &ctx);
    assert_eq!(cut.forks_at(1).map(<[_]>::len), Some(1), "the old reply waits at the path's end");
    let ctx = commit(&store, &ctx, Change::to(Phase::Idle).with(say(&ctx, 0, Role::Assistant, "a2")));
    let loaded = store.load(&ctx.key()).expect("load").expect("exists");
    same_path(&loaded, &ctx);
    assert_eq!(texts(&loaded), ["q", "a2"]);
    assert_eq!((loaded.versions(1).count, loaded.versions(1).previous), (2, Some(first_reply)));

    // Switch back through what storage holds.
    let branch = futures::executor::block_on(loaded.branch_through(&store.tree(&loaded.key()), first_reply))
        .expect("read")
        .expect("a switch");
    assert_eq!(branch.keep, 1);
    let ctx = commit(&store, &ctx, Change::to(Phase::Idle).moving(PathMove::Switch(Box::new(branch))));
    assert_eq!(texts(&ctx), ["q", "a1"]);
    let loaded = store.load(&ctx.key()).expect("load").expect("exists");
    same_path(&loaded, &ctx);
    assert_eq!(loaded.versions(1).index, 0);

    // The children listing sees both versions; the first message's parent is nobody.
    let tree = store.tree(&ctx.key());
    let root = tree.children(None).expect("children");
    assert_eq!(root.len(), 1);
    let replies = tree.children(Some(root[0].node)).expect("children");
    assert_eq!(replies.iter().map(|c| c.node).collect::<Vec<_>>(), [1, 2]);
    assert!(replies[0].active_at > replies[1].active_at, "the switch made the first reply the latest active");
    assert_eq!(tree.node_of(first_reply).expect("read"), Some(1));

    store.delete(&ctx).expect("delete");
    for family in [keys::CF_MESSAGES, keys::CF_CHILDREN, keys::CF_MESSAGE_IDS, keys::CF_PATHS] {
        let cf = store.family(family).expect("cf");
        assert!(store.db.iterator_cf(cf, ::rocksdb::IteratorMode::Start).next().is_none(), "{family} emptied");
    }
}

/// Messages saved before branches have no depth, parent, edges or id entries: the open
/// indexes them once, and they branch like any other.
#[test]
fn messages_saved_before_branches_are_indexed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = new_context();
    {
        let store = Store::open(dir.path(), true).expect("open");
        store.insert(&ctx).expect("insert");
        let turn = Change::to(Phase::Idle).with(say(&ctx, 0, Role::User, "q")).with(say(&ctx, 1, Role::Assistant, "a"));
        commit(&store, &ctx, turn);
    }
    // Rewrite it as an older version saved it.
    {
        let descriptors = keys::ALL_FAMILIES.map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&Options::default(), dir.path(), descriptors).expect("raw open");
        let context = keys::context_key(&ctx.key());
        for family in [keys::CF_CHILDREN, keys::CF_MESSAGE_IDS, keys::CF_PATHS] {
            let cf = db.cf_handle(family).expect("cf");
            let end = keys::prefix_end(&context).expect("end");
            db.delete_range_cf(cf, &context, &end).expect("delete");
        }
        let messages = db.cf_handle(keys::CF_MESSAGES).expect("cf");
        for node in 0..2 {
            let key = keys::message_key(&context, node);
            let value = db.get_cf(messages, &key).expect("get").expect("saved");
            let mut stored: codec::StoredMessage = codec::decode("message", &value).expect("decode");
            (stored.depth, stored.parent) = (None, None);
            db.put_cf(messages, &key, codec::encode(&stored)).expect("put");
        }
        let contexts = db.cf_handle(keys::CF_CONTEXTS).expect("cf");
        let meta = db.get_cf(contexts, &context).expect("get").expect("saved");
        let mut stored: codec::StoredContext = codec::decode("context", &meta).expect("decode");
        stored.next_node = 0;
        db.put_cf(contexts, &context, codec::encode(&stored)).expect("put");
        db.delete(keys::TREE_INDEXED).expect("delete");
    }
    let store = Store::open(dir.path(), true).expect("open");
    let loaded = store.load(&ctx.key()).expect("load").expect("exists");
    assert_eq!(texts(&loaded), ["q", "a"]);
    assert_eq!((loaded.next_node, loaded.messages[1].parent), (2, Some(0)));
    let answer = loaded.messages[1].id;
    assert_eq!(store.tree(&ctx.key()).node_of(answer).expect("read"), Some(1), "indexed");

    let ctx = commit(&store, &loaded, Change::to(Phase::Idle).moving(PathMove::Cut(1)));
    let ctx = commit(&store, &ctx, Change::to(Phase::Idle).with(say(&ctx, 0, Role::Assistant, "b")));
    let branch = futures::executor::block_on(ctx.branch_through(&store.tree(&ctx.key()), answer))
        .expect("read")
        .expect("a switch");
    let ctx = commit(&store, &ctx, Change::to(Phase::Idle).moving(PathMove::Switch(Box::new(branch))));
    assert_eq!(texts(&ctx), ["q", "a"]);
    same_path(&store.load(&ctx.key()).expect("load").expect("exists"), &ctx);
}
