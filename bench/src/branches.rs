//! Branches: EditMessage and SwitchBranch against long active paths, and loading a context
//! whose tree holds many abandoned branches beside one as straight as its active path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ctxd::domain::{
    Context, ContextConfig, ContextId, ContextKey, Message, MessageId, NodeId, Place, Role, Seq, Sibling, TenantId,
    Timestamp,
};
use ctxd::store::{Save, Store};
use ctxd_tests::v1 as pb;
use ctxd_tests::{Server, get};

use crate::load;
use crate::report::Row;
use crate::scenarios::{Scale, until_idle, watch};
use crate::stats::Summary;

/// EditMessage(wait=false) of the last question, then SwitchBranch between its two versions,
/// at 10 and 10,000 messages on the active path.
pub async fn actions(scale: Scale) -> Vec<Row> {
    let sizes: Vec<u64> = scale.pick(vec![10, 1000], vec![10, 10_000]);
    let dir = tempfile::tempdir().expect("temp dir");
    let ids: Vec<_> = sizes.iter().map(|&n| load::fill(dir.path(), 1, n)[0]).collect();
    let server = Server::start_on(dir, 0, &[], &[]).await;
    let mut client = server.client().await;
    let samples = scale.pick(10, 200);
    let mut rows = Vec::new();
    for (size, id) in sizes.iter().zip(&ids) {
        let id = id.to_string();
        let state = get(&mut client, &id).await;
        let mut events = watch(&mut client, &id).await;
        let question = state.messages.iter().rev().find(|m| m.role == pb::Role::User as i32).expect("a question");
        let started = Instant::now();
        let mut edits = Vec::with_capacity(samples);
        let mut edited = question.id.clone();
        for n in 0..samples {
            let request = pb::EditMessageRequest {
                context_id: id.clone(),
                message_id: edited.clone(),
                content: format!("reworded {n}"),
                client_message_id: uuid::Uuid::new_v4().to_string(),
                view: pb::StateView::Basic as i32,
                ..Default::default()
            };
            let t = Instant::now();
            let state = client.edit_message(request).await.expect("edit").into_inner().state.expect("state");
            edits.push(t.elapsed());
            // BASIC: the newest message, which is the new version.
            edited = state.messages.last().map(|m| m.id.clone()).expect("the edit");
            until_idle(&mut events, state.revision).await;
        }
        rows.push(Row::new(
            "branches",
            format!("EditMessage at {size} messages"),
            Summary::of(edits, started.elapsed()),
        ));

        // Back and forth between the first version and the last.
        let started = Instant::now();
        let mut switches = Vec::with_capacity(samples);
        for n in 0..samples {
            let to = if n % 2 == 0 { question.id.clone() } else { edited.clone() };
            let request = pb::SwitchBranchRequest {
                context_id: id.clone(),
                message_id: to,
                view: pb::StateView::Basic as i32,
                ..Default::default()
            };
            let t = Instant::now();
            client.switch_branch(request).await.expect("switch");
            switches.push(t.elapsed());
        }
        rows.push(
            Row::new("branches", format!("SwitchBranch at {size} messages"), Summary::of(switches, started.elapsed()))
                .note("versions", samples + 1),
        );
    }
    rows
}

/// Loading (from RocksDB, in this process) a context of 1,000 messages on its active path
/// and 1,000 abandoned branches of 9 messages beside it (10,000 messages), against a
/// straight one of the same 1,000 messages: the branches all at the last reply (1,000
/// regenerates), and one at every depth of the path (the most a path can have to read).
pub fn load(scale: Scale) -> Vec<Row> {
    let (path, branches, tail) = scale.pick((100, 100, 9), (1000, 1000, 9));
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), false).expect("open");
    let straight = context(&store, path, 0, 0, false);
    let at_the_end = context(&store, path, branches, tail, false);
    let everywhere = context(&store, path, branches, tail, true);
    store.flush().expect("flush");
    let reps = scale.pick(20, 300);
    let mut rows = Vec::new();
    let mut straight_p50 = 0.0;
    let tree = path + branches * tail;
    for (name, key, messages) in [
        ("straight", &straight, path),
        ("branched at the last reply", &at_the_end, tree),
        ("branched at every depth", &everywhere, tree),
    ] {
        let started = Instant::now();
        let samples: Vec<Duration> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                let loaded = store.load(key).expect("load").expect("exists");
                assert_eq!(loaded.messages.len() as u64, path);
                t.elapsed()
            })
            .collect();
        let summary = Summary::of(samples, started.elapsed());
        if name == "straight" {
            straight_p50 = summary.p50_us;
        }
        let ratio = summary.p50_us / straight_p50.max(1.0);
        rows.push(
            Row::new("branches", format!("load {name}: {path} on the path, {messages} in the tree"), summary)
                .note("p50_vs_straight", format!("{ratio:.2}")),
        );
    }
    rows
}

/// Saves a context whose active path is `path` messages, with `branches` abandoned branches
/// of `tail` messages, each a version beside one message of the path: the last one, or
/// (`spread`) one message each, spread over the path.
fn context(store: &Store, path: u64, branches: u64, tail: u64, spread: bool) -> ContextKey {
    let now = Timestamp::now();
    let key = ContextKey::new(TenantId::default_tenant(), ContextId::new());
    let empty = Context::new(key.clone(), String::new(), "branches".into(), ContextConfig::default(), now);
    store.insert(&empty).expect("insert");
    let role = |seq: Seq| if seq.get().is_multiple_of(2) { Role::User } else { Role::Assistant };
    let text = |seq: Seq| format!("message {seq} of a conversation used to measure ctxd");
    let message =
        |place: Place| Arc::new(Message::text(MessageId::new(), place, role(place.seq), text(place.seq), now));
    let on_path: Vec<Arc<Message>> = (0..path).map(|seq| message(Place::straight(Seq::new(seq)))).collect();
    let mut abandoned = Vec::new();
    let mut groups: std::collections::BTreeMap<u64, Vec<Sibling>> = std::collections::BTreeMap::new();
    for b in 0..branches {
        let seq = if spread { b * path / branches.max(1) } else { path - 1 };
        let first = path + b * tail;
        for k in 0..tail {
            let parent = if k == 0 { seq.checked_sub(1) } else { Some(first + k - 1) };
            abandoned.push(message(Place {
                seq: Seq::new(seq + k),
                node: NodeId::new(first + k),
                parent: parent.map(NodeId::new),
            }));
        }
        let own = on_path[usize::try_from(seq).unwrap_or(0)].id;
        let group = groups.entry(seq).or_insert_with(|| vec![Sibling { node: NodeId::new(seq), id: own }]);
        group.push(Sibling {
            node: NodeId::new(first),
            id: abandoned[abandoned.len() - usize::try_from(tail).unwrap_or(0)].id,
        });
    }
    let forks: imbl::OrdMap<Seq, Arc<[Sibling]>> =
        groups.into_iter().map(|(seq, group)| (Seq::new(seq), Arc::from(group))).collect();
    // The abandoned branches first, so the path's edges are the most recently active.
    let commit = |after: &Context, messages: Vec<Arc<Message>>| {
        // Every node is written with its edges and ids, as for a new context.
        let save = Save { before: None, after: Arc::new(after.clone()), messages, joined: Vec::new() };
        store.commit(&save).expect("commit");
    };
    commit(&empty, abandoned);
    let mut full = empty.clone();
    for message in &on_path {
        full.put_message(Arc::clone(message));
    }
    full.next_node = NodeId::new(path + branches * tail);
    Arc::make_mut(&mut full.shape).forks = forks;
    full.revision = 3;
    commit(&full, on_path);
    key
}
