//! Fills a data dir directly through ctxd's store, so the history and restart scenarios
//! start from hundreds of thousands of messages without sending them one by one.

use std::path::Path;
use std::sync::Arc;

use ctxd::domain::{
    Change, Context, ContextConfig, ContextId, ContextKey, Message, MessageId, Phase, Place, Role, Seq, TenantId,
    Timestamp,
};
use ctxd::store::Store;

/// Creates `contexts` contexts of `messages` messages each (user and assistant turns);
/// returns their ids.
pub fn fill(dir: &Path, contexts: usize, messages: u64) -> Vec<ContextId> {
    let store = Store::open(dir, false).expect("open store");
    let mut ids = Vec::with_capacity(contexts);
    for n in 0..contexts {
        let now = Timestamp::now();
        let ctx = Context::new(
            ContextKey::new(TenantId::default_tenant(), ContextId::new()),
            String::new(),
            format!("bench {n}"),
            ContextConfig::default(),
            now,
        );
        let saved: Vec<Arc<Message>> = (0..messages)
            .map(|seq| {
                let role = if seq % 2 == 0 { Role::User } else { Role::Assistant };
                let text = format!("message {seq} of a conversation used to measure ctxd");
                let place = Place::straight(Seq::new(seq));
                Arc::new(Message::text(MessageId::new(), place, role, text, now))
            })
            .collect();
        let filled = ctx.apply(&Change { messages: saved, ..Change::to(Phase::Idle) }, now);
        store.insert(&filled).expect("insert");
        ids.push(ctx.id);
    }
    store.flush().expect("flush");
    ids
}

/// Bytes of every file under `dir`.
pub fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => disk_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
