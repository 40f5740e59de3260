//! The `mqtt:`, `webhook:` and `approvals:` config sections: their fields, defaults and
//! validation. config/aiopsd.yaml documents the same fields for operators;
//! keep the two in step.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{HumanDuration, Secret};

/// Where and how events are published over MQTT.
///
/// Absent: no MQTT publisher runs, nothing is queued for it, and approvals
/// can still be given through the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker URL: `mqtt://host:1883` (plain TCP) or `mqtts://host:8883`
    /// (TLS). The port defaults to 1883 / 8883. Credentials do not belong
    /// in the URL: use `username` and `password`.
    pub url: String,
    /// MQTT client id. Default: `aiopsd-<cluster>`. Two daemons must not
    /// share one: the broker disconnects the older session.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name for the broker, if it requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`; set it with `AIOPSD_MQTT__PASSWORD`, not
    /// in the file. Never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS settings for `mqtts://` URLs.
    #[serde(default)]
    pub tls: MqttTlsConfig,
    /// First segment of every topic: events go to
    /// `<topic_prefix>/<cluster>/incidents/<id>/<event>`. Default: `aiopsd`.
    /// No wildcards (`+`, `#`), no leading or trailing `/`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// MQTT keep-alive: how often the connection is checked when idle.
    /// Default: `30s`; at least `5s`.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// Also publish each incident's latest summary as a *retained* message
    /// on `<topic_prefix>/<cluster>/incidents/<id>/state`, so a dashboard
    /// that subscribes later sees the current state at once. Default: `false`.
    #[serde(default)]
    pub retain_state: bool,
    /// Most QoS 1 messages sent and not yet acknowledged by the broker.
    /// Higher is faster on a distant broker; every unacknowledged event is
    /// sent again after a reconnect. Default: `64`; 1..=1000.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// The durable queue in the store that events wait in until the broker
    /// acknowledges them.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Waiting between reconnection attempts while the broker is away.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
}

/// TLS client settings for an `mqtts://` broker.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's
    /// certificate. Default: the system's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for brokers that authenticate clients
    /// by certificate; requires `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Bounds of the outbox (per sink).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most events waiting for this sink. At 80% a WARN line is logged and
    /// `aiopsd_outbox_near_full` is 1. When full, low-priority events
    /// (`incident.updated`) are refused with an ERROR line and
    /// `aiopsd_outbox_refused_total`; all other events (opened, escalated,
    /// resolved, every action event) are still queued, because losing them
    /// is worse than using more disk. Default: `100000`; 100..=10000000.
    #[serde(default = "default_max_events")]
    pub max_events: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_events: default_max_events(),
        }
    }
}

/// Exponential backoff between connection attempts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// Wait after the first failure; doubles each time. Default: `500ms`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: HumanDuration,
    /// Longest wait between attempts. Default: `30s`.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

/// Where and how events are POSTed to an HTTP receiver (a pager, a chat
/// bridge, a ticketing system): the webhook sink of the outbox
/// (src/publish/webhook.rs, docs/EVENTS.md "Webhook").
///
/// Absent: no webhook sender runs and nothing is queued for it. It works
/// with or without the `mqtt` section; each sink has its own queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receiver URL, `http://` or `https://` (TLS with the system's trust
    /// store). Credentials do not belong in the URL: use `bearer_token`.
    pub url: String,
    /// Longest wait for one POST, connect to response. A timeout is
    /// retried like a 5xx. Default: `10s`; 100ms..=5m.
    #[serde(default = "default_webhook_timeout")]
    pub timeout: HumanDuration,
    /// Sent as `Authorization: Bearer <token>`; set it with
    /// `AIOPSD_WEBHOOK__BEARER_TOKEN`, not in the file. Never logged.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Key of the HMAC-SHA256 signature over the body, sent as
    /// `X-Aiopsd-Signature: sha256=<hex>`; set it with
    /// `AIOPSD_WEBHOOK__SIGNING_SECRET`. Never logged. At least 32
    /// characters. Absent: no signature header.
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// Event kinds to send (`incident.opened`, `incident.escalated`, ...).
    /// Default: empty, meaning every kind. Other events are still queued
    /// for this sink (the outbox writes every event once per sink) but are
    /// dropped by the sender without a request.
    #[serde(default)]
    pub events: Vec<super::event::EventKind>,
    /// The durable queue in the store that events wait in until the
    /// receiver answers 2xx. Same bounds and rules as `mqtt.outbox`.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Waiting between attempts while the receiver fails (408, 429, 5xx,
    /// timeouts, connection errors): doubles from `initial_backoff` to
    /// `max_backoff`. A `Retry-After` header (seconds) is honoured up to
    /// `max_backoff`.
    #[serde(default)]
    pub retry: ReconnectConfig,
}

/// Approvals of pending actions, through the API or MQTT.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Shared secret for HMAC-SHA256 signatures on MQTT approval messages
    /// (docs/EVENTS.md says how to sign). Set it with
    /// `AIOPSD_APPROVALS__SECRET`. Without it, MQTT approvals are not
    /// accepted at all (the API still works). At least 32 characters.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// How long a pending action waits for a decision before it expires.
    /// Default: `15m`.
    #[serde(default = "default_ttl")]
    pub ttl: HumanDuration,
    /// An MQTT approval message is refused when its `issued_at` is older
    /// than this, or this far in the future (clock skew). Default: `5m`.
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
    /// Topic the daemon subscribes to for approval messages.
    /// Default: `<mqtt.topic_prefix>/<cluster>/approvals`. No wildcards.
    #[serde(default)]
    pub topic: Option<String>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            secret: None,
            ttl: default_ttl(),
            max_age: default_max_age(),
            topic: None,
        }
    }
}

fn default_topic_prefix() -> String {
    "aiopsd".into()
}
fn default_keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_inflight() -> u16 {
    64
}
fn default_max_events() -> u64 {
    100_000
}
fn default_initial_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_webhook_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
}
fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}

/// The broker address parsed from [`MqttConfig::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// True for `mqtts://`.
    pub tls: bool,
}

impl MqttConfig {
    /// Parses `url`; the error says what is wrong, for `mqtt.url`.
    pub fn broker(&self) -> Result<BrokerAddress, String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("{:?} is not a URL: {e}", self.url))?;
        let tls = match url.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(format!("scheme {other:?} is not mqtt or mqtts")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials; use mqtt.username and mqtt.password".into());
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err("must be just scheme://host[:port]".into());
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{:?} has no host", self.url))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        Ok(BrokerAddress { host, port, tls })
    }

    /// The client id to connect with.
    pub fn client_id_for(&self, cluster: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("aiopsd-{cluster}"))
    }
}

impl ApprovalsConfig {
    /// The approvals topic for this cluster and prefix.
    pub fn topic_for(&self, prefix: &str, cluster: &str) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("{prefix}/{cluster}/approvals"))
    }
}

/// Checks a topic (or prefix) that aiopsd publishes or subscribes on:
/// non-empty, no wildcards, no NUL, no leading/trailing `/`, no empty levels.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("must not be empty".into());
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(format!("{topic:?} must not contain `+`, `#` or NUL"));
    }
    if topic.split('/').any(str::is_empty) {
        return Err(format!(
            "{topic:?} must not start or end with `/` or contain `//`"
        ));
    }
    if topic.len() > 512 {
        return Err("must be at most 512 bytes".into());
    }
    Ok(())
}

/// Validates both sections; `err(path, reason)` collects every problem.
pub(crate) fn validate(
    cluster: &str,
    mqtt: Option<&MqttConfig>,
    approvals: &ApprovalsConfig,
    err: &mut impl FnMut(String, String),
) {
    if let Some(m) = mqtt {
        let tls = match m.broker() {
            Ok(b) => b.tls,
            Err(reason) => {
                err("mqtt.url".into(), reason);
                false
            }
        };
        let client_id = m.client_id_for(cluster);
        if client_id.is_empty() || client_id.len() > 256 || client_id.contains('\0') {
            err(
                "mqtt.client_id".into(),
                "must be 1 to 256 characters without NUL".into(),
            );
        }
        if m.password.is_some() && m.username.is_none() {
            err(
                "mqtt.password".into(),
                "needs mqtt.username (MQTT sends a password only with a user name)".into(),
            );
        }
        if let Err(reason) = validate_topic(&m.topic_prefix) {
            err("mqtt.topic_prefix".into(), reason);
        }
        // The cluster name becomes a topic level.
        if cluster.contains(['/', '+', '#', '\0']) {
            err(
                "cluster".into(),
                "must not contain `/`, `+`, `#` or NUL when mqtt is configured (it is a topic level)"
                    .into(),
            );
        }
        if m.keep_alive.0 < Duration::from_secs(5) || m.keep_alive.0 > Duration::from_secs(65535) {
            err(
                "mqtt.keep_alive".into(),
                format!("must be 5s..18h, got {}", m.keep_alive),
            );
        }
        if !(1..=1000).contains(&m.inflight) {
            err("mqtt.inflight".into(), "must be 1..=1000".into());
        }
        if !(100..=10_000_000).contains(&m.outbox.max_events) {
            err(
                "mqtt.outbox.max_events".into(),
                "must be 100..=10000000".into(),
            );
        }
        if m.reconnect.initial_backoff.0.is_zero() {
            err(
                "mqtt.reconnect.initial_backoff".into(),
                "must be more than 0s".into(),
            );
        }
        if m.reconnect.initial_backoff > m.reconnect.max_backoff {
            err(
                "mqtt.reconnect.initial_backoff".into(),
                "must not exceed max_backoff".into(),
            );
        }
        let t = &m.tls;
        if !tls && (t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some()) {
            err(
                "mqtt.tls".into(),
                "TLS files are set but mqtt.url is not mqtts://".into(),
            );
        }
        match (&t.cert_file, &t.key_file) {
            (Some(_), None) => err("mqtt.tls.key_file".into(), "required with cert_file".into()),
            (None, Some(_)) => err("mqtt.tls.cert_file".into(), "required with key_file".into()),
            _ => {}
        }
        for (name, path) in [
            ("ca_file", &t.ca_file),
            ("cert_file", &t.cert_file),
            ("key_file", &t.key_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    err(
                        format!("mqtt.tls.{name}"),
                        format!("{} is not a readable file", path.display()),
                    );
                }
            }
        }
        if let Some(topic) = &approvals.topic {
            if let Err(reason) = validate_topic(topic) {
                err("approvals.topic".into(), reason);
            }
        }
    } else if approvals.topic.is_some() {
        err(
            "approvals.topic".into(),
            "is set but there is no mqtt section to subscribe with".into(),
        );
    }
    if let Some(secret) = &approvals.secret {
        if secret.expose().len() < 32 {
            err(
                "approvals.secret".into(),
                "must be at least 32 characters".into(),
            );
        }
    }
    if approvals.ttl.0 < Duration::from_secs(1) {
        err("approvals.ttl".into(), "must be at least 1s".into());
    }
    if approvals.max_age.0 < Duration::from_secs(1) {
        err("approvals.max_age".into(), "must be at least 1s".into());
    }
}

impl WebhookConfig {
    /// Parses `url`; the error says what is wrong, for `webhook.url`.
    pub fn endpoint(&self) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("{:?} is not a URL: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme {:?} is not http or https", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials; use webhook.bearer_token".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{:?} has no host", self.url));
        }
        Ok(url)
    }
}

/// Validates the `webhook:` section; `err(path, reason)` collects every
/// problem. Never echoes a secret.
pub(crate) fn validate_webhook(
    webhook: Option<&WebhookConfig>,
    err: &mut impl FnMut(String, String),
) {
    let Some(w) = webhook else {
        return;
    };
    if let Err(reason) = w.endpoint() {
        err("webhook.url".into(), reason);
    }
    if w.timeout.0 < Duration::from_millis(100) || w.timeout.0 > Duration::from_secs(300) {
        err(
            "webhook.timeout".into(),
            format!("must be 100ms..=5m, got {}", w.timeout),
        );
    }
    if let Some(secret) = &w.signing_secret {
        if secret.expose().len() < 32 {
            err(
                "webhook.signing_secret".into(),
                "must be at least 32 characters".into(),
            );
        }
    }
    if let Some(token) = &w.bearer_token {
        let t = token.expose();
        // reqwest refuses such a header value at send time; say so at start.
        if t.is_empty() || t.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            err(
                "webhook.bearer_token".into(),
                "must be non-empty, without spaces or control characters".into(),
            );
        }
    }
    if !(100..=10_000_000).contains(&w.outbox.max_events) {
        err(
            "webhook.outbox.max_events".into(),
            "must be 100..=10000000".into(),
        );
    }
    if w.retry.initial_backoff.0.is_zero() {
        err(
            "webhook.retry.initial_backoff".into(),
            "must be more than 0s".into(),
        );
    }
    if w.retry.initial_backoff > w.retry.max_backoff {
        err(
            "webhook.retry.initial_backoff".into(),
            "must not exceed max_backoff".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            timeout: default_webhook_timeout(),
            bearer_token: None,
            signing_secret: None,
            events: Vec::new(),
            outbox: OutboxConfig::default(),
            retry: ReconnectConfig::default(),
        }
    }

    fn webhook_problems(w: &WebhookConfig) -> String {
        let mut out = Vec::new();
        validate_webhook(Some(w), &mut |p, r| out.push(format!("{p}: {r}")));
        out.join("\n")
    }

    #[test]
    fn webhook_problems_name_their_field_and_hide_secrets() {
        assert_eq!(webhook_problems(&webhook("https://pager.example/hook")), "");
        let mut w = webhook("ftp://u:p@x");
        w.signing_secret = Some(Secret::from("tooshort-secret"));
        w.bearer_token = Some(Secret::from("has space"));
        w.timeout = HumanDuration(Duration::from_millis(10));
        w.outbox.max_events = 1;
        let p = webhook_problems(&w);
        for needle in [
            "webhook.url: scheme",
            "webhook.signing_secret: must be at least 32",
            "webhook.bearer_token: must be non-empty",
            "webhook.timeout:",
            "webhook.outbox.max_events:",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
        assert!(!p.contains("tooshort") && !p.contains("has space"), "{p}");
        assert!(webhook_problems(&webhook("http://u:p@x/")).contains("credentials"));
    }

    fn mqtt(url: &str) -> MqttConfig {
        MqttConfig {
            url: url.into(),
            client_id: None,
            username: None,
            password: None,
            tls: MqttTlsConfig::default(),
            topic_prefix: default_topic_prefix(),
            keep_alive: default_keep_alive(),
            retain_state: false,
            inflight: default_inflight(),
            outbox: OutboxConfig::default(),
            reconnect: ReconnectConfig::default(),
        }
    }

    fn problems(cluster: &str, m: Option<&MqttConfig>, a: &ApprovalsConfig) -> Vec<String> {
        let mut out = Vec::new();
        validate(cluster, m, a, &mut |p, r| out.push(format!("{p}: {r}")));
        out
    }

    #[test]
    fn broker_urls() {
        let b = mqtt("mqtt://broker.local").broker().expect("valid");
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("broker.local", 1883, false)
        );
        let b = mqtt("mqtts://10.0.0.1:9999").broker().expect("valid");
        assert_eq!((b.host.as_str(), b.port, b.tls), ("10.0.0.1", 9999, true));
        assert!(mqtt("http://x").broker().unwrap_err().contains("scheme"));
        assert!(mqtt("mqtt://u:p@x")
            .broker()
            .unwrap_err()
            .contains("credentials"));
        assert!(mqtt("mqtt://x/path").broker().is_err());
    }

    #[test]
    fn every_problem_names_its_field() {
        let mut m = mqtt("mqtt://x");
        m.topic_prefix = "a/#".into();
        m.password = Some(Secret::from("pw"));
        m.tls.cert_file = Some("/nonexistent.pem".into());
        m.inflight = 0;
        let a = ApprovalsConfig {
            secret: Some(Secret::from("short")),
            ..Default::default()
        };
        let p = problems("prod/eu", Some(&m), &a).join("\n");
        for needle in [
            "mqtt.topic_prefix:",
            "mqtt.password: needs mqtt.username",
            "mqtt.tls: TLS files are set",
            "mqtt.tls.key_file: required",
            "mqtt.tls.cert_file: /nonexistent.pem",
            "mqtt.inflight:",
            "cluster: must not contain",
            "approvals.secret: must be at least 32",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
        assert!(!p.contains("short"), "the secret is never echoed: {p}");
        assert!(problems(
            "prod",
            Some(&mqtt("mqtts://x")),
            &ApprovalsConfig::default()
        )
        .is_empty());
    }

    #[test]
    fn topics_are_checked() {
        assert!(validate_topic("aiopsd").is_ok());
        assert!(validate_topic("a/b/c").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/+", "#"] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
    }
}
