//! The per-context state machine: pure transitions, no I/O.
//!
//! [`apply`] takes the current context and a [`Command`] and returns an [`Outcome`]: the
//! change to save (at most one per command; the runtime saves it atomically, together with
//! the changes of commands that follow in the same instant) and the effects to run once it
//! is saved. Everything it needs from the outside world (time, ids, tool
//! policies) comes in through [`Env`], so the whole machine is testable without a server.
//! Changes are applied to a context by [`Context::apply`](crate::domain::Context::apply)
//! alone, here in the tests as in the runtime.

mod apply;
mod branches;
mod command;
mod effect;
mod env;
mod outcome;
mod rejection;
mod steps;
mod summary;
#[cfg(test)]
mod tests;
mod tool_calls;

pub use apply::apply;
pub use branches::allowed as branch_allowed;
pub use command::{Command, LlmReply, OnBusy};
pub use effect::Effect;
#[cfg(test)]
pub use env::WordWindow;
pub use env::{ContextWindow, Env, ToolCatalog};
pub use outcome::Outcome;
pub use rejection::Rejection;
pub use tool_calls::{CANCELLED, DENIED, INTERRUPTED};
