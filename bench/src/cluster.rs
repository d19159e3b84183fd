//! Many ctxd nodes on one 3-server NATS cluster (docs/cluster.md): turns with 1 and 3 nodes
//! (each client's context run by the node it calls, every call sent on to another node, and
//! calls spread by a round-robin load balancer, with where the runs end up), a change made on
//! one node seen by a watcher on another, and failover after `kill -9`.
//! CPU is read per node, so a turn's cost per node can be projected to more machines.

use std::time::{Duration, Instant};

use ctxd_tests::nats::NatsCluster;
use ctxd_tests::v1 as pb;
use ctxd_tests::{Client, Server, create, metrics, send_request};
use futures::future::join_all;
use pb::watch_state_response::Kind;

use crate::report::Row;
use crate::scenarios::{Scale, commit_to_receipt};
use crate::stats::Summary;

/// The lease TTL of the nodes measured (failover waits for it).
const LEASE_TTL_MS: u64 = 2000;

struct Nodes {
    nodes: Vec<Server>,
    _cluster: NatsCluster,
}

impl Nodes {
    async fn start(count: usize, mock_delay_ms: u64) -> Self {
        let cluster = NatsCluster::start(3).await;
        let mut nodes = Vec::new();
        for i in 1..=count {
            nodes.push(cluster.ctxd_node(&format!("bench{i}"), LEASE_TTL_MS, mock_delay_ms).await);
        }
        Self { nodes, _cluster: cluster }
    }

    fn cpu(&self) -> Vec<Duration> {
        self.nodes.iter().map(Server::cpu_time).collect()
    }

    /// How many contexts each node runs.
    async fn leases_held(&self) -> Vec<f64> {
        let mut held = Vec::new();
        for node in &self.nodes {
            held.push(metrics::value(&metrics::scrape(node).await, "ctxd_leases_held", &[]));
        }
        held
    }

    /// Unary calls the nodes have sent on to another node so far, all nodes together.
    async fn forwarded(&self) -> f64 {
        let mut sent = 0.0;
        for node in &self.nodes {
            sent += metrics::value(&metrics::scrape(node).await, "ctxd_forwarded_calls_total", &[("outcome", "ok")]);
        }
        sent
    }
}

pub async fn cluster(scale: Scale) -> Vec<Row> {
    let mut rows = Vec::new();
    let (clients, turns) = scale.pick((6, 5), (24, 40));
    for count in [1, 3] {
        let nodes = Nodes::start(count, 0).await;
        rows.push(turns_on(&nodes, clients, turns, Routing::Home).await);
        if count == 3 {
            rows.push(turns_on(&nodes, clients, turns, Routing::Forwarded).await);
            rows.push(turns_on(&nodes, clients, turns, Routing::RoundRobin).await);
            rows.push(cross_node_watch(&nodes, scale.pick(10, 200)).await);
        }
    }
    rows.push(failover(scale.pick(2, 10)).await);
    rows
}

/// Which node each client's calls reach; `home` is node `client % nodes`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// Every call reaches `home`, which runs the context.
    Home,
    /// `home` runs the context (it got the first call) and every other call reaches the next
    /// node, so each is sent on once.
    Forwarded,
    /// A round-robin load balancer: every context is created on node 1, its first call after
    /// that reaches `home`, and each later call the next node in turn. Where the runs end up
    /// is what this measures (docs/cluster.md, "Spread").
    RoundRobin,
}

/// `clients` concurrent clients, a context each, `turns` turns each (wait=true), routed as
/// `routing` says. Notes the CPU per turn of each node, how many of these contexts each node
/// runs afterwards (its `ctxd_leases_held`), and the share of turns sent on to another node.
async fn turns_on(nodes: &Nodes, clients: usize, turns: usize, routing: Routing) -> Row {
    let count = nodes.nodes.len();
    let held_before = nodes.leases_held().await;
    let mut runs: Vec<(Vec<Client>, String)> = Vec::new();
    for c in 0..clients {
        let home = c % count;
        let creator = if routing == Routing::RoundRobin { 0 } else { home };
        let id = create(&mut nodes.nodes[creator].client().await, "bench").await;
        // The first call takes the context for the node it reaches.
        ctxd_tests::get(&mut nodes.nodes[home].client().await, &id).await;
        let callers = match routing {
            Routing::Home => vec![home],
            Routing::Forwarded => vec![(home + 1) % count],
            Routing::RoundRobin => (1..=count).map(|k| (home + k) % count).collect(),
        };
        let mut clients = Vec::new();
        for node in callers {
            clients.push(nodes.nodes[node].client().await);
        }
        runs.push((clients, id));
    }
    let forwarded = nodes.forwarded().await;
    let cpu = nodes.cpu();
    let started = Instant::now();
    let runs = runs.into_iter().map(|(mut clients, id)| async move {
        let mut samples = Vec::with_capacity(turns);
        for turn in 0..turns {
            let caller = turn % clients.len();
            let t = Instant::now();
            clients[caller].send_message(send_request(&id, "hello there", true)).await.expect("turn");
            samples.push(t.elapsed());
        }
        samples
    });
    let samples: Vec<Duration> = join_all(runs).await.into_iter().flatten().collect();
    let wall = started.elapsed();
    let used: Vec<f64> =
        nodes.cpu().iter().zip(&cpu).map(|(after, before)| after.saturating_sub(*before).as_secs_f64()).collect();
    let sent_on = nodes.forwarded().await - forwarded;
    let total = samples.len() as f64;
    let per_node: Vec<String> = used.iter().map(|s| format!("{:.0}", s * 1e6 / total)).collect();
    let held: Vec<String> = nodes
        .leases_held()
        .await
        .iter()
        .zip(&held_before)
        .map(|(after, before)| format!("{:.0}", after - before))
        .collect();
    let case = match (count, routing) {
        (1, _) => format!("{clients} clients, 1 node"),
        (_, Routing::Home) => format!("{clients} clients over {count} nodes, each context run by the node called"),
        (_, Routing::Forwarded) => {
            format!("{clients} clients over {count} nodes, every call sent on to the node running it")
        }
        (_, Routing::RoundRobin) => {
            format!("{clients} clients, contexts created on node 1, calls round-robin over {count} nodes")
        }
    };
    let mut row = Row::new("cluster", case, Summary::of(samples, wall))
        .note("cpu_us_per_turn_all_nodes", format!("{:.0}", used.iter().sum::<f64>() * 1e6 / total))
        .note("cpu_us_per_turn_by_node", per_node.join("/"))
        .note("contexts_run_by_node", held.join("/"))
        .note("calls_sent_on_pct", format!("{:.0}", sent_on * 100.0 / total));
    row.server_cpu_ms = Some((used.iter().sum::<f64>() * 1e3) as u64);
    row
}

/// A context run by node 1, watched on node 3 (relayed): from the save of each user message
/// on node 1 to its event's receipt by the watcher on node 3.
async fn cross_node_watch(nodes: &Nodes, messages: usize) -> Row {
    let mut a = nodes.nodes[0].client().await;
    let mut c = nodes.nodes[2].client().await;
    let id = create(&mut a, "watched across nodes").await;
    ctxd_tests::get(&mut a, &id).await;
    let mut events = c
        .watch_state(pb::WatchStateRequest { context_id: id.clone(), from_revision: 0, message_limit: 0 })
        .await
        .expect("watch")
        .into_inner();
    events.message().await.expect("watch").expect("snapshot");
    let started = Instant::now();
    let mut samples = Vec::with_capacity(messages);
    for _ in 0..messages {
        a.send_message(send_request(&id, "seen elsewhere", true)).await.expect("turn");
        // The user message's event, then the rest of the turn.
        loop {
            let event = events.message().await.expect("watch").expect("open");
            if let Some(Kind::MessageAppended(message)) = &event.kind
                && message.role == pb::Role::User as i32
            {
                samples.extend(commit_to_receipt(&event));
            }
            if matches!(&event.kind, Some(Kind::StateChanged(s)) if s.state == pb::FsmState::Idle as i32) {
                break;
            }
        }
    }
    Row::new(
        "cluster",
        "a change on node 1 seen by a watcher on node 3 (relayed)",
        Summary::of(samples, started.elapsed()),
    )
}

/// `kills` times: a long reply streams on the node running the context; that node is killed
/// with `kill -9`; measured from the kill to the run's first saved step on another node (its
/// event reaching a watcher on a third node). The killed node is started again each time.
async fn failover(kills: usize) -> Row {
    let mut nodes = Nodes::start(3, 20).await;
    let said = (0..80).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let mut samples = Vec::with_capacity(kills);
    let started = Instant::now();
    for k in 0..kills {
        let (victim, watcher) = (k % 3, (k + 2) % 3);
        let mut owner = nodes.nodes[victim].client().await;
        let id = create(&mut owner, "failover").await;
        owner.send_message(send_request(&id, &said, false)).await.expect("send");
        let mut far = nodes.nodes[watcher].client().await;
        let mut events = far
            .watch_state(pb::WatchStateRequest { context_id: id.clone(), from_revision: 0, message_limit: 0 })
            .await
            .expect("watch")
            .into_inner();
        // Streaming: some deltas arrived.
        let mut revision = 0;
        let mut deltas = 0;
        while deltas < 5 {
            let event = events.message().await.expect("watch").expect("open");
            revision = revision.max(event.revision);
            if matches!(event.kind, Some(Kind::MessageDelta(_))) {
                deltas += 1;
            }
        }
        let killed = Instant::now();
        nodes.nodes[victim].kill9().await;
        loop {
            let event = events.message().await.expect("watch").expect("open");
            if event.revision > revision && !matches!(event.kind, Some(Kind::MessageDelta(_))) {
                samples.push(killed.elapsed());
                break;
            }
        }
        nodes.nodes[victim].restart().await;
    }
    Row::new(
        "cluster",
        format!("failover: kill -9 of the node running a reply to the run resuming elsewhere ({kills} kills)"),
        Summary::of(samples, started.elapsed()),
    )
    .note("lease_ttl_ms", LEASE_TTL_MS)
}
