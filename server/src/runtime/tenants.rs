//! Per-tenant limits: how many runs a tenant may have in progress at once, and how many
//! contexts it may keep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::domain::TenantId;

/// Runs in progress per tenant. A context mid-run holds a `RunSlot`; dropping it ends the
/// run's claim, so no path (rest, failure, unload, shutdown) can leak one.
#[derive(Default)]
pub(super) struct Runs {
    counts: Mutex<HashMap<TenantId, usize>>,
}

pub(super) struct RunSlot {
    runs: Arc<Runs>,
    tenant: TenantId,
}

impl Runs {
    /// A slot for a run `tenant` starts, if it has fewer than `max` in progress.
    pub(super) fn try_start(self: &Arc<Self>, tenant: &TenantId, max: usize) -> Option<RunSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(tenant.clone()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(RunSlot { runs: Arc::clone(self), tenant: tenant.clone() })
    }

    /// A slot for a run that is already in progress (resumed after a restart): counted, never
    /// refused, since refusing would not stop it.
    pub(super) fn start(self: &Arc<Self>, tenant: &TenantId) -> RunSlot {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry(tenant.clone()).or_default() += 1;
        RunSlot { runs: Arc::clone(self), tenant: tenant.clone() }
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut counts = self.runs.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

/// Contexts per tenant, counted from storage the first time a tenant creates one under a
/// limit, then kept up to date by creations and deletions (both hold `Shared::membership`).
#[derive(Default)]
pub(super) struct Members {
    counts: Mutex<HashMap<TenantId, u64>>,
}

impl Members {
    pub(super) fn get(&self, tenant: &TenantId) -> Option<u64> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).get(tenant).copied()
    }

    pub(super) fn set(&self, tenant: &TenantId, count: u64) {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).insert(tenant.clone(), count);
    }

    /// One fewer, if the tenant is counted.
    pub(super) fn removed(&self, tenant: &TenantId) {
        if let Some(count) = self.counts.lock().unwrap_or_else(PoisonError::into_inner).get_mut(tenant) {
            *count = count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_slots_are_counted_per_tenant_and_released_on_drop() {
        let runs = Arc::new(Runs::default());
        let (a, b) = (TenantId::parse("a").expect("a"), TenantId::parse("b").expect("b"));
        let first = runs.try_start(&a, 2).expect("a's first run");
        let second = runs.try_start(&a, 2).expect("a's second run");
        assert!(runs.try_start(&a, 2).is_none(), "a is at its limit");
        let other = runs.try_start(&b, 2).expect("b has its own limit");
        drop(first);
        let third = runs.try_start(&a, 2).expect("a slot came free");
        let resumed = runs.start(&a);
        assert!(runs.try_start(&a, 3).is_none(), "resumed runs count");
        drop((second, third, resumed, other));
        assert!(runs.counts.lock().expect("lock").is_empty(), "nothing is left counted");
    }
}
