//! What one partition's stream leader takes (docs/cluster.md, the capacity projection):
//! saves through the NATS store itself, as a node holding every partition makes them (each
//! fenced by its lease, so a partition's saves go one batch at a time), from writers whose
//! contexts all fall in one partition, then spread over all 16.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ctxd::domain::{
    Change, Context, ContextConfig, ContextId, ContextKey, Message, MessageId, Phase, Role, TenantId, Timestamp,
};
use ctxd::store::{Backend, Nats, NatsOptions, Save};
use ctxd_tests::nats::NatsCluster;

use crate::report::Row;
use crate::scenarios::Scale;
use crate::stats::Summary;

const PARTITIONS: u32 = 16;

pub async fn partitions(scale: Scale) -> Vec<Row> {
    let cluster = NatsCluster::start(3).await;
    let urls = cluster.urls().split(',').map(String::from).collect();
    let nats = Arc::new(Nats::open(&NatsOptions::plain(urls, "ctxd", 3, PARTITIONS)).await.expect("open the cluster"));
    nats.require_leases();
    for partition in 0..PARTITIONS {
        let lease = nats.lease(partition).await.expect("lease");
        nats.write_lease(partition, "bench", "bench", lease.term).await.expect("take").expect("taken");
    }
    let (writers, saves) = scale.pick((8, 5), (64, 60));
    let mut rows = Vec::new();
    for spread in [false, true] {
        let contexts = contexts(&nats, writers, spread).await;
        let started = Instant::now();
        let runs = contexts.into_iter().map(|ctx| {
            let nats = Arc::clone(&nats);
            async move { save_turns(&nats, ctx, saves).await }
        });
        let samples: Vec<Duration> = futures::future::join_all(runs).await.into_iter().flatten().collect();
        let wall = started.elapsed();
        let per_second = samples.len() as f64 / wall.as_secs_f64();
        let (case, leaders) = if spread {
            (format!("{writers} writers, contexts over all {PARTITIONS} partitions"), f64::from(PARTITIONS))
        } else {
            (format!("{writers} writers, every context in one partition"), 1.0)
        };
        rows.push(
            Row::new("partitions", case, Summary::of(samples, wall))
                .note("saves_per_s_per_partition", format!("{:.0}", per_second / leaders)),
        );
    }
    nats.close().await;
    rows
}

/// `count` new contexts, all in partition 0 or spread over every partition.
async fn contexts(nats: &Nats, count: usize, spread: bool) -> Vec<Context> {
    let tenant = TenantId::default_tenant();
    let mut made = Vec::with_capacity(count);
    while made.len() < count {
        let key = ContextKey::new(tenant.clone(), ContextId::new());
        if !spread && key.partition(PARTITIONS) != 0 {
            continue;
        }
        let ctx = Context::new(key, "bench".into(), "partitions".into(), ContextConfig::default(), Timestamp::now());
        nats.insert(Arc::new(ctx.clone())).await.expect("insert");
        made.push(ctx);
    }
    made
}

/// `saves` saves of one user message each, in turn; each one's time.
async fn save_turns(nats: &Nats, mut ctx: Context, saves: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(saves);
    for n in 0..saves {
        let message =
            Message::text(MessageId::new(), ctx.place(0), Role::User, format!("message {n}"), Timestamp::now());
        let change = Change::to(Phase::Idle).with(message);
        let after = ctx.apply(&change, Timestamp::now());
        let save = Save {
            before: Some(Arc::new(ctx.clone())),
            after: Arc::new(after.clone()),
            messages: change.messages.clone(),
            joined: Vec::new(),
        };
        let started = Instant::now();
        nats.commit(save).await.expect("save");
        samples.push(started.elapsed());
        ctx = after;
    }
    samples
}
