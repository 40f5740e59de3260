//! An in-process server speaking the OpenAI chat completions wire format.
//!
//! Serves `POST /v1/chat/completions` like the real API (and compatible
//! servers such as vLLM or Ollama) as far as a client can tell:
//!
//! - the bearer key is checked first: a missing or wrong
//!   `Authorization: Bearer …` gets 401 with
//!   `{"error":{"message":…,"type":"invalid_request_error","code":"invalid_api_key"}}`;
//! - the body must be JSON with `model` and a non-empty `messages` array
//!   (else 400 with an OpenAI-style error body);
//! - a success is a `chat.completion` object: `id`, `object`, `created`,
//!   `model`, `choices[0].message.{role,content,refusal}`,
//!   `choices[0].finish_reason`, `usage.{prompt_tokens,completion_tokens,total_tokens}`.
//!
//! Answers are scripted per call ([`Reply`]): a queue consumed in order,
//! so a test says "500, then a valid answer". An empty queue answers 500
//! `"fake: no scripted reply left"`, which a test notices. Every request
//! that passed the key check is recorded (body as JSON) so tests can read
//! the prompt and the `response_format` JSON schema; requests with a bad
//! key are counted too.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with a chat.completion whose message content is `content`.
    Completion {
        /// `choices[0].message.content`.
        content: String,
        /// `usage.prompt_tokens`.
        prompt_tokens: u32,
        /// `usage.completion_tokens`.
        completion_tokens: u32,
        /// `choices[0].finish_reason` (`stop`, `length`).
        finish_reason: String,
    },
    /// An error status with the OpenAI error body
    /// `{"error":{"message","type","param","code"}}`, optionally with
    /// `Retry-After` (seconds).
    Error {
        /// HTTP status.
        status: u16,
        /// `error.message`.
        message: String,
        /// `error.type`.
        kind: String,
        /// `error.code`.
        code: Option<String>,
        /// `Retry-After` header value.
        retry_after: Option<String>,
    },
    /// Waits, then sends the inner reply (set longer than the client's
    /// timeout to provoke one).
    Slow(Duration, Box<Reply>),
}

impl Reply {
    /// A completion with this JSON as content and typical token counts.
    pub fn answer(content: &Value) -> Reply {
        Reply::text(&content.to_string())
    }

    /// A completion with this literal content (e.g. invalid JSON).
    pub fn text(content: &str) -> Reply {
        Reply::Completion {
            content: content.to_string(),
            prompt_tokens: 900,
            completion_tokens: 120,
            finish_reason: "stop".into(),
        }
    }

    /// A completion reporting this token use.
    pub fn with_usage(self, prompt: u32, completion: u32) -> Reply {
        match self {
            Reply::Completion {
                content,
                finish_reason,
                ..
            } => Reply::Completion {
                content,
                prompt_tokens: prompt,
                completion_tokens: completion,
                finish_reason,
            },
            other => other,
        }
    }

    /// 401 as OpenAI sends it for a bad key.
    pub fn unauthorized() -> Reply {
        Reply::Error {
            status: 401,
            message: "Incorrect API key provided.".into(),
            kind: "invalid_request_error".into(),
            code: Some("invalid_api_key".into()),
            retry_after: None,
        }
    }

    /// 429 rate limit, with `Retry-After: secs` when given.
    pub fn rate_limited(retry_after: Option<&str>) -> Reply {
        Reply::Error {
            status: 429,
            message: "Rate limit reached for requests".into(),
            kind: "requests".into(),
            code: Some("rate_limit_exceeded".into()),
            retry_after: retry_after.map(str::to_string),
        }
    }

    /// 500 as OpenAI sends it.
    pub fn server_error() -> Reply {
        Reply::Error {
            status: 500,
            message: "The server had an error while processing your request.".into(),
            kind: "server_error".into(),
            code: None,
            retry_after: None,
        }
    }

    /// `reply` after `delay`.
    pub fn slow(delay: Duration, reply: Reply) -> Reply {
        Reply::Slow(delay, Box::new(reply))
    }
}

/// A request the server received with the right key.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The JSON body.
    pub body: Value,
}

impl Recorded {
    /// `messages[i].content` as text.
    pub fn message(&self, i: usize) -> String {
        self.body["messages"][i]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// System and user messages, joined: everything the model was told.
    pub fn prompt(&self) -> String {
        let n = self.body["messages"].as_array().map_or(0, Vec::len);
        (0..n)
            .map(|i| self.message(i))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

struct Shared {
    key: String,
    script: Mutex<VecDeque<Reply>>,
    recorded: Mutex<Vec<Recorded>>,
    bad_key: Mutex<usize>,
}

/// The running server; stops when dropped.
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeOpenAi {
    /// Starts on 127.0.0.1 (a free port), accepting bearer `key`.
    pub async fn start(key: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake OpenAI server");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            key: key.to_string(),
            script: Mutex::new(VecDeque::new()),
            recorded: Mutex::new(Vec::new()),
            bad_key: Mutex::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The base URL a client is configured with (`…/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues replies for the next calls, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .script
            .lock()
            .expect("script lock")
            .extend(replies);
    }

    /// Requests received with the right key, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().expect("recorded lock").clone()
    }

    /// Number of requests received with the right key.
    pub fn request_count(&self) -> usize {
        self.shared.recorded.lock().expect("recorded lock").len()
    }

    /// Number of requests refused for a missing or wrong key.
    pub fn bad_key_count(&self) -> usize {
        *self.shared.bad_key.lock().expect("bad key lock")
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = format!("Bearer {}", shared.key);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(expected.as_str()) {
        *shared.bad_key.lock().expect("bad key lock") += 1;
        return Reply::unauthorized().into_response_now("");
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                400,
                &format!("We could not parse the JSON body of your request. ({e})"),
                "invalid_request_error",
                None,
            )
        }
    };
    let model = body["model"].as_str().unwrap_or_default().to_string();
    if model.is_empty() || body["messages"].as_array().is_none_or(Vec::is_empty) {
        return error(
            400,
            "you must provide a model parameter and at least one message",
            "invalid_request_error",
            None,
        );
    }
    shared
        .recorded
        .lock()
        .expect("recorded lock")
        .push(Recorded { body });
    let reply = shared.script.lock().expect("script lock").pop_front();
    let mut reply = reply.unwrap_or(Reply::Error {
        status: 500,
        message: "fake: no scripted reply left".into(),
        kind: "server_error".into(),
        code: None,
        retry_after: None,
    });
    while let Reply::Slow(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    reply.into_response_now(&model)
}

impl Reply {
    fn into_response_now(self, model: &str) -> Response {
        match self {
            Reply::Completion {
                content,
                prompt_tokens,
                completion_tokens,
                finish_reason,
            } => {
                let body = json!({
                    "id": "chatcmpl-fake0001",
                    "object": "chat.completion",
                    "created": 1_767_225_600u32,
                    "model": model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
                        "logprobs": null,
                        "finish_reason": finish_reason,
                    }],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                    "system_fingerprint": "fp_fake",
                });
                (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    body.to_string(),
                )
                    .into_response()
            }
            Reply::Error {
                status,
                message,
                kind,
                code,
                retry_after,
            } => {
                let mut response = error(status, &message, &kind, code.as_deref());
                if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    response.headers_mut().insert("retry-after", value);
                }
                response
            }
            Reply::Slow(_, inner) => inner.into_response_now(model),
        }
    }
}
