//! `ctxd-bench`: starts a real ctxd (release build next to this binary) on loopback and
//! measures it scenario by scenario, each beside the physical floor of one synced
//! RocksDB write measured in the same run.

// Like a test, a benchmark has nothing to recover to: any failure aborts the run loudly.
#![allow(clippy::expect_used)]

mod branches;
mod cluster;
mod crosscheck;
mod engine;
mod floor;
mod join;
mod load;
mod partitions;
mod report;
mod scenarios;
mod stats;

use clap::Parser;

use engine::Engine;
use report::Row;
use scenarios::Scale;

#[derive(Debug, Parser)]
#[command(name = "ctxd-bench", about = "Benchmarks ctxd against the physical floor")]
struct Args {
    /// Scenarios to run (default: all): floor, action, crosscheck, turn, watch, history, branches,
    /// restart, mixed, cluster (3 NATS servers and 1, 2, 3 or 5 ctxd nodes, whatever --store
    /// says); on request only: join (a node joining a NATS cluster of a million contexts),
    /// partitions (the saves one partition's stream leader takes).
    scenarios: Vec<String>,
    /// Seconds instead of minutes: small sizes, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
    /// An argument for the ctxd under test, e.g. `--server-arg=--metrics-listen --server-arg=127.0.0.1:0`
    /// (repeat for each; by default the metrics listener is off, as in the tests).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Turn authentication on (an HS256 secret) and send a JWT with every call, to measure
    /// what authentication costs (with no per-tenant run limit in the way of 64 clients).
    #[arg(long)]
    jwt: bool,
    /// The store ctxd runs on: RocksDB, or a 3-server NATS JetStream cluster started on
    /// loopback for each server (replicas 3).
    #[arg(long, value_enum, default_value = "rocksdb")]
    store: Engine,
}

const ALL: [&str; 10] =
    ["floor", "action", "crosscheck", "turn", "watch", "history", "branches", "restart", "mixed", "cluster"];

/// Scenarios run only when named: a million contexts take minutes and gigabytes to write.
const ON_REQUEST: [&str; 2] = ["join", "partitions"];

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let chosen: Vec<String> = if args.scenarios.is_empty() {
        // The branches scenario reads RocksDB directly.
        ALL.iter().filter(|s| args.store == Engine::Rocksdb || **s != "branches").map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios.clone()
    };
    if let Some(unknown) = chosen.iter().find(|s| !ALL.contains(&s.as_str()) && !ON_REQUEST.contains(&s.as_str())) {
        eprintln!(
            "ctxd-bench: unknown scenario {unknown:?}; choose from {}, {}",
            ALL.join(", "),
            ON_REQUEST.join(", ")
        );
        std::process::exit(2);
    }
    if args.store == Engine::Nats && chosen.iter().any(|s| s == "branches") {
        eprintln!("ctxd-bench: the branches scenario reads RocksDB directly; run it without --store nats");
        std::process::exit(2);
    }
    let scale = Scale { quick: args.quick };
    let wants = |name: &str| chosen.iter().any(|s| s == name);

    // The floor always runs: every other figure is read against it.
    let (mut rows, floor) = floor::measure(args.quick);
    let secret_dir = tempfile::tempdir().expect("temp dir");
    let mut server_args = args.server_args.clone();
    if args.jwt {
        let secret = secret_dir.path().join("jwt-secret");
        std::fs::write(&secret, ctxd_tests::tokens::HS256_SECRET).expect("secret file");
        server_args.extend(["--jwt-hs256-secret-file".into(), secret.display().to_string()]);
        server_args.extend(["--max-active-runs-per-tenant".into(), "100000".into()]);
    }
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let mut server = scenarios::start_server(args.store, &server_args).await;
    if args.jwt {
        let claims = ctxd_tests::tokens::claims("bench");
        server.token = Some(ctxd_tests::tokens::hs256(ctxd_tests::tokens::HS256_SECRET, &claims));
    }
    let mut add = |more: Vec<Row>| {
        for row in &more {
            eprintln!("done: {} / {}", row.scenario, row.case);
        }
        rows.extend(more);
    };
    if wants("action") {
        add(scenarios::measured(&server, scenarios::action(&server, scale, floor)).await);
    }
    if wants("crosscheck") {
        let requests = if args.quick { 20 } else { 2000 };
        add(scenarios::measured(&server, crosscheck::create_context(&server, requests, args.quick)).await);
    }
    if wants("turn") {
        add(scenarios::measured(&server, scenarios::turn(&server, scale, floor.p50_us)).await);
    }
    if wants("watch") {
        add(scenarios::measured(&server, scenarios::watch_latency(&server, scale)).await);
    }
    if wants("mixed") {
        add(scenarios::measured(&server, scenarios::mixed(&server, scale)).await);
    }
    drop(server);
    if wants("history") {
        add(scenarios::history(args.store, scale).await);
    }
    if wants("branches") {
        add(branches::actions(scale).await);
        add(branches::load(scale));
    }
    if wants("restart") {
        add(scenarios::restart(args.store, scale).await);
    }
    if wants("cluster") {
        add(cluster::cluster(scale).await);
    }
    if wants("join") {
        add(join::join(scale).await);
    }
    if wants("partitions") {
        add(partitions::partitions(scale).await);
    }

    if args.store == Engine::Nats {
        rows =
            rows.into_iter()
                .map(|row| {
                    if matches!(row.scenario, "floor" | "cluster" | "join") {
                        row
                    } else {
                        row.note("store", "nats R3")
                    }
                })
                .collect();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        println!("{}", report::table(&rows));
    }
}
