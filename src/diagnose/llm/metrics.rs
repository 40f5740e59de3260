//! Telemetry of the LLM client. As in `crate::telemetry`, each method
//! writes the log line *and* the metric, so wording and names live in one
//! place. Nothing here ever sees the API key.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set naming what became of one request for a diagnosis.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    /// `used`, `discarded`, `failed`, `cached` or `skipped` (budget).
    pub outcome: String,
}

/// Label set naming a token kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenKindLabel {
    /// `prompt` or `completion`.
    pub kind: String,
}

/// Label set naming why a call gave no usable answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabel {
    /// `timeout`, `rate_limited`, `unauthorized`, `server_error`, …, or the
    /// discard class of an answer (`invalid_json`, `unknown_evidence`, …).
    pub reason: String,
}

/// The LLM client's metrics. Cheap to clone (the metrics are shared), so
/// one copy lives in aiopsd's `Metrics` and one in the client.
#[derive(Debug, Clone)]
pub struct LlmMetrics {
    calls: Family<OutcomeLabel, Counter>,
    tokens: Family<TokenKindLabel, Counter>,
    failures: Family<FailureLabel, Counter>,
    retries: Counter,
    duration: Histogram,
}

impl Default for LlmMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            tokens: Family::default(),
            failures: Family::default(),
            retries: Counter::default(),
            duration: Histogram::new([0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]),
        }
    }
}

impl LlmMetrics {
    /// Creates the metrics and registers them (under the registry's prefix,
    /// `aiopsd_` in the daemon).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "llm_calls",
            "Requests for an LLM diagnosis, by outcome (used, discarded, failed, cached, skipped)",
            m.calls.clone(),
        );
        registry.register(
            "llm_tokens",
            "Tokens the LLM endpoint reported using, by kind (prompt, completion)",
            m.tokens.clone(),
        );
        registry.register(
            "llm_failures",
            "LLM calls that gave no usable answer, by reason (transport errors and discarded answers)",
            m.failures.clone(),
        );
        registry.register(
            "llm_retries",
            "LLM HTTP attempts retried after a 429, 5xx, timeout or connection error",
            m.retries.clone(),
        );
        registry.register(
            "llm_call_duration_seconds",
            "Time one LLM call took, retries and backoff included",
            m.duration.clone(),
        );
        m
    }

    fn outcome(&self, outcome: &str) {
        self.calls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&FailureLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// The endpoint answered (valid or not): its token use and the time.
    pub(crate) fn answered(
        &self,
        prompt_tokens: Option<u32>,
        completion_tokens: Option<u32>,
        took: Duration,
    ) {
        for (kind, n) in [("prompt", prompt_tokens), ("completion", completion_tokens)] {
            if let Some(n) = n {
                self.tokens
                    .get_or_create(&TokenKindLabel { kind: kind.into() })
                    .inc_by(u64::from(n));
            }
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// The answer passed validation.
    pub(crate) fn used(&self, incident: i64, hypotheses: usize) {
        self.outcome("used");
        tracing::info!(
            incident,
            hypotheses,
            "The LLM's answer passed validation; its hypotheses join the diagnosis, marked as LLM-proposed."
        );
    }

    /// The answer was discarded.
    pub(crate) fn discarded(&self, incident: i64, class: &str, reason: &str) {
        self.outcome("discarded");
        self.failure(class);
        tracing::warn!(
            incident,
            reason,
            "The LLM's answer was discarded; the rules' diagnosis stands."
        );
    }

    /// The call failed (after any retries).
    pub(crate) fn failed(&self, incident: i64, class: &str, error: &str, took: Duration) {
        self.outcome("failed");
        self.failure(class);
        self.duration.observe(took.as_secs_f64());
        tracing::warn!(
            incident,
            error,
            "The LLM call failed; the rules' diagnosis stands."
        );
    }

    /// An answer for the same incident and evidence was reused.
    pub(crate) fn cached(&self, incident: i64) {
        self.outcome("cached");
        tracing::debug!(
            incident,
            "The evidence has not changed since the LLM last answered for this incident; reusing that answer."
        );
    }

    /// No call: the hourly token budget is used up. `first` is true once
    /// per hour, and only then is a WARN line written.
    pub(crate) fn skipped_budget(
        &self,
        incident: i64,
        used: u64,
        budget: u64,
        resets_in: Duration,
        first: bool,
    ) {
        self.outcome("skipped");
        self.failure("budget_exhausted");
        let resets_in = humantime::format_duration(Duration::from_secs(resets_in.as_secs()));
        if first {
            tracing::warn!(
                incident,
                used,
                budget,
                %resets_in,
                "LLM calls are disabled for {resets_in}: the budget of {budget} tokens per hour (llm.tokens_per_hour) is used up ({used} used); diagnosis uses the rules only until the hour rolls over."
            );
        } else {
            tracing::debug!(incident, "LLM call skipped: token budget used up.");
        }
    }

    /// One attempt failed and will be retried after `delay`.
    pub(crate) fn retrying(&self, attempt: u32, reason: &str, delay: Duration) {
        self.retries.inc();
        tracing::warn!(
            attempt,
            reason,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "LLM call attempt {attempt} failed; retrying."
        );
    }
}
