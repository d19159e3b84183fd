//! Every context's summary, in memory, ordered for listing: what `ListContexts`, the tenant
//! counts and the search for interrupted runs read, so none of them scans the cluster per
//! call. Filled from each context's last log record at start, then kept by following the
//! log: every process's saves.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};

use crate::domain::{ContextId, ContextKey, ContextSummary, ListPosition, TenantId, Timestamp};

#[derive(Default)]
pub struct View {
    tenants: Mutex<HashMap<TenantId, Tenant>>,
}

#[derive(Default)]
struct Tenant {
    /// Most recently updated first, ties by id.
    order: BTreeMap<(Reverse<Timestamp>, ContextId), ()>,
    contexts: HashMap<ContextId, ContextSummary>,
}

impl View {
    /// Records `summary` of a context of `tenant`, unless what is known of it is newer.
    pub fn upsert(&self, tenant: &TenantId, summary: ContextSummary) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = tenants.entry(tenant.clone()).or_default();
        if let Some(known) = entry.contexts.get(&summary.id) {
            if known.revision > summary.revision {
                return;
            }
            entry.order.remove(&(Reverse(known.updated_at), known.id));
        }
        entry.order.insert((Reverse(summary.updated_at), summary.id), ());
        entry.contexts.insert(summary.id, summary);
    }

    pub fn remove(&self, key: &ContextKey) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = tenants.get_mut(&key.tenant)
            && let Some(known) = entry.contexts.remove(&key.id)
        {
            entry.order.remove(&(Reverse(known.updated_at), known.id));
        }
    }

    pub fn count(&self, tenant: &TenantId) -> u64 {
        let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants.get(tenant).map_or(0, |t| t.contexts.len() as u64)
    }

    pub fn list(
        &self,
        tenant: &TenantId,
        after: Option<ListPosition>,
        limit: usize,
    ) -> (Vec<ContextSummary>, Option<ListPosition>) {
        let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = tenants.get(tenant) else { return (Vec::new(), None) };
        let from = match after {
            Some(p) => Bound::Excluded((Reverse(p.updated_at), p.id)),
            None => Bound::Unbounded,
        };
        let page: Vec<ContextSummary> = entry
            .order
            .range((from, Bound::Unbounded))
            .take(limit)
            .filter_map(|((_, id), ())| entry.contexts.get(id).cloned())
            .collect();
        let next = (page.len() == limit)
            .then(|| page.last().map(|s| ListPosition { updated_at: s.updated_at, id: s.id }))
            .flatten();
        (page, next)
    }

    /// Contexts whose last save was in the middle of a run.
    pub fn interrupted(&self) -> Vec<ContextKey> {
        let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants
            .iter()
            .flat_map(|(tenant, entry)| {
                entry.contexts.values().filter(|s| !s.state.is_resting()).map(|s| ContextKey::new(tenant.clone(), s.id))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FsmState;

    fn summary(n: u8, at: i64, revision: u64) -> ContextSummary {
        ContextSummary {
            id: ContextId::from_bytes([n; 16]),
            title: format!("c{n}"),
            state: FsmState::Idle,
            revision,
            message_count: 0,
            created_at: Timestamp::from_micros(0),
            updated_at: Timestamp::from_micros(at),
        }
    }

    #[test]
    fn pages_newest_first_and_keeps_the_newest_revision() {
        let view = View::default();
        let tenant = TenantId::default_tenant();
        for n in 1..=5 {
            view.upsert(&tenant, summary(n, i64::from(n) * 10, 1));
        }
        view.upsert(&tenant, summary(2, 100, 2));
        view.upsert(&tenant, summary(2, 5, 1));
        let (first, next) = view.list(&tenant, None, 2);
        let ids: Vec<u8> = first.iter().map(|s| s.id.as_bytes()[0]).collect();
        assert_eq!(ids, [2, 5]);
        let (rest, end) = view.list(&tenant, next, 10);
        let ids: Vec<u8> = rest.iter().map(|s| s.id.as_bytes()[0]).collect();
        assert_eq!((ids, end), (vec![4, 3, 1], None));
        assert_eq!(view.count(&tenant), 5);
        view.remove(&ContextKey::new(tenant.clone(), ContextId::from_bytes([2; 16])));
        assert_eq!(view.count(&tenant), 4);
        assert!(view.list(&TenantId::parse("other").expect("tenant"), None, 10).0.is_empty());
    }
}
