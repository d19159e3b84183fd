//! The runtime in-process, where a failing disk can be arranged: what a failed save does
//! to the action that caused it and to the state everyone else sees.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::domain::{Context, ContextConfig, TenantId};
use crate::fsm::Command;
use crate::llm::MockProvider;
use crate::store::{self, Rocks};
use crate::tools::{ToolLimits, ToolRegistry};

async fn start(dir: &Path) -> Contexts {
    let store = Arc::new(Rocks::open(dir, true).expect("open"));
    let limits = ToolLimits { timeout: Duration::from_secs(5), max_output_bytes: 4096 };
    let tools = Arc::new(ToolRegistry::builtin(None, limits).expect("tools"));
    let llm = Arc::new(MockProvider { chunk_delay: Duration::ZERO, context_window: None });
    Contexts::start(store, llm, tools, Settings::from(&Config::default()), Arc::new(crate::cluster::Solo::new()))
        .await
        .expect("start")
}

fn send(text: &str) -> Command {
    Command::Send {
        content: text.into(),
        client_message_id: None,
        expected_revision: None,
        on_busy: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_fails_fails_the_action_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let contexts = start(dir.path()).await;
    let tenant = TenantId::default_tenant();
    let key =
        contexts.create(tenant, String::new(), None, "t".into(), ContextConfig::default()).await.expect("create").key();
    let rested = contexts.act(&key, send("first"), true, None).await.expect("first turn");
    assert_eq!((rested.messages.len(), rested.phase.is_resting()), (2, true));
    let (missed, mut watcher) = contexts.watch(&key, rested.revision).await.expect("watch");
    assert!(missed.is_empty(), "the feed already holds the revision the caller was given: {missed:?}");

    // From here on no save reaches the disk.
    contexts.shared.store.close().await;
    let failed = contexts.act(&key, send("second"), true, None).await;
    assert!(matches!(failed, Err(Error::Storage(store::Error::WriterStopped))), "{failed:?}");

    assert_eq!(contexts.get(&key).await.expect("still there"), rested, "memory did not run ahead of disk");
    let on_disk = contexts.shared.store.load(&key).await.expect("load").expect("saved");
    // The window's usage is worked out on load, not saved.
    assert_eq!(Context { usage: rested.usage, ..on_disk }, *rested, "what is shown is what is saved");
    let published = tokio::time::timeout(Duration::from_millis(200), watcher.next()).await;
    assert!(published.is_err(), "watchers were told nothing: {published:?}");
}
