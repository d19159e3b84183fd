//! Long conversations against the real binary and a mock with a small context window
//! (`--mock-context-window`, which counts every request it receives and refuses one over
//! its window as OpenAI does): with SUMMARIZE or TRUNCATE no turn fails for length, every
//! request the mock answers fits, summaries belong to the path they summarise and survive
//! a `kill -9` mid-way, and a provider that counts more than ctxd does is sent a smaller
//! request instead of failing the turn.

use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use pb::FsmState;

const WINDOW: u32 = 2000;

/// Turn `n`'s message: about 45 tokens, different every turn.
fn said(n: usize) -> String {
    let words: Vec<String> = (0..30).map(|k| format!("w{}", n * 31 + k)).collect();
    format!("turn {n}: {}", words.join(" "))
}

async fn create_with(client: &mut Client, config: pb::ContextConfig) -> String {
    let request = pb::CreateContextRequest { config: Some(config), ..Default::default() };
    client.create_context(request).await.expect("create").into_inner().state.expect("state").context_id
}

fn overflow(overflow: pb::ContextOverflow) -> pb::ContextConfig {
    pb::ContextConfig {
        system_prompt: "You are terse.".into(),
        context_overflow: overflow as i32,
        ..Default::default()
    }
}

fn summaries(state: &pb::ContextState) -> Vec<&pb::Message> {
    state.messages.iter().filter(|m| role(m) == pb::Role::Summary).collect()
}

fn usage(state: &pb::ContextState) -> pb::ContextUsage {
    state.context_usage.clone().expect("context_usage")
}

/// The active path as a client that pages reads it: the last 50, then 200 at a time before.
async fn paged(client: &mut Client, id: &str) -> Vec<pb::Message> {
    let last = limited(client, id, 50).await;
    let first = page(client, id, &last.messages[0].id, 200, "").await;
    let mut messages = back_to_the_start(client, id, first, 200).await;
    messages.extend(last.messages);
    messages
}

/// 300 turns, far more than the window holds: none fails, each reply answers its turn, the
/// mock never saw a request over its window, and the whole conversation is still there.
async fn three_hundred_turns(strategy: pb::ContextOverflow) {
    let server = Server::start(0, &["--mock-context-window", &WINDOW.to_string()]).await;
    let mut client = server.client().await;
    let id = create_with(&mut client, overflow(strategy)).await;
    let mut consistent = 0;
    let mut before = get(&mut client, &id).await;
    for n in 0..300 {
        let state = send(&mut client, &id, &said(n)).await;
        assert_eq!(state_of(&state), FsmState::Idle, "turn {n}: {}", state.last_error);
        let reply = state.messages.last().expect("a reply");
        assert_eq!((role(reply), text(reply)), (pb::Role::Assistant, format!("You said: {}", said(n))), "turn {n}");
        let prompt = reply.usage.as_ref().expect("usage").prompt_tokens;
        assert!(prompt <= WINDOW, "turn {n}: the mock was sent {prompt} tokens");
        let now = usage(&state);
        assert_eq!(now.window_tokens, WINDOW);
        assert!(now.tokens <= u64::from(WINDOW), "turn {n}: the next request would take {}", now.tokens);
        // When neither a summary nor the window's start moved, the next request is the one the
        // mock counted plus the reply: ctxd's running count agrees with the mock's.
        let then = usage(&before);
        if then.first_message_in_window_id == now.first_message_in_window_id
            && then.summary_message_id == now.summary_message_id
            && !then.first_message_in_window_id.is_empty()
        {
            let expected = u64::from(prompt) + u64::from(reply.token_count);
            assert!(
                now.tokens.abs_diff(expected) <= 30,
                "turn {n}: ctxd counts {} where the mock saw {expected}",
                now.tokens
            );
            consistent += 1;
        }
        before = state;
    }
    // Truncating moves the window's start every turn once it is full; summarising only now
    // and then.
    let enough = if strategy == pb::ContextOverflow::Truncate { 5 } else { 100 };
    assert!(consistent > enough, "compared on {consistent} turns only");

    let state = get(&mut client, &id).await;
    assert_eq!(paged(&mut client, &id).await, state.messages, "read in pages, the same path");
    let users = state.messages.iter().filter(|m| role(m) == pb::Role::User).count();
    let replies = state.messages.iter().filter(|m| role(m) == pb::Role::Assistant).count();
    assert_eq!((users, replies), (300, 300), "GetState still returns every message");
    let usage = usage(&state);
    let first_seen = state.messages.iter().position(|m| m.id == usage.first_message_in_window_id).expect("on the path");
    assert!(first_seen > 300, "the model sees only the end of a long conversation ({first_seen})");
    let summaries = summaries(&state);
    match strategy {
        pb::ContextOverflow::Truncate => {
            assert!(summaries.is_empty());
            assert!(usage.summary_message_id.is_empty());
        }
        _ => {
            assert!(summaries.len() > 5, "{} summaries", summaries.len());
            let last = summaries.last().expect("a summary");
            assert_eq!(usage.summary_message_id, last.id, "the newest summary is what the model is sent");
            let through = state.messages.iter().position(|m| m.id == last.summary_through_message_id);
            let through = through.expect("a summary covers messages of its path");
            assert!(through < first_seen, "the messages seen directly come after what the summary covers");
            assert!(text(last).starts_with("Summary of messages #"), "{}", text(last));
            assert!(
                text(last).ends_with(&format!(" to #{through}.")),
                "names the last message it covers: {}",
                text(last)
            );
            for summary in &summaries {
                assert!(summary.usage.as_ref().is_some_and(|u| u.prompt_tokens <= WINDOW));
            }
        }
    }
}

#[tokio::test]
async fn three_hundred_turns_summarised_stay_inside_a_small_window() {
    three_hundred_turns(pb::ContextOverflow::Summarize).await;
}

#[tokio::test]
async fn three_hundred_turns_truncated_stay_inside_a_small_window() {
    three_hundred_turns(pb::ContextOverflow::Truncate).await;
}

/// A provider that refuses at 90 % of what ctxd thinks fits: the turn succeeds, sent again
/// smaller.
#[tokio::test]
async fn a_provider_counting_more_than_ctxd_gets_a_smaller_request_not_a_failed_turn() {
    let server = Server::start(0, &["--mock-context-window", "1800", "--model-context-window", "mock=2000"]).await;
    let mut client = server.client().await;
    // 100 tokens for the reply: ctxd thinks 1,900 fit, the provider takes 1,800.
    let config = pb::ContextConfig { max_output_tokens: 100, ..overflow(pb::ContextOverflow::Truncate) };
    let id = create_with(&mut client, config).await;
    for n in 0..80 {
        let state = send(&mut client, &id, &said(n)).await;
        assert_eq!(state_of(&state), FsmState::Idle, "turn {n}: {}", state.last_error);
        let reply = state.messages.last().expect("reply");
        assert_eq!(text(reply), format!("You said: {}", said(n)));
        assert!(reply.usage.as_ref().is_some_and(|u| u.prompt_tokens <= 1800));
    }
    let shrunk = server.log_matching(&["the provider found the request too long"], 1).await;
    assert!(!shrunk.is_empty());
}

/// Waits until the context summarises, folding every event into a client's view.
async fn until_summarizing(stream: &mut tonic::Streaming<pb::WatchStateResponse>, folded: &mut Folded) {
    let wait = async {
        while let Some(event) = stream.message().await.expect("watch") {
            folded.apply(&event).expect("consistent");
            if folded.state.as_ref().is_some_and(|s| state_of(s) == FsmState::SummarizingHistory) {
                return;
            }
        }
        panic!("the watch ended first");
    };
    tokio::time::timeout(PATIENCE, wait).await.expect("a summary starts");
}

/// A message of a few hundred tokens, one "word" for the mock (one streamed chunk).
fn bulky(n: usize) -> String {
    (0..200).map(|k| format!("b{n}x{k}")).collect::<Vec<_>>().join("-")
}

#[tokio::test]
async fn a_summary_interrupted_by_kill_9_completes_once_after_the_restart() {
    // 400 ms a streamed word: the summary (six words) takes over two seconds.
    let mut server = Server::start(400, &["--mock-context-window", &WINDOW.to_string()]).await;
    let mut client = server.client().await;
    let id = create_with(&mut client, overflow(pb::ContextOverflow::Summarize)).await;
    let mut before = 0;
    for n in 0..2 {
        let state = send(&mut client, &id, &bulky(n)).await;
        assert_eq!(state_of(&state), FsmState::Idle);
        before = summaries(&state).len();
    }
    let mut stream = watch(&mut client, &id, 0).await;
    let mut folded = Folded::default();
    client.send_message(send_request(&id, &bulky(2), false)).await.expect("send");
    until_summarizing(&mut stream, &mut folded).await;
    server.kill9().await;
    server.restart().await;

    let mut client = server.client().await;
    let done = wait_until(&mut client, &id, |s| state_of(s) == FsmState::Idle).await;
    let state = get(&mut client, &id).await;
    assert_eq!(done.revision, state.revision);
    assert_eq!(summaries(&state).len(), before + 1, "summarised once");
    let reply = state.messages.last().expect("reply");
    assert_eq!(text(reply), format!("You said: {}", bulky(2)));
    let roles: Vec<pb::Role> = state.messages.iter().rev().take(3).map(role).collect();
    use pb::Role::{Assistant, Summary, User};
    assert_eq!(roles, [Assistant, Summary, User], "the summary was made for the last turn");
    let summary = &state.messages[state.messages.len() - 2];
    assert_eq!(usage(&state).summary_message_id, summary.id);

    // A watcher from before the crash resumes from the revision it held and folds to the same.
    let mut resumed = watch(&mut client, &id, folded.revision).await;
    let wait = async {
        while let Some(event) = resumed.message().await.expect("watch") {
            folded.apply(&event).expect("consistent");
            if folded.revision == state.revision {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.expect("caught up");
    let mut seen = folded.state.clone().expect("state");
    seen.updated_at = state.updated_at;
    assert_eq!(seen, state, "the watcher holds what GetState returns");
}

#[tokio::test]
async fn an_edit_before_a_summary_never_sends_the_summary_of_the_abandoned_path() {
    let server = Server::start(0, &["--mock-context-window", &WINDOW.to_string()]).await;
    let mut client = server.client().await;
    let id = create_with(&mut client, overflow(pb::ContextOverflow::Summarize)).await;
    for n in 0..3 {
        send(&mut client, &id, &bulky(n)).await;
    }
    let asked = send(&mut client, &id, "/system").await;
    let summary = summaries(&asked).last().copied().cloned().expect("summarised");
    let seen = text(asked.messages.last().expect("reply"));
    assert!(seen.contains(&text(&summary)), "the summary goes with the system prompt: {seen}");

    // Edit the first message (before what the summary covers) into a question about what
    // the model is sent: the new path has no summary, and neither has the request.
    let first = asked.messages[0].id.clone();
    let edited = client.edit_message(edit_request(&id, &first, "/system")).await.expect("edit");
    let state = edited.into_inner().state.expect("state");
    assert_eq!(state_of(&state), FsmState::Idle);
    assert!(summaries(&state).is_empty());
    let seen = text(state.messages.last().expect("reply"));
    assert_eq!(seen, "System: You are terse.", "no summary of the abandoned path");
    assert!(usage(&state).summary_message_id.is_empty());

    // Back on the old branch, its summary is its own again.
    let back = client
        .switch_branch(pb::SwitchBranchRequest {
            context_id: id.clone(),
            message_id: asked.messages.last().expect("reply").id.clone(),
            ..Default::default()
        })
        .await
        .expect("switch")
        .into_inner()
        .state
        .expect("state");
    assert_eq!(usage(&back).summary_message_id, summary.id);
}

#[tokio::test]
async fn window_settings_are_checked_and_kept() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let refused = |config: pb::ContextConfig| {
        let mut client = client.clone();
        async move {
            let request = pb::CreateContextRequest { config: Some(config), ..Default::default() };
            client.create_context(request).await.expect_err("refused").code()
        }
    };
    let invalid = tonic::Code::InvalidArgument;
    assert_eq!(refused(pb::ContextConfig { summarize_at: 1.5, ..Default::default() }).await, invalid);
    assert_eq!(refused(pb::ContextConfig { summarize_at: f32::NAN, ..Default::default() }).await, invalid);
    assert_eq!(refused(pb::ContextConfig { context_window_tokens: 10, ..Default::default() }).await, invalid);
    let greedy = pb::ContextConfig { context_window_tokens: 1000, max_output_tokens: 600, ..Default::default() };
    assert_eq!(refused(greedy).await, invalid);
    assert_eq!(refused(pb::ContextConfig { context_overflow: 7, ..Default::default() }).await, invalid);

    let config = pb::ContextConfig {
        context_window_tokens: 4000,
        max_output_tokens: 300,
        summarize_at: 0.75,
        ..overflow(pb::ContextOverflow::Truncate)
    };
    let id = create_with(&mut client, config).await;
    let state = get(&mut client, &id).await;
    let kept = state.config.clone().expect("config");
    assert_eq!((kept.context_window_tokens, kept.max_output_tokens, kept.summarize_at), (4000, 300, 0.75));
    assert_eq!(kept.context_overflow, pb::ContextOverflow::Truncate as i32);
    let usage = usage(&state);
    assert_eq!(usage.window_tokens, 4000);
    assert!(usage.tokens > 0, "the system prompt and the tools' definitions count");
    assert!(usage.first_message_in_window_id.is_empty());
}
