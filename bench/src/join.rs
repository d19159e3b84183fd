//! A node joining a 3-server NATS cluster that holds many contexts (docs/cluster.md): nothing
//! at start reads every context, so the time from its start to its first call served, and its
//! memory then, are those of a node joining an empty cluster.

use std::sync::Arc;
use std::time::Instant;

use ctxd::domain::{Context, ContextConfig, ContextId, ContextKey, TenantId, Timestamp};
use ctxd::store::{Backend, Nats, NatsOptions};
use ctxd_tests::nats::NatsCluster;
use ctxd_tests::{create, get};
use futures::StreamExt;

use crate::report::Row;
use crate::scenarios::Scale;
use crate::stats::Summary;

/// Contexts written at once while filling the cluster.
const FILLING: usize = 256;

pub async fn join(scale: Scale) -> Vec<Row> {
    let full = scale.pick(2_000, 1_000_000);
    let mut rows = Vec::new();
    for contexts in [0, full] {
        let cluster = NatsCluster::start(3).await;
        let filled = Instant::now();
        let some = fill(&cluster, contexts).await;
        let fill_s = filled.elapsed().as_secs_f64();
        let first = cluster.ctxd_node("join1", 1500, 0).await;
        let id = match some {
            Some(id) => id,
            None => create(&mut first.client().await, "the only one").await,
        };
        let started = Instant::now();
        let node = cluster.ctxd_node("join2", 1500, 0).await;
        get(&mut node.client().await, &id).await;
        let took = started.elapsed();
        let rss = node.rss_kib();
        let row =
            Row::new("join", format!("a node joins a cluster of {contexts} contexts"), Summary::of(vec![took], took))
                .note("start_to_first_call_ms", format!("{:.0}", took.as_secs_f64() * 1e3))
                .note("rss_kib", rss)
                .note("fill_s", format!("{fill_s:.0}"));
        rows.push(row);
        drop((node, first));
    }
    rows
}

/// Writes `count` empty contexts into the cluster's store (as ctxd would, through the
/// store itself); returns one of them.
async fn fill(cluster: &NatsCluster, count: usize) -> Option<String> {
    if count == 0 {
        return None;
    }
    let urls = cluster.urls().split(',').map(String::from).collect();
    let nats = Arc::new(Nats::open(&NatsOptions::plain(urls, "ctxd", 3, 16)).await.expect("open the cluster"));
    let tenant = TenantId::default_tenant();
    let written = futures::stream::iter(0..count)
        .map(|n| {
            let (nats, tenant) = (Arc::clone(&nats), tenant.clone());
            async move {
                let key = ContextKey::new(tenant, ContextId::new());
                let ctx = Context::new(
                    key.clone(),
                    "bench".into(),
                    format!("c{n}"),
                    ContextConfig::default(),
                    Timestamp::now(),
                );
                nats.insert(Arc::new(ctx)).await.expect("insert");
                key
            }
        })
        .buffer_unordered(FILLING)
        .fold(None, |first, key| async move { first.or(Some(key)) })
        .await;
    nats.close().await;
    written.map(|key| key.id.to_string())
}
