//! What every engine must do behind [`Backend`], checked the same way on each: one suite,
//! run by `rocks/tests.rs` (a temp dir) and `nats/tests.rs` (a real nats-server) through
//! [`backend_contract!`]. Engine-specific behaviour (RocksDB's families, NATS' log and
//! derivation) stays in each engine's own tests.

use std::sync::Arc;

use super::{Backend, Inserted, Save, Tree};
use crate::domain::{
    Approval, Change, Context, ContextConfig, ContextId, ContextKey, ExternalTool, Message, MessageId, MessageStatus,
    NodeId, PathMove, Phase, Place, Role, TenantId, Timestamp, ToolCall, Usage,
};
use crate::domain::{Overflow, Seq};

pub fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

/// Context `n` of `tenant_name`, created at `at` µs, with a config that uses every field.
pub fn context_of(tenant_name: &str, n: u8, at: i64) -> Context {
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
        context_window_tokens: 4000,
        max_output_tokens: 500,
        overflow: Some(Overflow::Truncate),
        summarize_at: 700,
    };
    let key = ContextKey::new(tenant(tenant_name), ContextId::from_bytes([n; 16]));
    Context::new(key, "alice".into(), format!("ctx {n}"), config, Timestamp::from_micros(at))
}

/// An assistant message at `seq` of a path without versions, using every field.
pub fn message(seq: u64, text: &str) -> Arc<Message> {
    let place = Place::straight(Seq::new(seq));
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

/// A message `k` places after the active path's end.
pub fn say(ctx: &Context, k: u64, role: Role, text: &str) -> Message {
    Message::text(MessageId::new(), ctx.place(k), role, text.into(), Timestamp::from_micros(2))
}

pub fn change(phase: Phase, messages: &[Arc<Message>]) -> Change {
    Change { messages: messages.to_vec(), ..Change::to(phase) }
}

/// The state after `change`, and the save the runtime would make of it.
pub fn save_of(ctx: &Context, change: Change) -> (Context, Save) {
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

/// Applies `change` to `ctx` and commits it the way the runtime does; returns the new state.
pub async fn commit(store: &dyn Backend, ctx: &Context, change: Change) -> Context {
    let (after, save) = save_of(ctx, change);
    store.commit(save).await.expect("commit");
    after
}

pub fn texts(ctx: &Context) -> Vec<String> {
    ctx.messages.iter().map(|m| m.text_content()).collect()
}

/// What must survive a reload: the path, its shape and the numbering.
pub fn same_path(loaded: &Context, held: &Context) {
    assert_eq!(loaded.messages, held.messages);
    assert_eq!(loaded.shape, held.shape);
    assert_eq!((loaded.next_node, loaded.revision), (held.next_node, held.revision));
}

async fn load(store: &dyn Backend, key: &ContextKey) -> Option<Context> {
    store.load(key).await.expect("load")
}

async fn titles(store: &dyn Backend, name: &str) -> Vec<String> {
    let (page, _) = store.list(&tenant(name), None, 10).await.expect("list");
    page.iter().map(|s| s.title.clone()).collect()
}

/// Saves round-trip whole; a context saved mid-run is found to resume and leaves that index
/// at rest; a taken key is refused; a delete leaves nothing to load or list.
pub async fn saves_round_trip(store: &dyn Backend) {
    let ctx = context_of("default", 1, 10);
    let key = ctx.key();
    assert_eq!(store.insert(Arc::new(ctx.clone())).await.expect("insert"), Inserted::Saved);
    assert!(store.exists(&key).await.expect("exists"));
    assert_eq!(store.insert(Arc::new(ctx.clone())).await.expect("insert"), Inserted::Taken, "the key is taken");
    assert_eq!(load(store, &key).await, Some(ctx.clone()));

    let first = message(0, "one");
    let streaming =
        commit(store, &ctx, change(Phase::StreamingLlmResponse { attempt: 2, message: Seq::new(0) }, &[first])).await;
    assert_eq!(store.interrupted().await.expect("interrupted"), vec![key.clone()], "saved mid-run: to resume");

    // Replace message 0 and append message 1 in one save.
    let mut replaced = (*message(0, "one, final")).clone();
    replaced.status = MessageStatus::Cancelled;
    let changed = [Arc::new(replaced), message(1, "two")];
    let failed = commit(store, &streaming, change(Phase::Failed { error: "x".into() }, &changed)).await;
    let loaded = load(store, &key).await.expect("exists");
    assert_eq!(loaded, failed);
    assert_eq!(loaded.messages[0].text_content(), "one, final");
    assert_eq!(loaded.client_ids.get("client"), Some(&Seq::new(1)));
    assert!(store.interrupted().await.expect("interrupted").is_empty(), "a resting context is not resumed");

    let (listed, _) = store.list(&ctx.tenant, None, 10).await.expect("list");
    assert_eq!(listed.len(), 1, "one entry per context, however often it is saved");
    assert_eq!((listed[0].revision, listed[0].message_count), (3, 2));
    assert_eq!(store.keys().await.expect("keys"), vec![key.clone()]);

    store.delete(Arc::new(loaded)).await.expect("delete");
    assert_eq!(load(store, &key).await, None);
    assert!(!store.exists(&key).await.expect("exists"));
    assert!(store.list(&ctx.tenant, None, 10).await.expect("list").0.is_empty());
    assert_eq!(store.count(&ctx.tenant).await.expect("count"), 0);
}

/// A tenant's list pages most recently updated first, each context once.
pub async fn lists_page_newest_first(store: &dyn Backend) {
    for n in 1..=25u8 {
        store.insert(Arc::new(context_of("default", n, i64::from(n) * 100))).await.expect("insert");
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = store.list(&tenant("default"), cursor, 10).await.expect("list");
        seen.extend(page.iter().map(|s| s.updated_at.as_micros()));
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<i64> = (1..=25).rev().map(|n| n * 100).collect();
    assert_eq!(seen, expected);
    assert_eq!(store.count(&tenant("default")).await.expect("count"), 25);
}

/// The same context id in two tenants is two contexts; a tenant whose name prefixes
/// another's sees only its own.
pub async fn tenants_share_nothing(store: &dyn Backend) {
    let (acme, globex) = (context_of("acme", 1, 10), context_of("globex", 1, 20));
    assert_eq!(acme.id, globex.id);
    store.insert(Arc::new(acme.clone())).await.expect("insert");
    assert!(!store.exists(&globex.key()).await.expect("exists"), "globex has no such context yet");
    assert_eq!(load(store, &globex.key()).await, None);
    store.insert(Arc::new(globex.clone())).await.expect("insert");
    store.insert(Arc::new(context_of("acme", 2, 30))).await.expect("insert");
    // "a" is a prefix of "acme" as text but not as a key.
    store.insert(Arc::new(context_of("a", 3, 40))).await.expect("insert");

    let running = commit(
        store,
        &globex,
        change(Phase::StreamingLlmResponse { attempt: 1, message: Seq::new(0) }, &[message(0, "x")]),
    )
    .await;
    assert_eq!(load(store, &acme.key()).await, Some(acme.clone()), "acme's context is untouched");
    assert_eq!(load(store, &globex.key()).await, Some(running.clone()));
    assert_eq!(store.interrupted().await.expect("interrupted"), vec![globex.key()]);

    assert_eq!(titles(store, "acme").await, ["ctx 2", "ctx 1"]);
    assert_eq!(titles(store, "globex").await, ["ctx 1"]);
    assert_eq!(titles(store, "a").await, ["ctx 3"]);
    assert!(titles(store, "nobody").await.is_empty());
    let counts = (store.count(&tenant("acme")).await.expect("count"), store.count(&tenant("a")).await.expect("count"));
    assert_eq!(counts, (2, 1));

    store.delete(Arc::new(running)).await.expect("delete");
    assert_eq!(load(store, &acme.key()).await, Some(acme), "deleting globex's context left acme's");
    assert_eq!(load(store, &globex.key()).await, None);
}

/// Versions are saved beside each other; a load reads the active path only; a switch reads
/// the other branch back from storage; the tree lists every version, latest active first.
pub async fn versions_sit_beside_each_other(store: &dyn Backend) {
    let ctx = Context::new(
        ContextKey::new(TenantId::default_tenant(), ContextId::from_bytes([3; 16])),
        String::new(),
        "tree".into(),
        ContextConfig::default(),
        Timestamp::from_micros(1),
    );
    let key = ctx.key();
    store.insert(Arc::new(ctx.clone())).await.expect("insert");
    let turn = Change::to(Phase::Idle).with(say(&ctx, 0, Role::User, "q")).with(say(&ctx, 1, Role::Assistant, "a1"));
    let ctx = commit(store, &ctx, turn).await;
    let first_reply = ctx.messages[1].id;

    // A regenerated reply: the cut and the new version, as two saves.
    let ctx =
        commit(store, &ctx, Change::to(Phase::AwaitingLlmResponse { attempt: 1 }).moving(PathMove::Cut(Seq::new(1))))
            .await;
    let cut = load(store, &key).await.expect("exists");
    same_path(&cut, &ctx);
    assert_eq!(cut.forks_at(Seq::new(1)).map(<[_]>::len), Some(1), "the old reply waits at the path's end");
    let ctx = commit(store, &ctx, Change::to(Phase::Idle).with(say(&ctx, 0, Role::Assistant, "a2"))).await;
    let loaded = load(store, &key).await.expect("exists");
    same_path(&loaded, &ctx);
    assert_eq!(texts(&loaded), ["q", "a2"]);
    assert_eq!((loaded.versions(Seq::new(1)).count, loaded.versions(Seq::new(1)).previous), (2, Some(first_reply)));

    // Switch back through what storage holds.
    let branch = loaded.branch_through(&Tree::new(store, &key), first_reply).await.expect("read").expect("a switch");
    assert_eq!(branch.keep, Seq::new(1));
    let ctx = commit(store, &ctx, Change::to(Phase::Idle).moving(PathMove::Switch(Box::new(branch)))).await;
    assert_eq!(texts(&ctx), ["q", "a1"]);
    let loaded = load(store, &key).await.expect("exists");
    same_path(&loaded, &ctx);
    assert_eq!(loaded.versions(Seq::new(1)).index, 0);

    // The children listing sees both versions; the first message's parent is nobody.
    let root = store.children(&key, None).await.expect("children");
    assert_eq!(root.len(), 1);
    let replies = store.children(&key, Some(root[0].node)).await.expect("children");
    assert_eq!(replies.iter().map(|c| c.node.get()).collect::<Vec<_>>(), [1, 2]);
    assert!(replies[0].active_at > replies[1].active_at, "the switch made the first reply the latest active");
    assert_eq!(store.node_of(&key, first_reply).await.expect("read"), Some(NodeId::new(1)));
    let both = store.messages(&key, &[NodeId::new(1), NodeId::new(2)]).await.expect("messages");
    assert_eq!(both.iter().map(Message::text_content).collect::<Vec<_>>(), ["a1", "a2"]);

    store.delete(Arc::new(ctx)).await.expect("delete");
    assert_eq!(store.node_of(&key, first_reply).await.expect("read"), None, "the tree went with the context");
}

/// A context read whole restores identical (every version, which was active when), and
/// only where its key is free.
pub async fn a_dump_restores_identical(store: &dyn Backend) {
    let mut ctx = context_of("acme", 9, 10);
    let key = ctx.key();
    store.insert(Arc::new(ctx.clone())).await.expect("insert");
    for turn in 0..3 {
        let question = say(&ctx, 0, Role::User, &format!("question {turn}"));
        ctx =
            commit(store, &ctx, Change::to(Phase::Idle).with(question).with(say(&ctx, 1, Role::Assistant, "a"))).await;
    }
    ctx = commit(store, &ctx, Change::to(Phase::Idle).moving(PathMove::Cut(Seq::new(5)))).await;
    ctx = commit(store, &ctx, Change::to(Phase::Idle).with(say(&ctx, 0, Role::Assistant, "b"))).await;
    let dump = store.dump(&key).await.expect("dump").expect("there");
    assert_eq!(dump.messages.len(), 7);
    assert_eq!(store.restore(&dump).await.expect("restore"), Inserted::Taken, "the key is taken");

    store.delete(Arc::new(ctx)).await.expect("delete");
    assert_eq!(store.restore(&dump).await.expect("restore"), Inserted::Saved);
    let again = store.dump(&key).await.expect("dump").expect("there");
    assert_eq!(again.context, dump.context);
    assert_eq!(again.messages, dump.messages);
    assert_eq!(again.active_at, dump.active_at);
}

/// One test per contract check for the engine `open` gives: `open` is an async expression
/// whose value is `(guard, Arc<dyn Backend>)`; the guard (a temp dir, a server) lives as
/// long as the test.
macro_rules! backend_contract {
    ($open:expr) => {
        mod contract {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn saves_round_trip() {
                let (_guard, store) = $open;
                crate::store::contract::saves_round_trip(&*store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lists_page_newest_first() {
                let (_guard, store) = $open;
                crate::store::contract::lists_page_newest_first(&*store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tenants_share_nothing() {
                let (_guard, store) = $open;
                crate::store::contract::tenants_share_nothing(&*store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn versions_sit_beside_each_other() {
                let (_guard, store) = $open;
                crate::store::contract::versions_sit_beside_each_other(&*store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_dump_restores_identical() {
                let (_guard, store) = $open;
                crate::store::contract::a_dump_restores_identical(&*store).await;
            }
        }
    };
}
pub(crate) use backend_contract;
