//! Runs saved mid-way go on: after a restart on one node, and on a cluster whenever their
//! node died or left, on the node whose share they are.

use tokio::sync::watch;

use crate::domain::ContextKey;
use crate::runtime::{Contexts, Result};
use crate::telemetry::names;

/// Resumes the runs saved mid-way that this node should run. On one node: every one (the
/// process that ran them stopped). On a cluster (other nodes may run some of them): this
/// node's share of those no live node runs, now and, until shutdown, whenever the cluster
/// changes and every `sweep_every` besides.
pub async fn sweep(contexts: &Contexts) -> Result<()> {
    let interrupted = contexts.interrupted().await?;
    match contexts.placement().changes() {
        None => {
            if !interrupted.is_empty() {
                tracing::info!(count = interrupted.len(), "resuming contexts interrupted mid-run");
            }
            for key in interrupted {
                contexts.resume(key);
            }
        }
        Some(changes) => {
            adopt(contexts, interrupted);
            contexts.spawn(keep_sweeping(contexts.clone(), changes));
        }
    }
    Ok(())
}

async fn keep_sweeping(contexts: Contexts, mut changes: watch::Receiver<u64>) {
    let every = contexts.placement().sweep_every();
    let stopping = contexts.stopping();
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(every) => {}
        }
        match contexts.interrupted().await {
            Ok(interrupted) => adopt(&contexts, interrupted),
            Err(error) => tracing::warn!(%error, "could not look for runs to take over"),
        }
    }
}

/// Starts this node's share of the runs in `interrupted` that nobody runs.
fn adopt(contexts: &Contexts, interrupted: Vec<ContextKey>) {
    let candidates: Vec<ContextKey> = interrupted.into_iter().filter(|key| !contexts.runs(key)).collect();
    if candidates.is_empty() {
        return;
    }
    for key in contexts.placement().orphans(candidates) {
        tracing::info!(context = %key.id, tenant = %key.tenant, "taking over a run no live node runs");
        metrics::counter!(names::RUNS_TAKEN_OVER).increment(1);
        contexts.resume(key);
    }
}
