use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A string that is not a UUID where one was required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is not a valid UUID", super::shown(value))]
pub struct InvalidId {
    pub value: String,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id; time-ordered (UUIDv7) so ids sort roughly by creation.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(value: &str) -> Result<Self, InvalidId> {
                Uuid::parse_str(value).map(Self).map_err(|_| InvalidId { value: value.to_owned() })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Identifies a context (a conversation).
    ContextId
);
uuid_id!(
    /// Identifies a message; assigned by the server.
    MessageId
);

/// The id a model gave one tool call (OpenAI's `call_…`): it pairs the call with its
/// result, within one reply. Any string the provider chose; checked for length and
/// characters where a client names one (see the API's request checks).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ToolCallId(String);

impl ToolCallId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ToolCallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for ToolCallId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for ToolCallId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl PartialEq<str> for ToolCallId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ToolCallId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A count from 0 that means one thing in the tree: each kind its own type, so a node is
/// never taken for a depth (in a conversation without versions they are equal, which is
/// what made mixing them up easy).
macro_rules! tree_number {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(u64);

        impl $name {
            pub const fn new(number: u64) -> Self {
                Self(number)
            }

            pub const fn get(self) -> u64 {
                self.0
            }

            /// The one `k` after this one.
            pub const fn plus(self, k: u64) -> Self {
                Self(self.0 + k)
            }

            pub const fn next(self) -> Self {
                self.plus(1)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

tree_number!(
    /// A message's number in its context, in creation order: the key it is stored under and
    /// what its children name as their parent (a segment's nodes are consecutive). Not its
    /// depth on the path ([`Seq`]): once a conversation has versions, the two differ.
    NodeId
);

tree_number!(
    /// A message's depth in the tree: its position on the active path (0: a first message),
    /// so the active path's message at depth `seq` is `messages[seq]`. Not its number
    /// ([`NodeId`]).
    Seq
);

impl Seq {
    pub const FIRST: Seq = Seq(0);

    /// The depth above; `None` for a first message.
    pub fn before(self) -> Option<Self> {
        self.0.checked_sub(1).map(Self)
    }

    /// How many depths from this one to `end` (none if `end` is not below).
    pub fn until(self, end: Seq) -> u64 {
        end.0.saturating_sub(self.0)
    }

    /// As an index into the active path's messages.
    pub fn index(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// The depth of the active path's message at `index`.
    pub fn of_index(index: usize) -> Self {
        Self(index as u64)
    }
}
