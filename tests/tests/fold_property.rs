//! Property: for random sequences of actions (send, tools approved and denied, cancel,
//! failures, retry, rename, edits, regenerates and switches between versions), folding the WatchState events over the first snapshot gives exactly
//! what GetState returns, at every point where the context rests.

use std::sync::{Arc, Mutex};

use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use pb::FsmState;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone)]
enum Action {
    Send(String),
    Clock,
    ReadFile,
    Approve,
    Deny,
    CancelMidStream,
    Cancel,
    Fail,
    FailOnce,
    Retry,
    Rename(String),
    /// Edit the n-th user message of the active path (modulo how many there are).
    Edit(usize, String),
    /// Regenerate the n-th reply of the active path (modulo; none: the last).
    Regenerate(Option<usize>),
    /// Switch to the n-th of the versions beside the active path (modulo).
    Switch(usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        "[a-z]{1,8}( [a-z]{1,8}){0,6}".prop_map(Action::Send),
        Just(Action::Clock),
        Just(Action::ReadFile),
        Just(Action::Approve),
        Just(Action::Deny),
        Just(Action::CancelMidStream),
        Just(Action::Cancel),
        Just(Action::Fail),
        Just(Action::FailOnce),
        Just(Action::Retry),
        "[A-Za-z ]{0,12}".prop_map(Action::Rename),
        (any::<usize>(), "[a-z]{1,8}( [a-z]{1,8}){0,3}").prop_map(|(n, text)| Action::Edit(n, text)),
        proptest::option::of(any::<usize>()).prop_map(Action::Regenerate),
        any::<usize>().prop_map(Action::Switch),
    ]
}

async fn run_case(server: &Server, actions: Vec<Action>) {
    let mut client = server.client().await;
    let id = create(&mut client, "property").await;
    let folded = Arc::new(Mutex::new(Folded::default()));
    let mut events = client
        .watch_state(pb::WatchStateRequest { context_id: id.clone(), from_revision: 0, message_limit: 0 })
        .await
        .expect("watch")
        .into_inner();
    let fold = Arc::clone(&folded);
    let watcher = tokio::spawn(async move {
        while let Ok(Some(event)) = events.message().await {
            let mut held = fold.lock().expect("fold");
            held.apply(&event).unwrap_or_else(|e| panic!("{e}: {event:?}"));
        }
    });

    for action in actions {
        let sent = |text: &str| send_request(&id, text, true);
        let now = get(&mut client, &id).await;
        let pending = now.pending_tool_calls.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        let nth = |role: pb::Role, n: usize| {
            let ids: Vec<&str> =
                now.messages.iter().filter(|m| ctxd_tests::role(m) == role).map(|m| m.id.as_str()).collect();
            if ids.is_empty() { String::new() } else { ids[n % ids.len()].to_owned() }
        };
        let beside: Vec<String> = now
            .messages
            .iter()
            .flat_map(|m| [m.previous_sibling_id.clone(), m.next_sibling_id.clone()])
            .filter(|id| !id.is_empty())
            .collect();
        // Refusals (a busy context, nothing to approve) are part of the property: they
        // must change nothing the watchers see.
        let _ = match action {
            Action::Send(text) => client.send_message(sent(&text)).await.map(drop),
            Action::Clock => client.send_message(sent("/tool clock {}")).await.map(drop),
            Action::ReadFile => client.send_message(sent(r#"/tool read_file {"path": "f.txt"}"#)).await.map(drop),
            Action::Approve | Action::Deny => {
                let (approved, denied) =
                    if matches!(action, Action::Approve) { (pending, vec![]) } else { (vec![], pending) };
                let request = pb::ApproveToolsRequest {
                    context_id: id.clone(),
                    approved_tool_call_ids: approved,
                    denied_tool_call_ids: denied,
                    wait: true,
                    ..Default::default()
                };
                client.approve_tools(request).await.map(drop)
            }
            Action::CancelMidStream => {
                let long = "a b c d e f g h i j k l m n o p q r s t u v w x y z";
                match client.send_message(send_request(&id, long, false)).await {
                    Ok(_) => client
                        .cancel_run(pb::CancelRunRequest { context_id: id.clone(), wait: true, ..Default::default() })
                        .await
                        .map(drop),
                    Err(status) => Err(status),
                }
            }
            Action::Cancel => client
                .cancel_run(pb::CancelRunRequest { context_id: id.clone(), wait: true, ..Default::default() })
                .await
                .map(drop),
            Action::Fail => client.send_message(sent("/fail")).await.map(drop),
            Action::FailOnce => client.send_message(sent("/fail-once")).await.map(drop),
            Action::Rename(title) => {
                let request =
                    pb::UpdateContextRequest { context_id: id.clone(), title: Some(title), ..Default::default() };
                client.update_context(request).await.map(drop)
            }
            Action::Retry => client
                .retry_run(pb::RetryRunRequest { context_id: id.clone(), wait: true, ..Default::default() })
                .await
                .map(drop),
            Action::Edit(n, text) => {
                let request = pb::EditMessageRequest {
                    context_id: id.clone(),
                    message_id: nth(pb::Role::User, n),
                    content: text,
                    wait: true,
                    ..Default::default()
                };
                client.edit_message(request).await.map(drop)
            }
            Action::Regenerate(n) => {
                let message_id = n.map(|n| nth(pb::Role::Assistant, n)).unwrap_or_default();
                let request =
                    pb::RegenerateReplyRequest { context_id: id.clone(), message_id, wait: true, ..Default::default() };
                client.regenerate_reply(request).await.map(drop)
            }
            Action::Switch(n) => {
                let message_id =
                    if beside.is_empty() { nth(pb::Role::User, n) } else { beside[n % beside.len()].clone() };
                let request = pb::SwitchBranchRequest { context_id: id.clone(), message_id, ..Default::default() };
                client.switch_branch(request).await.map(drop)
            }
        };
        // A cancel that lost the race with the end of the run leaves it running; let it rest.
        let expected = wait_until(&mut client, &id, |s| {
            matches!(state_of(s), FsmState::Idle | FsmState::AwaitingToolApproval | FsmState::Failed)
        })
        .await;
        let caught_up = async {
            loop {
                assert!(!watcher.is_finished(), "the watcher stopped (see its panic above)");
                if folded.lock().expect("fold").revision >= expected.revision {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        };
        tokio::time::timeout(PATIENCE, caught_up).await.expect("the watcher catches up");
        let held = folded.lock().expect("fold").state.clone();
        assert_eq!(held.as_ref(), Some(&expected), "fold of the events == GetState at revision {}", expected.revision);
    }
    watcher.abort();
}

#[test]
fn folding_watch_events_always_gives_get_state() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let workspace = workspace_with(&[("f.txt", "file text")]);
    let ws = workspace.path().to_str().expect("utf-8").to_owned();
    let server = runtime.block_on(Server::start(1, &["--workspace", &ws, "--llm-max-attempts", "2"]));
    let mut runner = TestRunner::new(Config { cases: 32, failure_persistence: None, ..Config::default() });
    runner
        .run(&proptest::collection::vec(action(), 1..16), |actions| {
            runtime.block_on(run_case(&server, actions));
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}\nserver log:\n{}", server.log()));
}
