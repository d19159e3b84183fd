//! LLM providers behind one trait. The state machine never sees a provider: the context's
//! actor turns a provider's stream into commands (`LlmDelta`, `LlmFinished`, `LlmFailed`).

mod mock;
mod openai;
mod provider;
mod router;
mod tokens;

pub use mock::MockProvider;
pub use openai::{OpenAiConfig, OpenAiProvider};
pub use provider::{LlmError, LlmEvent, LlmMessage, LlmProvider, LlmRequest, LlmStream, Purpose};
pub use router::{LlmRouter, MOCK_MODEL};
pub use tokens::{Encoding, ToolTokens};
