//! The demo's alert storm: what Alertmanager sends aiopsd while the demo's
//! fault is on, and a feeder that delivers it through the real webhook.
//!
//! [`alert_storm`] is pure: given the demo's fault (its service, namespace
//! and start, in the simulated clock's data time), it returns ~60
//! Alertmanager webhook notifications (payload version 4) in the order an
//! Alertmanager would send them, plus the maintenance silence an operator
//! would have set. The storm holds what makes on-call noisy:
//!
//! - the **real problem**: error-ratio and latency alerts on the faulty
//!   service, and crash-looping alerts from three of its pods, each
//!   re-sent every `group_interval` while it fires (repeated deliveries);
//! - a **flapping** alert on another service: four short firing episodes,
//!   each resolved minutes later, one retried delivery each;
//! - a **silenced** alert: database replication lag during a planned
//!   failover drill, covered by the maintenance silence;
//! - a **low-severity** alert (`severity: info`) that resolves on its own;
//! - a node-level alert with none of the grouping labels.
//!
//! [`feed`] creates the silence and POSTs every notification to a running
//! aiopsd over HTTP (exactly what Alertmanager does), waits until the
//! incident stage has applied every accepted alert, and reads back through
//! the API what the storm became: [`StormCounts`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::incident::{AlertStatus, Incident};
use crate::signal::{format_ts, TimestampMs};
use crate::sources::sim::Fault;

/// The receiver name Alertmanager puts in every notification.
pub const RECEIVER: &str = "aiopsd";

/// Alertmanager's `group_interval`: how often a firing group is re-sent.
const GROUP_INTERVAL_MS: i64 = 5 * 60_000;

/// The zero time Alertmanager writes as `endsAt` of a firing alert whose
/// sender gave none.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One alert of a notification, as on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireAlert {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// The alert's labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339; the zero time while firing.
    pub ends_at: String,
    /// Link to the rule in Prometheus.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's fingerprint of the labels (16 hex digits).
    pub fingerprint: String,
}

/// One webhook notification (Alertmanager payload version 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Always `"4"`.
    pub version: String,
    /// Alertmanager's key of the group.
    pub group_key: String,
    /// Alerts left out by `max_alerts` (0 here).
    pub truncated_alerts: u64,
    /// `firing` if any alert fires, else `resolved`.
    pub status: AlertStatus,
    /// The receiver's name.
    pub receiver: String,
    /// The labels the group is keyed on.
    pub group_labels: BTreeMap<String, String>,
    /// Labels all alerts share.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations all alerts share.
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's own URL.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The group's alerts.
    pub alerts: Vec<WireAlert>,
}

/// The maintenance window an operator set before the storm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StormSilence {
    /// Matchers, all of which must match (`service=orders-db`).
    pub matchers: Vec<String>,
    /// Who set it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// A whole storm: the silence to set first, then the notifications in
/// sending order.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertStorm {
    /// Set through `POST /api/v1/silences` before the first delivery.
    pub silence: StormSilence,
    /// In the order Alertmanager sends them.
    pub notifications: Vec<Notification>,
}

impl AlertStorm {
    /// Alerts across all notifications, repeats included.
    pub fn alert_count(&self) -> usize {
        self.notifications.iter().map(|n| n.alerts.len()).sum()
    }

    /// Distinct firing episodes `(fingerprint, startsAt)` with the status
    /// of their last delivery: what aiopsd must end up holding.
    pub fn episodes(&self) -> BTreeMap<(String, String), AlertStatus> {
        let mut out = BTreeMap::new();
        for alert in self.notifications.iter().flat_map(|n| &n.alerts) {
            let status = out
                .entry((alert.fingerprint.clone(), alert.starts_at.clone()))
                .or_insert(alert.status);
            // `resolved` is final for an episode (a later `firing` is stale).
            if alert.status == AlertStatus::Resolved {
                *status = AlertStatus::Resolved;
            }
        }
        out
    }
}

/// Alertmanager's fingerprint of a label set: FNV-1a (64 bit) over the
/// labels sorted by name, each name and value followed by the byte 0xff,
/// as 16 hex digits (Prometheus `model.LabelSet.Fingerprint`).
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One rule's alert, before it is put in notifications.
struct Rule {
    labels: BTreeMap<String, String>,
    summary: String,
    expr: &'static str,
}

impl Rule {
    fn new(pairs: &[(&str, &str)], summary: String, expr: &'static str) -> Self {
        Self {
            labels: labels(pairs),
            summary,
            expr,
        }
    }

    /// The alert in one delivery: firing (no end) or resolved at `end`.
    fn wire(&self, starts_at: TimestampMs, end: Option<TimestampMs>) -> WireAlert {
        WireAlert {
            status: if end.is_some() {
                AlertStatus::Resolved
            } else {
                AlertStatus::Firing
            },
            labels: self.labels.clone(),
            annotations: labels(&[("summary", &self.summary)]),
            starts_at: format_ts(starts_at),
            ends_at: end.map_or_else(|| ZERO_TIME.to_string(), format_ts),
            generator_url: format!(
                "http://prometheus.monitoring:9090/graph?g0.expr={}&g0.tab=1",
                self.expr
            ),
            fingerprint: fingerprint(&self.labels),
        }
    }
}

/// A notification to send at data time `at`.
struct Scheduled {
    at: TimestampMs,
    notification: Notification,
}

/// Builds one notification of the group keyed by `group_labels`.
fn notification(group_labels: &[(&str, &str)], alerts: Vec<WireAlert>) -> Notification {
    let group_labels = labels(group_labels);
    let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
        AlertStatus::Firing
    } else {
        AlertStatus::Resolved
    };
    // Labels every alert has with the same value.
    let common_labels = alerts
        .first()
        .map(|first| {
            first
                .labels
                .iter()
                .filter(|(k, v)| alerts.iter().all(|a| a.labels.get(*k) == Some(*v)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let group_key = format!(
        "{{}}:{{{}}}",
        group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Notification {
        version: "4".into(),
        group_key,
        truncated_alerts: 0,
        status,
        receiver: RECEIVER.into(),
        group_labels,
        common_labels,
        common_annotations: BTreeMap::new(),
        external_url: "http://alertmanager.monitoring:9093".into(),
        alerts,
    }
}

/// The storm around `fault` (see the module docs). Pure: the same fault
/// gives the same storm. Alert times are data time, aligned with the
/// demo's simulated clock: the real alerts start two minutes into the
/// fault, as a `for: 2m` rule would fire.
pub fn alert_storm(fault: &Fault) -> AlertStorm {
    const MIN: i64 = 60_000;
    let ns = fault.namespace.as_str();
    let svc = fault.service.as_str();
    let t0 = fault.start;
    let mut out: Vec<Scheduled> = Vec::new();
    let mut send = |at: TimestampMs, group: &[(&str, &str)], alerts: Vec<WireAlert>| {
        out.push(Scheduled {
            at,
            notification: notification(group, alerts),
        });
    };

    // The real problem: errors (critical) and latency on the faulty
    // service, re-sent every group_interval while firing; latency resolves
    // after 40 minutes.
    let errors = Rule::new(
        &[
            ("alertname", "HighErrorRatio"),
            ("namespace", ns),
            ("service", svc),
            ("severity", "critical"),
        ],
        format!("{svc}: more than 5% of requests fail"),
        "job:http_errors:ratio5m>0.05",
    );
    let errors_start = t0 + 2 * MIN;
    for i in 0..12 {
        let at = errors_start + i * GROUP_INTERVAL_MS;
        send(
            at,
            &[("alertname", "HighErrorRatio")],
            vec![errors.wire(errors_start, None)],
        );
    }
    let latency = Rule::new(
        &[
            ("alertname", "HighLatencyP99"),
            ("namespace", ns),
            ("service", svc),
            ("severity", "warning"),
        ],
        format!("{svc}: p99 latency above 1s"),
        "job:http_latency:p99_5m>1",
    );
    let latency_start = t0 + 3 * MIN;
    let latency_end = latency_start + 40 * MIN;
    for i in 0..8 {
        send(
            latency_start + i * GROUP_INTERVAL_MS,
            &[("alertname", "HighLatencyP99")],
            vec![latency.wire(latency_start, None)],
        );
    }
    send(
        latency_end + MIN,
        &[("alertname", "HighLatencyP99")],
        vec![latency.wire(latency_start, Some(latency_end))],
    );

    // Three pods of the faulty service crash-loop; Alertmanager groups
    // them by alertname, so the group grows from two pods to three.
    let pods: Vec<Rule> = ["7d9f8-abc12", "7d9f8-def34", "7d9f8-ghi56"]
        .iter()
        .map(|suffix| {
            let pod = format!("{svc}-{suffix}");
            Rule::new(
                &[
                    ("alertname", "KubePodCrashLooping"),
                    ("namespace", ns),
                    ("service", svc),
                    ("pod", &pod),
                    ("severity", "warning"),
                ],
                format!("Pod {ns}/{pod} is restarting repeatedly"),
                "increase(kube_pod_container_status_restarts_total[10m])>3",
            )
        })
        .collect();
    let pods_start = t0 + 4 * MIN;
    let third_start = pods_start + 3 * MIN;
    let crash_group = [("alertname", "KubePodCrashLooping"), ("namespace", ns)];
    send(
        pods_start,
        &crash_group,
        pods[..2].iter().map(|p| p.wire(pods_start, None)).collect(),
    );
    for i in 1..9 {
        let at = pods_start + i * GROUP_INTERVAL_MS;
        let mut alerts: Vec<_> = pods[..2].iter().map(|p| p.wire(pods_start, None)).collect();
        alerts.push(pods[2].wire(third_start, None));
        send(at, &crash_group, alerts);
    }

    // A flapping alert on another service: four 3-minute episodes, 12
    // minutes apart; each firing delivery is retried once (a timeout on
    // Alertmanager's side), each episode resolves.
    let flappy = Rule::new(
        &[
            ("alertname", "CacheHitRatioLow"),
            ("namespace", ns),
            ("service", "catalog"),
            ("severity", "warning"),
        ],
        "catalog: cache hit ratio below 80%".into(),
        "job:cache_hits:ratio5m<0.8",
    );
    for episode in 0..4 {
        let start = t0 - 20 * MIN + episode * 12 * MIN;
        let end = start + 3 * MIN;
        let group = [("alertname", "CacheHitRatioLow")];
        send(start, &group, vec![flappy.wire(start, None)]);
        send(start + 10_000, &group, vec![flappy.wire(start, None)]);
        send(end + 30_000, &group, vec![flappy.wire(start, Some(end))]);
    }

    // Planned maintenance: a database failover drill makes replication lag
    // fire; the operator silenced it beforehand.
    let lag = Rule::new(
        &[
            ("alertname", "PostgresReplicationLag"),
            ("namespace", ns),
            ("service", "orders-db"),
            ("severity", "critical"),
        ],
        "orders-db: replica more than 30s behind".into(),
        "pg_replication_lag_seconds>30",
    );
    let lag_start = t0 + 10 * MIN;
    let lag_end = lag_start + 25 * MIN;
    for i in 0..6 {
        send(
            lag_start + i * GROUP_INTERVAL_MS,
            &[("alertname", "PostgresReplicationLag")],
            vec![lag.wire(lag_start, None)],
        );
    }
    send(
        lag_end + MIN,
        &[("alertname", "PostgresReplicationLag")],
        vec![lag.wire(lag_start, Some(lag_end))],
    );

    // Low-severity noise: a batch job runs long for a few minutes, as it
    // does most nights.
    let slow_job = Rule::new(
        &[
            ("alertname", "CronJobRunningLong"),
            ("namespace", ns),
            ("service", "report-builder"),
            ("severity", "info"),
        ],
        "report-builder: nightly job running longer than usual".into(),
        "time()-kube_job_status_start_time>600",
    );
    let job_start = t0 + 15 * MIN;
    for i in 0..2 {
        send(
            job_start + i * GROUP_INTERVAL_MS,
            &[("alertname", "CronJobRunningLong")],
            vec![slow_job.wire(job_start, None)],
        );
    }
    send(
        job_start + 8 * MIN,
        &[("alertname", "CronJobRunningLong")],
        vec![slow_job.wire(job_start, Some(job_start + 7 * MIN))],
    );

    // A node-level alert: none of the grouping labels, so it stands alone.
    let disk = Rule::new(
        &[
            ("alertname", "NodeFilesystemAlmostFull"),
            ("instance", "node-3:9100"),
            ("mountpoint", "/var/lib/containerd"),
            ("severity", "warning"),
        ],
        "node-3: /var/lib/containerd is 91% full".into(),
        "node_filesystem_avail_bytes/node_filesystem_size_bytes<0.1",
    );
    let disk_start = t0 - 5 * MIN;
    for i in 0..6 {
        send(
            disk_start + i * GROUP_INTERVAL_MS,
            &[("alertname", "NodeFilesystemAlmostFull")],
            vec![disk.wire(disk_start, None)],
        );
    }

    // Stable sort: notifications due at the same time keep their order.
    out.sort_by_key(|s| s.at);
    AlertStorm {
        silence: StormSilence {
            matchers: vec![format!("namespace={ns}"), "service=orders-db".into()],
            created_by: "dba-oncall".into(),
            comment: "orders-db failover drill (planned maintenance)".into(),
        },
        notifications: out.into_iter().map(|s| s.notification).collect(),
    }
}

/// What the storm became, read back from aiopsd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StormCounts {
    /// Notifications delivered (each answered 2xx).
    pub notifications: usize,
    /// Alerts in them, repeats included.
    pub alerts_received: usize,
    /// Distinct alert episodes among them (new at first delivery).
    pub episodes: usize,
    /// Deliveries that changed nothing (repeats and retries), as the
    /// webhook answered.
    pub deduplicated: usize,
    /// Episodes suppressed, by reason (`silence`, `verdict`, `learned`).
    pub suppressed: BTreeMap<String, usize>,
    /// Incidents the storm's episodes are grouped into.
    pub incidents: usize,
    /// Of those, incidents that also hold detector anomalies: the alerts
    /// merged with what aiopsd found itself.
    pub merged_with_anomalies: usize,
    /// The highest flap count among those incidents.
    pub max_flap_count: u32,
}

impl StormCounts {
    /// One line for people: "N alerts → M incidents (...)".
    pub fn summary(&self) -> String {
        let suppressed: usize = self.suppressed.values().sum();
        let reasons = self
            .suppressed
            .iter()
            .map(|(r, n)| format!("{n} by {r}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} alerts in {} notifications → {} episodes ({} repeated deliveries deduplicated) → \
             {} incidents ({} merged with detected anomalies, flap count up to {}); \
             {suppressed} suppressed{}",
            self.alerts_received,
            self.notifications,
            self.episodes,
            self.deduplicated,
            self.incidents,
            self.merged_with_anomalies,
            self.max_flap_count,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({reasons})")
            }
        )
    }
}

/// Why feeding the storm failed.
#[derive(Debug, thiserror::Error)]
pub enum StormError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// A request did not get an answer.
    #[error("{what}: no answer from {url}")]
    Send {
        /// What was sent.
        what: String,
        /// Where.
        url: String,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
    /// aiopsd answered with an error status.
    #[error("{what}: HTTP {status}: {body}")]
    Refused {
        /// What was sent.
        what: String,
        /// The status.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// An answer was not the JSON expected.
    #[error("{what}: unexpected answer")]
    Decode {
        /// What was asked.
        what: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The incident stage had not applied every alert in time.
    #[error("after {waited:?}, {pending} of {total} alert episodes were not applied yet")]
    Timeout {
        /// How long we waited.
        waited: Duration,
        /// Episodes neither in an incident nor suppressed.
        pending: usize,
        /// All episodes of the storm.
        total: usize,
    },
}

/// The webhook's answer to one delivery.
#[derive(Debug, Deserialize)]
struct Receipt {
    duplicates: usize,
}

/// An alert as `GET /api/v1/alerts` lists it (the fields used here).
#[derive(Debug, Deserialize)]
struct ListedAlert {
    fingerprint: String,
    starts_at: TimestampMs,
    suppression: Option<ListedSuppression>,
}

#[derive(Debug, Deserialize)]
struct ListedSuppression {
    reason: String,
}

#[derive(Debug, Deserialize)]
struct Page<T> {
    items: Vec<T>,
    next_before_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct IncidentRef {
    id: i64,
}

/// A small client for one aiopsd.
struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(base_url: &str, token: Option<&str>) -> Result<Self, StormError> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(StormError::Client)?,
            base: base_url.trim_end_matches('/').to_string(),
            token: token.map(str::to_owned),
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, StormError> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {path}");
        let mut request = self.client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|source| StormError::Send {
            what: what.clone(),
            url: url.clone(),
            source,
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| StormError::Send {
                what: what.clone(),
                url,
                source,
            })?
            .to_vec();
        if !status.is_success() {
            return Err(StormError::Refused {
                what,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            });
        }
        Ok(bytes)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, StormError> {
        let bytes = self.send(method.clone(), path, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| StormError::Decode {
            what: format!("{method} {path}"),
            source,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, StormError> {
        self.json(reqwest::Method::GET, path, None).await
    }

    /// Every item of a paged list.
    async fn all<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, StormError> {
        let mut items = Vec::new();
        let mut before: Option<i64> = None;
        loop {
            let page_path = match before {
                None => format!("{path}?limit=500"),
                Some(id) => format!("{path}?limit=500&before_id={id}"),
            };
            let page: Page<T> = self.get(&page_path).await?;
            items.extend(page.items);
            match page.next_before_id {
                Some(id) if before != Some(id) => before = Some(id),
                _ => return Ok(items),
            }
        }
    }
}

/// Delivers `storm` to the aiopsd at `base_url` (e.g.
/// `http://127.0.0.1:9464`) through its real webhook, as Alertmanager
/// would: first the maintenance silence (`POST /api/v1/silences`), then
/// every notification in order (`POST /api/v1/alerts/alertmanager`, with
/// the bearer `token` if the API has one). Then waits (at most `wait`)
/// until the incident stage has applied every episode — each is in an
/// incident with its last status, or suppressed — and counts what the
/// storm became through the API.
///
/// Run it while the daemon's pipeline runs (the demo: concurrently with
/// the pipeline); counts cover only this storm's alerts, so other
/// incidents in the same store do not disturb them.
pub async fn feed(
    base_url: &str,
    token: Option<&str>,
    storm: &AlertStorm,
    wait: Duration,
) -> Result<StormCounts, StormError> {
    let api = Api::new(base_url, token)?;
    let silence = serde_json::json!({
        "created_by": storm.silence.created_by,
        "comment": storm.silence.comment,
        "matchers": storm.silence.matchers,
        "ends_at": format_ts(crate::signal::now_ms() + 2 * 3_600_000),
    });
    api.send(
        reqwest::Method::POST,
        "/api/v1/silences",
        Some(silence.to_string().into_bytes()),
    )
    .await?;

    let mut counts = StormCounts::default();
    for notification in &storm.notifications {
        let body = serde_json::to_vec(notification).map_err(|source| StormError::Decode {
            what: "the notification".into(),
            source,
        })?;
        let receipt: Receipt = api
            .json(
                reqwest::Method::POST,
                "/api/v1/alerts/alertmanager",
                Some(body),
            )
            .await?;
        counts.notifications += 1;
        counts.alerts_received += notification.alerts.len();
        counts.deduplicated += receipt.duplicates;
    }

    counts.episodes = storm.episodes().len();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (pending, now) = recount_with(&api, storm, &counts).await?;
        if pending == 0 {
            return Ok(now);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StormError::Timeout {
                waited: wait,
                pending,
                total: counts.episodes,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads again what the storm's alerts have become, keeping the delivery
/// figures of `delivered` (what [`feed`] returned): incidents change after
/// the feed (detectors find the fault's anomalies and merge them in,
/// alerts resolve), so the demo recounts before printing its summary.
pub async fn recount(
    base_url: &str,
    token: Option<&str>,
    storm: &AlertStorm,
    delivered: &StormCounts,
) -> Result<StormCounts, StormError> {
    let api = Api::new(base_url, token)?;
    Ok(recount_with(&api, storm, delivered).await?.1)
}

/// The counts now, and how many episodes are not applied yet.
async fn recount_with(
    api: &Api,
    storm: &AlertStorm,
    delivered: &StormCounts,
) -> Result<(usize, StormCounts), StormError> {
    let (pending, observed) = observe(api, &storm.episodes()).await?;
    Ok((
        pending,
        StormCounts {
            suppressed: observed.suppressed,
            incidents: observed.incidents,
            merged_with_anomalies: observed.merged_with_anomalies,
            max_flap_count: observed.max_flap_count,
            ..delivered.clone()
        },
    ))
}

/// What the API shows of the storm's episodes now.
#[derive(Debug, Default)]
struct Observed {
    suppressed: BTreeMap<String, usize>,
    incidents: usize,
    merged_with_anomalies: usize,
    max_flap_count: u32,
}

/// Reads alerts and incidents; returns how many expected episodes are not
/// applied yet, and the counts.
async fn observe(
    api: &Api,
    expected: &BTreeMap<(String, String), AlertStatus>,
) -> Result<(usize, Observed), StormError> {
    let wanted: BTreeSet<&str> = expected.keys().map(|(fp, _)| fp.as_str()).collect();
    let alerts: Vec<ListedAlert> = api.all("/api/v1/alerts").await?;
    let mut observed = Observed::default();
    let mut done: BTreeSet<(String, String)> = BTreeSet::new();
    for alert in alerts
        .iter()
        .filter(|a| wanted.contains(a.fingerprint.as_str()))
    {
        if let Some(s) = &alert.suppression {
            *observed.suppressed.entry(s.reason.clone()).or_default() += 1;
            done.insert((alert.fingerprint.clone(), format_ts(alert.starts_at)));
        }
    }
    let refs: Vec<IncidentRef> = api.all("/api/v1/incidents").await?;
    for r in refs {
        let incident: Incident = api.get(&format!("/api/v1/incidents/{}", r.id)).await?;
        let mut holds_storm = false;
        for member in &incident.alerts {
            let key = (member.fingerprint.clone(), format_ts(member.starts_at));
            if let Some(status) = expected.get(&key) {
                holds_storm = true;
                if *status == member.status {
                    done.insert(key);
                }
            }
        }
        if holds_storm {
            observed.incidents += 1;
            observed.merged_with_anomalies += usize::from(!incident.signals.is_empty());
            observed.max_flap_count = observed.max_flap_count.max(incident.flap_count());
        }
    }
    let pending = expected.keys().filter(|k| !done.contains(*k)).count();
    Ok((pending, observed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault() -> Fault {
        Fault {
            service: "checkout".into(),
            namespace: "demo".into(),
            start: 1_767_225_600_000,
            end: 1_767_229_200_000,
            description: String::new(),
        }
    }

    #[test]
    fn fingerprints_match_alertmanager() {
        // The empty label set hashes to FNV-1a's offset basis, as in
        // Prometheus's `model.LabelSet{}.Fingerprint()`.
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        let a = labels(&[("alertname", "A"), ("job", "x")]);
        let b = labels(&[("job", "x"), ("alertname", "A")]);
        assert_eq!(fingerprint(&a), fingerprint(&b), "order does not matter");
        assert_ne!(
            fingerprint(&a),
            fingerprint(&labels(&[("alertname", "A"), ("job", "y")]))
        );
        assert_eq!(fingerprint(&a).len(), 16);
    }

    #[test]
    fn the_storm_is_a_realistic_alertmanager_sequence() {
        let storm = alert_storm(&fault());
        assert!(
            (50..=70).contains(&storm.notifications.len()),
            "{}",
            storm.notifications.len()
        );
        // Every notification is a valid version-4 payload.
        for n in &storm.notifications {
            assert_eq!(n.version, "4");
            assert!(!n.alerts.is_empty());
            let json = serde_json::to_value(n).expect("serializes");
            for field in [
                "groupKey",
                "truncatedAlerts",
                "groupLabels",
                "commonLabels",
                "externalURL",
            ] {
                assert!(json.get(field).is_some(), "{field} in {json}");
            }
            assert!(json["alerts"][0].get("generatorURL").is_some());
        }
        // The faulty service's alerts start after the fault does (data
        // time of the demo's clock).
        let faulty: Vec<_> = storm
            .notifications
            .iter()
            .flat_map(|n| &n.alerts)
            .filter(|a| a.labels.get("service").map(String::as_str) == Some("checkout"))
            .collect();
        assert!(faulty
            .iter()
            .all(|a| a.starts_at.as_str() > format_ts(fault().start).as_str()));
        // 5 checkout episodes, 4 flapping, 1 silenced, 1 info, 1 node.
        assert_eq!(storm.episodes().len(), 12);
        assert!(storm.alert_count() > storm.episodes().len() * 3);
    }

    #[test]
    fn the_storm_is_deterministic() {
        assert_eq!(alert_storm(&fault()), alert_storm(&fault()));
    }
}
