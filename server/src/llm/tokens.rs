//! Counting tokens as a model does: tiktoken's encodings for OpenAI's models (o200k_base,
//! cl100k_base), and an estimate (four bytes a token) for every other model and the mock,
//! which each context's calibration (from the provider's `usage.prompt_tokens`) corrects.
//!
//! Why not o200k_base for every model: its tables take about 45 MB of memory, loaded at the
//! first count, and in the server its lookups cost about a tenth of a plain turn's CPU (cache
//! misses); a model with another tokenizer would still be miscounted, only less crudely, and
//! the calibration closes that gap after one reply anyway.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

use super::provider::{LlmMessage, LlmRequest};
use crate::domain::{BYTES_PER_TOKEN, Message, ToolDefinition};

/// Framing of each message (role, separators), as OpenAI's cookbook counts it.
const PER_MESSAGE: u64 = 3;
/// The reply's priming, once a request.
const PER_REQUEST: u64 = 3;
/// Framing of each tool definition (type, function, keys).
const PER_TOOL: u64 = 8;
/// Text up to this many bytes is counted exactly; longer text is estimated from this much of
/// its start.
const EXACT_UP_TO: usize = 16 * 1024;

/// An encoding that counts like `model`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    O200k,
    Cl100k,
    /// [`BYTES_PER_TOKEN`]: the usual rule of thumb for English text (over-counting others,
    /// which is the safe side).
    Estimate,
}

impl Encoding {
    /// The encoding of `model`, also when a proxy prefixes it (`openai/gpt-4o`).
    pub fn of(model: &str) -> Self {
        let name = model.rsplit('/').next().unwrap_or(model);
        match get_tokenizer(name) {
            Some(Tokenizer::Cl100kBase) => Encoding::Cl100k,
            Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => Encoding::O200k,
            _ => Encoding::Estimate,
        }
    }

    fn bpe(self) -> Option<&'static CoreBPE> {
        match self {
            Encoding::O200k => Some(tiktoken_rs::o200k_base_singleton()),
            Encoding::Cl100k => Some(tiktoken_rs::cl100k_base_singleton()),
            Encoding::Estimate => None,
        }
    }

    /// Tokens of `text`; text that looks like a special token counts as the text it is. Text
    /// longer than [`EXACT_UP_TO`] is estimated from its start, so that counting a message
    /// never holds its thread for long (tokenising runs at about 5 MB/s).
    pub fn text(self, text: &str) -> u64 {
        if text.len() <= EXACT_UP_TO {
            return self.exact(text);
        }
        let end = (0..=EXACT_UP_TO).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let sample = self.exact(&text[..end]).max(1);
        sample * text.len() as u64 / end.max(1) as u64
    }

    fn exact(self, text: &str) -> u64 {
        match self.bpe() {
            _ if text.is_empty() => 0,
            Some(bpe) => bpe.encode_ordinary(text).len() as u64,
            None => (text.len() as u64).div_ceil(BYTES_PER_TOKEN),
        }
    }

    /// One message as a request sends it: its text, the calls it asks for, its framing.
    fn parts<'a>(self, text: &str, calls: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
        PER_MESSAGE
            + self.text(text)
            + calls.map(|(name, arguments)| self.text(name) + self.text(arguments)).sum::<u64>()
    }

    /// A saved message, as [`LlmRequest::messages`] sends it.
    pub fn message(self, message: &Message) -> u64 {
        let calls = message.tool_calls.iter().map(|c| (c.name.as_str(), c.arguments_json.as_str()));
        self.parts(&message.text_content(), calls)
    }

    /// Tool definitions as a request sends them.
    pub fn tools(self, tools: &[ToolDefinition]) -> u64 {
        tools
            .iter()
            .map(|t| PER_TOOL + self.text(&t.name) + self.text(&t.description) + self.text(&t.parameters.to_string()))
            .sum()
    }

    /// A system prompt and the framing every request has.
    pub fn system(self, prompt: &str) -> u64 {
        PER_REQUEST + if prompt.is_empty() { 0 } else { PER_MESSAGE + self.text(prompt) }
    }

    /// A whole request, as it is sent.
    pub fn request(self, request: &LlmRequest) -> u64 {
        let messages: u64 = request
            .messages()
            .iter()
            .map(|message| match message {
                LlmMessage::System { text } | LlmMessage::User { text } => self.parts(text, std::iter::empty()),
                LlmMessage::Assistant { text, tool_calls } => {
                    self.parts(text, tool_calls.iter().map(|c| (c.name.as_str(), c.arguments_json.as_str())))
                }
                LlmMessage::Tool { output, .. } => self.parts(output, std::iter::empty()),
            })
            .sum();
        PER_REQUEST + messages + self.tools(&request.tools)
    }
}

/// The tokens of the server's own tools, counted once per encoding.
#[derive(Debug, Default)]
pub struct ToolTokens {
    o200k: OnceLock<u64>,
    cl100k: OnceLock<u64>,
    estimate: OnceLock<u64>,
}

impl ToolTokens {
    pub fn get(&self, encoding: Encoding, tools: &[ToolDefinition]) -> u64 {
        let cell = match encoding {
            Encoding::O200k => &self.o200k,
            Encoding::Cl100k => &self.cl100k,
            Encoding::Estimate => &self.estimate,
        };
        *cell.get_or_init(|| encoding.tools(tools))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_get_their_encoding_and_others_the_estimate() {
        assert_eq!(Encoding::of("gpt-4o-mini"), Encoding::O200k);
        assert_eq!(Encoding::of("gpt-4-0613"), Encoding::Cl100k);
        assert_eq!(Encoding::of("openai/gpt-3.5-turbo"), Encoding::Cl100k);
        assert_eq!(Encoding::of("openai/gpt-4o"), Encoding::O200k);
        assert_eq!(Encoding::of("llama3.1:8b"), Encoding::Estimate);
        assert_eq!(Encoding::of("mock"), Encoding::Estimate);
        assert_eq!(Encoding::Estimate.text("hello world"), 3);
        assert_eq!(Encoding::O200k.text("hello world"), 2);
        assert_eq!(Encoding::O200k.text("<|endoftext|>"), Encoding::O200k.text("<|endoftext|>"), "no panic");
        assert_eq!(Encoding::O200k.text(""), 0);
    }

    #[test]
    fn long_text_is_estimated_from_its_start() {
        let line = "The quick brown fox jumps over the lazy dog. ";
        let long = line.repeat(2000);
        let estimate = Encoding::O200k.text(&long);
        let exact = Encoding::O200k.exact(&long);
        assert!(estimate.abs_diff(exact) * 100 <= exact, "{estimate} against {exact}");
        let wide = "é".repeat(20_000);
        assert!(Encoding::O200k.text(&wide) > 0, "cut on a character boundary");
    }
}
