//! Tenants' lists of contexts, read on demand: nothing here grows with every context the
//! cluster holds, only with the tenants listed or watched on this node lately.
//!
//! The first list (or count, or watch) of a tenant subscribes to the list entries the
//! partition streams republish for it once stored, then reads its entries from every
//! partition (a scan each). From then on the subscription keeps the list and tells the
//! tenant's watchers. A list nobody asked for in [`IDLE`] and nobody watches is dropped.
//! A subscription may miss entries while the connection to NATS is lost: once it is back,
//! every list kept is read again and what differs is told.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{OnceCell, broadcast};

use super::Inner;
use crate::domain::{ContextId, ContextKey, ContextSummary, ListPosition, TenantId, Timestamp};
use crate::store::backend::Change;
use crate::store::codec::{self, StoredContext};
use crate::store::error::Result;

/// A list nobody asked for this long, and nobody watches, is dropped.
const IDLE: Duration = Duration::from_secs(60);
/// This node's saves kept for lists read in the meantime from a replica that may lag.
const RECENT: Duration = Duration::from_secs(5);
/// Changes a slow watcher of a tenant may fall behind by.
const CHANGES_CAPACITY: usize = 1024;

#[derive(Default)]
pub struct Index {
    tenants: Mutex<HashMap<TenantId, Arc<Listing>>>,
    /// This node's saves of the last few seconds: a list read from a replica that has not
    /// applied them yet gets them from here (a client lists what it just created).
    recent: Mutex<VecDeque<Recent>>,
}

/// A save of this node: when, of what, its entry's sequence, and the summary (`None`: deleted).
type Recent = (Instant, ContextKey, u64, Option<ContextSummary>);

/// One tenant's list.
pub struct Listing {
    read: OnceCell<()>,
    state: Mutex<Entries>,
    changes: broadcast::Sender<Change>,
    used: Mutex<Instant>,
    /// Ends the subscription.
    stop: tokio_util::sync::CancellationToken,
}

#[derive(Default)]
struct Entries {
    /// Most recently updated first, ties by id.
    order: BTreeMap<(Reverse<Timestamp>, ContextId), ()>,
    /// Each context's summary and the stream sequence of its entry (the newest wins).
    contexts: HashMap<ContextId, (ContextSummary, u64)>,
    /// Contexts deleted, with the sequence of their removal: an older entry read late must
    /// not bring them back.
    removed: HashMap<ContextId, u64>,
}

impl Entries {
    /// Applies an entry at `sequence`; `None`: the context was deleted. Returns whether it
    /// changed anything.
    fn apply(&mut self, id: ContextId, sequence: u64, summary: Option<ContextSummary>) -> bool {
        let known = self.contexts.get(&id).map(|(_, s)| *s).or_else(|| self.removed.get(&id).copied());
        if known.is_some_and(|known| known >= sequence) {
            return false;
        }
        if let Some((old, _)) = self.contexts.remove(&id) {
            self.order.remove(&(Reverse(old.updated_at), id));
        }
        match summary {
            Some(summary) => {
                self.removed.remove(&id);
                self.order.insert((Reverse(summary.updated_at), id), ());
                self.contexts.insert(id, (summary, sequence));
            }
            None => {
                self.removed.insert(id, sequence);
            }
        }
        true
    }

    fn page(&self, after: Option<ListPosition>, limit: usize) -> (Vec<ContextSummary>, Option<ListPosition>) {
        let from = match after {
            Some(p) => Bound::Excluded((Reverse(p.updated_at), p.id)),
            None => Bound::Unbounded,
        };
        let page: Vec<ContextSummary> = self
            .order
            .range((from, Bound::Unbounded))
            .take(limit)
            .filter_map(|((_, id), ())| self.contexts.get(id).map(|(s, _)| s.clone()))
            .collect();
        let next = (page.len() == limit)
            .then(|| page.last().map(|s| ListPosition { updated_at: s.updated_at, id: s.id }))
            .flatten();
        (page, next)
    }
}

impl Listing {
    pub fn page(&self, after: Option<ListPosition>, limit: usize) -> (Vec<ContextSummary>, Option<ListPosition>) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).page(after, limit)
    }

    pub fn count(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).contexts.len() as u64
    }

    pub fn watch(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Drops `key`, found deleted by a read rather than by its entry (which was missed).
    fn forget(&self, key: &ContextKey) {
        let forgotten = {
            let mut entries = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let old = entries.contexts.remove(&key.id);
            if let Some((old, _)) = &old {
                entries.order.remove(&(Reverse(old.updated_at), key.id));
            }
            old.is_some()
        };
        if forgotten {
            let _ = self.changes.send(Change::Removed(key.clone()));
        }
    }

    /// Applies an entry of context `key` and tells the watchers if it changed the list.
    fn apply(&self, key: &ContextKey, sequence: u64, summary: Option<ContextSummary>) {
        let changed =
            self.state.lock().unwrap_or_else(PoisonError::into_inner).apply(key.id, sequence, summary.clone());
        if changed {
            let change = match summary {
                Some(summary) => Change::Saved { key: key.clone(), summary },
                None => Change::Removed(key.clone()),
            };
            // Nobody watching is fine.
            let _ = self.changes.send(change);
        }
    }
}

/// A list entry's payload as a summary; `None`: the context was deleted.
fn summary_of(key: &ContextKey, payload: &[u8]) -> Result<Option<ContextSummary>> {
    if payload.is_empty() {
        return Ok(None);
    }
    let stored: StoredContext = codec::decode("list entry", payload)?;
    codec::summary_from_stored(key.id, &stored).map(Some)
}

impl Inner {
    /// `tenant`'s list, read first if this node does not keep it.
    pub(super) async fn listing(self: &Arc<Self>, tenant: &TenantId) -> Result<Arc<Listing>> {
        let listing = {
            let mut tenants = self.index.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(tenants.entry(tenant.clone()).or_insert_with(|| {
                Arc::new(Listing {
                    read: OnceCell::new(),
                    state: Mutex::default(),
                    changes: broadcast::channel(CHANGES_CAPACITY).0,
                    used: Mutex::new(Instant::now()),
                    stop: self.stopping.child_token(),
                })
            }))
        };
        *listing.used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let read = listing.read.get_or_try_init(|| self.fill(tenant, &listing)).await;
        if let Err(error) = read {
            // The next call tries again from the start.
            self.drop_listing(tenant, &listing);
            return Err(error);
        }
        Ok(listing)
    }

    /// Subscribes to `tenant`'s republished entries, then reads them all.
    async fn fill(self: &Arc<Self>, tenant: &TenantId, listing: &Arc<Listing>) -> Result<()> {
        let subscription = self.client.subscribe(self.layout.listed(tenant)).await.map_err(super::unavailable)?;
        tokio::spawn(Arc::clone(self).follow_list(Arc::clone(listing), subscription));
        self.read_entries(tenant, listing).await.map(|_| ())
    }

    /// Reads every entry of `tenant` from every partition into `listing`, then this node's
    /// recent saves a lagging replica may not have had. Returns the contexts listed.
    async fn read_entries(&self, tenant: &TenantId, listing: &Listing) -> Result<HashSet<ContextId>> {
        let scans = (0..self.layout.partitions).map(|p| {
            let filter = self.layout.entries(p, tenant);
            async move { self.scan(p, &filter).await }
        });
        let mut listed = HashSet::new();
        for found in futures::future::try_join_all(scans).await?.into_iter().flatten() {
            let Some(key) = self.layout.parse(&found.subject) else { continue };
            match summary_of(&key, &found.payload) {
                Ok(summary) => {
                    if summary.is_some() {
                        listed.insert(key.id);
                    }
                    listing.apply(&key, found.sequence, summary);
                }
                Err(error) => {
                    tracing::warn!(subject = %found.subject, %error, "skipped a list entry that could not be read")
                }
            }
        }
        let recent: Vec<_> = {
            let recent = self.index.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.iter().filter(|(_, key, ..)| &key.tenant == tenant).cloned().collect()
        };
        for (_, key, sequence, summary) in recent {
            if summary.is_some() {
                listed.insert(key.id);
            }
            listing.apply(&key, sequence, summary);
        }
        Ok(listed)
    }

    /// Keeps `listing` by the entries its tenant's partitions republish, until dropped.
    async fn follow_list(self: Arc<Self>, listing: Arc<Listing>, mut subscription: async_nats::Subscriber) {
        loop {
            let message = tokio::select! {
                () = listing.stop.cancelled() => return,
                message = subscription.next() => message,
            };
            let Some(message) = message else { return };
            let Some(key) = self.layout.parse(&message.subject) else { continue };
            let sequence = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Sequence"))
                .and_then(|s| s.as_str().parse::<u64>().ok())
                .unwrap_or(0);
            match summary_of(&key, &message.payload) {
                Ok(summary) => listing.apply(&key, sequence, summary),
                Err(error) => {
                    tracing::warn!(subject = %message.subject, %error, "skipped a list entry that could not be read")
                }
            }
        }
    }

    /// This node saved `key` (its entry at `sequence`; `None`: deleted): the list of its
    /// tenant, if kept here, shows it at once, and a list read in the next seconds too.
    pub(super) fn listed(&self, key: &ContextKey, sequence: u64, summary: Option<ContextSummary>) {
        let now = Instant::now();
        {
            let mut recent = self.index.recent.lock().unwrap_or_else(PoisonError::into_inner);
            while recent.front().is_some_and(|(at, ..)| now.duration_since(*at) > RECENT) {
                recent.pop_front();
            }
            recent.push_back((now, key.clone(), sequence, summary.clone()));
        }
        let listing = self.index.tenants.lock().unwrap_or_else(PoisonError::into_inner).get(&key.tenant).cloned();
        if let Some(listing) = listing.filter(|l| l.read.initialized()) {
            listing.apply(key, sequence, summary);
        }
    }

    fn drop_listing(&self, tenant: &TenantId, listing: &Arc<Listing>) {
        let mut tenants = self.index.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if tenants.get(tenant).is_some_and(|kept| Arc::ptr_eq(kept, listing)) {
            tenants.remove(tenant);
        }
        listing.stop.cancel();
    }

    /// Drops the lists nobody used lately and nobody watches; after the connection to NATS
    /// came back, reads every list kept again (its subscription may have missed entries).
    pub(super) async fn forget_idle_lists(self: Arc<Self>) {
        let mut reconnects = self.reconnects.subscribe();
        loop {
            let reconnected = tokio::select! {
                () = self.stopping.cancelled() => return,
                () = tokio::time::sleep(IDLE / 4) => false,
                _ = reconnects.recv() => true,
            };
            let kept: Vec<(TenantId, Arc<Listing>)> = {
                let tenants = self.index.tenants.lock().unwrap_or_else(PoisonError::into_inner);
                tenants.iter().map(|(t, l)| (t.clone(), Arc::clone(l))).collect()
            };
            for (tenant, listing) in kept {
                let idle = listing.used.lock().unwrap_or_else(PoisonError::into_inner).elapsed() > IDLE;
                if idle && listing.changes.receiver_count() == 0 {
                    self.drop_listing(&tenant, &listing);
                } else if reconnected && listing.read.initialized() {
                    self.reread(&tenant, &listing).await;
                }
            }
        }
    }

    /// Reads `tenant`'s entries again into `listing`; a context no partition lists any more
    /// was deleted meanwhile.
    async fn reread(&self, tenant: &TenantId, listing: &Listing) {
        let before: Vec<ContextId> =
            listing.state.lock().unwrap_or_else(PoisonError::into_inner).contexts.keys().copied().collect();
        let listed = match self.read_entries(tenant, listing).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%tenant, %error, "could not read a tenant's list again after a reconnect");
                return;
            }
        };
        for id in before.into_iter().filter(|id| !listed.contains(id)) {
            listing.forget(&ContextKey::new(tenant.clone(), id));
        }
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
    fn pages_newest_first_and_keeps_the_newest_entry() {
        let mut entries = Entries::default();
        for n in 1..=5u8 {
            assert!(entries.apply(
                ContextId::from_bytes([n; 16]),
                u64::from(n),
                Some(summary(n, i64::from(n) * 10, 1))
            ));
        }
        assert!(entries.apply(ContextId::from_bytes([2; 16]), 10, Some(summary(2, 100, 2))));
        assert!(!entries.apply(ContextId::from_bytes([2; 16]), 9, Some(summary(2, 5, 1))), "an older entry read late");
        let (first, next) = entries.page(None, 2);
        let ids: Vec<u8> = first.iter().map(|s| s.id.as_bytes()[0]).collect();
        assert_eq!(ids, [2, 5]);
        let (rest, end) = entries.page(next, 10);
        let ids: Vec<u8> = rest.iter().map(|s| s.id.as_bytes()[0]).collect();
        assert_eq!((ids, end), (vec![4, 3, 1], None));
        assert!(entries.apply(ContextId::from_bytes([2; 16]), 11, None));
        assert!(!entries.apply(ContextId::from_bytes([2; 16]), 10, Some(summary(2, 100, 2))), "deleted stays deleted");
        assert_eq!(entries.contexts.len(), 4);
    }
}
