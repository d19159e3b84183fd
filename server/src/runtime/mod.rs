//! Live contexts: one actor (a task) per loaded context is its only writer. Actors load on
//! demand, resume runs interrupted by a restart, and unload after resting idle.
//!
//! `contexts` is the registry callers use; `actor` applies commands and saves them, `driver`
//! runs the effects they ask for, `batch` stages the transitions of one instant, `feed`
//! fans saved changes out to watchers, `tenants` holds the per-tenant limits. Which node runs a
//! context is `crate::cluster`'s question.

mod actor;
mod batch;
mod contexts;
mod driver;
mod error;
mod feed;
mod handle;
mod meters;
mod prompt;
mod reads;
mod settings;
mod shared;
mod summary;
mod tenants;
mod window;

pub use contexts::Contexts;
pub use error::{Error, Result};
pub use feed::{Event, EventKind, Feed, OnPath, Subscription, Update};
pub use handle::{Action, Gone, Slot};
pub use reads::PathStart;
pub use settings::Settings;

#[cfg(test)]
mod tests;
