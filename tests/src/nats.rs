//! A NATS JetStream cluster on loopback for the tests of the NATS store: real `nats-server`
//! processes (the release `make setup` installs), free ports, temporary store dirs, each with
//! a config file of the shape the README shows. Dropping the cluster kills its servers.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Whether the black-box suites run against the NATS store (`CTXD_TEST_STORE=nats`) rather
/// than the embedded RocksDB.
pub fn nats_under_test() -> bool {
    std::env::var("CTXD_TEST_STORE").is_ok_and(|store| store == "nats")
}

/// The `nats-server` that `CTXD_NATS_SERVER` names (the Makefile sets it), else the one
/// `make setup` installs in the project's venv, else one on the PATH.
pub fn nats_server() -> PathBuf {
    if let Some(named) = std::env::var_os("CTXD_NATS_SERVER") {
        return PathBuf::from(named);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-nats/bin/nats-server");
    if venv.exists() { venv } else { PathBuf::from("nats-server") }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

struct Node {
    name: String,
    client_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `size` servers clustered with JetStream (a single server for `size == 1`).
    ///
    /// The ports are picked free, then given to the servers; in between, another test on this
    /// machine can take one (CI saw a cluster one server short answer "no suitable peers for
    /// placement" until the test gave up). A server that cannot listen exits, so a cluster
    /// that loses one at start is stopped and started again on other ports.
    pub async fn start(size: usize) -> Self {
        Self::start_with(size, "").await
    }

    /// As `start`, each server's config file ending with `extra` (TLS, authorization, ...).
    pub async fn start_with(size: usize, extra: &str) -> Self {
        const ATTEMPTS: usize = 5;
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let mut cluster = Self::configure(size, extra);
            for i in 0..size {
                cluster.start_node(i);
            }
            match cluster.wait_for_leader().await {
                Ok(()) => return cluster,
                Err(exited) => failures.push(exited),
            }
        }
        panic!("no NATS cluster of {size} started in {ATTEMPTS} attempts:\n{}", failures.join("\n"));
    }

    /// Config files for `size` servers on fresh free ports, in a fresh directory.
    fn configure(size: usize, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::with_capacity(size);
        for (i, (client_port, cluster_port)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, port))| format!("nats://127.0.0.1:{port}"))
                .collect();
            let cluster = if size > 1 {
                format!(
                    "cluster {{\n  name: ctxd\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let text = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client_port}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n{cluster}{extra}\n",
                store.display()
            );
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(&config, text).expect("write nats config");
            nodes.push(Node { name, client_port: *client_port, config, child: None });
        }
        Self { dir, nodes }
    }

    /// Until the servers have elected the leader that places streams (ctxd would wait for it
    /// too; waiting here keeps that out of the time tests give ctxd to start). Fails with the
    /// logs if a server exits meanwhile (a port taken since it was picked).
    async fn wait_for_leader(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(exited) = self.exited() {
                return Err(format!("{exited} exited at start:\n{}", self.logs()));
            }
            // A server listens for routes after it says it is ready, so both lines count.
            let clustered = self.nodes.len() > 1;
            let logs: Vec<String> = (0..self.nodes.len()).map(|i| self.log(i)).collect();
            let ready = logs.iter().all(|log| {
                log.contains("Server is ready") && (!clustered || log.contains("Listening for route connections"))
            });
            let led = !clustered || logs.iter().any(|log| log.contains("JetStream cluster new metadata leader"));
            if (ready && led) || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The name of a server that was started and has exited, if any.
    fn exited(&mut self) -> Option<String> {
        self.nodes
            .iter_mut()
            .find_map(|n| n.child.as_mut().is_some_and(|c| !matches!(c.try_wait(), Ok(None))).then(|| n.name.clone()))
    }

    /// Kills server `i` (from 0) with SIGKILL: no chance to sync or hand anything over.
    pub async fn kill9(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("server running");
        child.start_kill().expect("kill -9");
        child.wait().await.expect("wait");
    }

    /// Starts server `i` again on its store dir (after `kill9`).
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "kill the server first");
        self.start_node(i);
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let path = self.dir.path().join(format!("{}.log", node.name));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log file");
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nats-server (make setup installs it)");
        node.child = Some(child);
    }

    /// A ctxd node of a cluster of them on these servers (docs/cluster.md), named `node_id`,
    /// with a metrics listener.
    pub async fn ctxd_node(&self, node_id: &str, lease_ttl_ms: u64, mock_delay_ms: u64) -> crate::Server {
        self.ctxd_node_with(node_id, lease_ttl_ms, mock_delay_ms, &[], &[]).await
    }

    /// As `ctxd_node`, with more flags and environment variables.
    pub async fn ctxd_node_with(
        &self,
        node_id: &str,
        lease_ttl_ms: u64,
        mock_delay_ms: u64,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> crate::Server {
        let (urls, ttl) = (self.urls(), lease_ttl_ms.to_string());
        let mut args = vec![
            "--store",
            "nats",
            "--nats-url",
            &urls,
            "--lease-ttl-ms",
            &ttl,
            "--node-id",
            node_id,
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        args.extend(extra);
        crate::Server::start_with_env(mock_delay_ms, &args, env).await
    }

    /// `count` ctxd nodes named `{name}1`, `{name}2`, …, started one after another, once the
    /// 16 partitions are spread over them and unchanged for a second (the first node takes
    /// them all, then hands each later node its share a beat after hearing it).
    pub async fn ctxd_nodes(
        &self,
        name: &str,
        count: usize,
        lease_ttl_ms: u64,
        mock_delay_ms: u64,
    ) -> Vec<crate::Server> {
        let mut nodes = Vec::new();
        for i in 1..=count {
            nodes.push(self.ctxd_node(&format!("{name}{i}"), lease_ttl_ms, mock_delay_ms).await);
        }
        balanced(&nodes).await;
        nodes
    }

    /// The servers' client URLs, comma-separated, as `--nats-url` takes them.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client_port)).collect::<Vec<_>>().join(",")
    }

    /// Bytes of every server's JetStream store (all replicas together).
    pub fn store_bytes(&self) -> u64 {
        fn size(path: &std::path::Path) -> u64 {
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => std::fs::read_dir(path)
                    .map(|entries| entries.filter_map(Result::ok).map(|e| size(&e.path())).sum())
                    .unwrap_or(0),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        self.nodes.iter().map(|n| size(&self.dir.path().join(&n.name))).sum()
    }

    /// The servers' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        (0..self.nodes.len()).map(|i| format!("--- {} ---\n{}", self.nodes[i].name, self.log(i))).collect()
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.nodes[i].name))).unwrap_or_default()
    }
}

/// A gauge of each node, in order.
pub async fn gauge(nodes: &[crate::Server], name: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for node in nodes {
        values.push(crate::metrics::value(&crate::metrics::scrape(node).await, name, &[]));
    }
    values
}

/// Waits until every node holds some of the 16 partitions, all of them held, and nothing
/// moved for a second.
pub async fn balanced(nodes: &[crate::Server]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut stable = (Vec::new(), 0);
    loop {
        let held = gauge(nodes, "ctxd_leases_held").await;
        let spread = held.iter().sum::<f64>() == 16.0 && held.iter().all(|&h| h >= 1.0);
        stable = if spread && held == stable.0 { (held, stable.1 + 1) } else { (held, 0) };
        if stable.1 >= 10 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the 16 partitions were not spread: {:?}", stable.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node of `nodes` that runs the context `call` just loaded (the one holding its
/// partition, whichever node was called): the node whose loaded contexts grew.
pub async fn runner<F: Future<Output = ()>>(nodes: &[crate::Server], call: F) -> usize {
    let before = gauge(nodes, "ctxd_contexts_loaded").await;
    call.await;
    let after = gauge(nodes, "ctxd_contexts_loaded").await;
    (0..nodes.len()).find(|&i| after[i] > before[i]).expect("a node loaded the context")
}
