//! Each scenario drives a real ctxd over native gRPC on loopback and reports rows.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ctxd_tests::v1 as pb;
use ctxd_tests::{Client, Server, create, send_request};
use futures::future::join_all;
use pb::FsmState;
use pb::watch_state_response::Kind;

use crate::engine::Engine;
use crate::floor::Floor;
use crate::load;
use crate::report::Row;
use crate::stats::Summary;

pub(crate) type Events = tonic::Streaming<pb::WatchStateResponse>;

/// Sizes of a run: `--quick` keeps every scenario to seconds.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub quick: bool,
}

impl Scale {
    pub(crate) fn pick<T>(self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// A ctxd with the mock LLM at delay 0, durable (synced or replicated) writes; RocksDB's
/// writer logs each write.
pub async fn start_server(engine: Engine, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    engine.serve(dir, extra, &[("RUST_LOG", "info,ctxd::store::rocks::writer=debug")]).await
}

/// The NATS requests the server has made so far, by op (batch: a save, scan, read); none on RocksDB.
async fn nats_requests(server: &Server) -> [f64; 3] {
    if server.nats.is_none() {
        return [0.0; 3];
    }
    let scrape = ctxd_tests::metrics::scrape(server).await;
    ["batch", "scan", "read"].map(|op| ctxd_tests::metrics::value(&scrape, "ctxd_nats_requests_total", &[("op", op)]))
}

const SAVES_PER_FSYNC: &str = "saves_per_fsync";

/// Saves per write (each write one fsync) since `before` was taken with [`writer_totals`];
/// `None` when nothing was written.
fn saves_per_fsync(server: &Server, before: (u64, u64)) -> Option<f64> {
    let (saves, writes) = writer_totals(server);
    let writes = writes.saturating_sub(before.1);
    (writes > 0).then(|| saves.saturating_sub(before.0) as f64 / writes as f64)
}

/// The writer's running totals (saves, writes) from its last log line.
fn writer_totals(server: &Server) -> (u64, u64) {
    let lines = server.log_lines();
    let Some(line) = lines.iter().rev().find(|l| l.contains(" wrote ")) else { return (0, 0) };
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("total_saves"), field("total_writes"))
}

/// Runs `case` and adds the server's CPU time and peak RSS during it to its rows.
pub async fn measured<F: Future<Output = Vec<Row>>>(server: &Server, case: F) -> Vec<Row> {
    server.reset_peak_rss();
    let cpu = server.cpu_time();
    let own_cpu = ctxd_tests::cpu_time_of("self");
    let totals = writer_totals(server);
    let rows = case.await;
    let per_write = saves_per_fsync(server, totals);
    let used = server.cpu_time().saturating_sub(cpu);
    let client_used = ctxd_tests::cpu_time_of("self").saturating_sub(own_cpu);
    let peak = server.peak_rss_kib();
    rows.into_iter()
        .map(|mut row| {
            row.server_cpu_ms = Some(u64::try_from(used.as_millis()).unwrap_or(u64::MAX));
            row.server_peak_rss_kib = Some(peak);
            if let Some(per_write) = per_write
                && !row.notes.contains_key(SAVES_PER_FSYNC)
            {
                row = row.note(SAVES_PER_FSYNC, format!("{per_write:.2}"));
            }
            row.note("harness_cpu_ms", u64::try_from(client_used.as_millis()).unwrap_or(u64::MAX))
        })
        .collect()
}

pub(crate) async fn watch(client: &mut Client, id: &str) -> Events {
    client
        .watch_state(pb::WatchStateRequest { context_id: id.into(), from_revision: 0, message_limit: 0 })
        .await
        .expect("watch")
        .into_inner()
}

/// Reads events until the context is IDLE at a revision of at least `revision`.
pub(crate) async fn until_idle(events: &mut Events, revision: u64) {
    while let Some(event) = events.message().await.expect("watch stream") {
        let idle = match &event.kind {
            Some(Kind::StateChanged(changed)) => changed.state == FsmState::Idle as i32,
            Some(Kind::Snapshot(state)) => state.state == FsmState::Idle as i32,
            _ => false,
        };
        if idle && event.revision >= revision {
            return;
        }
    }
}

/// A send whose response carries the BASIC view: the action's cost, not the cost of
/// returning a conversation that grows with every turn (the `history` scenario shows both).
fn basic_send(id: &str, content: &str, wait: bool) -> pb::SendMessageRequest {
    pb::SendMessageRequest { view: pb::StateView::Basic as i32, ..send_request(id, content, wait) }
}

/// `SendMessage(wait=false)` from `concurrency` clients, each on its own context, each
/// waiting (through its watch stream) for the turn to end before sending again.
pub async fn action(server: &Server, scale: Scale, floor: Floor) -> Vec<Row> {
    let levels = scale.pick(vec![1, 4], vec![1, 16, 64, 256]);
    let (mut rows, round_trip_p50) = round_trip(server, scale).await;
    for concurrency in levels {
        let per_client = scale.pick(10, (2000 / concurrency).max(20));
        let connections = connections(server, concurrency).await;
        let totals = writer_totals(server);
        let started = Instant::now();
        let clients = (0..concurrency).map(|n| {
            let mut client = connections[n % connections.len()].clone();
            async move {
                let id = create(&mut client, "action").await;
                let mut events = watch(&mut client, &id).await;
                let mut samples = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    let sent = client.send_message(basic_send(&id, "hello", false)).await.expect("send");
                    samples.push(t.elapsed());
                    let revision = sent.into_inner().state.map(|s| s.revision).unwrap_or(0);
                    until_idle(&mut events, revision).await;
                }
                samples
            }
        });
        let samples: Vec<Duration> = join_all(clients).await.into_iter().flatten().collect();
        let summary = Summary::of(samples, started.elapsed());
        let per_fsync = saves_per_fsync(server, totals);
        let ratio = summary.p50_us / floor.p50_us;
        // What an action cannot go below: a round trip and a write that follows idle time.
        let physical = summary.p50_us / (round_trip_p50 + floor.spaced_p50_us);
        rows.push(
            Row::new("action", format!("SendMessage(wait=false, BASIC), concurrency {concurrency}"), summary)
                .note("p50_vs_floor", format!("{ratio:.2}"))
                .note("p50_vs_round_trip_plus_spaced_write", format!("{physical:.2}"))
                .note(SAVES_PER_FSYNC, per_fsync.map_or("-".into(), |n| format!("{n:.2}"))),
        );
    }
    rows
}

/// The second floor of every action: a unary gRPC call that writes nothing (`GetState`,
/// BASIC view, a live context), through the same client, connection and server.
async fn round_trip(server: &Server, scale: Scale) -> (Vec<Row>, f64) {
    let mut client = server.client().await;
    let id = create(&mut client, "round trip").await;
    let request = pb::GetStateRequest { context_id: id, view: pb::StateView::Basic as i32, message_limit: 0 };
    let calls = scale.pick(20, 2000);
    let started = Instant::now();
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        client.get_state(request.clone()).await.expect("get state");
        samples.push(t.elapsed());
    }
    let summary = Summary::of(samples, started.elapsed());
    let p50 = summary.p50_us;
    let row = Row::new("action", "GetState(BASIC), concurrency 1: the round trip, no write", summary);
    (vec![row.note(SAVES_PER_FSYNC, "-")], p50)
}

/// Several HTTP/2 connections, as many clients would have, 100 streams each at most.
/// (One connection per client measured slower: 6.6k against 8.5k actions/s at 64 clients.)
async fn connections(server: &Server, streams: usize) -> Vec<Client> {
    let mut connections = Vec::new();
    for _ in 0..streams.div_ceil(100).max(1) {
        connections.push(server.client().await);
    }
    connections
}

/// A whole turn with `SendMessage(wait=true)`, with and without an auto-approved tool call.
pub async fn turn(server: &Server, scale: Scale, floor_p50: f64) -> Vec<Row> {
    let mut client = server.client().await;
    let turns = scale.pick(10, 300);
    let mut rows = Vec::new();
    let thirty_words = (0..30).map(|k| format!("w{k}")).collect::<Vec<_>>().join(" ");
    let cases = [
        ("plain reply", "hello there", 0),
        ("with an auto-approved tool call", "/tool clock {}", 0),
        ("30 words", thirty_words.as_str(), 0),
        // The same turns in a window they soon outgrow: every few turns one summarises first.
        ("30 words, 2,000-token window (summarising)", thirty_words.as_str(), 2000),
    ];
    for (case, content, window) in cases {
        let config = pb::ContextConfig { context_window_tokens: window, ..Default::default() };
        let request = pb::CreateContextRequest { title: "turn".into(), config: Some(config), ..Default::default() };
        let id = client.create_context(request).await.expect("create").into_inner().state.expect("state").context_id;
        let before = ctxd_tests::get(&mut client, &id).await.revision;
        let requests_before = nats_requests(server).await;
        let cpu_before = server.cpu_time();
        let started = Instant::now();
        let mut samples = Vec::with_capacity(turns);
        // Turns that summarised, apart: their extra LLM call is the mock's, not ctxd's work.
        let (mut plain, mut summarising) = (Vec::with_capacity(turns), Vec::new());
        let mut summary = String::new();
        for _ in 0..turns {
            let t = Instant::now();
            let state = client.send_message(basic_send(&id, content, true)).await.expect("turn").into_inner().state;
            let took = t.elapsed();
            samples.push(took);
            let now = state.and_then(|s| s.context_usage).map(|u| u.summary_message_id).unwrap_or_default();
            if now == summary {
                plain.push(took)
            } else {
                summarising.push(took)
            }
            summary = now;
        }
        let cpu_per_turn = server.cpu_time().saturating_sub(cpu_before).as_micros() / turns as u128;
        let after = ctxd_tests::get(&mut client, &id).await.revision;
        let transitions = (after - before) as f64 / turns as f64;
        // One log line per save: wait for the last one, then count them (less the creation).
        server.log_matching(&["auto-saved", &id, &format!("revision={after} ")], 1).await;
        let saves = (server.log_matching(&["auto-saved", &id], 1).await.len() - 1) as f64 / turns as f64;
        let total = Summary::of(samples, started.elapsed());
        let ratio = total.p50_us / floor_p50;
        let mut row = Row::new("turn", format!("SendMessage(wait=true, BASIC), {case}"), total)
            .note("transitions_per_turn", transitions)
            .note("saves_per_turn", saves)
            .note("p50_vs_floor", format!("{ratio:.2}"))
            .note("server_cpu_us_per_turn", cpu_per_turn as u64);
        if !summarising.is_empty() {
            // What each summary's LLM call took, as the server logged it, in order.
            let calls: Vec<Duration> = server
                .log_matching(&["summarised the oldest messages", &id], summarising.len())
                .await
                .iter()
                .filter_map(|line| line.split("took_us=").nth(1)?.split_whitespace().next()?.parse().ok())
                .map(Duration::from_micros)
                .collect();
            let without_call: Vec<Duration> =
                summarising.iter().zip(&calls).map(|(turn, call)| turn.saturating_sub(*call)).collect();
            let elapsed = started.elapsed();
            let p50 = |samples: Vec<Duration>| format!("{:.3}", Summary::of(samples, elapsed).p50_us / 1000.0);
            row = row
                .note("turns_summarising", summarising.len())
                .note("p50_turns_not_summarising_ms", p50(plain))
                .note("p50_turns_summarising_ms", p50(summarising))
                .note("p50_turns_summarising_without_the_summary_call_ms", p50(without_call));
        }
        if server.nats.is_some() {
            // The tree is derived behind each save: let the last derivations finish first.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = nats_requests(server).await;
            let per_turn = |i: usize| format!("{:.1}", (after[i] - requests_before[i]) / turns as f64);
            row = row
                .note("nats_batches_per_turn", per_turn(0))
                .note("nats_scans_per_turn", per_turn(1))
                .note("nats_reads_per_turn", per_turn(2));
        }
        rows.push(row);
    }
    rows
}

fn wall_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Microseconds from the event's `updated_at` (when the server began the saved
/// transition) to its receipt here; the fsync of that transition is included.
pub(crate) fn commit_to_receipt(event: &pb::WatchStateResponse) -> Option<Duration> {
    let at = event.updated_at?;
    let committed = at.seconds * 1_000_000 + i64::from(at.nanos / 1000);
    Some(Duration::from_micros(u64::try_from(wall_micros() - committed).unwrap_or(0)))
}

/// Watchers reading one context each (`contexts` > 1) or all one context; returns per-watcher
/// latencies of every user message appended. On one context the next message is sent once
/// every watcher has read the whole previous turn, so each sample is one fan-out, not a
/// queue behind the last one.
/// What the watched contexts are made to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A whole turn (`SendMessage`, wait=true); the user message's event is sampled.
    Turn,
    /// A rename (`UpdateContext`): one save, one event, no run after it.
    Rename,
}

async fn watchers_on(
    server: &Server,
    ids: &[String],
    watchers: usize,
    messages: usize,
    trigger: Trigger,
) -> (Vec<Duration>, u64) {
    let conns = connections(server, watchers).await;
    let rss_before = server.rss_kib();
    let samples = Arc::new(Mutex::new(Vec::with_capacity(watchers * messages)));
    let mut tasks = Vec::with_capacity(watchers);
    let mut ready = Vec::with_capacity(watchers);
    for n in 0..watchers {
        let mut client = conns[n % conns.len()].clone();
        let id = ids[n % ids.len()].clone();
        let mut events = watch(&mut client, &id).await;
        events.message().await.expect("stream").expect("snapshot");
        ready.push(events);
    }
    let per_stream = (server.rss_kib().saturating_sub(rss_before) * 1024) / watchers as u64;
    let expected = if ids.len() > 1 { 1 } else { messages };
    let turns_read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for mut events in ready {
        let samples = Arc::clone(&samples);
        let turns_read = Arc::clone(&turns_read);
        tasks.push(tokio::spawn(async move {
            let mut turns = 0;
            while turns < expected {
                let Ok(Some(event)) = events.message().await else { break };
                let (sampled, ends_turn) = match &event.kind {
                    Some(Kind::MessageAppended(message)) => (message.role == pb::Role::User as i32, false),
                    Some(Kind::StateChanged(changed)) => (false, changed.state == FsmState::Idle as i32),
                    Some(Kind::ContextUpdated(_)) => (true, true),
                    _ => (false, false),
                };
                if sampled && let Some(latency) = commit_to_receipt(&event) {
                    samples.lock().expect("samples").push(latency);
                }
                if ends_turn {
                    turns += 1;
                    turns_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let mut client = server.client().await;
    if ids.len() == 1 {
        for sent in 1..=messages {
            match trigger {
                Trigger::Turn => {
                    client.send_message(basic_send(&ids[0], "to every watcher", true)).await.expect("send");
                }
                Trigger::Rename => {
                    let title = Some(format!("renamed {sent}"));
                    let rename = pb::UpdateContextRequest { context_id: ids[0].clone(), title, ..Default::default() };
                    client.update_context(rename).await.expect("rename");
                }
            }
            while turns_read.load(std::sync::atomic::Ordering::Relaxed) < sent * watchers {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
    } else {
        for id in ids {
            client.send_message(basic_send(id, "to my watcher", false)).await.expect("send");
        }
    }
    join_all(tasks).await;
    let samples = std::mem::take(&mut *samples.lock().expect("samples"));
    (samples, per_stream)
}

/// Commit → watcher receipt with 1 … 10,000 watchers on one context, and one watcher on
/// each of 1,000 contexts.
pub async fn watch_latency(server: &Server, scale: Scale) -> Vec<Row> {
    let mut client = server.client().await;
    let mut rows = Vec::new();
    let messages = scale.pick(5, 30);
    for watchers in scale.pick(vec![1, 10], vec![1, 100, 1000, 10_000]) {
        let id = create(&mut client, "watched").await;
        let started = Instant::now();
        let (samples, per_stream) =
            watchers_on(server, std::slice::from_ref(&id), watchers, messages, Trigger::Turn).await;
        rows.push(
            Row::new("watch", format!("{watchers} watchers on one context"), Summary::of(samples, started.elapsed()))
                .note("bytes_per_idle_stream", per_stream),
        );
    }
    // The fan-out alone: one event per save and no run competing with it for the cores.
    for watchers in scale.pick(vec![10], vec![1000]) {
        let id = create(&mut client, "renamed").await;
        let started = Instant::now();
        let (samples, _) = watchers_on(server, std::slice::from_ref(&id), watchers, messages, Trigger::Rename).await;
        let case = format!("{watchers} watchers on one context, a rename (one event, no run)");
        rows.push(Row::new("watch", case, Summary::of(samples, started.elapsed())));
    }
    let contexts = scale.pick(20, 1000);
    let mut ids = Vec::with_capacity(contexts);
    for _ in 0..contexts {
        ids.push(create(&mut client, "one watcher each").await);
    }
    let started = Instant::now();
    let (samples, per_stream) = watchers_on(server, &ids, contexts, 1, Trigger::Turn).await;
    rows.push(
        Row::new("watch", format!("{contexts} contexts, one watcher each"), Summary::of(samples, started.elapsed()))
            .note("bytes_per_idle_stream", per_stream),
    );
    rows
}

/// SendMessage and GetState latency against conversations of 10 … 100,000 messages.
pub async fn history(engine: Engine, scale: Scale) -> Vec<Row> {
    let sizes: Vec<u64> = scale.pick(vec![10, 1000], vec![10, 1000, 10_000, 100_000]);
    let dir = tempfile::tempdir().expect("temp dir");
    let ids: Vec<_> = sizes.iter().map(|&n| load::fill(dir.path(), 1, n)[0]).collect();
    let server = engine.serve(dir, &[], &[]).await;
    let mut client = server.client().await;
    let samples_per = scale.pick(10, 100);
    let mut rows = Vec::new();
    let mut base_send = std::collections::HashMap::new();
    let mut base_get = None;
    for (size, id) in sizes.iter().zip(&ids) {
        let id = id.to_string();
        // First touch loads the conversation; measure the steady state after it.
        ctxd_tests::get(&mut client, &id).await;
        // What a client that shows the last 50 messages reads (it pages back for older ones),
        // measured before the sends below (whose FULL responses of every message would leave
        // both ends' buffers and caches churned by megabytes of other traffic).
        let started = Instant::now();
        let mut limited = Vec::with_capacity(samples_per);
        for _ in 0..samples_per {
            let request = pb::GetStateRequest { context_id: id.clone(), message_limit: 50, ..Default::default() };
            let t = Instant::now();
            let state = client.get_state(request).await.expect("get").into_inner().state.expect("state");
            limited.push(t.elapsed());
            assert!(state.messages.len() <= 50, "at most the limit");
        }
        let limited = Summary::of(limited, started.elapsed());
        let base = *base_get.get_or_insert(limited.p50_us);
        rows.push(
            Row::new("history", format!("GetState at {size} messages, message_limit 50"), limited.clone())
                .note("p50_vs_10_messages", format!("{:.2}", limited.p50_us / base)),
        );
        let mut events = watch(&mut client, &id).await;
        for (view, name) in [(pb::StateView::Basic, "BASIC"), (pb::StateView::Full, "FULL")] {
            let started = Instant::now();
            let mut sends = Vec::with_capacity(samples_per);
            for _ in 0..samples_per {
                let mut request = send_request(&id, "one more", false);
                request.view = view as i32;
                let t = Instant::now();
                let sent = client.send_message(request).await.expect("send");
                sends.push(t.elapsed());
                until_idle(&mut events, sent.into_inner().state.map(|s| s.revision).unwrap_or(0)).await;
            }
            let send = Summary::of(sends, started.elapsed());
            let base = *base_send.entry(name).or_insert(send.p50_us);
            rows.push(
                Row::new("history", format!("SendMessage at {size} messages, view {name}"), send.clone())
                    .note("p50_vs_10_messages", format!("{:.2}", send.p50_us / base)),
            );
        }
        let started = Instant::now();
        let mut gets = Vec::with_capacity(samples_per / 2);
        for _ in 0..(samples_per / 2).max(3) {
            let t = Instant::now();
            ctxd_tests::get(&mut client, &id).await;
            gets.push(t.elapsed());
        }
        rows.push(Row::new("history", format!("GetState at {size} messages"), Summary::of(gets, started.elapsed())));
    }
    rows
}

/// Process start to serving with many saved contexts, and disk bytes per message.
pub async fn restart(engine: Engine, scale: Scale) -> Vec<Row> {
    // Copying 100,000 contexts into a cluster one by one would take most of the run.
    let full = if engine == Engine::Nats { (10_000, 10) } else { (100_000, 10) };
    let (contexts, per_context) = scale.pick((1000, 10), full);
    let dir = tempfile::tempdir().expect("temp dir");
    let filled = Instant::now();
    let ids = load::fill(dir.path(), contexts, per_context);
    let rocks_bytes = load::disk_bytes(dir.path());
    let messages = contexts as u64 * per_context;
    let mut samples = Vec::new();
    let mut first_get = Vec::new();
    let mut server = engine.serve(dir, &[], &[]).await;
    let load_time = filled.elapsed();
    let bytes = if engine == Engine::Nats { engine.stored_bytes(&server) } else { rocks_bytes };
    for round in 0..3 {
        if round > 0 {
            server.terminate().await;
            server.restart().await;
        }
        samples.push(server.ready_after);
        let mut client = server.client().await;
        let t = Instant::now();
        ctxd_tests::get(&mut client, &ids[ids.len() / 2 + round].to_string()).await;
        first_get.push(t.elapsed());
    }
    vec![
        Row::new(
            "restart",
            format!("start → serving, {contexts} contexts / {messages} messages"),
            Summary::of(samples, Duration::from_secs(1)),
        )
        .note("disk_bytes_per_message", bytes / messages.max(1))
        .note("bulk_load_s", format!("{:.1}", load_time.as_secs_f64())),
        Row::new("restart", "first GetState of a context after start", Summary::of(first_get, Duration::from_secs(1))),
    ]
}

/// Many contexts, many senders, one watcher per context, for a while: p99 and errors.
pub async fn mixed(server: &Server, scale: Scale) -> Vec<Row> {
    let (contexts, senders, seconds) = scale.pick((40, 8, 3), (1000, 64, 60));
    let conns = connections(server, contexts + senders).await;
    let mut setup = conns[0].clone();
    let mut ids = Vec::with_capacity(contexts);
    for _ in 0..contexts {
        ids.push(create(&mut setup, "mixed").await);
    }
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut watchers = Vec::with_capacity(contexts);
    for (n, id) in ids.iter().enumerate() {
        let mut client = conns[n % conns.len()].clone();
        let mut events = watch(&mut client, id).await;
        let (errors, received, stop) = (Arc::clone(&errors), Arc::clone(&received), Arc::clone(&stop));
        watchers.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.notified() => return,
                    event = events.message() => match event {
                        Ok(Some(_)) => { received.fetch_add(1, std::sync::atomic::Ordering::Relaxed); }
                        Ok(None) => return,
                        Err(_) => { errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed); return; }
                    },
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let sends = (0..senders).map(|s| {
        let mut client = conns[s % conns.len()].clone();
        let mine: Vec<String> = ids.iter().skip(s).step_by(senders).cloned().collect();
        let errors = Arc::clone(&errors);
        async move {
            let mut samples = Vec::new();
            let mut turn = 0usize;
            while Instant::now() < deadline && !mine.is_empty() {
                let id = &mine[turn % mine.len()];
                turn += 1;
                let t = Instant::now();
                match client.send_message(basic_send(id, "mixed load", true)).await {
                    Ok(_) => samples.push(t.elapsed()),
                    Err(_) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            samples
        }
    });
    let samples: Vec<Duration> = join_all(sends).await.into_iter().flatten().collect();
    let wall = started.elapsed();
    stop.notify_waiters();
    for watcher in watchers {
        watcher.abort();
    }
    vec![
        Row::new(
            "mixed",
            format!("{contexts} contexts, {senders} senders (wait=true), 1 watcher each, {seconds} s"),
            Summary::of(samples, wall),
        )
        .note("errors", errors.load(std::sync::atomic::Ordering::Relaxed))
        .note("events_received", received.load(std::sync::atomic::Ordering::Relaxed)),
    ]
}
