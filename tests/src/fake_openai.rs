//! A scripted OpenAI-compatible server on a real socket: each `POST /v1/chat/completions`
//! takes the next scripted reply, streamed as server-sent events in byte chunks that may
//! split JSON and UTF-8 anywhere.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this SSE body, sent in `chunks`, `delay` apart.
    Stream { chunks: Vec<Vec<u8>>, delay: Duration },
    /// An HTTP error.
    Status { code: u16, retry_after: Option<String>, body: String },
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub body: Value,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    /// Streams the client dropped before they ended.
    disconnects: AtomicUsize,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeOpenAi {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(completions))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn push(&self, reply: Reply) {
        self.shared.script.lock().expect("script").push_back(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("requests").clone()
    }

    pub fn disconnects(&self) -> usize {
        self.shared.disconnects.load(Ordering::SeqCst)
    }
}

async fn completions(State(shared): State<Arc<Shared>>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(String::from);
    shared.requests.lock().expect("requests").push(Recorded { at: Instant::now(), body, authorization });
    let reply = shared.script.lock().expect("script").pop_front();
    match reply {
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no scripted reply left").into_response(),
        Some(Reply::Status { code, retry_after, body }) => {
            let mut response = (StatusCode::from_u16(code).expect("status"), body).into_response();
            if let Some(value) = retry_after {
                response.headers_mut().insert("retry-after", HeaderValue::from_str(&value).expect("header"));
            }
            response
        }
        Some(Reply::Stream { chunks, delay }) => {
            let guard = DisconnectGuard { shared: Arc::clone(&shared), finished: false };
            let stream =
                futures::stream::unfold((chunks.into_iter(), guard), move |(mut chunks, mut guard)| async move {
                    match chunks.next() {
                        Some(chunk) => {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), (chunks, guard)))
                        }
                        None => {
                            guard.disarm();
                            None
                        }
                    }
                });
            let mut response = Response::new(Body::from_stream(stream));
            response.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream"));
            response
        }
    }
}

/// Counts streams dropped before their last chunk: the client closed the connection.
struct DisconnectGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl DisconnectGuard {
    /// The stream reached its end: no disconnect to count.
    fn disarm(&mut self) {
        self.finished = true;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// SSE frames for these chunks, then `[DONE]`.
pub fn sse(chunks: &[Value]) -> Vec<u8> {
    let mut body = String::new();
    for chunk in chunks {
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    body.into_bytes()
}

/// Cuts bytes every `n`, wherever that falls (inside JSON, inside a UTF-8 sequence).
pub fn split_every(bytes: &[u8], n: usize) -> Vec<Vec<u8>> {
    bytes.chunks(n).map(<[u8]>::to_vec).collect()
}

/// The model the fake says is answering (as OpenAI names a snapshot of the model asked for).
pub const REPORTED_MODEL: &str = "gpt-test-0001";

pub fn text_chunk(text: &str) -> Value {
    json!({"model": REPORTED_MODEL, "choices": [{"index": 0, "delta": {"content": text}}]})
}

pub fn usage_chunk(prompt: u32, completion: u32) -> Value {
    json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
}

/// A streamed text reply, one chunk per piece, with usage.
pub fn text_reply(pieces: &[&str], split: usize, delay: Duration) -> Reply {
    let mut chunks: Vec<Value> = pieces.iter().map(|p| text_chunk(p)).collect();
    chunks.push(usage_chunk(11, pieces.len() as u32));
    Reply::Stream { chunks: split_every(&sse(&chunks), split), delay }
}

/// A reply asking for tools `(id, name, arguments)`, the arguments sent in two fragments each.
pub fn tool_reply(calls: &[(&str, &str, &str)], split: usize) -> Reply {
    let mut chunks = Vec::new();
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        let (head, tail) = arguments.split_at(arguments.len() / 2);
        chunks.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": head}}
        ]}}]}));
        chunks.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": index, "function": {"arguments": tail}}
        ]}}]}));
    }
    chunks.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}));
    chunks.push(usage_chunk(20, 5));
    Reply::Stream { chunks: split_every(&sse(&chunks), split), delay: Duration::ZERO }
}
