//! The conversation tree in RocksDB as older versions saved it: messages saved before
//! branches are indexed at open and branch like any other. (Versions, loads and switches on
//! every engine: `crate::store::contract`.)

use ::rocksdb::{ColumnFamilyDescriptor, DB, Options};

use super::{Store, keys};
use crate::domain::Seq;
use crate::domain::{
    Change, Context, ContextConfig, ContextId, ContextKey, NodeId, PathMove, Phase, Role, TenantId, Timestamp,
};
use crate::store::codec;
use crate::store::contract::{same_path, save_of, say, texts};

fn new_context() -> Context {
    let key = ContextKey::new(TenantId::default_tenant(), ContextId::from_bytes([3; 16]));
    Context::new(key, String::new(), "tree".into(), ContextConfig::default(), Timestamp::from_micros(1))
}

/// Applies `change` to `ctx` and commits it the way the runtime does; returns the new state.
fn commit(store: &Store, ctx: &Context, change: Change) -> Context {
    let (after, save) = save_of(ctx, change);
    store.commit(&save).expect("commit");
    after
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
            let key = keys::message_key(&context, NodeId::new(node));
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
    assert_eq!((loaded.next_node, loaded.messages[1].parent), (NodeId::new(2), Some(NodeId::new(0))));
    let answer = loaded.messages[1].id;
    assert_eq!(store.tree(&ctx.key()).node_of(answer).expect("read"), Some(NodeId::new(1)), "indexed");

    let ctx = commit(&store, &loaded, Change::to(Phase::Idle).moving(PathMove::Cut(Seq::new(1))));
    let ctx = commit(&store, &ctx, Change::to(Phase::Idle).with(say(&ctx, 0, Role::Assistant, "b")));
    let branch = futures::executor::block_on(ctx.branch_through(&store.tree(&ctx.key()), answer))
        .expect("read")
        .expect("a switch");
    let ctx = commit(&store, &ctx, Change::to(Phase::Idle).moving(PathMove::Switch(Box::new(branch))));
    assert_eq!(texts(&ctx), ["q", "a"]);
    same_path(&store.load(&ctx.key()).expect("load").expect("exists"), &ctx);
}
