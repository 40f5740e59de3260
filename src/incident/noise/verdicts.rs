//! People's verdicts as suppression rules (issue 8, "feedback from
//! people").
//!
//! An engineer marks an incident — or one of its member alerts or signals —
//! as `noise`, `expected` or `real` (`POST /api/v1/incidents/{id}/verdicts`,
//! or the UI form). A verdict *in force* turns the members it covers into
//! patterns; a later alert or anomaly that matches one closely is
//! suppressed with the verdict as its reason (`reason: verdict`, the
//! verdict id as reference, its author and sentence in the detail).
//!
//! The similarity is deliberately simple, so a person can predict it from
//! the verdict alone (docs/ALERTS.md, "Verdicts"):
//!
//! - **alerts**: the same `alertname`, and the same value (or the same
//!   absence) of every identity label (`noise.verdicts.identity_labels`,
//!   default `namespace`, `service`, `workload`, after
//!   `correlation.label_map`). Other labels — pod, instance — may differ.
//! - **anomalies**: the same signal and identity labels, the same direction
//!   (above or below expected) as the member's peak, and a deviation at
//!   most `noise.verdicts.magnitude_factor` (default 2) times the peak's:
//!   a deviation the person called noise is noise when it is smaller too,
//!   but one twice as large is something else.
//!
//! In force: `noise` until revoked (or until its optional expiry);
//! `expected` only with an expiry (a planned load test), until then; `real`
//! never suppresses. Per target (the whole incident, one alert, one
//! signal) only the newest unrevoked verdict counts, so "real" after
//! "noise" ends the suppression too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AnomalySuppression, SuppressedBy};
use crate::incident::correlate::CorrelationConfig;
use crate::incident::{AlertId, Correlator, Incident, IncidentId};
use crate::signal::{format_ts, Anomaly, TimestampMs};

/// What a person said about an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// Not worth anyone's attention: matching items are suppressed.
    Noise,
    /// Caused on purpose (a load test, a migration): suppressed until the
    /// verdict's expiry, and only when it has one.
    Expected,
    /// A real problem: never suppressed, and it stops learned suppression
    /// of the same alert.
    Real,
}

impl VerdictKind {
    /// The lowercase name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Noise => "noise",
            VerdictKind::Expected => "expected",
            VerdictKind::Real => "real",
        }
    }

    /// The kind named `s` (`noise`, `expected`, `real`), if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "noise" => Some(VerdictKind::Noise),
            "expected" => Some(VerdictKind::Expected),
            "real" => Some(VerdictKind::Real),
            _ => None,
        }
    }
}

/// A verdict to record (checked by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct NewVerdict {
    /// The incident it is about.
    pub incident_id: IncidentId,
    /// What the person said.
    pub kind: VerdictKind,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
    /// Only this member alert of the incident (its store id), not all of it.
    pub alert_id: Option<AlertId>,
    /// Only this member signal (its series, as the incident shows it,
    /// e.g. `latency{namespace="shop",service="cart"}`).
    pub series: Option<String>,
    /// When it stops counting (wall ms); required for `expected` to
    /// suppress anything.
    pub expires_at: Option<TimestampMs>,
}

/// A stored verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Store id; suppressions refer to it (`verdict-<id>`).
    pub id: i64,
    /// The incident it is about.
    pub incident_id: IncidentId,
    /// What the person said.
    pub verdict: VerdictKind,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
    /// Wall time it was recorded (ms).
    pub at: TimestampMs,
    /// Only this member alert, when set.
    pub alert_id: Option<AlertId>,
    /// Only this member signal, when set.
    pub series: Option<String>,
    /// When it stops counting (wall ms).
    pub expires_at: Option<TimestampMs>,
    /// When it was revoked (wall ms).
    pub revoked_at: Option<TimestampMs>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
}

impl Verdict {
    /// The reference suppressions carry: `verdict-<id>`.
    pub fn reference(&self) -> String {
        format!("verdict-{}", self.id)
    }

    /// True when it suppresses matching items at `at`: not revoked, and
    /// `noise` before its expiry (if any) or `expected` before its expiry.
    pub fn suppresses(&self, at: TimestampMs) -> bool {
        if self.revoked_at.is_some() {
            return false;
        }
        match self.verdict {
            VerdictKind::Noise => self.expires_at.is_none_or(|e| at < e),
            VerdictKind::Expected => self.expires_at.is_some_and(|e| at < e),
            VerdictKind::Real => false,
        }
    }

    /// What it covers, for sentences: the incident, or one member of it.
    pub fn target(&self) -> String {
        match (&self.alert_id, &self.series) {
            (Some(a), _) => format!("alert {a} of incident {}", self.incident_id),
            (None, Some(s)) => format!("signal {s} of incident {}", self.incident_id),
            (None, None) => format!("incident {}", self.incident_id),
        }
    }
}

/// The `noise.verdicts` config section: how closely an item must match a
/// verdict's member to be suppressed by it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictsConfig {
    /// Labels that say *what* is affected; an item matches a member only
    /// when it has the same value for each (or lacks it like the member).
    /// Compared after `correlation.label_map`. Default:
    /// `[namespace, service, workload]`.
    #[serde(default = "default_identity_labels")]
    pub identity_labels: Vec<String>,
    /// An anomaly matches a signal member when its deviation (in spreads)
    /// is in the same direction and at most this many times the member's
    /// peak deviation. Default: `2`. `1..=100`.
    #[serde(default = "default_magnitude_factor")]
    pub magnitude_factor: f64,
}

impl Default for VerdictsConfig {
    fn default() -> Self {
        Self {
            identity_labels: default_identity_labels(),
            magnitude_factor: default_magnitude_factor(),
        }
    }
}

fn default_identity_labels() -> Vec<String> {
    vec!["namespace".into(), "service".into(), "workload".into()]
}
fn default_magnitude_factor() -> f64 {
    2.0
}

impl VerdictsConfig {
    /// Checks what types alone cannot; each error names its field.
    pub fn validate(&self, err: &mut impl FnMut(String, String)) {
        for (i, label) in self.identity_labels.iter().enumerate() {
            if let Err(reason) = crate::sources::promql::validate_label_name(label) {
                err(format!("noise.verdicts.identity_labels[{i}]"), reason);
            }
        }
        if !(1.0..=100.0).contains(&self.magnitude_factor) {
            err(
                "noise.verdicts.magnitude_factor".into(),
                format!("must be 1..=100, got {}", self.magnitude_factor),
            );
        }
    }
}

/// One member of a verdict's incident, as a pattern.
#[derive(Debug, Clone, PartialEq)]
enum Pattern {
    /// A member alert: its name and identity.
    Alert {
        alertname: String,
        identity: BTreeMap<String, Option<String>>,
    },
    /// A member signal: its name, identity and peak deviation.
    Signal {
        signal: String,
        identity: BTreeMap<String, Option<String>>,
        peak_score: f64,
    },
}

/// A verdict in force with the patterns of the members it covers.
#[derive(Debug, Clone)]
struct Rule {
    verdict: Verdict,
    subject: String,
    patterns: Vec<Pattern>,
}

/// Why an item was suppressed by a verdict: the verdict and a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictHit {
    /// The verdict.
    pub verdict: Verdict,
    /// `matches noise verdict 3 on incident 12 (cart (shop)) by alice: …`.
    pub detail: String,
}

/// The verdicts in force, compiled for matching; rebuilt by the incident
/// stage for each batch from [`Store::verdicts_in_force`](crate::incident::Store::verdicts_in_force).
#[derive(Debug, Clone, Default)]
pub struct VerdictSet {
    rules: Vec<Rule>,
    identity_labels: Vec<String>,
    magnitude_factor: f64,
}

impl VerdictSet {
    /// Compiles `verdicts` (each with its incident) into patterns, reading
    /// labels through `mapping` (`correlation.label_map`); verdicts not in
    /// force at `at`, and verdicts whose member is no longer in the
    /// incident, yield nothing.
    pub fn build(
        config: &VerdictsConfig,
        verdicts: Vec<(Verdict, Incident)>,
        mapping: &CorrelationConfig,
        at: TimestampMs,
    ) -> Self {
        let identity = |get: &dyn Fn(&str) -> Option<String>| {
            config
                .identity_labels
                .iter()
                .map(|l| (l.clone(), mapping.label(get, l)))
                .collect::<BTreeMap<_, _>>()
        };
        let rules = verdicts
            .into_iter()
            .filter(|(v, _)| v.suppresses(at))
            .map(|(verdict, incident)| {
                let mut patterns = Vec::new();
                if verdict.series.is_none() {
                    for a in &incident.alerts {
                        if verdict.alert_id.is_some_and(|id| id != a.alert_id) {
                            continue;
                        }
                        let get = |n: &str| a.labels.get(n).cloned();
                        patterns.push(Pattern::Alert {
                            alertname: a.name.clone(),
                            identity: identity(&get),
                        });
                    }
                }
                if verdict.alert_id.is_none() {
                    for s in &incident.signals {
                        if verdict
                            .series
                            .as_ref()
                            .is_some_and(|want| *want != s.series.to_string())
                        {
                            continue;
                        }
                        let get = |n: &str| s.series.label(n).map(str::to_string);
                        patterns.push(Pattern::Signal {
                            signal: s.series.signal.clone(),
                            identity: identity(&get),
                            peak_score: s.peak.score,
                        });
                    }
                }
                patterns.dedup();
                Rule {
                    subject: incident.subject(),
                    verdict,
                    patterns,
                }
            })
            .filter(|r| !r.patterns.is_empty())
            .collect();
        Self {
            rules,
            identity_labels: config.identity_labels.clone(),
            magnitude_factor: config.magnitude_factor,
        }
    }

    /// True when no verdict is in force (the stage can skip matching).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn identity_of(
        &self,
        get: &dyn Fn(&str) -> Option<String>,
        mapping: &CorrelationConfig,
    ) -> BTreeMap<String, Option<String>> {
        self.identity_labels
            .iter()
            .map(|l| (l.clone(), mapping.label(get, l)))
            .collect()
    }

    /// The first verdict in force at `at` whose alert member has the same
    /// `alertname` and identity as an alert with `labels`.
    pub fn match_alert(
        &self,
        labels: &BTreeMap<String, String>,
        mapping: &CorrelationConfig,
        at: TimestampMs,
    ) -> Option<VerdictHit> {
        if self.rules.is_empty() {
            return None;
        }
        let name = labels.get("alertname").map_or("", String::as_str);
        let get = |n: &str| labels.get(n).cloned();
        let ident = self.identity_of(&get, mapping);
        self.rules
            .iter()
            .filter(|r| r.verdict.suppresses(at))
            .find_map(|r| {
                r.patterns.iter().find_map(|p| match p {
                    Pattern::Alert {
                        alertname,
                        identity,
                    } if alertname == name && *identity == ident => Some(VerdictHit {
                        detail: format!(
                            "matches {} verdict {} on {} ({}) by {}: {} — same alert {} and {}{}",
                            r.verdict.verdict.as_str(),
                            r.verdict.id,
                            r.verdict.target(),
                            r.subject,
                            r.verdict.by,
                            r.verdict.reason,
                            name,
                            describe_identity(identity),
                            until(&r.verdict),
                        ),
                        verdict: r.verdict.clone(),
                    }),
                    _ => None,
                })
            })
    }

    /// The first verdict in force at `at` whose signal member matches
    /// `anomaly`: same signal and identity, same direction, deviation at
    /// most `magnitude_factor` times the member's peak.
    pub fn match_anomaly(
        &self,
        anomaly: &Anomaly,
        mapping: &CorrelationConfig,
        at: TimestampMs,
    ) -> Option<VerdictHit> {
        if self.rules.is_empty() {
            return None;
        }
        let get = |n: &str| anomaly.key.label(n).map(str::to_string);
        let ident = self.identity_of(&get, mapping);
        let factor = self.magnitude_factor;
        self.rules
            .iter()
            .filter(|r| r.verdict.suppresses(at))
            .find_map(|r| {
                r.patterns.iter().find_map(|p| match p {
                    Pattern::Signal {
                        signal,
                        identity,
                        peak_score,
                    } if *signal == anomaly.key.signal
                        && *identity == ident
                        && peak_score.signum() == anomaly.score.signum()
                        && anomaly.score.abs() <= factor * peak_score.abs() =>
                    {
                        Some(VerdictHit {
                            detail: format!(
                                "matches {} verdict {} on {} ({}) by {}: {} — same signal {} and \
                                 {}, deviation {:+.1} within {factor}× the verdict's peak \
                                 {:+.1}{}",
                                r.verdict.verdict.as_str(),
                                r.verdict.id,
                                r.verdict.target(),
                                r.subject,
                                r.verdict.by,
                                r.verdict.reason,
                                signal,
                                describe_identity(identity),
                                anomaly.score,
                                peak_score,
                                until(&r.verdict),
                            ),
                            verdict: r.verdict.clone(),
                        })
                    }
                    _ => None,
                })
            })
    }
}

/// Splits a batch of anomalies into those that go to the correlator and
/// those a verdict in force at `now` suppresses. An anomaly whose series is
/// already in an open incident continues it and is never suppressed (like
/// an alert episode already in an incident).
pub fn screen_anomalies(
    correlator: &Correlator,
    set: &VerdictSet,
    anomalies: Vec<Anomaly>,
    now: TimestampMs,
) -> (Vec<Anomaly>, Vec<AnomalySuppression>) {
    if set.is_empty() {
        return (anomalies, Vec::new());
    }
    let mut kept = Vec::with_capacity(anomalies.len());
    let mut suppressed = Vec::new();
    for anomaly in anomalies {
        let hit = if correlator.knows_series(&anomaly) {
            None
        } else {
            set.match_anomaly(&anomaly, correlator.correlation(), now)
        };
        match hit {
            Some(hit) => suppressed.push(AnomalySuppression {
                series: anomaly.key.to_string(),
                t: anomaly.t,
                by: SuppressedBy::verdict(&hit),
            }),
            None => kept.push(anomaly),
        }
    }
    (kept, suppressed)
}

fn describe_identity(identity: &BTreeMap<String, Option<String>>) -> String {
    let parts: Vec<String> = identity
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("no {k}"),
        })
        .collect();
    parts.join(", ")
}

fn until(v: &Verdict) -> String {
    v.expires_at
        .map_or_else(String::new, |e| format!(" (until {})", format_ts(e)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::incident::{AlertEvidence, AlertStatus, IncidentState, Peak, Severity};
    use crate::incident::{SignalEvidence, TimelineEntry};
    use crate::signal::SeriesKey;

    fn plain() -> CorrelationConfig {
        CorrelationConfig::default()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn incident() -> Incident {
        Incident {
            id: Some(12),
            cluster: "test".into(),
            group: labels(&[("namespace", "shop"), ("service", "cart")]),
            state: IncidentState::Resolved,
            severity: Severity::Warning,
            opened_at: 0,
            last_anomaly_at: 0,
            resolved_at: Some(1),
            anomaly_count: 1,
            signals: vec![SignalEvidence {
                series: SeriesKey::new(
                    "latency",
                    labels(&[
                        ("namespace", "shop"),
                        ("service", "cart"),
                        ("pod", "cart-1"),
                    ]),
                ),
                first_at: 0,
                last_at: 0,
                anomaly_count: 1,
                peak: Peak {
                    t: 0,
                    value: 9.0,
                    expected: 1.0,
                    spread: 1.0,
                    score: 8.0,
                },
                samples: Vec::new(),
                anomalous_at: Vec::new(),
            }],
            alerts: vec![AlertEvidence {
                alert_id: 5,
                fingerprint: "f".into(),
                name: "CartSlow".into(),
                status: AlertStatus::Resolved,
                starts_at: 0,
                ends_at: Some(1),
                labels: labels(&[
                    ("alertname", "CartSlow"),
                    ("namespace", "shop"),
                    ("service", "cart"),
                    ("pod", "cart-1"),
                ]),
                annotations: BTreeMap::new(),
                generator_url: String::new(),
                flap_count: 1,
            }],
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![TimelineEntry {
                at: 0,
                kind: "opened".into(),
                message: "Opened".into(),
            }],
        }
    }

    fn verdict(kind: VerdictKind, expires_at: Option<TimestampMs>) -> Verdict {
        Verdict {
            id: 3,
            incident_id: 12,
            verdict: kind,
            by: "alice".into(),
            reason: "nightly reindex".into(),
            at: 0,
            alert_id: None,
            series: None,
            expires_at,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
        }
    }

    fn anomaly(service: &str, score: f64) -> Anomaly {
        Anomaly {
            key: Arc::new(SeriesKey::new(
                "latency",
                labels(&[
                    ("namespace", "shop"),
                    ("service", service),
                    ("pod", "cart-9"),
                ]),
            )),
            t: 100,
            value: 5.0,
            expected: 1.0,
            spread: 1.0,
            score,
            context: Vec::new(),
        }
    }

    #[test]
    fn a_noise_verdict_matches_the_same_alert_on_another_pod_and_nothing_else() {
        let set = VerdictSet::build(
            &VerdictsConfig::default(),
            vec![(verdict(VerdictKind::Noise, None), incident())],
            &plain(),
            10,
        );
        let other_pod = labels(&[
            ("alertname", "CartSlow"),
            ("namespace", "shop"),
            ("service", "cart"),
            ("pod", "cart-7"),
        ]);
        let hit = set.match_alert(&other_pod, &plain(), 10).expect("matches");
        assert_eq!(hit.verdict.reference(), "verdict-3");
        assert!(
            hit.detail.contains("alice") && hit.detail.contains("nightly reindex"),
            "{}",
            hit.detail
        );
        let mut other_service = other_pod.clone();
        other_service.insert("service".into(), "payments".into());
        assert!(set.match_alert(&other_service, &plain(), 10).is_none());
        let mut other_name = other_pod.clone();
        other_name.insert("alertname".into(), "CartDown".into());
        assert!(set.match_alert(&other_name, &plain(), 10).is_none());
        let mut extra_identity = other_pod;
        extra_identity.insert("workload".into(), "cart".into());
        assert!(
            set.match_alert(&extra_identity, &plain(), 10).is_none(),
            "a workload the member lacked is a different identity"
        );
    }

    #[test]
    fn anomalies_match_by_signal_identity_direction_and_magnitude() {
        let set = VerdictSet::build(
            &VerdictsConfig::default(),
            vec![(verdict(VerdictKind::Noise, None), incident())],
            &plain(),
            10,
        );
        assert!(set
            .match_anomaly(&anomaly("cart", 5.0), &plain(), 10)
            .is_some());
        assert!(set
            .match_anomaly(&anomaly("cart", 16.0), &plain(), 10)
            .is_some());
        assert!(
            set.match_anomaly(&anomaly("cart", 16.5), &plain(), 10)
                .is_none(),
            "more than twice the peak is something else"
        );
        assert!(
            set.match_anomaly(&anomaly("cart", -5.0), &plain(), 10)
                .is_none(),
            "the other direction"
        );
        assert!(set
            .match_anomaly(&anomaly("pay", 5.0), &plain(), 10)
            .is_none());
    }

    #[test]
    fn only_verdicts_in_force_suppress() {
        let mut revoked = verdict(VerdictKind::Noise, None);
        revoked.revoked_at = Some(5);
        assert!(!revoked.suppresses(10));
        assert!(!verdict(VerdictKind::Real, None).suppresses(10));
        assert!(
            !verdict(VerdictKind::Expected, None).suppresses(10),
            "expected without expiry"
        );
        assert!(verdict(VerdictKind::Expected, Some(20)).suppresses(10));
        assert!(!verdict(VerdictKind::Expected, Some(20)).suppresses(20));
        assert!(verdict(VerdictKind::Noise, Some(20)).suppresses(19));

        // A verdict on one member alert covers only that alert.
        let mut one = verdict(VerdictKind::Noise, None);
        one.alert_id = Some(5);
        let set = VerdictSet::build(
            &VerdictsConfig::default(),
            vec![(one, incident())],
            &plain(),
            0,
        );
        assert!(set
            .match_anomaly(&anomaly("cart", 5.0), &plain(), 0)
            .is_none());
        let alert = labels(&[
            ("alertname", "CartSlow"),
            ("namespace", "shop"),
            ("service", "cart"),
        ]);
        assert!(set.match_alert(&alert, &plain(), 0).is_some());
        // Expired by the time of the item.
        let set = VerdictSet::build(
            &VerdictsConfig::default(),
            vec![(verdict(VerdictKind::Expected, Some(20)), incident())],
            &plain(),
            0,
        );
        assert!(set.match_alert(&alert, &plain(), 10).is_some());
        assert!(set.match_alert(&alert, &plain(), 20).is_none());
    }
}
