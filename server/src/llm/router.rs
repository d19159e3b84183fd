//! Picks a provider by the requested model name, so contexts on one server can use
//! different providers (the mock for tests and demos, a real endpoint for the rest).

use std::sync::Arc;

use futures::StreamExt;

use super::provider::{LlmError, LlmProvider, LlmRequest, LlmStream};

/// The model name that always means the built-in mock.
pub const MOCK_MODEL: &str = "mock";

pub struct LlmRouter {
    mock: Arc<dyn LlmProvider>,
    /// The OpenAI-compatible provider and the models it serves (empty: every model but the mock).
    remote: Option<(Arc<dyn LlmProvider>, Vec<String>)>,
}

impl LlmRouter {
    pub fn new(mock: Arc<dyn LlmProvider>, remote: Option<(Arc<dyn LlmProvider>, Vec<String>)>) -> Self {
        Self { mock, remote }
    }

    fn provider(&self, model: &str) -> Option<&Arc<dyn LlmProvider>> {
        if model == MOCK_MODEL {
            return Some(&self.mock);
        }
        match &self.remote {
            Some((provider, models)) if models.is_empty() || models.iter().any(|m| m == model) => Some(provider),
            _ => None,
        }
    }

    /// Whether some provider serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.provider(model).is_some()
    }
}

impl LlmProvider for LlmRouter {
    fn stream(&self, request: LlmRequest) -> LlmStream {
        match self.provider(&request.model) {
            Some(provider) => provider.stream(request),
            None => {
                let error = LlmError::permanent(format!("no LLM provider is configured for model {:?}", request.model));
                futures::stream::once(async move { Err(error) }).boxed()
            }
        }
    }

    fn name(&self, model: &str) -> &'static str {
        self.provider(model).map_or("none", |provider| provider.name(model))
    }
}
