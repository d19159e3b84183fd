//! What applying a command produced.

use super::effect::Effect;
use crate::domain::Change;

/// The result of applying a command: nothing to save, streamed text (held in memory only),
/// or a transition to save. Effects run only once what asked for them is saved, so streamed
/// text, which is never saved on its own, asks for none.
// A change is much larger than streamed text; an outcome lives only from `apply` to the
// batch that takes it, one at a time, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing to save (a duplicate send, a stale effect result); maybe work to restart, as
    /// when a run resumes from a state that was saved.
    Unchanged(Vec<Effect>),
    /// Text to append to the message that is streaming.
    Streamed(String),
    /// A transition to save, then effects to run.
    Changed(Change, Vec<Effect>),
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome::Unchanged(Vec::new())
    }
}

impl From<Change> for Outcome {
    fn from(change: Change) -> Self {
        Outcome::Changed(change, Vec::new())
    }
}

impl Outcome {
    /// Nothing to save, but `effect` to run.
    pub(super) fn run(effect: Effect) -> Self {
        Outcome::Unchanged(vec![effect])
    }

    /// Saves `change`, then runs `effect`.
    pub(super) fn then(change: Change, effect: Effect) -> Self {
        Outcome::Changed(change, vec![effect])
    }

    pub fn change(&self) -> Option<&Change> {
        match self {
            Outcome::Changed(change, _) => Some(change),
            Outcome::Unchanged(_) | Outcome::Streamed(_) => None,
        }
    }

    pub fn effects(&self) -> &[Effect] {
        match self {
            Outcome::Unchanged(effects) | Outcome::Changed(_, effects) => effects,
            Outcome::Streamed(_) => &[],
        }
    }

    pub fn delta(&self) -> Option<&str> {
        match self {
            Outcome::Streamed(text) => Some(text),
            Outcome::Unchanged(_) | Outcome::Changed(..) => None,
        }
    }
}
