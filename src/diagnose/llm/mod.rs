//! The optional LLM: a second opinion on an incident's evidence that can
//! only *propose* (docs/LLM.md).
//!
//! Start at [`LlmDiagnoser::propose`]: it turns an [`EvidenceBundle`] into
//! a prompt ([`prompt`]: redacted, size-bounded, the data fenced off from
//! the instructions), asks any OpenAI-compatible endpoint for an answer in
//! a strict JSON schema, and validates the answer ([`answer`]) against the
//! bundle: one unknown evidence id, unknown target, unknown verb or field
//! out of schema and the whole answer is discarded. What survives becomes
//! [`Hypothesis`]es with `proposed_by: Llm` — data for the report and the
//! policy gate, like the rules' suggestions; nothing here acts.
//!
//! Around the call: a per-attempt timeout, bounded retries with backoff
//! (honouring `Retry-After`), an hourly token budget, a per-incident
//! answer cache and [`LlmMetrics`]. Every failure is an [`LlmOutcome`]
//! the caller records as `Diagnosis::llm_status`; the rules' diagnosis
//! always stands on its own.

pub mod answer;
mod budget;
mod config;
mod metrics;
pub mod prompt;
mod transport;

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest, CreateChatCompletionResponse, FinishReason, ResponseFormat,
    ResponseFormatJsonSchema,
};
use async_openai::Client;

pub use answer::{Discard, DiscardKind};
pub use config::{LlmConfig, MIN_PROMPT_BYTES};
pub use metrics::LlmMetrics;
pub use transport::LlmError;

use budget::{AnswerCache, Cached, TokenBudget};
use transport::{classify, sanitise, Probe, LAST_RESPONSE};

use crate::config::Secret;
use crate::diagnose::evidence::EvidenceBundle;
use crate::diagnose::hypothesis::Hypothesis;
use crate::logs::RedactionKind;

/// Most incidents whose last answer is cached.
const CACHE_CAPACITY: usize = 1024;

/// What became of one request for an LLM diagnosis.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmOutcome {
    /// The answer passed validation: these hypotheses (all
    /// `proposed_by: Llm`) join the rules' in the diagnosis.
    Used {
        /// The validated hypotheses, in the model's order.
        hypotheses: Vec<Hypothesis>,
        /// Reused from an earlier call (same incident, same evidence).
        cached: bool,
    },
    /// The model answered, but the answer failed validation and was
    /// thrown away whole.
    Discarded {
        /// Why, e.g. `unknown evidence id "m9" in hypothesis 1`.
        reason: String,
        /// Reused from an earlier call.
        cached: bool,
    },
    /// No answer: the call failed or was not made (budget).
    Failed(LlmError),
}

impl LlmOutcome {
    /// One line for `Diagnosis::llm_status` and the report: `used`,
    /// `discarded: …`, `failed: …`, `skipped: token budget exhausted …`.
    pub fn status(&self) -> String {
        match self {
            LlmOutcome::Used { cached: false, .. } => "used".into(),
            LlmOutcome::Used { cached: true, .. } => "used (cached answer)".into(),
            LlmOutcome::Discarded {
                reason,
                cached: false,
            } => format!("discarded: {reason}"),
            LlmOutcome::Discarded {
                reason,
                cached: true,
            } => format!("discarded (cached answer): {reason}"),
            LlmOutcome::Failed(e @ LlmError::BudgetExhausted { .. }) => format!("skipped: {e}"),
            LlmOutcome::Failed(e) => format!("failed: {e}"),
        }
    }

    /// The validated hypotheses (empty unless [`LlmOutcome::Used`]).
    pub fn into_hypotheses(self) -> Vec<Hypothesis> {
        match self {
            LlmOutcome::Used { hypotheses, .. } => hypotheses,
            _ => Vec::new(),
        }
    }
}

/// Why the client could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum LlmSetupError {
    /// `llm.model` is not set.
    #[error("llm.model: required to call the LLM")]
    NoModel,
    /// `llm.api_key_env` names a variable that is not set.
    #[error("llm.api_key_env: environment variable {var} is not set (or not UTF-8)")]
    KeyEnvMissing {
        /// The variable.
        var: String,
    },
    /// The key has characters an HTTP header cannot carry (the key itself
    /// is not shown).
    #[error("llm.api_key: contains characters not allowed in an HTTP header (spaces, control characters or non-ASCII)")]
    KeyNotHeaderSafe,
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client for the LLM")]
    Http(#[source] reqwest::Error),
}

struct State {
    budget: TokenBudget,
    cache: AnswerCache,
}

/// The LLM client: builds prompts, calls the endpoint, validates answers.
/// One per daemon; `propose` may be called from several tasks.
pub struct LlmDiagnoser {
    client: Client<OpenAIConfig>,
    base_url: String,
    model: String,
    key: Secret,
    timeout: Duration,
    max_retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    max_tokens: u32,
    max_prompt_bytes: usize,
    redact: Vec<RedactionKind>,
    metrics: LlmMetrics,
    state: Mutex<State>,
}

impl fmt::Debug for LlmDiagnoser {
    // By hand: the key must not show up even as `Secret(***)` noise, and
    // the client's Debug would print its config.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmDiagnoser")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl LlmDiagnoser {
    /// Builds the client from `cfg` (already validated with
    /// [`LlmConfig::validate`]; `enabled` is the caller's business), reading
    /// the key from `llm.api_key` or the variable `llm.api_key_env` names.
    pub fn new(cfg: &LlmConfig, metrics: LlmMetrics) -> Result<Self, LlmSetupError> {
        let model = cfg
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .ok_or(LlmSetupError::NoModel)?
            .to_string();
        let key = match (&cfg.api_key, &cfg.api_key_env) {
            (Some(key), _) => key.expose().trim().to_string(),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| LlmSetupError::KeyEnvMissing { var: var.clone() })?
                .trim()
                .to_string(),
            (None, None) => String::new(),
        };
        // async-openai builds the Authorization header with `unwrap`; a key
        // it cannot put in a header must be refused here, not panic there.
        if key.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(LlmSetupError::KeyNotHeaderSafe);
        }
        let base_url = cfg.base_url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .build()
            .map_err(LlmSetupError::Http)?;
        let config = OpenAIConfig::new()
            .with_api_base(base_url.clone())
            .with_api_key(key.clone())
            // Not from the environment (OPENAI_ORG_ID…): config is explicit.
            .with_org_id("")
            .with_project_id("");
        let client = Client::build(http.clone(), config).with_http_service(Probe::new(http));
        Ok(Self {
            client,
            base_url,
            model,
            key: Secret::from(key.as_str()),
            timeout: cfg.timeout.0,
            max_retries: cfg.max_retries,
            backoff: cfg.backoff.0,
            max_backoff: cfg.max_backoff.0,
            max_tokens: cfg.max_tokens,
            max_prompt_bytes: cfg.max_prompt_bytes,
            redact: cfg.redact.clone(),
            metrics,
            state: Mutex::new(State {
                budget: TokenBudget::new(cfg.tokens_per_hour),
                cache: AnswerCache::new(cfg.cache_ttl.0, CACHE_CAPACITY),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is two counters and a map updated in single steps; a
        // panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the LLM about `bundle` (incident `incident_id`) and returns its
    /// validated hypotheses, or why there are none. Never fails otherwise,
    /// never panics on what the endpoint sends, and makes no call when the
    /// same incident's same evidence was answered within `llm.cache_ttl` or
    /// the hourly budget is used up.
    pub async fn propose(&self, incident_id: i64, bundle: &EvidenceBundle) -> LlmOutcome {
        let prompt = prompt::build(incident_id, bundle, self.max_prompt_bytes, &self.redact);
        let estimate = (prompt.len() as u64).div_ceil(4) + u64::from(self.max_tokens);
        {
            let now = Instant::now();
            let mut state = self.state();
            if let Some(cached) = state.cache.get(now, incident_id, &prompt.fingerprint) {
                self.metrics.cached(incident_id);
                return match cached {
                    Cached::Used(hypotheses) => LlmOutcome::Used {
                        hypotheses,
                        cached: true,
                    },
                    Cached::Discarded(d) => LlmOutcome::Discarded {
                        reason: d.message,
                        cached: true,
                    },
                };
            }
            if let Err(e) = state.budget.admit(now, estimate) {
                self.metrics
                    .skipped_budget(incident_id, e.used, e.budget, e.resets_in, e.first);
                return LlmOutcome::Failed(LlmError::BudgetExhausted {
                    used: e.used,
                    budget: e.budget,
                    resets_in: e.resets_in,
                });
            }
        }

        let request = self.request(&prompt);
        let started = Instant::now();
        let result = self.call(&request).await;
        let took = started.elapsed();
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                self.metrics
                    .failed(incident_id, e.reason(), &e.to_string(), took);
                return LlmOutcome::Failed(e);
            }
        };

        let usage = response.usage.as_ref();
        let (prompt_tokens, completion_tokens) = (
            usage.map(|u| u.prompt_tokens),
            usage.map(|u| u.completion_tokens),
        );
        // Without `usage` (some servers omit it) the estimate is charged.
        let spent = usage
            .map(|u| u64::from(u.prompt_tokens) + u64::from(u.completion_tokens))
            .unwrap_or(estimate);
        self.metrics
            .answered(prompt_tokens, completion_tokens, took);
        let verdict = self.interpret(&response, bundle, &prompt);
        let mut state = self.state();
        let now = Instant::now();
        state.budget.record(now, spent);
        match verdict {
            Ok(hypotheses) => {
                self.metrics.used(incident_id, hypotheses.len());
                state.cache.put(
                    now,
                    incident_id,
                    prompt.fingerprint,
                    Cached::Used(hypotheses.clone()),
                );
                LlmOutcome::Used {
                    hypotheses,
                    cached: false,
                }
            }
            Err(d) => {
                self.metrics
                    .discarded(incident_id, d.kind.as_str(), &d.message);
                let reason = d.message.clone();
                state
                    .cache
                    .put(now, incident_id, prompt.fingerprint, Cached::Discarded(d));
                LlmOutcome::Discarded {
                    reason,
                    cached: false,
                }
            }
        }
    }

    fn request(&self, prompt: &prompt::Prompt) -> CreateChatCompletionRequest {
        CreateChatCompletionRequest {
            model: self.model.clone(),
            messages: vec![
                ChatCompletionRequestSystemMessage::from(prompt.system.as_str()).into(),
                ChatCompletionRequestUserMessage::from(prompt.user.as_str()).into(),
            ],
            max_completion_tokens: Some(self.max_tokens),
            response_format: Some(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some(
                        "Root-cause hypotheses for one incident, citing evidence ids".into(),
                    ),
                    name: "aiopsd_diagnosis".into(),
                    schema: prompt::answer_schema(),
                    strict: Some(true),
                },
            }),
            ..Default::default()
        }
    }

    /// The completion's first choice, validated.
    fn interpret(
        &self,
        response: &CreateChatCompletionResponse,
        bundle: &EvidenceBundle,
        prompt: &prompt::Prompt,
    ) -> Result<Vec<Hypothesis>, Discard> {
        let empty = |message: &str| Discard {
            kind: DiscardKind::Empty,
            message: message.into(),
        };
        let choice = response
            .choices
            .first()
            .ok_or_else(|| empty("the completion has no choices"))?;
        if let Some(refusal) = choice.message.refusal.as_deref() {
            return Err(Discard {
                kind: DiscardKind::Refused,
                message: format!(
                    "the model refused: {}",
                    sanitise(refusal, self.key.expose())
                ),
            });
        }
        if choice.finish_reason == Some(FinishReason::Length) {
            return Err(Discard {
                kind: DiscardKind::Truncated,
                message: format!(
                    "the answer was cut off at llm.max_tokens ({})",
                    self.max_tokens
                ),
            });
        }
        let content = choice
            .message
            .content
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| empty("the answer is empty"))?;
        answer::validate(content, bundle, &prompt.shown)
    }

    /// One call with its retries: each attempt bounded by `timeout`; 429,
    /// 5xx, timeouts and connection errors retried up to `max_retries`
    /// times after `Retry-After` or an exponential backoff (both at most
    /// `max_backoff`).
    async fn call(
        &self,
        request: &CreateChatCompletionRequest,
    ) -> Result<CreateChatCompletionResponse, LlmError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let chat = self.client.chat();
            let (result, meta) = LAST_RESPONSE
                .scope(std::cell::Cell::new(None), async {
                    let result =
                        tokio::time::timeout(self.timeout, chat.create(request.clone())).await;
                    (result, LAST_RESPONSE.with(|slot| slot.get()))
                })
                .await;
            let failure = match result {
                Ok(Ok(response)) => return Ok(response),
                Err(_elapsed) => transport::AttemptFailure {
                    error: LlmError::Timeout {
                        attempts: attempt,
                        timeout: self.timeout,
                    },
                    retryable: true,
                    retry_after: None,
                },
                Ok(Err(e)) => classify(e, meta, attempt, self.timeout, self.key.expose()),
            };
            if !failure.retryable || attempt > self.max_retries {
                return Err(failure.error);
            }
            let delay = match failure.retry_after {
                Some(wait) if wait > self.max_backoff => {
                    return Err(match failure.error {
                        LlmError::RateLimited { attempts, message } => LlmError::RateLimited {
                            attempts,
                            message: format!(
                                "{message} (the endpoint asks to wait {}, more than llm.max_backoff {})",
                                humantime::format_duration(wait),
                                humantime::format_duration(self.max_backoff)
                            ),
                        },
                        other => other,
                    });
                }
                Some(wait) => wait,
                None => self.backoff_for(attempt),
            };
            self.metrics
                .retrying(attempt, &failure.error.to_string(), delay);
            tokio::time::sleep(delay).await;
        }
    }

    /// `backoff × 2^(attempt-1)`, at most `max_backoff`.
    fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}
