//! Building an [`EvidenceBundle`] from what the incident itself carries:
//! one `Metric` item per anomalous series (plus a `Trend` item when the
//! series moved steadily rather than in a step), one `Alert` item per
//! member alert, and the workloads the incident's group names as targets.
//!
//! Pure: the kube-side gatherer, the correlated-series ranking
//! ([`super::correlate`]) and the log-template changes
//! ([`super::log_evidence`]) add their items to the same bundle afterwards.

use std::collections::BTreeMap;

use super::evidence::{EvidenceBundle, EvidenceDetail, EvidenceSource, MetricKind, Movement};
use crate::config::SignalConfig;
use crate::incident::{AlertEvidence, Incident, SignalEvidence};
use crate::remediate::plan::{WorkloadKind, WorkloadRef};
use crate::signal::{format_ts, Sample, SeriesKey};

/// What each configured signal measures, so rules can reason in terms of
/// latency, errors, memory… whatever the signals are called.
///
/// Lookup order for a series: an explicit entry for its signal, then the
/// series' own `kind` label (signals may set it through their `labels:`),
/// then a guess from the signal's name ([`guess_kind`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalKinds {
    by_signal: BTreeMap<String, MetricKind>,
}

impl SignalKinds {
    /// No explicit entries: every kind comes from labels or names.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries from the configured signals' `labels.kind` (e.g.
    /// `kind: latency`); a signal without one, or with a value
    /// [`parse_kind`] does not know, is left to the fallbacks.
    pub fn from_signals(signals: &[SignalConfig]) -> Self {
        let mut kinds = Self::new();
        for s in signals {
            if let Some(kind) = s.labels.get("kind").and_then(|k| parse_kind(k)) {
                kinds.insert(&s.name, kind);
            }
        }
        kinds
    }

    /// Says explicitly what `signal` measures.
    pub fn insert(&mut self, signal: &str, kind: MetricKind) {
        self.by_signal.insert(signal.to_string(), kind);
    }

    /// What a series measures (see the type's docs for the order).
    pub fn kind_of(&self, key: &SeriesKey) -> MetricKind {
        self.kind_of_parts(&key.signal, key.label("kind"))
    }

    fn kind_of_parts(&self, signal: &str, kind_label: Option<&str>) -> MetricKind {
        if let Some(kind) = self.by_signal.get(signal) {
            return *kind;
        }
        kind_label
            .and_then(parse_kind)
            .unwrap_or_else(|| guess_kind(signal))
    }
}

/// Parses a kind as written in a `kind` label: the snake_case names of
/// [`MetricKind`] (`latency`, `error_ratio`, …) plus a few synonyms
/// (`errors`, `throughput`/`rps`, `restarts`).
pub fn parse_kind(s: &str) -> Option<MetricKind> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "latency" | "duration" => MetricKind::Latency,
        "error_ratio" | "errors" | "error_rate" | "error" => MetricKind::ErrorRatio,
        "throughput" | "rps" | "requests" | "traffic" => MetricKind::Throughput,
        "cpu" => MetricKind::Cpu,
        "memory" => MetricKind::Memory,
        "saturation" => MetricKind::Saturation,
        "restarts" | "restart" => MetricKind::Restarts,
        "other" => MetricKind::Other,
        _ => return None,
    })
}

/// Guesses what a signal measures from its name, for signals that do not
/// say. Checked in this order, so `request_errors` is an error signal and
/// `container_restarts` is not CPU: restart → errors (error, 5xx, fail) →
/// latency (latency, p99/p95/p50, duration, response_time) → CPU (cpu,
/// throttl) → memory (memory, mem_, rss, working_set, heap) → saturation
/// (queue, pool, saturation, backlog, inflight) → throughput (request,
/// rps, qps, throughput, traffic) → other.
pub fn guess_kind(name: &str) -> MetricKind {
    let n = name.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| n.contains(w));
    if has(&["restart"]) {
        MetricKind::Restarts
    } else if has(&["error", "5xx", "fail"]) {
        MetricKind::ErrorRatio
    } else if has(&[
        "latency",
        "p99",
        "p95",
        "p90",
        "p50",
        "duration",
        "response_time",
    ]) {
        MetricKind::Latency
    } else if has(&["cpu", "throttl"]) {
        MetricKind::Cpu
    } else if has(&["memory", "mem_", "rss", "working_set", "heap"]) {
        MetricKind::Memory
    } else if has(&["queue", "pool", "saturation", "backlog", "inflight"]) {
        MetricKind::Saturation
    } else if has(&["request", "rps", "qps", "throughput", "traffic"]) {
        MetricKind::Throughput
    } else {
        MetricKind::Other
    }
}

/// The workloads an incident's group names: with a `namespace` label,
/// a `deployment`, `statefulset` or `daemonset` label names that
/// workload; without any of those, a `service` label is taken to name a
/// Deployment of the same name (the common convention; the kube gatherer
/// may refine it from the Service's selector). No namespace, no target:
/// an action must never guess where it lands.
pub fn targets_from_group(group: &BTreeMap<String, String>) -> Vec<WorkloadRef> {
    let Some(namespace) = group.get("namespace").filter(|n| !n.is_empty()) else {
        return Vec::new();
    };
    let mut targets = Vec::new();
    for (label, kind) in [
        ("deployment", WorkloadKind::Deployment),
        ("statefulset", WorkloadKind::StatefulSet),
        ("daemonset", WorkloadKind::DaemonSet),
    ] {
        if let Some(name) = group.get(label).filter(|n| !n.is_empty()) {
            targets.push(WorkloadRef {
                namespace: namespace.clone(),
                kind,
                name: name.clone(),
            });
        }
    }
    if targets.is_empty() {
        if let Some(name) = group.get("service").filter(|n| !n.is_empty()) {
            targets.push(WorkloadRef {
                namespace: namespace.clone(),
                kind: WorkloadKind::Deployment,
                name: name.clone(),
            });
        }
    }
    targets
}

/// The bundle an incident yields on its own: its anomalous series (with a
/// `Trend` item for each that moved steadily), its member alerts, and the
/// targets its group names. Other sources add items afterwards.
pub fn from_incident(incident: &Incident, kinds: &SignalKinds) -> EvidenceBundle {
    let mut bundle = EvidenceBundle {
        incident_id: incident.id,
        subject: incident.subject(),
        opened_at: incident.opened_at,
        targets: targets_from_group(&incident.group),
        items: Vec::new(),
        gaps: Vec::new(),
    };
    for signal in &incident.signals {
        push_signal(&mut bundle, signal, kinds);
    }
    for alert in &incident.alerts {
        push_alert(&mut bundle, alert);
    }
    bundle
}

fn labels_map(key: &SeriesKey) -> BTreeMap<String, String> {
    key.labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn push_signal(bundle: &mut EvidenceBundle, s: &SignalEvidence, kinds: &SignalKinds) {
    let kind = kinds.kind_of(&s.series);
    let movement = if s.peak.score > 0.0 || (s.peak.score == 0.0 && s.peak.value >= s.peak.expected)
    {
        Movement::Up
    } else {
        Movement::Down
    };
    let verb = match movement {
        Movement::Up => "rose",
        Movement::Down => "fell",
    };
    let summary = format!(
        "{} {verb} to {} (expected {}, {:.1} spreads) between {} and {}.",
        s.series,
        fmt_num(s.peak.value),
        fmt_num(s.peak.expected),
        s.peak.score.abs(),
        format_ts(s.first_at),
        format_ts(s.last_at),
    );
    bundle.push(
        EvidenceSource::Metric,
        s.first_at,
        summary,
        EvidenceDetail::Anomaly {
            signal: s.series.signal.clone(),
            labels: labels_map(&s.series),
            kind,
            movement,
            from: s.first_at,
            to: s.last_at,
            peak: s.peak.value,
            expected: s.peak.expected,
            score: s.peak.score,
        },
    );
    if let Some(trend) = steady_trend(&s.samples) {
        let (from, to) = (trend.from, trend.to);
        let movement = if trend.slope_per_hour >= 0.0 {
            Movement::Up
        } else {
            Movement::Down
        };
        let summary = format!(
            "{} moved steadily by {}/h from {} to {} (straight-line fit R² = {:.2}, better than a step).",
            s.series,
            fmt_num(trend.slope_per_hour),
            format_ts(from),
            format_ts(to),
            trend.r2,
        );
        bundle.push(
            EvidenceSource::Metric,
            from,
            summary,
            EvidenceDetail::Trend {
                signal: s.series.signal.clone(),
                labels: labels_map(&s.series),
                kind,
                movement,
                from,
                to,
                slope_per_hour: trend.slope_per_hour,
                r2: trend.r2,
            },
        );
    }
}

fn push_alert(bundle: &mut EvidenceBundle, a: &AlertEvidence) {
    let firing = a.status == crate::incident::AlertStatus::Firing;
    let severity = a.labels.get("severity").cloned();
    let summary = format!(
        "Alert {}{} {} since {}.",
        a.name,
        severity
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default(),
        if firing { "firing" } else { "resolved" },
        format_ts(a.starts_at),
    );
    bundle.push(
        EvidenceSource::Alert,
        a.starts_at,
        summary,
        EvidenceDetail::Alert {
            name: a.name.clone(),
            severity,
            firing,
            labels: a.labels.clone(),
        },
    );
}

/// A steady movement found by [`steady_trend`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// First sample time.
    pub from: i64,
    /// Last sample time.
    pub to: i64,
    /// Least-squares slope, per hour.
    pub slope_per_hour: f64,
    /// R² of the straight-line fit.
    pub r2: f64,
}

/// Fewest samples a trend is judged on: below this a line fits anything.
const MIN_TREND_SAMPLES: usize = 8;
/// R² a straight line must reach to call the movement steady.
const MIN_TREND_R2: f64 = 0.8;
/// Share of consecutive steps that must go the trend's way.
const MIN_TREND_AGREEMENT: f64 = 0.6;

/// Whether `samples` moved steadily: a straight line explains them well
/// (R² ≥ 0.8), better than the best single step (two flat levels) does,
/// and most consecutive steps go the same way. This is what tells a leak
/// (memory climbing for an hour) from a jump that came with traffic
/// (memory stepping up when requests did): both raise the same anomaly.
pub fn steady_trend(samples: &[Sample]) -> Option<Trend> {
    let n = samples.len();
    if n < MIN_TREND_SAMPLES {
        return None;
    }
    let t0 = samples[0].t;
    let xs: Vec<f64> = samples
        .iter()
        .map(|s| (s.t - t0) as f64 / 3_600_000.0)
        .collect();
    let ys: Vec<f64> = samples.iter().map(|s| s.v).collect();
    let nf = n as f64;
    let mx = xs.iter().sum::<f64>() / nf;
    let my = ys.iter().sum::<f64>() / nf;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx <= 0.0 || syy <= 0.0 || !syy.is_finite() {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = (sxy * sxy) / (sxx * syy);
    let sse_line = syy * (1.0 - r2);
    if r2 < MIN_TREND_R2 || sse_line >= best_step_sse(&ys) {
        return None;
    }
    let agreeing = ys
        .windows(2)
        .filter(|w| (w[1] - w[0]) * slope > 0.0)
        .count();
    if (agreeing as f64) < MIN_TREND_AGREEMENT * (n - 1) as f64 {
        return None;
    }
    Some(Trend {
        from: t0,
        to: samples[n - 1].t,
        slope_per_hour: slope,
        r2,
    })
}

/// Residual sum of squares of the best fit by two flat levels split at one
/// point (each side at least two samples).
fn best_step_sse(ys: &[f64]) -> f64 {
    let n = ys.len();
    let mut prefix = vec![(0.0, 0.0); n + 1];
    for (i, y) in ys.iter().enumerate() {
        prefix[i + 1] = (prefix[i].0 + y, prefix[i].1 + y * y);
    }
    let sse = |a: usize, b: usize| {
        let k = (b - a) as f64;
        let s = prefix[b].0 - prefix[a].0;
        let q = prefix[b].1 - prefix[a].1;
        (q - s * s / k).max(0.0)
    };
    (2..=n.saturating_sub(2))
        .map(|k| sse(0, k) + sse(k, n))
        .fold(f64::INFINITY, f64::min)
}

/// A number with about three significant digits, for summaries.
pub(crate) fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{IncidentState, Peak, Severity};

    fn group(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kinds_come_from_config_then_label_then_name() {
        assert_eq!(guess_kind("http_p99_latency"), MetricKind::Latency);
        assert_eq!(guess_kind("request_errors"), MetricKind::ErrorRatio);
        assert_eq!(guess_kind("cpu_throttling"), MetricKind::Cpu);
        assert_eq!(guess_kind("container_throttled_seconds"), MetricKind::Cpu);
        assert_eq!(guess_kind("working_set_bytes"), MetricKind::Memory);
        assert_eq!(guess_kind("requests_per_second"), MetricKind::Throughput);
        assert_eq!(guess_kind("db_pool_in_use"), MetricKind::Saturation);
        assert_eq!(guess_kind("container_restarts"), MetricKind::Restarts);
        assert_eq!(guess_kind("temperature"), MetricKind::Other);

        let mut kinds = SignalKinds::new();
        let labelled = SeriesKey::new("foo", [("kind".to_string(), "memory".to_string())]);
        assert_eq!(kinds.kind_of(&labelled), MetricKind::Memory);
        kinds.insert("foo", MetricKind::Cpu);
        assert_eq!(kinds.kind_of(&labelled), MetricKind::Cpu);
        let unknown_label = SeriesKey::new("rps", [("kind".to_string(), "zz".to_string())]);
        assert_eq!(kinds.kind_of(&unknown_label), MetricKind::Throughput);
    }

    #[test]
    fn targets_need_a_namespace_and_prefer_explicit_workloads() {
        let t = targets_from_group(&group(&[("namespace", "shop"), ("service", "cart")]));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].to_string(), "shop/Deployment/cart");
        let t = targets_from_group(&group(&[
            ("namespace", "shop"),
            ("service", "db"),
            ("statefulset", "db-main"),
        ]));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].to_string(), "shop/StatefulSet/db-main");
        assert!(targets_from_group(&group(&[("service", "cart")])).is_empty());
    }

    fn samples(values: impl IntoIterator<Item = f64>) -> Vec<Sample> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| Sample {
                t: 1_000_000 + i as i64 * 60_000,
                v,
            })
            .collect()
    }

    #[test]
    fn a_ramp_is_a_trend_and_a_step_is_not() {
        let wiggle = |i: usize| if i.is_multiple_of(2) { 0.4 } else { -0.4 };
        let ramp = samples((0..30).map(|i| 100.0 + 2.0 * i as f64 + wiggle(i)));
        let trend = steady_trend(&ramp).expect("ramp is steady");
        assert!((trend.slope_per_hour - 120.0).abs() < 5.0, "{trend:?}");
        assert!(trend.r2 > 0.95);

        let step = samples((0..30).map(|i| if i < 15 { 100.0 } else { 160.0 } + wiggle(i)));
        assert_eq!(steady_trend(&step), None);
        let flat = samples((0..30).map(wiggle));
        assert_eq!(steady_trend(&flat), None);
        assert_eq!(steady_trend(&ramp[..5]), None, "too few samples");
    }

    #[test]
    fn incident_yields_anomaly_trend_and_alert_items() {
        let key = SeriesKey::new(
            "memory_working_set",
            [
                ("namespace".to_string(), "shop".to_string()),
                ("service".to_string(), "cart".to_string()),
            ],
        );
        let s = samples((0..20).map(|i| 500.0 + 10.0 * i as f64));
        let incident = Incident {
            id: Some(7),
            cluster: "c".into(),
            group: group(&[("namespace", "shop"), ("service", "cart")]),
            state: IncidentState::Open,
            severity: Severity::Warning,
            opened_at: s[15].t,
            last_anomaly_at: s[19].t,
            resolved_at: None,
            anomaly_count: 5,
            signals: vec![SignalEvidence {
                series: key,
                first_at: s[15].t,
                last_at: s[19].t,
                anomaly_count: 5,
                peak: Peak {
                    t: s[19].t,
                    value: 690.0,
                    expected: 560.0,
                    spread: 10.0,
                    score: 13.0,
                },
                samples: s,
                anomalous_at: vec![],
            }],
            alerts: vec![AlertEvidence {
                alert_id: 1,
                fingerprint: "f".into(),
                name: "CartMemoryHigh".into(),
                status: crate::incident::AlertStatus::Firing,
                starts_at: 1_000_000,
                ends_at: None,
                labels: group(&[("severity", "warning"), ("service", "cart")]),
                annotations: BTreeMap::new(),
                generator_url: String::new(),
                flap_count: 1,
            }],
            diagnosis: None,
            decisions: vec![],
            logs: Vec::new(),
            prediction: None,
            timeline: vec![],
        };
        let b = from_incident(&incident, &SignalKinds::new());
        assert_eq!(b.subject, "cart (shop)");
        assert_eq!(b.targets[0].name, "cart");
        let ids: Vec<&str> = b.items.iter().map(|i| i.id.0.as_str()).collect();
        assert_eq!(ids, ["m1", "m2", "a1"]);
        match &b.items[0].detail {
            EvidenceDetail::Anomaly { kind, movement, .. } => {
                assert_eq!(*kind, MetricKind::Memory);
                assert_eq!(*movement, Movement::Up);
            }
            other => panic!("expected an anomaly, got {other:?}"),
        }
        assert!(matches!(
            b.items[1].detail,
            EvidenceDetail::Trend {
                kind: MetricKind::Memory,
                movement: Movement::Up,
                ..
            }
        ));
        assert!(b.items[2]
            .summary
            .contains("CartMemoryHigh (warning) firing"));
    }
}
