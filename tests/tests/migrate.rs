//! `ctxd migrate` against the real binary: every context of every tenant moves from RocksDB
//! to a 3-server NATS cluster and back — branches, revisions, a pending tool call and a run
//! cut short by `kill -9` — each copy checked, a re-run copying nothing twice, and a data
//! dir a running ctxd holds refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use ctxd_tests::nats::NatsCluster;
use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use pb::FsmState;
use serde_json::json;

const SECRET: &str = "migrate-test-secret-of-at-least-32-bytes";
const AUDIENCE: &str = "ctxd-migrate-test";
const TENANTS: [&str; 2] = ["acme", "globex"];

fn token(tenant: &str) -> String {
    tokens::hs256(SECRET, &tokens::with(tokens::claims(tenant), json!({"aud": AUDIENCE})))
}

/// The flags every server of the test shares: the same authentication and workspace.
fn shared_flags(dir: &Path) -> Vec<String> {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace).expect("workspace");
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    vec![
        "--jwt-hs256-secret-file".into(),
        path(&secret),
        "--jwt-audience".into(),
        AUDIENCE.into(),
        "--workspace".into(),
        path(&workspace),
    ]
}

fn migrate(from: &str, to: &str) -> Output {
    std::process::Command::new(binary())
        .args(["migrate", "--from", from, "--to", to])
        .output()
        .expect("run ctxd migrate")
}

fn said(output: &Output) -> String {
    format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Everything a client can read of every context: each tenant's list, and each context's
/// full state with the versions its first message has, reached by switching to each.
async fn everything(server: &Server) -> BTreeMap<String, (Vec<pb::ContextSummary>, Vec<pb::ContextState>)> {
    let mut seen = BTreeMap::new();
    for tenant in TENANTS {
        let mut client = server.client_as(&token(tenant)).await;
        let request = pb::ListContextsRequest { page_size: 1000, ..Default::default() };
        let listed = client.list_contexts(request).await.expect("list").into_inner().contexts;
        let mut states = Vec::new();
        for summary in &listed {
            states.push(get(&mut client, &summary.context_id).await);
        }
        seen.insert(tenant.to_owned(), (listed, states));
    }
    seen
}

fn texts(state: &pb::ContextState) -> Vec<String> {
    state.messages.iter().map(text).collect()
}

#[tokio::test]
async fn every_context_moves_to_nats_and_back_verified_and_a_rerun_copies_nothing_twice() {
    let dir = tempfile::tempdir().expect("dir");
    let flags = shared_flags(dir.path());
    let mut rocks_flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    rocks_flags.extend(["--store", "rocksdb"]);
    let mut source = Server::start(20, &rocks_flags).await;
    let data_dir = format!("rocksdb:{}", source.data_dir().display());

    // acme: a conversation with an edited question (two versions, the old one holding its
    // own reply), a fork, and one waiting for a tool's approval.
    let mut acme = source.client_as(&token("acme")).await;
    let talk = create(&mut acme, "talk").await;
    send(&mut acme, &talk, "first question").await;
    let before = send(&mut acme, &talk, "second question").await;
    let edit = pb::EditMessageRequest {
        context_id: talk.clone(),
        message_id: before.messages[2].id.clone(),
        content: "second, reworded".into(),
        client_message_id: uuid::Uuid::new_v4().to_string(),
        wait: true,
        ..Default::default()
    };
    let edited = acme.edit_message(edit).await.expect("edit").into_inner().state.expect("state");
    assert_eq!((edited.messages[2].sibling_count, edited.messages[2].sibling_index), (2, 1));
    let fork = pb::ForkContextRequest { context_id: talk.clone(), title: "fork".into(), ..Default::default() };
    let forked = acme.fork_context(fork).await.expect("fork").into_inner().state.expect("state");
    let tools = create(&mut acme, "tools").await;
    let asked = send(&mut acme, &tools, "/tool list_dir {}").await;
    assert_eq!(state_of(&asked), FsmState::AwaitingToolApproval);
    // globex: its own context, with the same title as one of acme's.
    let mut globex = source.client_as(&token("globex")).await;
    let theirs = create(&mut globex, "talk").await;
    send(&mut globex, &theirs, "globex asks").await;
    // And a run cut short: the reply is streaming when ctxd is killed.
    let cut = create(&mut globex, "cut short").await;
    let long = "please answer with a long reply ".repeat(8);
    globex.send_message(send_request(&cut, &long, false)).await.expect("send");
    wait_until(&mut globex, &cut, |s| state_of(s) == FsmState::StreamingLlmResponse).await;

    // The data dir is in use: migrate refuses it and touches nothing.
    let cluster = NatsCluster::start(3).await;
    let refused = migrate(&data_dir, &cluster.urls());
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(said(&refused).contains("in use by another ctxd process"), "{}", said(&refused));

    source.kill9().await;
    // The run stays interrupted in the copy until a ctxd serves it; read the source as saved.
    let copied = migrate(&data_dir, &cluster.urls());
    assert!(copied.status.success(), "{}", said(&copied));
    let out = String::from_utf8_lossy(&copied.stdout);
    assert!(out.contains("copied 5 contexts, 0 already there"), "{}", said(&copied));

    // Re-run: everything is there already and identical; nothing is written twice.
    let again = migrate(&data_dir, &cluster.urls());
    assert!(again.status.success(), "{}", said(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("copied 0 contexts, 5 already there"), "{}", said(&again));

    // ctxd on the cluster serves exactly what RocksDB held; the cut-short run resumes there.
    let mut nats_flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let urls = cluster.urls();
    nats_flags.extend(["--store", "nats", "--nats-url", &urls]);
    source.restart().await;
    let mut globex_rocks = source.client_as(&token("globex")).await;
    wait_until(&mut globex_rocks, &cut, |s| state_of(s) == FsmState::Idle).await;
    let on_rocks = everything(&source).await;
    source.terminate().await;
    let mut on_nats = Server::start(20, &nats_flags).await;
    let mut globex_nats = on_nats.client_as(&token("globex")).await;
    let resumed = wait_until(&mut globex_nats, &cut, |s| state_of(s) == FsmState::Idle).await;
    assert_eq!(texts(&resumed)[0], long);
    // Both servers resumed the same run from the same saved transition; only the reply's
    // resumption differs (it ran on each), so compare the rest.
    let moved = everything(&on_nats).await;
    for tenant in TENANTS {
        let (rocks_list, rocks_states) = &on_rocks[tenant];
        let (nats_list, nats_states) = &moved[tenant];
        let ids = |list: &[pb::ContextSummary]| list.iter().map(|s| s.context_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(rocks_list), ids(nats_list), "{tenant}: the same contexts, in the same order");
        for (rocks, nats) in rocks_states.iter().zip(nats_states) {
            if rocks.context_id == cut {
                assert_eq!(texts(rocks), texts(nats), "the resumed run's messages");
                continue;
            }
            assert_eq!(rocks, nats, "{tenant}: context {} differs", rocks.title);
        }
    }
    // Branches came along, with which one was active: switching back to the first version
    // of the second question finds its own reply.
    let mut acme_nats = on_nats.client_as(&token("acme")).await;
    let switch = pb::SwitchBranchRequest {
        context_id: talk.clone(),
        message_id: before.messages[2].id.clone(),
        ..Default::default()
    };
    let switched = acme_nats.switch_branch(switch).await.expect("switch").into_inner().state.expect("state");
    assert_eq!(texts(&switched), texts(&before));
    assert_eq!(get(&mut acme_nats, &forked.context_id).await.messages.len(), edited.messages.len());
    // The pending tool call is still pending, and approving it runs the tool.
    let waiting = get(&mut acme_nats, &tools).await;
    assert_eq!(state_of(&waiting), FsmState::AwaitingToolApproval);
    let approve = pb::ApproveToolsRequest {
        context_id: tools.clone(),
        approved_tool_call_ids: vec![waiting.pending_tool_calls[0].id.clone()],
        wait: true,
        ..Default::default()
    };
    let approved = acme_nats.approve_tools(approve).await.expect("approve").into_inner().state.expect("state");
    assert_eq!(state_of(&approved), FsmState::Idle);

    // And back to a new RocksDB directory, from the cluster as the NATS ctxd left it.
    let on_cluster = everything(&on_nats).await;
    on_nats.terminate().await;
    let back = tempfile::tempdir().expect("back");
    let to_rocks = format!("rocksdb:{}", back.path().display());
    let returned = migrate(&cluster.urls(), &to_rocks);
    assert!(returned.status.success(), "{}", said(&returned));
    assert!(String::from_utf8_lossy(&returned.stdout).contains("copied 5 contexts"), "{}", said(&returned));
    let home = Server::start_on(back, 20, &rocks_flags, &[]).await;
    assert_eq!(everything(&home).await, on_cluster, "the round trip changes nothing");
}

#[tokio::test]
async fn migrate_says_what_it_needs() {
    let missing = tempfile::tempdir().expect("dir");
    let from = format!("rocksdb:{}", missing.path().join("nothing-here").display());
    let output = migrate(&from, "rocksdb:/tmp/elsewhere");
    assert_eq!(output.status.code(), Some(2), "{}", said(&output));
    assert!(said(&output).contains("holds no ctxd data"), "{}", said(&output));
    let output = migrate("/var/lib/ctxd", "nats://127.0.0.1:4222");
    assert_eq!(output.status.code(), Some(2), "{}", said(&output));
    assert!(said(&output).contains("neither rocksdb:PATH nor nats://"), "{}", said(&output));
}
