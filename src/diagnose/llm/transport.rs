//! The HTTP side: an async-openai client whose built-in retry layer is
//! replaced by a thin probe, so the retry policy (bounded `Retry-After`,
//! 401 never retried, metrics per attempt) lives in one loop we own
//! (`LlmDiagnoser::call`), and failures are classified into [`LlmError`].
//!
//! async-openai turns an error response into `OpenAIError` and drops its
//! headers; the probe notes each response's status and `Retry-After` in a
//! task-local slot that the retry loop reads after the attempt.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use reqwest::header::HeaderMap;
use tower_service::Service;

use crate::logs::redact_secrets;

/// What the probe saw of the last HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseMeta {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` (seconds) or `retry-after-ms`, when present.
    pub retry_after: Option<Duration>,
}

tokio::task_local! {
    /// Set by [`Probe`] for the attempt running in this task.
    pub(crate) static LAST_RESPONSE: Cell<Option<ResponseMeta>>;
}

/// A tower service around async-openai's plain reqwest transport that
/// records [`ResponseMeta`] and otherwise changes nothing.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    inner: ReqwestService,
}

impl Probe {
    pub(crate) fn new(http: reqwest::Client) -> Self {
        Self {
            inner: ReqwestService::new(http),
        }
    }
}

type ProbeFuture = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

impl Service<HttpRequestFactory> for Probe {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = ProbeFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let attempt = self.inner.call(request);
        Box::pin(async move {
            let result = attempt.await;
            if let Ok(response) = &result {
                let meta = ResponseMeta {
                    status: response.status().as_u16(),
                    retry_after: retry_after(response.headers()),
                };
                // Outside a scope (never in our use) there is nowhere to
                // note it, and nothing needs it.
                let _ = LAST_RESPONSE.try_with(|slot| slot.set(Some(meta)));
            }
            result
        })
    }
}

/// `retry-after-ms` (OpenAI, Azure) or `Retry-After` in seconds. The
/// HTTP-date form is ignored (exponential backoff applies instead).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // Bounded before conversion: `from_secs_f64` panics on huge values,
    // and a server must not be able to crash us with a header. NaN fails
    // `contains` too.
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if (0.0..1e12).contains(&ms) {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let secs = header("retry-after")?.parse::<f64>().ok()?;
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// Why an LLM call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// No answer within `llm.timeout`, on every attempt.
    #[error("no answer within {timeout:?} ({attempts} attempts)")]
    Timeout {
        /// Attempts made.
        attempts: u32,
        /// The per-attempt timeout.
        timeout: Duration,
    },
    /// HTTP 429 on every attempt, or a `Retry-After` beyond `llm.max_backoff`,
    /// or a quota that retries cannot fix (`insufficient_quota`).
    #[error("rate limited by the endpoint (HTTP 429, {attempts} attempts): {message}")]
    RateLimited {
        /// Attempts made.
        attempts: u32,
        /// The endpoint's message (sanitised).
        message: String,
    },
    /// HTTP 401: the key is missing, wrong or revoked. Never retried.
    #[error("the endpoint refused the API key (HTTP 401): {message}; check llm.api_key / llm.api_key_env")]
    Unauthorized {
        /// The endpoint's message (sanitised).
        message: String,
    },
    /// HTTP 5xx on every attempt.
    #[error("server error (HTTP {status}, {attempts} attempts): {message}")]
    Server {
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The endpoint's message (sanitised).
        message: String,
    },
    /// Any other refusal (400: e.g. a model or server without
    /// `json_schema` support; 403; 404: wrong base URL or model). Never
    /// retried.
    #[error("request refused (HTTP {status}): {message}")]
    Refused {
        /// The status.
        status: u16,
        /// The endpoint's message (sanitised).
        message: String,
    },
    /// Could not connect or the connection broke, on every attempt.
    #[error("cannot reach the endpoint ({attempts} attempts): {message}")]
    Transport {
        /// Attempts made.
        attempts: u32,
        /// What failed.
        message: String,
    },
    /// A 2xx response that is not a chat completion.
    #[error("the endpoint's response is not a chat completion: {0}")]
    InvalidResponse(String),
    /// The hourly token budget is used up; no call was made.
    #[error("token budget exhausted ({used} of {budget} tokens this hour); calls resume in {}", humantime::format_duration(Duration::from_secs(.resets_in.as_secs())))]
    BudgetExhausted {
        /// Tokens used this hour.
        used: u64,
        /// `llm.tokens_per_hour`.
        budget: u64,
        /// Until the hour rolls over.
        resets_in: Duration,
    },
}

impl LlmError {
    /// The metric label value.
    pub fn reason(&self) -> &'static str {
        match self {
            LlmError::Timeout { .. } => "timeout",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Unauthorized { .. } => "unauthorized",
            LlmError::Server { .. } => "server_error",
            LlmError::Refused { .. } => "refused",
            LlmError::Transport { .. } => "transport",
            LlmError::InvalidResponse(_) => "invalid_response",
            LlmError::BudgetExhausted { .. } => "budget_exhausted",
        }
    }
}

/// One failed attempt: the error it would end with, and whether (and
/// after how long, if the server said) another attempt may help.
#[derive(Debug)]
pub(crate) struct AttemptFailure {
    pub error: LlmError,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

/// Classifies an async-openai error from attempt number `attempts`.
/// `meta` is what the probe saw (the status, when the body was not the
/// JSON error async-openai expects); `key` is scrubbed from messages.
pub(crate) fn classify(
    e: OpenAIError,
    meta: Option<ResponseMeta>,
    attempts: u32,
    timeout: Duration,
    key: &str,
) -> AttemptFailure {
    let retry_after = meta.and_then(|m| m.retry_after);
    let (status, message, quota) = match e {
        OpenAIError::ApiError(api) => {
            let detail = match (&api.api_error.r#type, &api.api_error.code) {
                (_, Some(code)) => format!("{} ({code})", api.api_error.message),
                (Some(kind), None) => format!("{} ({kind})", api.api_error.message),
                (None, None) => api.api_error.message.clone(),
            };
            let quota = api.api_error.r#type.as_deref() == Some("insufficient_quota")
                || api.api_error.code.as_deref() == Some("insufficient_quota");
            (api.status_code.as_u16(), detail, quota)
        }
        OpenAIError::JSONDeserialize(err, body) => match meta {
            Some(m) if !(200..300).contains(&m.status) => (m.status, body, false),
            _ => {
                return AttemptFailure {
                    error: LlmError::InvalidResponse(sanitise(&err.to_string(), key)),
                    retryable: false,
                    retry_after: None,
                }
            }
        },
        OpenAIError::Reqwest(err) => {
            let error = if err.is_timeout() {
                LlmError::Timeout { attempts, timeout }
            } else {
                LlmError::Transport {
                    attempts,
                    message: sanitise(&crate::telemetry::error_chain(&err), key),
                }
            };
            return AttemptFailure {
                error,
                retryable: true,
                retry_after: None,
            };
        }
        other => {
            return AttemptFailure {
                error: LlmError::Transport {
                    attempts,
                    message: sanitise(&other.to_string(), key),
                },
                retryable: false,
                retry_after: None,
            }
        }
    };
    let message = sanitise(&message, key);
    let (error, retryable) = match status {
        401 => (LlmError::Unauthorized { message }, false),
        429 => (LlmError::RateLimited { attempts, message }, !quota),
        500..=599 => (
            LlmError::Server {
                status,
                attempts,
                message,
            },
            true,
        ),
        _ => (LlmError::Refused { status, message }, false),
    };
    AttemptFailure {
        error,
        retryable,
        retry_after,
    }
}

/// A server's message made safe to log and store: the key itself removed
/// (a 401 body may echo it), secrets redacted, one bounded line.
pub(crate) fn sanitise(message: &str, key: &str) -> String {
    let scrubbed = if key.len() >= 4 {
        message.replace(key, "<redacted>")
    } else {
        message.to_string()
    };
    let one_line = redact_secrets(&scrubbed).replace(['\n', '\r'], " ");
    match one_line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut huge = HeaderMap::new();
        huge.insert("retry-after-ms", "1e300".parse().expect("header"));
        huge.insert("retry-after", "NaN".parse().expect("header"));
        assert_eq!(retry_after(&huge), None);
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn messages_never_carry_the_key() {
        let key = "sk-test-abcdefghijklmnopqrstuvwxyz";
        let s = sanitise(
            &format!("Incorrect API key provided: {key}.\nSee docs"),
            key,
        );
        assert!(!s.contains(key), "{s}");
        assert!(!s.contains('\n'));
        assert!(
            s.starts_with("Incorrect API key provided: <redacted>"),
            "{s}"
        );
    }
}
