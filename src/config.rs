//! Typed configuration: loading, environment overrides and validation.
//!
//! A config file is read in three steps, each with errors that name the
//! field a person has to fix:
//! 1. YAML is parsed into a generic tree (syntax errors carry line/column);
//! 2. `AIOPSD_*` environment variables are merged into that tree (so secrets
//!    and URLs need not live in the file);
//! 3. the tree is deserialized into [`Config`] with `deny_unknown_fields`,
//!    reporting the path of the first bad field (`signals[1].selectors`),
//!    then [`Config::validate`] checks meaning and reports *every* problem.
//!
//! config/aiopsd.yaml is the documented example; keep it in step with the
//! doc comments here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::detect::DetectorSpec;
use crate::signal::Direction;
use crate::sources::promql::{QueryTemplate, Selector};

/// Prefix of environment variables that override config fields.
///
/// `AIOPSD_PROMETHEUS__URL` sets `prometheus.url`; a double underscore
/// separates path segments because field names themselves contain `_`.
pub const ENV_PREFIX: &str = "AIOPSD_";

/// One problem found in a config, with the path of the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `signals[0].selectors.service`.
    pub path: String,
    /// What is wrong, in words a person can act on.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{path}: invalid YAML: {message}")]
    Syntax {
        /// The file that was parsed.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An `AIOPSD_*` environment variable does not fit the config tree.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable's name.
        var: String,
        /// Why it was refused.
        reason: String,
    },
    /// The YAML is well-formed but does not describe a valid config.
    #[error("{}", render_field_errors(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// Each problem on its own line with its field path, for `config check`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(errors) => errors.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn render_field_errors(errors: &[FieldError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("invalid config: {}", lines.join("; "))
}

/// A span of time written as `"30s"`, `"5m"`, `"1h 30m"` in YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Whole milliseconds, for data-time arithmetic.
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    /// A whole number of seconds (for defaults).
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?} ({e}); write e.g. \"30s\", \"5m\", \"2h\""
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A secret string (token, password) that never shows up in logs or Debug output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the one place that must compare or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The whole configuration of one aiopsd instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the cluster this instance watches; appears in reports.
    ///
    /// Default: `default`.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Log format and level.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// HTTP API, /metrics and probes.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where incidents are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// The Prometheus server to poll. Required by `aiopsd run` when any
    /// signal is configured.
    #[serde(default)]
    pub prometheus: Option<PrometheusConfig>,
    /// Default detector and its tunables; signals may override.
    #[serde(default)]
    pub detection: DetectionConfig,
    /// How anomalies group into incidents and when incidents resolve.
    #[serde(default)]
    pub incidents: IncidentConfig,
    /// The series to watch.
    #[serde(default)]
    pub signals: Vec<SignalConfig>,
    /// Lease-based leader election between replicas: only the holder runs
    /// the pipeline. Off by default (a single instance needs none).
    #[serde(default)]
    pub leader_election: crate::leader::LeaderElectionConfig,
    /// MQTT event publishing (src/publish/config.rs). Absent: no publisher.
    #[serde(default)]
    pub mqtt: Option<crate::publish::config::MqttConfig>,
    /// Outgoing webhook notifications (src/publish/webhook.rs). Absent: none.
    #[serde(default)]
    pub webhook: Option<crate::publish::config::WebhookConfig>,
    /// Approvals of pending actions through the API and MQTT.
    #[serde(default)]
    pub approvals: crate::publish::config::ApprovalsConfig,
    /// The Alertmanager webhook receiver (`POST /api/v1/alerts/alertmanager`):
    /// its extra credentials and request size limit. Always on; the section
    /// only tunes it.
    #[serde(default)]
    pub alertmanager: AlertmanagerConfig,
    /// Alert noise reduction: silences (maintenance windows) and flapping
    /// (src/incident/noise.rs). Default: no silences, flapping at 3
    /// episodes within 1h.
    #[serde(default)]
    pub noise: crate::incident::noise::NoiseConfig,
    /// Correlation beyond `incidents.group_by`: label mapping and declared
    /// dependencies (src/incident/correlate.rs). Default: none.
    #[serde(default)]
    pub correlation: crate::incident::CorrelationConfig,
    /// Diagnosis, the policy gate and bounded remediation
    /// (src/remediate/config.rs). Default: off.
    #[serde(default)]
    pub remediation: crate::remediate::config::RemediationConfig,
    /// The optional LLM second opinion (docs/LLM.md). Default: off.
    #[serde(default)]
    pub llm: crate::diagnose::llm::LlmConfig,
    /// The queries `aiopsd capacity` and `GET /api/v1/capacity/{service}`
    /// read 30 days of CPU, memory and request rate with
    /// (docs/FORECAST.md). Defaults: cAdvisor and `http_requests_total`.
    #[serde(default)]
    pub capacity: crate::forecast::fetch::CapacityQueries,
    /// Forecasting settings (horizon, resampling, gaps) for capacity plans.
    #[serde(default)]
    pub forecast: crate::forecast::ForecastConfig,
    /// The Elasticsearch log source (docs/LOGS.md). Absent: none.
    #[serde(default)]
    pub elasticsearch: Option<crate::logs::elastic::ElasticConfig>,
    /// Failure prediction: signals with a limit whose forecast breach opens
    /// a predictive incident (docs/FORECAST.md). Absent: none.
    #[serde(default)]
    pub predictive: Option<crate::forecast::predictive::PredictiveConfig>,
}

fn default_cluster() -> String {
    "default".into()
}

/// Log output settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `text` for people, `json` for log shippers. Default: `text`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `aiopsd=debug,info`. Default: `info`.
    /// `RUST_LOG`, when set, wins.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default: `127.0.0.1:9464`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token required on /api/*. Set it with `AIOPSD_SERVER__API_TOKEN`
    /// rather than in the file. Required unless `listen` is a loopback
    /// address. /healthz, /readyz and /metrics never need it (probes and
    /// Prometheus scrape them).
    #[serde(default)]
    pub api_token: Option<Secret>,
    /// Read-only token for the web UI (`/ui/`): who logs in with it sees
    /// every page but gets no approve/deny/revert/verdict forms, and the
    /// server refuses those POSTs. `api_token` stays the operator token (UI
    /// and API). Set it with `AIOPSD_SERVER__VIEWER_TOKEN`. Default: none
    /// (only operators log in). Ignored while `api_token` is unset (the UI
    /// is then as open as the API).
    #[serde(default)]
    pub viewer_token: Option<Secret>,
    /// Longest time one API request may take before it gets 503. Default: `10s`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// Serve HTTPS instead of HTTP: the API, the UI, /metrics, the probes
    /// and the Alertmanager webhook all share the one listener, so all of
    /// them need `https://` then. Default: none (plain HTTP; terminate TLS
    /// in front of aiopsd, or keep it on loopback).
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

/// `server.tls`: the certificate and key the HTTP server presents.
///
/// Both files are read and checked when the config is loaded (a missing
/// file, a file without the expected PEM block, or a key that does not
/// belong to the certificate is a config error naming the file), and are
/// re-read when they change on disk (a renewed certificate mounted from a
/// Kubernetes Secret), without a restart: a bad new pair is logged and the
/// old one kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM file with the server certificate first, then any intermediate
    /// CA certificates (`tls.crt` of a Kubernetes TLS Secret).
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key: PKCS#8
    /// (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1
    /// (`BEGIN EC PRIVATE KEY`) (`tls.key` of a Kubernetes TLS Secret).
    pub key_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            api_token: None,
            viewer_token: None,
            request_timeout: default_request_timeout(),
            tls: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

/// The embedded SQLite store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Path of the SQLite database file (created if missing; its directory
    /// must exist). Default: `aiopsd.db` in the working directory.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("aiopsd.db")
}

/// Connection and polling settings for Prometheus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    /// Override with `AIOPSD_PROMETHEUS__URL`.
    pub url: String,
    /// Timeout of one query. Default: `10s`.
    #[serde(default = "default_query_timeout")]
    pub timeout: HumanDuration,
    /// Time between polls. Default: `30s`.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Resolution of range queries; detectors see one sample per step.
    /// A whole number of seconds. Default: `30s`.
    #[serde(default = "default_step")]
    pub step: HumanDuration,
    /// History read on every start so detectors are warm before live
    /// polling (long ranges are split to respect Prometheus's 11,000-point
    /// limit). Anomalies in it are reported on the first start only; after
    /// a restart, what was already read is not reported again.
    /// Default: `6h`. `0s` disables backfill.
    #[serde(default = "default_backfill")]
    pub backfill: HumanDuration,
    /// How long after the fact a sample is read, so Prometheus has ingested
    /// it (scrape and rule evaluation lag). Default: `30s`.
    #[serde(default = "default_lag")]
    pub lag: HumanDuration,
    /// Retries of a failing query within one poll.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_query_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_step() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_backfill() -> HumanDuration {
    HumanDuration::secs(6 * 3600)
}
fn default_lag() -> HumanDuration {
    HumanDuration::secs(30)
}

/// Bounded exponential backoff.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per poll, the first included (1 = no retry). Default: `3`.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait before the first retry; doubles each time. Default: `500ms`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: HumanDuration,
    /// Longest wait between attempts. Default: `10s`.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_attempts() -> u32 {
    3
}
fn default_initial_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration::secs(10)
}

/// Detection defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// Detector used by signals that do not name their own.
    #[serde(default)]
    pub detector: DetectorSpec,
    /// A series that delivers no sample for this long is forgotten (its
    /// state freed). Default: `30m`.
    #[serde(default = "default_series_ttl")]
    pub series_ttl: HumanDuration,
    /// Samples kept per series to show the lead-up to an anomaly in a
    /// report. Default: `30`; at most 256.
    #[serde(default = "default_context_samples")]
    pub context_samples: usize,
    /// Most series tracked at once; beyond it new series are ignored and
    /// counted (protects memory from a label explosion). Default: `100000`.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// File where fitted detector state is saved (every `models_save_every`
    /// and at shutdown) and loaded from at start, so a restart needs no new
    /// warm-up. A series whose signal's detector changed since is warmed up
    /// afresh. Unset: no saving (detectors warm up from backfill).
    #[serde(default)]
    pub models_path: Option<PathBuf>,
    /// How often detector state is saved while running. Default `10m`.
    #[serde(default = "default_models_save_every")]
    pub models_save_every: HumanDuration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            detector: DetectorSpec::default(),
            series_ttl: default_series_ttl(),
            context_samples: default_context_samples(),
            max_series: default_max_series(),
            models_path: None,
            models_save_every: default_models_save_every(),
        }
    }
}

fn default_models_save_every() -> HumanDuration {
    HumanDuration::secs(600)
}

fn default_series_ttl() -> HumanDuration {
    HumanDuration::secs(30 * 60)
}
fn default_context_samples() -> usize {
    30
}
fn default_max_series() -> usize {
    100_000
}

/// Grouping and lifecycle of incidents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentConfig {
    /// Labels that say which anomalies concern the same thing. Anomalies
    /// whose series agree on these labels group into one incident.
    /// Default: `[namespace, service]`.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// An anomaly joins an open incident of its group if it comes at most
    /// this long after the incident's last anomaly. Default: `15m`.
    #[serde(default = "default_group_window")]
    pub group_window: HumanDuration,
    /// An incident resolves once all its signals were normal for this long.
    /// Default: `10m`.
    #[serde(default = "default_resolve_after")]
    pub resolve_after: HumanDuration,
    /// An incident is `critical` when a score reaches this many spreads,
    /// or when `critical_signals` distinct signals are anomalous; otherwise
    /// `warning`. Default: `12.0`.
    #[serde(default = "default_critical_score")]
    pub critical_score: f64,
    /// See `critical_score`. Default: `2`.
    #[serde(default = "default_critical_signals")]
    pub critical_signals: usize,
    /// Samples kept per signal in an incident's evidence (older dropped).
    /// Default: `240`.
    #[serde(default = "default_evidence_samples")]
    pub evidence_samples: usize,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            group_by: default_group_by(),
            group_window: default_group_window(),
            resolve_after: default_resolve_after(),
            critical_score: default_critical_score(),
            critical_signals: default_critical_signals(),
            evidence_samples: default_evidence_samples(),
        }
    }
}

fn default_group_by() -> Vec<String> {
    vec!["namespace".into(), "service".into()]
}
fn default_group_window() -> HumanDuration {
    HumanDuration::secs(15 * 60)
}
fn default_resolve_after() -> HumanDuration {
    HumanDuration::secs(10 * 60)
}
fn default_critical_score() -> f64 {
    12.0
}
fn default_critical_signals() -> usize {
    2
}
fn default_evidence_samples() -> usize {
    240
}

/// The Alertmanager webhook receiver.
///
/// Alertmanager authenticates with its receiver's `http_config`: the API
/// bearer token (`authorization: {credentials: ...}`) always works; basic
/// auth works too when `basic_auth` is set here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Username and password Alertmanager may send as HTTP basic auth
    /// instead of the bearer token. Default: none (bearer token only).
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// Largest webhook request body accepted, in bytes; larger ones get 413
    /// (which Alertmanager does not retry: keep its `max_alerts` low enough).
    /// Default: `4194304` (4 MiB, thousands of alerts). `1024..=67108864`.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            basic_auth: None,
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

/// HTTP basic auth credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The user name; not empty, no `:` (it separates user and password).
    pub username: String,
    /// The password, at least 16 characters. Set it with
    /// `AIOPSD_ALERTMANAGER__BASIC_AUTH__PASSWORD`, not in the file.
    pub password: Secret,
}

/// One watched signal: a PromQL template plus the label values it is
/// restricted to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    /// Unique name, used in reports and metrics (`[a-z][a-z0-9_]*`).
    pub name: String,
    /// PromQL with a `$selector` placeholder where the label matchers from
    /// `selectors` go, e.g. `rate(http_requests_total{$selector,code=~"5.."}[5m])`.
    /// The template is trusted config; the selector values are validated and
    /// escaped, never pasted.
    pub query: QueryTemplate,
    /// Label equality matchers rendered into `$selector`.
    #[serde(default)]
    pub selectors: Selector,
    /// Which deviations alarm. Default: `both`.
    #[serde(default)]
    pub direction: Direction,
    /// Labels to add to every series of this signal (e.g. `service` when the
    /// query aggregates it away), so incidents can group them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Detector for this signal; default: `detection.detector`.
    #[serde(default)]
    pub detector: Option<DetectorSpec>,
    /// A detector preset instead of `detector`: a built-in name
    /// (`latency`, `error_ratio`, `throughput`, `cpu`, `memory`,
    /// `saturation`, `counter`, `ensemble`; models/presets/) or a path to a
    /// preset file.
    #[serde(default)]
    pub preset: Option<String>,
}

impl Config {
    /// Reads, merges environment overrides from the process environment,
    /// and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path, std::env::vars())
    }

    /// Parses config text with the given environment; `origin` names the
    /// source in errors. Separate from [`Config::load`] so tests can pass
    /// their own environment.
    pub fn from_yaml(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut tree: Value = if text.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
                path: origin.to_path_buf(),
                message: e.to_string(),
            })?
        };
        if tree.is_null() {
            tree = Value::Object(Default::default());
        }
        apply_env_overrides(&mut tree, env)?;
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid(vec![FieldError {
                path: if path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                reason: e.into_inner().to_string(),
            }])
        })?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// The embedded default used by `aiopsd demo`: no Prometheus, a store
    /// in `store_path`, API on `listen`.
    pub fn demo(store_path: PathBuf, listen: SocketAddr) -> Config {
        Config {
            cluster: "demo".into(),
            logging: LoggingConfig::default(),
            server: ServerConfig {
                listen,
                ..ServerConfig::default()
            },
            store: StoreConfig { path: store_path },
            prometheus: None,
            detection: DetectionConfig::default(),
            incidents: IncidentConfig::default(),
            signals: Vec::new(),
            leader_election: crate::leader::LeaderElectionConfig::default(),
            // The demo has no broker.
            mqtt: None,
            webhook: None,
            approvals: crate::publish::config::ApprovalsConfig::default(),
            alertmanager: AlertmanagerConfig::default(),
            noise: crate::incident::noise::NoiseConfig::default(),
            correlation: crate::incident::CorrelationConfig::default(),
            // The demo acts on its simulated cluster under its own policy.
            remediation: crate::remediate::config::RemediationConfig {
                enabled: true,
                kill_switch_configmap: None,
                ..Default::default()
            },
            llm: crate::diagnose::llm::LlmConfig::default(),
            capacity: crate::forecast::fetch::CapacityQueries::default(),
            forecast: crate::forecast::ForecastConfig::default(),
            elasticsearch: None,
            predictive: Some(crate::forecast::predictive::PredictiveConfig::demo()),
        }
    }

    /// Checks what types alone cannot: ranges, cross-field rules, unique
    /// names. Returns every problem, not just the first.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |path: String, reason: String| errors.push(FieldError { path, reason });

        if self.cluster.trim().is_empty() {
            err("cluster".into(), "must not be empty".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            err(
                "logging.level".into(),
                format!("not a valid log filter: {e}"),
            );
        }
        if self.server.api_token.is_none() && !self.server.listen.ip().is_loopback() {
            err(
                "server.api_token".into(),
                format!(
                    "required when server.listen ({}) is not a loopback address; \
                     set AIOPSD_SERVER__API_TOKEN",
                    self.server.listen
                ),
            );
        }
        if let Some(token) = &self.server.api_token {
            if token.expose().len() < 16 {
                err(
                    "server.api_token".into(),
                    "must be at least 16 characters".into(),
                );
            }
        }
        if let Some(viewer) = &self.server.viewer_token {
            if viewer.expose().len() < 16 {
                err(
                    "server.viewer_token".into(),
                    "must be at least 16 characters".into(),
                );
            }
            match &self.server.api_token {
                None => err(
                    "server.viewer_token".into(),
                    "needs server.api_token: without an operator token the API and UI are open \
                     to everyone, so a read-only token would protect nothing"
                        .into(),
                ),
                Some(api) if api.expose() == viewer.expose() => err(
                    "server.viewer_token".into(),
                    "must differ from server.api_token (viewers could otherwise act)".into(),
                ),
                Some(_) => {}
            }
        }
        if self.server.request_timeout.0.is_zero() {
            err(
                "server.request_timeout".into(),
                "must be more than 0s".into(),
            );
        }
        if let Some(tls) = &self.server.tls {
            if let Err(e) = crate::server::tls::ServerTls::load(tls) {
                err(e.field().into(), e.describe());
            }
        }
        validate_alertmanager(&self.alertmanager, &mut err);
        self.noise.validate(&mut err);
        self.correlation.validate(&mut err);
        if self.store.path.as_os_str().is_empty() {
            err("store.path".into(), "must not be empty".into());
        }
        if let Some(prom) = &self.prometheus {
            validate_prometheus(prom, &mut err);
        } else if !self.signals.is_empty() {
            err(
                "prometheus".into(),
                "required when signals are configured".into(),
            );
        }
        self.leader_election.validate(&mut err);
        self.remediation.validate(&mut err);
        self.llm.validate(&mut err);
        if let Err(problems) = self.capacity.validate() {
            for p in problems {
                err(p.path, p.reason);
            }
        }
        if let Err(e) = self.forecast.validate() {
            err("forecast".into(), e.to_string());
        }
        if let Some(es) = &self.elasticsearch {
            es.validate(&mut err);
        }
        if let Some(predictive) = &self.predictive {
            if let Err(problems) = predictive.validate("predictive") {
                for p in problems {
                    err(p.path, p.reason);
                }
            }
            let known: std::collections::BTreeSet<&str> =
                self.signals.iter().map(|s| s.name.as_str()).collect();
            for (name, limit) in &predictive.limits {
                if !known.contains(name.as_str()) {
                    err(
                        format!("predictive.limits.{name}"),
                        "no signal of that name in `signals`".into(),
                    );
                }
                if let Some(series) = &limit.series {
                    if !known.contains(series.as_str()) {
                        err(
                            format!("predictive.limits.{name}.series"),
                            format!("no signal named `{series}` in `signals`"),
                        );
                    }
                }
            }
        }
        crate::publish::config::validate(
            &self.cluster,
            self.mqtt.as_ref(),
            &self.approvals,
            &mut err,
        );
        crate::publish::config::validate_webhook(self.webhook.as_ref(), &mut err);
        if let Err(reason) = self.detection.detector.validate() {
            err("detection.detector".into(), reason);
        }
        if self.detection.series_ttl.0.is_zero() {
            err("detection.series_ttl".into(), "must be more than 0s".into());
        }
        if !(1..=256).contains(&self.detection.context_samples) {
            err(
                "detection.context_samples".into(),
                format!("must be 1..=256, got {}", self.detection.context_samples),
            );
        }
        if self.detection.max_series == 0 {
            err("detection.max_series".into(), "must be at least 1".into());
        }
        let inc = &self.incidents;
        if inc.group_by.is_empty() {
            err(
                "incidents.group_by".into(),
                "must name at least one label".into(),
            );
        }
        for (i, label) in inc.group_by.iter().enumerate() {
            if let Err(reason) = crate::sources::promql::validate_label_name(label) {
                err(format!("incidents.group_by[{i}]"), reason);
            }
        }
        if inc.group_window.0.is_zero() {
            err(
                "incidents.group_window".into(),
                "must be more than 0s".into(),
            );
        }
        if inc.resolve_after.0.is_zero() {
            err(
                "incidents.resolve_after".into(),
                "must be more than 0s".into(),
            );
        }
        if !(inc.critical_score.is_finite() && inc.critical_score > 0.0) {
            err(
                "incidents.critical_score".into(),
                "must be a positive number".into(),
            );
        }
        if inc.critical_signals == 0 {
            err(
                "incidents.critical_signals".into(),
                "must be at least 1".into(),
            );
        }
        if !(1..=10_000).contains(&inc.evidence_samples) {
            err(
                "incidents.evidence_samples".into(),
                "must be 1..=10000".into(),
            );
        }

        let mut seen = std::collections::HashSet::new();
        for (i, signal) in self.signals.iter().enumerate() {
            let at = format!("signals[{i}]");
            if let Some(name) = &signal.preset {
                if signal.detector.is_some() {
                    err(
                        format!("{at}.preset"),
                        "set either `detector` or `preset`, not both".into(),
                    );
                } else if let Err(e) = crate::detect::preset::resolve_preset(name) {
                    err(format!("{at}.preset"), e.to_string());
                }
            }
            if !valid_signal_name(&signal.name) {
                err(
                    format!("{at}.name"),
                    format!(
                        "{:?} is not a valid name (lowercase letter, then letters, digits, _)",
                        signal.name
                    ),
                );
            } else if !seen.insert(signal.name.as_str()) {
                err(
                    format!("{at}.name"),
                    format!("{:?} is used by another signal", signal.name),
                );
            }
            if let Err(reason) = signal.query.check_against(&signal.selectors) {
                err(format!("{at}.query"), reason);
            }
            for (label, value) in &signal.labels {
                if let Err(reason) = crate::sources::promql::validate_label_name(label) {
                    err(format!("{at}.labels.{label}"), reason);
                }
                if let Err(reason) = crate::sources::promql::validate_label_value(value) {
                    err(format!("{at}.labels.{label}"), reason);
                }
            }
            if let Some(spec) = &signal.detector {
                if let Err(reason) = spec.validate() {
                    err(format!("{at}.detector"), reason);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The detector a signal uses: its own, its preset's, or the default.
    /// (A preset that cannot be loaded is refused by [`Config::validate`].)
    pub fn detector_for(&self, signal: &SignalConfig) -> DetectorSpec {
        if let Some(spec) = &signal.detector {
            return spec.clone();
        }
        signal
            .preset
            .as_deref()
            .and_then(|name| crate::detect::preset::resolve_preset(name).ok())
            .map_or_else(|| self.detection.detector.clone(), |p| p.detector)
    }
}

fn validate_prometheus(prom: &PrometheusConfig, err: &mut impl FnMut(String, String)) {
    match reqwest::Url::parse(&prom.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        Ok(url) => err(
            "prometheus.url".into(),
            format!("scheme {:?} is not http or https", url.scheme()),
        ),
        Err(e) => err(
            "prometheus.url".into(),
            format!("{:?} is not a URL: {e}", prom.url),
        ),
    }
    for (name, d) in [
        ("timeout", prom.timeout),
        ("poll_interval", prom.poll_interval),
        ("step", prom.step),
    ] {
        if d.0.is_zero() {
            err(format!("prometheus.{name}"), "must be more than 0s".into());
        }
    }
    if !prom.step.0.is_zero() && prom.step.0.subsec_nanos() != 0 {
        err(
            "prometheus.step".into(),
            format!("must be a whole number of seconds, got {}", prom.step),
        );
    }
    if prom.retry.attempts == 0 || prom.retry.attempts > 10 {
        err("prometheus.retry.attempts".into(), "must be 1..=10".into());
    }
    if prom.retry.initial_backoff > prom.retry.max_backoff {
        err(
            "prometheus.retry.initial_backoff".into(),
            "must not exceed max_backoff".into(),
        );
    }
}

fn validate_alertmanager(am: &AlertmanagerConfig, err: &mut impl FnMut(String, String)) {
    if let Some(basic) = &am.basic_auth {
        if basic.username.is_empty() || basic.username.contains(':') {
            err(
                "alertmanager.basic_auth.username".into(),
                "must not be empty or contain `:`".into(),
            );
        }
        if basic.password.expose().chars().count() < 16 {
            err(
                "alertmanager.basic_auth.password".into(),
                "must be at least 16 characters".into(),
            );
        }
    }
    if !(1024..=64 * 1024 * 1024).contains(&am.max_body_bytes) {
        err(
            "alertmanager.max_body_bytes".into(),
            format!("must be 1024..=67108864, got {}", am.max_body_bytes),
        );
    }
}

fn valid_signal_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

/// Merges `AIOPSD_A__B=value` into the tree at `a.b`.
///
/// The value is parsed as a YAML scalar so `AIOPSD_PROMETHEUS__RETRY__ATTEMPTS=5`
/// becomes a number; secrets stay strings because they rarely parse as
/// anything else, and a string field accepts a quoted number anyway.
fn apply_env_overrides(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var,
                reason: "empty path segment (use __ between field names)".into(),
            });
        }
        let value = env_scalar(&path, &raw);
        let mut node = &mut *tree;
        for (i, segment) in path.iter().enumerate() {
            let Value::Object(map) = node else {
                return Err(ConfigError::Env {
                    var,
                    reason: format!("{} is not a section with fields", path[..i].join(".")),
                });
            };
            if i + 1 == path.len() {
                map.insert(segment.clone(), value);
                break;
            }
            node = map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    Ok(())
}

/// Fields that are always strings, whatever the variable looks like.
const STRING_FIELDS: &[&str] = &[
    "api_token",
    "viewer_token",
    "url",
    "path",
    "cluster",
    "level",
    "password",
    "secret",
    "username",
    "client_id",
    "topic_prefix",
    "topic",
];

fn env_scalar(path: &[String], raw: &str) -> Value {
    let last = path.last().map(String::as_str).unwrap_or_default();
    if STRING_FIELDS.contains(&last) {
        return Value::String(raw.to_string());
    }
    if let Ok(n) = raw.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(x) = raw.parse::<f64>() {
        if x.is_finite() {
            return Value::from(x);
        }
    }
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indoc::indoc;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("test.yaml"), Vec::new())
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => panic!("config was accepted"),
            Err(e) => e.problems(),
        }
    }

    const MINIMAL: &str = indoc! {r#"
        prometheus:
          url: http://127.0.0.1:9090
        signals:
          - name: error_ratio
            query: 'rate(errors_total{$selector}[5m])'
            selectors: { namespace: shop, service: cart }
    "#};

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).expect("valid");
        let prom = config.prometheus.as_ref().expect("prometheus");
        assert_eq!(prom.poll_interval.0, Duration::from_secs(30));
        assert_eq!(config.incidents.group_by, vec!["namespace", "service"]);
        assert_eq!(config.signals[0].direction, Direction::Both);
    }

    #[test]
    fn empty_file_is_a_valid_config() {
        let config = parse("").expect("valid");
        assert!(config.signals.is_empty());
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let p = problems(indoc! {r#"
            prometheus:
              url: http://127.0.0.1:9090
              poll_intervall: 30s
        "#});
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("prometheus.poll_intervall: unknown field"),
            "{p:?}"
        );
        assert!(
            p[0].contains("poll_interval`"),
            "lists the valid fields: {p:?}"
        );
    }

    #[test]
    fn bad_duration_names_field_and_value() {
        let p = problems(indoc! {r#"
            prometheus:
              url: http://127.0.0.1:9090
              timeout: soon
        "#});
        assert!(p[0].starts_with("prometheus.timeout: "), "{p:?}");
        assert!(p[0].contains("\"soon\""), "{p:?}");
    }

    #[test]
    fn wrong_type_in_list_names_index() {
        let p = problems(indoc! {r#"
            prometheus: { url: "http://x:9090" }
            signals:
              - name: ok
                query: 'up{$selector}'
              - name: bad
                query: 'up{$selector}'
                direction: sideways
        "#});
        assert!(p[0].starts_with("signals[1].direction: "), "{p:?}");
    }

    #[test]
    fn semantic_errors_are_all_reported_with_paths() {
        let p = problems(indoc! {r#"
            server:
              listen: 0.0.0.0:9464
            prometheus:
              url: ftp://prom
              step: 1500ms
            incidents:
              group_by: ["not-a-label"]
            signals:
              - name: Bad-Name
                query: 'up'
                selectors: { service: cart }
              - name: dup
                query: 'up{$selector}'
              - name: dup
                query: 'up{$selector}'
        "#});
        let joined = p.join("\n");
        for needle in [
            "server.api_token: required",
            "prometheus.url: scheme \"ftp\"",
            "prometheus.step: must be a whole number of seconds",
            "incidents.group_by[0]:",
            "signals[0].name:",
            "signals[0].query:",
            "signals[2].name: \"dup\" is used by another signal",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
    }

    #[test]
    fn selector_value_injection_is_rejected_with_path() {
        let p = problems(indoc! {r#"
            prometheus: { url: "http://x:9090" }
            signals:
              - name: cpu
                query: 'rate(cpu_seconds_total{$selector}[5m])'
                selectors:
                  service: 'cart"} or vector(1) or up{a="'
        "#});
        assert!(p[0].starts_with("signals[0].selectors"), "{p:?}");
        assert!(p[0].contains("service"), "{p:?}");
    }

    #[test]
    fn env_overrides_set_nested_fields_and_secrets() {
        let env = vec![
            (
                "AIOPSD_PROMETHEUS__URL".to_string(),
                "http://prom:9090".to_string(),
            ),
            (
                "AIOPSD_PROMETHEUS__RETRY__ATTEMPTS".to_string(),
                "5".to_string(),
            ),
            (
                "AIOPSD_SERVER__API_TOKEN".to_string(),
                "0123456789abcdef".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let config = Config::from_yaml(MINIMAL, Path::new("t"), env).expect("valid");
        let prom = config.prometheus.expect("prometheus");
        assert_eq!(prom.url, "http://prom:9090");
        assert_eq!(prom.retry.attempts, 5);
        let token = config.server.api_token.expect("token");
        assert_eq!(token.expose(), "0123456789abcdef");
        assert_eq!(format!("{token:?}"), "Secret(***)");
    }

    #[test]
    fn env_override_of_unknown_field_is_named() {
        let env = vec![("AIOPSD_PROMETHEUS__URLL".to_string(), "x".to_string())];
        let err = Config::from_yaml(MINIMAL, Path::new("t"), env).expect_err("rejected");
        assert!(err.problems()[0].contains("urll"), "{:?}", err.problems());
    }

    #[test]
    fn yaml_syntax_error_has_a_line() {
        let err = parse("prometheus:\n  url: [unclosed\n").expect_err("rejected");
        let text = err.to_string();
        assert!(text.contains("test.yaml"), "{text}");
        assert!(text.contains("line"), "{text}");
    }

    #[test]
    fn alertmanager_section_is_validated_and_its_password_hidden() {
        let p = problems(indoc! {r#"
            alertmanager:
              basic_auth: { username: "am:x", password: short }
              max_body_bytes: 10
        "#});
        let joined = p.join("\n");
        for needle in [
            "alertmanager.basic_auth.username:",
            "alertmanager.basic_auth.password: must be at least 16",
            "alertmanager.max_body_bytes:",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
        let env = vec![(
            "AIOPSD_ALERTMANAGER__BASIC_AUTH__PASSWORD".to_string(),
            "0123456789abcdef".to_string(),
        )];
        let config = Config::from_yaml(
            "alertmanager:\n  basic_auth: { username: am }\n",
            Path::new("t"),
            env,
        )
        .expect("valid");
        let basic = config.alertmanager.basic_auth.expect("basic auth");
        assert_eq!(basic.password.expose(), "0123456789abcdef");
        assert!(!format!("{basic:?}").contains("0123456789abcdef"));
        assert_eq!(config.alertmanager.max_body_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/aiopsd.yaml");
        let text = std::fs::read_to_string(&path).expect("config/aiopsd.yaml exists");
        Config::from_yaml(&text, &path, Vec::new()).expect("shipped config is valid");
    }
}
