//! Elasticsearch log source: reads log documents in time order with a
//! point-in-time (PIT) and `search_after`, and turns them into per-service
//! template counts (issue 10).
//!
//! Why PIT + `search_after` and not `from`/`size`: deep `from` paging costs
//! the cluster `from + size` documents per shard per page and stops at
//! `index.max_result_window`; a PIT gives every page the same view of the
//! index, and `search_after` continues exactly after the last sort values.
//!
//! **Position.** [`Checkpoint`] says what has been consumed: every document
//! with a timestamp before `timestamp_ms`, plus the documents *at*
//! `timestamp_ms` whose `_id`s it lists. The caller persists it (the lead's
//! store) and hands it back; a restart then neither skips nor re-counts.
//! Within one PIT the next page is fetched with `search_after` on
//! `[timestamp, _shard_doc]`; `_shard_doc` is only meaningful inside the PIT
//! that produced it, so a *new* PIT (next poll, restart, or an expired PIT)
//! restarts at `timestamp >= timestamp_ms` and drops the listed ids instead.
//!
//! **Queries** are JSON built from typed values (epoch milliseconds, page
//! sizes) and field names checked by [`ElasticConfig::validate`]; nothing
//! from the config is pasted into a query string.
//!
//! [`TemplateCounter`] is the synchronous half: it feeds each document's
//! message to one [`TemplateMiner`] per service and counts lines per
//! service, template and time bucket, keeping a few redacted examples.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use elasticsearch::auth::Credentials;
use elasticsearch::http::transport::{BuildError, SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Url;
use elasticsearch::{Elasticsearch, OpenPointInTimeParts, SearchParts};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{redact_secrets, TemplateId, TemplateMiner};
use crate::config::{HumanDuration, Secret};

/// Largest page the source asks for: Elasticsearch's default
/// `index.max_result_window`, and a bound on one response's memory.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// At most this many `_id`s at the checkpoint's timestamp are remembered.
/// More documents than this in one millisecond would be re-read after a
/// new PIT (counted twice); a bound keeps the checkpoint small.
pub const MAX_IDS_AT_TIMESTAMP: usize = 10_000;

/// How long Elasticsearch keeps the PIT between two pages.
const PIT_KEEP_ALIVE: &str = "1m";

/// A new PIT is opened at most this many times in one read (expired PITs),
/// so a cluster that forgets every PIT ends the read with an error instead
/// of looping.
const MAX_PIT_REOPENS: u32 = 3;

/// The longest wait between two retries, whatever the backoff or a
/// `Retry-After` header says.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the source authenticates to Elasticsearch.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ElasticAuth {
    /// HTTP basic authentication (a native or file-realm user).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// An API key as Kibana shows it: base64 of `id:api_key`
    /// (`Authorization: ApiKey …`).
    ApiKey {
        /// The encoded key.
        key: Secret,
    },
    /// A bearer token (`Authorization: Bearer …`), e.g. from a token service.
    Bearer {
        /// The token.
        token: Secret,
    },
}

/// Configuration of the Elasticsearch log source (`elasticsearch:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticConfig {
    /// Base URL of the cluster, e.g. `https://es.logging:9200`. `http` or
    /// `https`; TLS uses rustls with the system's roots.
    pub url: String,
    /// Index pattern to read, e.g. `logs-*`; several patterns separated by
    /// commas. Lower-case; no spaces or `\ / ? " < > | #`.
    pub index: String,
    /// Field holding the event time (a `date` or `date_nanos` field).
    /// Default: `@timestamp`.
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
    /// Field holding the log message mined into templates. Default:
    /// `message`. Documents without it are skipped and counted.
    #[serde(default = "default_message_field")]
    pub message_field: String,
    /// Field naming the service a line belongs to, e.g. `service.name` or
    /// `kubernetes.labels.app`. Default: `service.name`. Documents without
    /// it are counted under `unknown`.
    #[serde(default = "default_service_field")]
    pub service_field: String,
    /// Credentials. Default: none (an open cluster, or a proxy that adds them).
    #[serde(default)]
    pub auth: Option<ElasticAuth>,
    /// Documents per page. Default: `1000`; 1 to 10 000.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Time between two reads. Default: `30s`; more than 0s.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Only documents older than now minus this are read, so late-indexed
    /// documents (refresh interval, shippers' batching) are not missed.
    /// Default: `30s`.
    #[serde(default = "default_lag")]
    pub lag: HumanDuration,
    /// Timeout of one HTTP request. Default: `10s`; more than 0s.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Retries of one request after 429, 5xx or a transport error, with
    /// doubling backoff. Default: `5`; at most 20.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff; it doubles per retry up to 32 times this, and never
    /// more than 30s (a `Retry-After` header is honoured within the same
    /// cap). Default: `500ms`.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: HumanDuration,
    /// Field holding the Kubernetes namespace, e.g. `kubernetes.namespace`.
    /// Its value becomes the `namespace` label of the log signals, so they
    /// group with metric anomalies of the same namespace (see
    /// `incidents.group_by`). Default: none (no `namespace` label unless
    /// `labels` sets one).
    #[serde(default)]
    pub namespace_field: Option<String>,
    /// Field holding the log level (`error`, `WARN`, ...). Default:
    /// `log.level` (ECS). `null` turns level counting off.
    #[serde(default = "default_level_field")]
    pub level_field: Option<String>,
    /// Levels counted by the `log_error_rate` signal, compared without
    /// regard to case. Default: `error`, `err`, `fatal`, `critical`,
    /// `crit`, `alert`, `emerg`, `panic`, `warn`, `warning`.
    #[serde(default = "default_error_levels")]
    pub error_levels: Vec<String>,
    /// Labels added to every log signal series, e.g. `{namespace: shop}`
    /// when the index holds one namespace's logs. Names are Prometheus
    /// label names; `service` and `template` are set by the pipeline and
    /// may not be given. Default: none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Width of one counting bucket: log signals get one sample per
    /// bucket. Default: `1m`; 1s to 1h.
    #[serde(default = "default_bucket")]
    pub bucket: HumanDuration,
    /// History read on the very first start (no stored checkpoint), so the
    /// detectors are warm. Default: `1h`.
    #[serde(default = "default_backfill")]
    pub backfill: HumanDuration,
    /// How long per-bucket template counts are kept in the store; also the
    /// history replayed into the detectors after a restart. Default: `6h`;
    /// at least `evidence_window` twice and one bucket.
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
    /// Templates per service that get their own `log_template_rate`
    /// series (the first ones to reach 5 lines in a bucket). Default:
    /// `20`; at most 200.
    #[serde(default = "default_max_template_series")]
    pub max_template_series: usize,
    /// Incident evidence compares this long before an incident's start
    /// with this long from it. Default: `10m`; at least one bucket.
    #[serde(default = "default_evidence_window")]
    pub evidence_window: HumanDuration,
    /// Extra regexes whose matches are redacted from example lines and
    /// templates before they are stored or shown (customer ids, internal
    /// hostnames …), on top of the built-in rules (passwords, tokens, keys,
    /// JWTs, cloud keys, e-mail addresses), which cannot be turned off.
    #[serde(default)]
    pub redact_patterns: Vec<String>,
    /// Also redact IPv4 and IPv6 addresses. Default: `false`.
    #[serde(default)]
    pub redact_ip_addresses: bool,
    /// Detector of the log signals. Default: `robust_ewma` with its usual
    /// tunables but `min_spread: 1` (counts of a few lines are noise).
    #[serde(default)]
    pub detector: Option<crate::detect::DetectorSpec>,
}

fn default_timestamp_field() -> String {
    "@timestamp".into()
}
fn default_message_field() -> String {
    "message".into()
}
fn default_service_field() -> String {
    "service.name".into()
}
fn default_page_size() -> usize {
    1000
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_lag() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_max_retries() -> u32 {
    5
}
fn default_retry_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_level_field() -> Option<String> {
    Some("log.level".into())
}
fn default_error_levels() -> Vec<String> {
    [
        "error", "err", "fatal", "critical", "crit", "alert", "emerg", "panic", "warn", "warning",
    ]
    .map(String::from)
    .to_vec()
}
fn default_bucket() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_backfill() -> HumanDuration {
    HumanDuration::secs(3600)
}
fn default_retention() -> HumanDuration {
    HumanDuration::secs(6 * 3600)
}
fn default_max_template_series() -> usize {
    20
}
fn default_evidence_window() -> HumanDuration {
    HumanDuration::secs(600)
}

/// Label names the pipeline sets itself; `labels` may not set them.
const RESERVED_LABELS: [&str; 2] = ["service", "template"];

impl ElasticConfig {
    /// A configuration with the defaults for `url` and `index`.
    pub fn new(url: &str, index: &str) -> Self {
        Self {
            url: url.into(),
            index: index.into(),
            timestamp_field: default_timestamp_field(),
            message_field: default_message_field(),
            service_field: default_service_field(),
            auth: None,
            page_size: default_page_size(),
            poll_interval: default_poll_interval(),
            lag: default_lag(),
            timeout: default_timeout(),
            max_retries: default_max_retries(),
            retry_backoff: default_retry_backoff(),
            namespace_field: None,
            level_field: default_level_field(),
            error_levels: default_error_levels(),
            labels: BTreeMap::new(),
            bucket: default_bucket(),
            backfill: default_backfill(),
            retention: default_retention(),
            max_template_series: default_max_template_series(),
            evidence_window: default_evidence_window(),
            redact_patterns: Vec::new(),
            redact_ip_addresses: false,
            detector: None,
        }
    }

    /// The redaction this source's evidence gets (see
    /// [`ElasticConfig::redact_patterns`]).
    pub fn redactor(&self) -> Result<super::Redactor, (usize, String)> {
        super::Redactor::new(&self.redact_patterns, self.redact_ip_addresses)
    }

    /// The detector of the log signals (see [`ElasticConfig::detector`]).
    pub fn detector_spec(&self) -> crate::detect::DetectorSpec {
        self.detector.clone().unwrap_or_else(|| {
            crate::detect::DetectorSpec::RobustEwma(crate::detect::RobustEwmaParams {
                min_spread: 1.0,
                ..Default::default()
            })
        })
    }

    /// Reports each invalid field as `(path, reason)`, paths under
    /// `elasticsearch.`.
    pub fn validate(&self, err: &mut impl FnMut(String, String)) {
        let at = |field: &str| format!("elasticsearch.{field}");
        match Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => err(
                at("url"),
                format!("must be http or https, got scheme {:?}", url.scheme()),
            ),
            Err(e) => err(at("url"), format!("{:?} is not a URL: {e}", self.url)),
        }
        if let Err(reason) = check_index_pattern(&self.index) {
            err(at("index"), reason);
        }
        if let Err((i, reason)) = self.redactor() {
            err(at(&format!("redact_patterns[{i}]")), reason);
        }
        for (name, value) in [
            ("timestamp_field", &self.timestamp_field),
            ("message_field", &self.message_field),
            ("service_field", &self.service_field),
        ] {
            if let Err(reason) = check_field_name(value) {
                err(at(name), reason);
            }
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            err(
                at("page_size"),
                format!("must be 1 to {MAX_PAGE_SIZE}, got {}", self.page_size),
            );
        }
        for (name, d) in [
            ("poll_interval", self.poll_interval),
            ("timeout", self.timeout),
        ] {
            if d.0.is_zero() {
                err(at(name), "must be more than 0s".into());
            }
        }
        if self.max_retries > 20 {
            err(
                at("max_retries"),
                format!("must be at most 20, got {}", self.max_retries),
            );
        }
        if self.retry_backoff.0 > MAX_BACKOFF {
            err(
                at("retry_backoff"),
                format!("must be at most 30s, got {}", self.retry_backoff),
            );
        }
        for (name, value) in [
            ("namespace_field", &self.namespace_field),
            ("level_field", &self.level_field),
        ] {
            if let Some(Err(reason)) = value.as_deref().map(check_field_name) {
                err(at(name), reason);
            }
        }
        for (name, value) in &self.labels {
            let valid = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if name.is_empty() || !valid || name.starts_with("__") {
                err(
                    at(&format!("labels.{name}")),
                    "must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"
                        .into(),
                );
            } else if RESERVED_LABELS.contains(&name.as_str()) {
                err(
                    at(&format!("labels.{name}")),
                    "is set by the log pipeline and may not be configured".into(),
                );
            } else if value.is_empty() {
                err(at(&format!("labels.{name}")), "must not be empty".into());
            }
        }
        let bucket = self.bucket.0;
        if bucket < Duration::from_secs(1) || bucket > Duration::from_secs(3600) {
            err(
                at("bucket"),
                format!("must be 1s to 1h, got {}", self.bucket),
            );
        }
        if self.evidence_window.0 < bucket {
            err(
                at("evidence_window"),
                format!(
                    "must be at least one bucket ({}), got {}",
                    self.bucket, self.evidence_window
                ),
            );
        }
        if self.retention.0 < bucket || self.retention.0 < self.evidence_window.0.saturating_mul(2)
        {
            err(
                at("retention"),
                format!(
                    "must be at least one bucket and twice evidence_window, got {}",
                    self.retention
                ),
            );
        }
        if self.max_template_series > 200 {
            err(
                at("max_template_series"),
                format!("must be at most 200, got {}", self.max_template_series),
            );
        }
        if let Some(spec) = &self.detector {
            if let Err(reason) = spec.validate() {
                err(at("detector"), reason);
            }
        }
        if let Some(ElasticAuth::Basic { username, .. }) = &self.auth {
            if username.is_empty() || username.contains(':') {
                err(
                    at("auth.username"),
                    "must be non-empty and contain no ':'".into(),
                );
            }
        }
    }

    /// The index patterns of `index`, split on commas.
    fn indices(&self) -> Vec<&str> {
        self.index.split(',').map(str::trim).collect()
    }
}

/// A field name: dotted path of `[A-Za-z0-9_@-]` segments (no empty
/// segment), at most 256 bytes. Stricter than Elasticsearch, on purpose:
/// the name goes into query JSON as a key and into `_source` filtering,
/// where wildcards would change the meaning.
fn check_field_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err(format!("must be 1 to 256 bytes, got {:?}", name));
    }
    if name.split('.').any(str::is_empty) {
        return Err(format!("{name:?} has an empty path segment"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '-' | '.')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; use letters, digits, '_', '@', '-' and '.'"
        ));
    }
    Ok(())
}

/// Elasticsearch's index-name rules, with `*` allowed for patterns.
fn check_index_pattern(index: &str) -> Result<(), String> {
    if index.trim().is_empty() {
        return Err("must name at least one index or pattern".into());
    }
    for part in index.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("{index:?} has an empty pattern between commas"));
        }
        if part.len() > 255 {
            return Err(format!("{part:?} is longer than 255 bytes"));
        }
        if part == "." || part == ".." || part.starts_with(['_', '-', '+']) {
            return Err(format!(
                "{part:?} may not be '.', '..' or start with '_', '-' or '+'"
            ));
        }
        if let Some(c) = part.chars().find(|c| {
            c.is_uppercase()
                || c.is_whitespace()
                || matches!(c, '\\' | '/' | '?' | '"' | '<' | '>' | '|' | '#' | ':')
        }) {
            return Err(format!(
                "{part:?} contains {c:?}; index names are lower-case without \
                 spaces or \\ / ? \" < > | # :"
            ));
        }
    }
    Ok(())
}

/// What has been consumed (see the module docs); persisted by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every document before this time (epoch ms) has been consumed.
    pub timestamp_ms: i64,
    /// `_id`s of the consumed documents *at* `timestamp_ms` (at most
    /// [`MAX_IDS_AT_TIMESTAMP`]).
    #[serde(default)]
    pub ids_at_timestamp: Vec<String>,
    /// Sort values of the last consumed document (`[timestamp, _shard_doc]`),
    /// for diagnostics: a new PIT cannot use `_shard_doc` of an old one.
    #[serde(default)]
    pub sort: Vec<Value>,
}

impl Checkpoint {
    /// A checkpoint that starts reading at `timestamp_ms` (inclusive), for
    /// a first start without a stored position.
    pub fn starting_at(timestamp_ms: i64) -> Self {
        Self {
            timestamp_ms,
            ids_at_timestamp: Vec::new(),
            sort: Vec::new(),
        }
    }

    fn consume(&mut self, id: &str, timestamp_ms: i64, sort: &[Value]) {
        if timestamp_ms != self.timestamp_ms {
            self.timestamp_ms = timestamp_ms;
            self.ids_at_timestamp.clear();
        }
        if self.ids_at_timestamp.len() < MAX_IDS_AT_TIMESTAMP {
            self.ids_at_timestamp.push(id.to_owned());
        }
        self.sort = sort.to_vec();
    }
}

/// One log document, reduced to what the miner needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDoc {
    /// Document `_id`.
    pub id: String,
    /// Event time, epoch ms (from the sort value, so `date_nanos` works).
    pub timestamp_ms: i64,
    /// The service field's value, if present and a string.
    pub service: Option<String>,
    /// The namespace field's value, if configured, present and a string.
    pub namespace: Option<String>,
    /// The level field's value, if configured and present (a number is
    /// kept as its text).
    pub level: Option<String>,
    /// The message field's value.
    pub message: String,
}

/// Figures of one [`ElasticSource::read`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Documents handed to the sink.
    pub documents: u64,
    /// Hits without a usable message or timestamp (skipped, never a crash).
    pub skipped_malformed: u64,
    /// Hits at the checkpoint's timestamp already consumed before.
    pub skipped_seen: u64,
    /// Search requests answered (pages).
    pub pages: u64,
    /// Requests retried after 429, 5xx or a transport error.
    pub retries: u64,
    /// PITs opened again after Elasticsearch forgot one.
    pub pit_reopens: u64,
}

/// A failed read; each variant names the index and what failed.
#[derive(Debug, thiserror::Error)]
pub enum ElasticError {
    /// The configuration is invalid (field path and reason).
    #[error("invalid Elasticsearch configuration: {field}: {reason}")]
    Config {
        /// Field path, e.g. `elasticsearch.url`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the Elasticsearch client for {url}")]
    Build {
        /// The configured URL.
        url: String,
        /// The client's error.
        #[source]
        source: BuildError,
    },
    /// The request could not be sent or timed out, after all retries.
    #[error(
        "Elasticsearch {op} on index {index:?} failed to complete after {attempts} attempt(s)"
    )]
    Transport {
        /// `open PIT`, `search` or `close PIT`.
        op: &'static str,
        /// The configured index pattern.
        index: String,
        /// Attempts made.
        attempts: u32,
        /// The last client error.
        #[source]
        source: elasticsearch::Error,
    },
    /// Elasticsearch answered with an error status (after retries for
    /// 429/5xx; at once for others such as 401 or 400).
    #[error("Elasticsearch {op} on index {index:?} failed with HTTP {status} ({kind}): {reason}")]
    Status {
        /// `open PIT`, `search` or `close PIT`.
        op: &'static str,
        /// The configured index pattern.
        index: String,
        /// HTTP status.
        status: u16,
        /// Elasticsearch's `error.type`, e.g. `security_exception`.
        kind: String,
        /// Elasticsearch's `error.reason`.
        reason: String,
    },
    /// Some shards failed; results would be partial, so the page is not used.
    #[error(
        "Elasticsearch search on index {index:?}: {failed} of {total} shards failed: {reason}"
    )]
    ShardFailures {
        /// The configured index pattern.
        index: String,
        /// Failed shards.
        failed: u64,
        /// All shards.
        total: u64,
        /// First failure's reason.
        reason: String,
    },
    /// The response did not have the expected shape.
    #[error("Elasticsearch {op} on index {index:?}: unexpected response: {detail}")]
    Response {
        /// `open PIT` or `search`.
        op: &'static str,
        /// The configured index pattern.
        index: String,
        /// What was missing or wrong.
        detail: String,
    },
}

/// The Elasticsearch log source (see the module docs).
#[derive(Debug)]
pub struct ElasticSource {
    client: Elasticsearch,
    config: ElasticConfig,
}

/// One HTTP answer, read whole.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Value,
}

impl ElasticSource {
    /// Validates `config` and builds the client (no request is sent).
    pub fn new(config: &ElasticConfig) -> Result<Self, ElasticError> {
        let mut first: Option<(String, String)> = None;
        config.validate(&mut |field, reason| {
            first.get_or_insert((field, reason));
        });
        if let Some((field, reason)) = first {
            return Err(ElasticError::Config { field, reason });
        }
        let url = Url::parse(&config.url).map_err(|e| ElasticError::Config {
            field: "elasticsearch.url".into(),
            reason: e.to_string(),
        })?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(config.timeout.0)
            .disable_proxy();
        if let Some(auth) = &config.auth {
            builder = builder.auth(match auth {
                ElasticAuth::Basic { username, password } => {
                    Credentials::Basic(username.clone(), password.expose().to_owned())
                }
                ElasticAuth::ApiKey { key } => Credentials::EncodedApiKey(key.expose().to_owned()),
                ElasticAuth::Bearer { token } => Credentials::Bearer(token.expose().to_owned()),
            });
        }
        let transport = builder.build().map_err(|source| ElasticError::Build {
            url: config.url.clone(),
            source,
        })?;
        Ok(Self {
            client: Elasticsearch::new(transport),
            config: config.clone(),
        })
    }

    /// The configuration this source was built from.
    pub fn config(&self) -> &ElasticConfig {
        &self.config
    }

    /// The end of the window a read at `now_ms` may cover: now minus `lag`.
    pub fn window_end(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.config.lag.as_millis_i64())
    }

    /// Reads every document after `checkpoint` and before `until_ms`
    /// (exclusive), oldest first, page by page, handing each to `sink` and
    /// advancing `checkpoint` as it goes.
    ///
    /// On error, `checkpoint` still matches exactly what `sink` received,
    /// so the caller may persist it either way and the next read continues.
    pub async fn read(
        &self,
        checkpoint: &mut Checkpoint,
        until_ms: i64,
        mut sink: impl FnMut(LogDoc),
    ) -> Result<ReadStats, ElasticError> {
        let mut stats = ReadStats::default();
        if until_ms <= checkpoint.timestamp_ms {
            return Ok(stats);
        }
        let mut pit = self.open_pit(&mut stats).await?;
        let result = self
            .read_pages(&mut pit, checkpoint, until_ms, &mut sink, &mut stats)
            .await;
        // Free the PIT's resources at once rather than after keep_alive; a
        // failure here costs the cluster a minute of memory, not our data.
        if let Err(error) = self.close_pit(&pit).await {
            tracing::warn!(error = %error, "Could not close the Elasticsearch point in time; it expires by itself.");
        }
        result.map(|()| stats)
    }

    async fn read_pages(
        &self,
        pit: &mut String,
        checkpoint: &mut Checkpoint,
        until_ms: i64,
        sink: &mut impl FnMut(LogDoc),
        stats: &mut ReadStats,
    ) -> Result<(), ElasticError> {
        // None: first page of this PIT (range from the checkpoint, drop
        // seen ids); Some: search_after within this PIT.
        let mut after: Option<Vec<Value>> = None;
        // The checkpoint's timestamp and ids when the current PIT session
        // started (see the module docs).
        let mut seen: (i64, HashSet<String>) = (i64::MIN, HashSet::new());
        loop {
            let body = self.search_body(pit, checkpoint.timestamp_ms, until_ms, after.as_deref());
            let result = self
                .send_retrying("search", stats, || {
                    self.client
                        .search(SearchParts::None)
                        .body(body.clone())
                        .send()
                })
                .await;
            let answer = match result {
                Err(ElasticError::Status {
                    status: 404,
                    ref kind,
                    ..
                }) if kind == "search_context_missing_exception"
                    && stats.pit_reopens < u64::from(MAX_PIT_REOPENS) =>
                {
                    tracing::warn!(index = %self.config.index, "The Elasticsearch point in time expired; opening a new one and resuming from the checkpoint.");
                    stats.pit_reopens += 1;
                    *pit = self.open_pit(stats).await?;
                    after = None;
                    continue;
                }
                other => other?,
            };
            stats.pages += 1;
            self.check_shards(&answer.body)?;
            if let Some(id) = answer.body.get("pit_id").and_then(Value::as_str) {
                // Elasticsearch may hand back a new PIT id with each page.
                *pit = id.to_owned();
            }
            let hits = answer
                .body
                .pointer("/hits/hits")
                .and_then(Value::as_array)
                .ok_or_else(|| self.response_error("search", "no hits.hits array"))?;
            if after.is_none() {
                // A new PIT session: these were consumed before it started.
                // Kept for the whole session, since more than a page of
                // documents may share that millisecond.
                seen = (
                    checkpoint.timestamp_ms,
                    checkpoint.ids_at_timestamp.iter().cloned().collect(),
                );
            }
            let mut docs = Vec::with_capacity(hits.len());
            let mut last_sort = None;
            for hit in hits {
                let sort = hit.get("sort").and_then(Value::as_array);
                if let Some(sort) = sort {
                    last_sort = Some(sort.clone());
                }
                match self.parse_hit(hit) {
                    Some(doc) => {
                        if doc.timestamp_ms == seen.0 && seen.1.contains(doc.id.as_str()) {
                            stats.skipped_seen += 1;
                        } else {
                            docs.push((doc, sort.cloned().unwrap_or_default()));
                        }
                    }
                    None => stats.skipped_malformed += 1,
                }
            }
            for (doc, sort) in docs {
                checkpoint.consume(&doc.id, doc.timestamp_ms, &sort);
                stats.documents += 1;
                sink(doc);
            }
            if hits.len() < self.config.page_size {
                return Ok(());
            }
            match last_sort {
                Some(sort) => after = Some(sort),
                None => {
                    return Err(self.response_error("search", "a full page without sort values"))
                }
            }
        }
    }

    /// The search request: typed values only (see the module docs).
    fn search_body(
        &self,
        pit: &str,
        from_ms: i64,
        until_ms: i64,
        after: Option<&[Value]>,
    ) -> Value {
        let ts = &self.config.timestamp_field;
        let mut range = Map::new();
        range.insert(
            ts.clone(),
            json!({ "gte": from_ms, "lt": until_ms, "format": "epoch_millis" }),
        );
        let mut sort_ts = Map::new();
        // numeric_type "date": millisecond sort values for date and
        // date_nanos fields alike, so the checkpoint has one unit.
        sort_ts.insert(
            ts.clone(),
            json!({ "order": "asc", "numeric_type": "date" }),
        );
        let mut body = json!({
            "size": self.config.page_size,
            "pit": { "id": pit, "keep_alive": PIT_KEEP_ALIVE },
            "query": { "bool": { "filter": [ { "range": range } ] } },
            "sort": [ sort_ts, { "_shard_doc": "asc" } ],
            "_source": self.source_fields(),
            "track_total_hits": false,
        });
        if let (Some(after), Some(obj)) = (after, body.as_object_mut()) {
            obj.insert("search_after".into(), Value::Array(after.to_vec()));
        }
        body
    }

    /// The `_source` fields a search asks for: only what is used.
    fn source_fields(&self) -> Vec<&str> {
        let mut fields = vec![
            self.config.message_field.as_str(),
            self.config.service_field.as_str(),
        ];
        fields.extend(self.config.namespace_field.as_deref());
        fields.extend(self.config.level_field.as_deref());
        fields
    }

    fn parse_hit(&self, hit: &Value) -> Option<LogDoc> {
        let id = hit.get("_id")?.as_str()?.to_owned();
        let timestamp_ms = hit.get("sort")?.get(0)?.as_i64()?;
        let source = hit.get("_source")?;
        let message = field(source, &self.config.message_field)?
            .as_str()?
            .to_owned();
        let service = field(source, &self.config.service_field)
            .and_then(Value::as_str)
            .map(str::to_owned);
        let namespace = self
            .config
            .namespace_field
            .as_deref()
            .and_then(|f| field(source, f))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let level = self
            .config
            .level_field
            .as_deref()
            .and_then(|f| field(source, f))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        Some(LogDoc {
            id,
            timestamp_ms,
            service,
            namespace,
            level,
            message,
        })
    }

    fn check_shards(&self, body: &Value) -> Result<(), ElasticError> {
        let failed = body
            .pointer("/_shards/failed")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if failed == 0 {
            return Ok(());
        }
        let total = body
            .pointer("/_shards/total")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let reason = body
            .pointer("/_shards/failures/0/reason/reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given")
            .to_owned();
        Err(ElasticError::ShardFailures {
            index: self.config.index.clone(),
            failed,
            total,
            reason,
        })
    }

    async fn open_pit(&self, stats: &mut ReadStats) -> Result<String, ElasticError> {
        let indices = self.config.indices();
        let answer = self
            .send_retrying("open PIT", stats, || {
                self.client
                    .open_point_in_time(OpenPointInTimeParts::Index(&indices))
                    .keep_alive(PIT_KEEP_ALIVE)
                    .send()
            })
            .await?;
        answer
            .body
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.response_error("open PIT", "no \"id\" in the answer"))
    }

    async fn close_pit(&self, pit: &str) -> Result<(), ElasticError> {
        let mut stats = ReadStats::default();
        self.send_retrying("close PIT", &mut stats, || {
            self.client
                .close_point_in_time()
                .body(json!({ "id": pit }))
                .send()
        })
        .await
        .map(|_| ())
    }

    /// Sends a request, retrying 429, 5xx and transport errors with capped
    /// exponential backoff; other statuses fail at once (a 401 does not
    /// get better by asking again).
    async fn send_retrying<F, Fut>(
        &self,
        op: &'static str,
        stats: &mut ReadStats,
        mut request: F,
    ) -> Result<Answer, ElasticError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<
            Output = Result<elasticsearch::http::response::Response, elasticsearch::Error>,
        >,
    {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let outcome = match request().await {
                Ok(response) => Ok(read_answer(response).await),
                Err(e) => Err(e),
            };
            let retry_after = match outcome {
                Ok(Ok(answer)) if answer.status < 300 => return Ok(answer),
                Ok(Ok(answer)) => {
                    let retryable = answer.status == 429 || (500..600).contains(&answer.status);
                    if !retryable || attempt > self.config.max_retries {
                        return Err(self.status_error(op, &answer));
                    }
                    tracing::warn!(op, index = %self.config.index, status = answer.status, attempt, "Elasticsearch asked us to back off; retrying.");
                    answer.retry_after
                }
                Ok(Err(e)) | Err(e) => {
                    if attempt > self.config.max_retries {
                        return Err(ElasticError::Transport {
                            op,
                            index: self.config.index.clone(),
                            attempts: attempt,
                            source: e,
                        });
                    }
                    tracing::warn!(op, index = %self.config.index, error = %e, attempt, "Elasticsearch request failed; retrying.");
                    None
                }
            };
            stats.retries += 1;
            tokio::time::sleep(self.backoff(attempt, retry_after)).await;
        }
    }

    /// Doubling from `retry_backoff`, at most 32× it and at most 30s; a
    /// `Retry-After` is honoured within the same cap.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let base = self.config.retry_backoff.0;
        let cap = base.saturating_mul(32).min(MAX_BACKOFF);
        let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(5));
        retry_after.unwrap_or(exp).max(exp).min(cap)
    }

    fn status_error(&self, op: &'static str, answer: &Answer) -> ElasticError {
        let error = answer.body.get("error");
        // `error` is an object in Elasticsearch's answers, a plain string
        // from some proxies.
        let kind = error
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("no error type")
            .to_owned();
        let reason = error
            .and_then(|e| {
                e.get("reason")
                    .and_then(Value::as_str)
                    .or_else(|| e.as_str())
            })
            .unwrap_or("no reason given")
            .to_owned();
        ElasticError::Status {
            op,
            index: self.config.index.clone(),
            status: answer.status,
            kind,
            reason,
        }
    }

    fn response_error(&self, op: &'static str, detail: &str) -> ElasticError {
        ElasticError::Response {
            op,
            index: self.config.index.clone(),
            detail: detail.to_owned(),
        }
    }
}

async fn read_answer(
    response: elasticsearch::http::response::Response,
) -> Result<Answer, elasticsearch::Error> {
    let status = response.status_code().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await?;
    // A body that is not JSON (a proxy's HTML error page) still yields the
    // status; its text becomes the reason.
    let body = serde_json::from_str(&text).unwrap_or_else(|_| {
        let mut snippet: String = text.chars().take(200).collect();
        if snippet.is_empty() {
            snippet = "empty body".into();
        }
        json!({ "error": snippet })
    });
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// A field of `_source` by dotted path: a flat key (`"service.name"`)
/// or nested objects (`{"service":{"name":…}}`), as documents hold either.
fn field<'a>(source: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = source.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    field(source.get(head)?, rest)
}

/// The service name of documents without a service field.
pub const UNKNOWN_SERVICE: &str = "unknown";

/// At most this many services get their own miner; lines of further
/// services are counted under [`OTHER_SERVICES`] (bounded memory when the
/// service field turns out to hold something high-cardinality).
pub const MAX_SERVICES: usize = 1024;

/// The service name used beyond [`MAX_SERVICES`].
pub const OTHER_SERVICES: &str = "other";

/// Lines of one template of one service in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateCount {
    /// Service name.
    pub service: String,
    /// Start of the bucket, epoch ms (a multiple of the bucket width).
    pub bucket_start_ms: i64,
    /// Template id within the service's miner.
    pub template: TemplateId,
    /// The template's text when counted, with secrets redacted.
    pub text: String,
    /// Lines in the bucket.
    pub count: u64,
}

/// Per-service template mining and counting (see the module docs).
#[derive(Debug)]
pub struct TemplateCounter {
    bucket_ms: i64,
    max_examples: usize,
    miners: HashMap<String, TemplateMiner>,
    /// (service, bucket start, template) → lines.
    counts: BTreeMap<(String, i64, TemplateId), u64>,
    examples: HashMap<(String, TemplateId), Vec<String>>,
}

impl TemplateCounter {
    /// Counts per `bucket` (at least 1 ms; e.g. one minute) and keeps up
    /// to `max_examples` redacted lines per template.
    pub fn new(bucket: Duration, max_examples: usize) -> Self {
        Self {
            bucket_ms: i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX).max(1),
            max_examples,
            miners: HashMap::new(),
            counts: BTreeMap::new(),
            examples: HashMap::new(),
        }
    }

    /// Mines `doc`'s message in its service's miner and counts it; returns
    /// the service it was counted under and the template id.
    pub fn add(&mut self, doc: &LogDoc) -> (String, TemplateId) {
        let mut service = doc.service.as_deref().unwrap_or(UNKNOWN_SERVICE);
        if !self.miners.contains_key(service) && self.miners.len() >= MAX_SERVICES {
            service = OTHER_SERVICES;
        }
        let miner = self.miners.entry(service.to_owned()).or_default();
        let id = miner.add(&doc.message);
        let bucket = doc.timestamp_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        *self
            .counts
            .entry((service.to_owned(), bucket, id))
            .or_default() += 1;
        let examples = self.examples.entry((service.to_owned(), id)).or_default();
        if examples.len() < self.max_examples {
            // Redacted before it is kept: examples end up in reports.
            examples.push(redact_secrets(&doc.message).into_owned());
        }
        (service.to_owned(), id)
    }

    /// All counts so far, by service, bucket, template.
    pub fn counts(&self) -> Vec<TemplateCount> {
        self.counts
            .iter()
            .map(|(k, &n)| self.count_of(k, n))
            .collect()
    }

    /// Removes and returns the counts of buckets that end at or before
    /// `until_ms` (complete once the source has read up to `until_ms`).
    pub fn drain_complete(&mut self, until_ms: i64) -> Vec<TemplateCount> {
        let done: Vec<(String, i64, TemplateId)> = self
            .counts
            .keys()
            .filter(|(_, start, _)| start.saturating_add(self.bucket_ms) <= until_ms)
            .cloned()
            .collect();
        done.into_iter()
            .filter_map(|k| {
                let n = self.counts.remove(&k)?;
                Some(self.count_of(&k, n))
            })
            .collect()
    }

    /// Up to `max_examples` redacted example lines of a template.
    pub fn examples(&self, service: &str, template: TemplateId) -> &[String] {
        self.examples
            .get(&(service.to_owned(), template))
            .map_or(&[], Vec::as_slice)
    }

    /// The miner of one service (for persisting its templates).
    pub fn miner(&self, service: &str) -> Option<&TemplateMiner> {
        self.miners.get(service)
    }

    fn count_of(
        &self,
        (service, start, id): &(String, i64, TemplateId),
        count: u64,
    ) -> TemplateCount {
        let text = self
            .miners
            .get(service)
            .and_then(|m| m.template(*id))
            // A template keeps literal tokens of one-off lines, which may
            // be secrets; its text goes into reports like an example.
            .map(|t| redact_secrets(&t.text).into_owned())
            .unwrap_or_default();
        TemplateCount {
            service: service.clone(),
            bucket_start_ms: *start,
            template: *id,
            text,
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(config: &ElasticConfig) -> Vec<(String, String)> {
        let mut out = Vec::new();
        config.validate(&mut |f, r| out.push((f, r)));
        out
    }

    #[test]
    fn defaults_validate() {
        assert!(errors(&ElasticConfig::new("http://127.0.0.1:9200", "logs-*")).is_empty());
    }

    #[test]
    fn validation_names_each_bad_field() {
        let mut c = ElasticConfig::new("ftp://x", "Logs *");
        c.timestamp_field = "@timestamp\"}}".into();
        c.message_field = "a..b".into();
        c.service_field = "svc*".into();
        c.page_size = 0;
        c.timeout = HumanDuration(Duration::ZERO);
        let fields: Vec<String> = errors(&c).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "elasticsearch.url",
                "elasticsearch.index",
                "elasticsearch.timestamp_field",
                "elasticsearch.message_field",
                "elasticsearch.service_field",
                "elasticsearch.page_size",
                "elasticsearch.timeout",
            ]
        );
        assert!(matches!(
            ElasticSource::new(&c),
            Err(ElasticError::Config { field, .. }) if field == "elasticsearch.url"
        ));
    }

    #[test]
    fn index_patterns_follow_elasticsearch_rules() {
        assert!(check_index_pattern("logs-*,audit-2026.*").is_ok());
        assert!(check_index_pattern("_all").is_err());
        assert!(check_index_pattern("a,,b").is_err());
        assert!(check_index_pattern("a/b").is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut c = ElasticConfig::new("http://127.0.0.1:9200", "logs");
        c.retry_backoff = HumanDuration(Duration::from_secs(2));
        let s = ElasticSource::new(&c).expect("valid");
        assert_eq!(s.backoff(1, None), Duration::from_secs(2));
        assert_eq!(s.backoff(2, None), Duration::from_secs(4));
        assert_eq!(s.backoff(10, None), MAX_BACKOFF);
        // A huge Retry-After is not honoured beyond the cap.
        assert_eq!(s.backoff(1, Some(Duration::from_secs(86_400))), MAX_BACKOFF);
    }

    #[test]
    fn dotted_fields_are_found_flat_or_nested() {
        let nested = json!({"service": {"name": "cart"}});
        let flat = json!({"service.name": "cart"});
        assert_eq!(field(&nested, "service.name"), Some(&json!("cart")));
        assert_eq!(field(&flat, "service.name"), Some(&json!("cart")));
        assert_eq!(field(&nested, "service.id"), None);
    }

    #[test]
    fn checkpoint_remembers_ids_only_at_its_timestamp() {
        let mut cp = Checkpoint::starting_at(0);
        cp.consume("a", 5, &[json!(5), json!(1)]);
        cp.consume("b", 5, &[json!(5), json!(2)]);
        assert_eq!(cp.ids_at_timestamp, ["a", "b"]);
        cp.consume("c", 7, &[json!(7), json!(3)]);
        assert_eq!(
            (cp.timestamp_ms, cp.ids_at_timestamp.clone()),
            (7, vec!["c".to_owned()])
        );
    }
}
