//! Many ctxd nodes on one 3-server NATS cluster (docs/cluster.md): turns at a fixed,
//! unsaturated load with 1, 2, 3 and 5 nodes (calls reaching the node that holds the
//! context's partition, and spread by a round-robin load balancer), a change made on one node
//! seen by a watcher on another, and failover after `kill -9`. CPU is read per node: on this
//! machine's 2 shared cores, the CPU a served turn costs is the figure, not the throughput.

use std::time::{Duration, Instant};

use ctxd_tests::nats::{NatsCluster, gauge, runner};
use ctxd_tests::v1 as pb;
use ctxd_tests::{Client, Server, create, metrics, send_request};
use futures::future::join_all;
use pb::watch_state_response::Kind;

use crate::report::Row;
use crate::scenarios::{Scale, commit_to_receipt};
use crate::stats::Summary;

/// The lease TTL of the nodes measured (the default).
const LEASE_TTL_MS: u64 = 1500;
/// Each client's pause between turns: the load stays the same whatever the number of nodes.
const THINK: Duration = Duration::from_millis(40);
/// How long the nodes are watched doing nothing, for their fixed cost.
const IDLE: Duration = Duration::from_secs(3);

struct Nodes {
    nodes: Vec<Server>,
    _cluster: NatsCluster,
}

impl Nodes {
    async fn start(count: usize, mock_delay_ms: u64) -> Self {
        let cluster = NatsCluster::start(3).await;
        let nodes = cluster.ctxd_nodes("bench", count, LEASE_TTL_MS, mock_delay_ms).await;
        Self { nodes, _cluster: cluster }
    }

    fn cpu(&self) -> Vec<Duration> {
        self.nodes.iter().map(Server::cpu_time).collect()
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
    let (clients, turns) = scale.pick((6, 5), (24, 60));
    for count in [1, 2, 3, 5] {
        let nodes = Nodes::start(count, 0).await;
        rows.push(turns_on(&nodes, clients, turns, Routing::Holder).await);
        if count > 1 {
            rows.push(turns_on(&nodes, clients, turns, Routing::RoundRobin).await);
        }
        if count == 3 {
            rows.push(cross_node_watch(&nodes, scale.pick(10, 200)).await);
        }
    }
    rows.push(failover(scale.pick(2, 20)).await);
    rows
}

/// Which node each client's calls reach.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// The node holding the context's partition (a load balancer that routes by context).
    Holder,
    /// A round-robin load balancer: each call the next node, most sent on to the holder.
    RoundRobin,
}

/// `clients` concurrent clients, a context each, `turns` turns each (wait=true, a pause
/// between them), routed as `routing` says. Notes the CPU per turn of all nodes and of each,
/// the partitions each holds, and the share of turns sent on to another node.
async fn turns_on(nodes: &Nodes, clients: usize, turns: usize, routing: Routing) -> Row {
    let count = nodes.nodes.len();
    let mut runs: Vec<(Vec<Client>, String)> = Vec::new();
    for c in 0..clients {
        let mut first = nodes.nodes[c % count].client().await;
        let id = create(&mut first, "bench").await;
        let holder = runner(&nodes.nodes, async {
            ctxd_tests::get(&mut first, &id).await;
        })
        .await;
        let callers: Vec<usize> = match routing {
            Routing::Holder => vec![holder],
            Routing::RoundRobin => (0..count).map(|k| (c + k) % count).collect(),
        };
        let mut clients = Vec::new();
        for node in callers {
            clients.push(nodes.nodes[node].client().await);
        }
        runs.push((clients, id));
    }
    // What the nodes cost doing nothing (heartbeats, balancing): per node, per second.
    let idle = nodes.cpu();
    tokio::time::sleep(IDLE).await;
    let idle_ms_per_s: Vec<String> = nodes
        .cpu()
        .iter()
        .zip(&idle)
        .map(|(after, before)| format!("{:.1}", after.saturating_sub(*before).as_secs_f64() * 1e3 / IDLE.as_secs_f64()))
        .collect();
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
            tokio::time::sleep(THINK).await;
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
    let held: Vec<String> = gauge(&nodes.nodes, "ctxd_leases_held").await.iter().map(|h| format!("{h:.0}")).collect();
    let case = match routing {
        Routing::Holder => format!("{clients} clients, {count} node(s), calls reach the partition's node"),
        Routing::RoundRobin => format!("{clients} clients, {count} nodes, calls round-robin"),
    };
    let mut row = Row::new("cluster", case, Summary::of(samples, wall))
        .note("cpu_us_per_turn_all_nodes", format!("{:.0}", used.iter().sum::<f64>() * 1e6 / total))
        .note("cpu_us_per_turn_by_node", per_node.join("/"))
        .note("partitions_by_node", held.join("/"))
        .note("calls_sent_on_pct", format!("{:.0}", sent_on * 100.0 / total))
        .note("idle_cpu_ms_per_s_by_node", idle_ms_per_s.join("/"));
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
    for _ in 0..kills {
        let mut first = nodes.nodes[0].client().await;
        let id = create(&mut first, "failover").await;
        let victim = runner(&nodes.nodes, async {
            first.send_message(send_request(&id, &said, false)).await.expect("send");
        })
        .await;
        let watcher = (victim + 1) % 3;
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
        ctxd_tests::nats::balanced(&nodes.nodes).await;
    }
    Row::new(
        "cluster",
        format!("failover: kill -9 of the node running a reply to the run resuming elsewhere ({kills} kills)"),
        Summary::of(samples, started.elapsed()),
    )
    .note("lease_ttl_ms", LEASE_TTL_MS)
}
