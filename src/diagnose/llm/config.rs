//! `llm:` in the config file: which endpoint, which model, and the limits
//! (time, retries, tokens, prompt size) that keep a second opinion cheap
//! and harmless.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{HumanDuration, Secret};
use crate::logs::RedactionKind;

/// The optional LLM that proposes hypotheses from the evidence bundle.
///
/// Off by default. Any OpenAI-compatible endpoint works (OpenAI, Azure
/// OpenAI's v1 API, vLLM, Ollama, llama.cpp's server) as long as it
/// supports `response_format: json_schema` on `/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Ask the LLM for hypotheses. Default: `false`.
    #[serde(default)]
    pub enabled: bool,
    /// Base URL of the OpenAI-compatible API, up to and including the
    /// version segment; `/chat/completions` is appended.
    ///
    /// Default: `https://api.openai.com/v1`. An `http://` URL is allowed
    /// (a model served inside the cluster).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The model name sent in each request, e.g. `gpt-4o-mini`. Required
    /// when `enabled`.
    #[serde(default)]
    pub model: Option<String>,
    /// The API key, sent as `Authorization: Bearer …`. Prefer setting it
    /// through `AIOPSD_LLM__API_KEY` or `api_key_env` over writing it in the
    /// file. Never logged. Default: none.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Name of an environment variable holding the API key (e.g.
    /// `OPENAI_API_KEY`), read at start; used when `api_key` is not set.
    /// Default: none. With neither, requests carry an empty bearer token
    /// (local endpoints that need no key).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Longest wait for one HTTP attempt. Default: `30s`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Retries after a failed attempt (429, 5xx, timeout, connection
    /// error); 401 and other 4xx are never retried. Default: `2`, at most 10.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further one, up to
    /// `max_backoff`. A `Retry-After` header replaces it. Default: `500ms`.
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    /// Longest wait between two attempts. A `Retry-After` longer than this
    /// ends the call instead (the rules' diagnosis stands). Default: `10s`.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// Most tokens the model may generate per call
    /// (`max_completion_tokens`). Default: `1000`.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Token budget per hour (prompt + completion, as the endpoint reports
    /// in `usage`). A call is made only when the tokens used in the current
    /// hour plus this call's estimate (`max_prompt_bytes / 4 + max_tokens`)
    /// fit. Default: `50000`.
    #[serde(default = "default_tokens_per_hour")]
    pub tokens_per_hour: u64,
    /// Upper bound on the evidence data in the prompt, in bytes; the least
    /// important items are left out first and the prompt says how many.
    /// Default: `16384`, at least 2048.
    #[serde(default = "default_max_prompt_bytes")]
    pub max_prompt_bytes: usize,
    /// Personal data removed from every text sent, on top of secrets and
    /// tokens, which are always removed: `emails`, `ipv4`, `ipv6`.
    /// Default: all three.
    #[serde(default = "default_redact")]
    pub redact: Vec<RedactionKind>,
    /// How long an answer is reused for the same incident and the same
    /// evidence (no new call). Default: `1h`; `0s` turns the cache off.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: HumanDuration,
}

fn default_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_retries() -> u32 {
    2
}
fn default_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_max_tokens() -> u32 {
    1000
}
fn default_tokens_per_hour() -> u64 {
    50_000
}
fn default_max_prompt_bytes() -> usize {
    16 * 1024
}
fn default_redact() -> Vec<RedactionKind> {
    vec![
        RedactionKind::Emails,
        RedactionKind::Ipv4,
        RedactionKind::Ipv6,
    ]
}
fn default_cache_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

/// Smallest `max_prompt_bytes`: the header (subject, targets, gaps) and a
/// few items must fit.
pub const MIN_PROMPT_BYTES: usize = 2048;

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: default_base_url(),
            model: None,
            api_key: None,
            api_key_env: None,
            timeout: default_timeout(),
            max_retries: default_max_retries(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            max_tokens: default_max_tokens(),
            tokens_per_hour: default_tokens_per_hour(),
            max_prompt_bytes: default_max_prompt_bytes(),
            redact: default_redact(),
            cache_ttl: default_cache_ttl(),
        }
    }
}

impl LlmConfig {
    /// Reports every problem through `err(path, reason)`, with paths under
    /// `llm.`, so `Config::validate` lists them with the rest.
    ///
    /// Checked even when `enabled` is false (except that `model` is then
    /// optional), so a mistake is found before the day someone turns it on.
    pub fn validate(&self, err: &mut impl FnMut(String, String)) {
        let at = |field: &str| format!("llm.{field}");
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => err(
                at("base_url"),
                format!("scheme {:?} is not http or https", url.scheme()),
            ),
            Ok(url) if url.query().is_some() || !url.username().is_empty() => err(
                at("base_url"),
                "must not carry a query or credentials; put the key in llm.api_key".into(),
            ),
            Ok(_) => {}
            Err(e) => err(
                at("base_url"),
                format!("{:?} is not a URL: {e}", self.base_url),
            ),
        }
        match &self.model {
            Some(m) if m.trim().is_empty() => err(at("model"), "must not be empty".into()),
            None if self.enabled => err(
                at("model"),
                "required when llm.enabled is true (e.g. \"gpt-4o-mini\")".into(),
            ),
            _ => {}
        }
        if let Some(name) = &self.api_key_env {
            let ok = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !ok {
                err(
                    at("api_key_env"),
                    format!("{name:?} is not an environment variable name"),
                );
            }
        }
        if self.timeout.0.is_zero() {
            err(at("timeout"), "must be more than 0s".into());
        }
        if self.max_retries > 10 {
            err(
                at("max_retries"),
                format!("must be at most 10, got {}", self.max_retries),
            );
        }
        if self.backoff.0.is_zero() {
            err(at("backoff"), "must be more than 0s".into());
        }
        if self.max_backoff < self.backoff {
            err(
                at("max_backoff"),
                format!("must be at least llm.backoff ({})", self.backoff),
            );
        }
        if self.max_tokens == 0 {
            err(at("max_tokens"), "must be more than 0".into());
        }
        if self.max_prompt_bytes < MIN_PROMPT_BYTES {
            err(
                at("max_prompt_bytes"),
                format!(
                    "must be at least {MIN_PROMPT_BYTES}, got {}",
                    self.max_prompt_bytes
                ),
            );
        }
        let per_call = self.call_estimate();
        if self.tokens_per_hour < per_call {
            err(
                at("tokens_per_hour"),
                format!(
                    "{} does not allow a single call: one may use up to {per_call} tokens \
                     (max_prompt_bytes / 4 + max_tokens)",
                    self.tokens_per_hour
                ),
            );
        }
    }

    /// Upper estimate of one call's tokens, for the budget: about four bytes
    /// per token for the prompt, plus the completion limit.
    pub(crate) fn call_estimate(&self) -> u64 {
        let prompt = (self.max_prompt_bytes as u64 + super::prompt::INSTRUCTIONS_BYTES).div_ceil(4);
        prompt + u64::from(self.max_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(cfg: &LlmConfig) -> Vec<String> {
        let mut out = Vec::new();
        cfg.validate(&mut |path, reason| out.push(format!("{path}: {reason}")));
        out
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let cfg = LlmConfig::default();
        assert!(!cfg.enabled);
        assert_eq!(problems(&cfg), Vec::<String>::new());
    }

    #[test]
    fn yaml_field_names_and_unknown_fields() {
        let cfg: LlmConfig = serde_json::from_value(serde_json::json!({
            "enabled": true, "model": "m", "redact": ["ipv4"], "timeout": "5s"
        }))
        .expect("valid llm config");
        assert_eq!(cfg.redact, vec![RedactionKind::Ipv4]);
        assert_eq!(cfg.timeout.0, Duration::from_secs(5));
        let bad = serde_json::from_value::<LlmConfig>(serde_json::json!({"modle": "m"}));
        assert!(bad.is_err());
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let cfg = LlmConfig {
            enabled: true,
            base_url: "ftp://x".into(),
            model: None,
            api_key_env: Some("1BAD-NAME".into()),
            timeout: HumanDuration(Duration::ZERO),
            max_retries: 11,
            backoff: HumanDuration(Duration::from_secs(5)),
            max_backoff: HumanDuration(Duration::from_secs(1)),
            max_tokens: 0,
            tokens_per_hour: 10,
            max_prompt_bytes: 100,
            ..LlmConfig::default()
        };
        let found = problems(&cfg);
        for path in [
            "llm.base_url:",
            "llm.model:",
            "llm.api_key_env:",
            "llm.timeout:",
            "llm.max_retries:",
            "llm.max_backoff:",
            "llm.max_tokens:",
            "llm.max_prompt_bytes:",
            "llm.tokens_per_hour:",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(path)),
                "{path} missing in {found:?}"
            );
        }
    }
}
