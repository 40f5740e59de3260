//! Grouping anomalies into incidents and deciding when incidents end.
//!
//! Pure and synchronous, driven by data time: the caller feeds it each
//! batch's anomalies and the batch's watermark, and gets back the incidents
//! that changed. Nothing here touches the store or the clock, so the same
//! code serves live polling, backfill and the simulated demo.
//!
//! Resolution is deliberately conservative: an incident resolves only when
//! *every* signal in it has delivered data past `resolve_after` without an
//! anomaly. A signal whose source is down does not advance, so an outage
//! of Prometheus can never make an incident look resolved.
//!
//! Grouping reads labels through `correlation.label_map` (e.g.
//! `app.kubernetes.io/name` counts as `service`), and each member's
//! timeline line says why it joined. Declared dependencies
//! (`correlation.dependencies`) link incidents: when a dependency's
//! incident started at most `correlation.causal_window` before a
//! dependent's, both timelines say so (kind `causal_hint`) — linked, not
//! merged, so each group keeps its one open incident and its own
//! lifecycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;

use super::alert::{Alert, AlertStatus};
use super::noise::{FlappingConfig, NoiseConfig};
use super::{
    AlertEvidence, Incident, IncidentId, IncidentState, Peak, Severity, SignalEvidence,
    TimelineEntry,
};
use crate::config::HumanDuration;
use crate::config::IncidentConfig;
use crate::signal::{format_ts, Anomaly, Sample, TimestampMs};

/// What happened to an incident in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// A new incident was opened.
    Opened,
    /// An open incident got more evidence.
    Updated,
    /// An incident was resolved.
    Resolved,
}

/// An incident that changed, with its full new state.
#[derive(Debug, Clone)]
pub struct IncidentUpdate {
    /// What happened.
    pub kind: UpdateKind,
    /// The incident after the change.
    pub incident: Incident,
}

/// The `correlation:` config section: label mapping and declared
/// dependencies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    /// Source label → the label aiopsd groups and matches by, applied to
    /// alerts and series before grouping, e.g.
    /// `{"app.kubernetes.io/name": service, kubernetes_namespace: namespace}`.
    /// A label the item already has wins over a mapped one; with several
    /// sources for one label, the first in label order that is present
    /// wins. Default: none.
    #[serde(default)]
    pub label_map: BTreeMap<String, String>,
    /// Service → the services it depends on, e.g.
    /// `{checkout: [payments, db]}` (values of the `service` label, after
    /// `label_map`). An incident of a dependency that started at most
    /// `causal_window` before an incident of its dependent is linked to it
    /// as a possible cause. Default: none.
    #[serde(default)]
    pub dependencies: BTreeMap<String, Vec<String>>,
    /// How much earlier a dependency's incident may start and still count
    /// as a possible cause. Default: `10m`. `1s..=24h`.
    #[serde(default = "default_causal_window")]
    pub causal_window: HumanDuration,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            label_map: BTreeMap::new(),
            dependencies: BTreeMap::new(),
            causal_window: default_causal_window(),
        }
    }
}

fn default_causal_window() -> HumanDuration {
    HumanDuration::secs(600)
}

impl CorrelationConfig {
    /// Checks what types alone cannot; each error names its field.
    pub fn validate(&self, err: &mut impl FnMut(String, String)) {
        for (from, to) in &self.label_map {
            for (what, label) in [("key", from), ("value", to)] {
                if let Err(reason) =
                    crate::sources::promql::validate_label_name(label).or_else(|e| {
                        if what == "key" && is_k8s_label(label) {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                {
                    err(
                        format!("correlation.label_map.{from}"),
                        format!("{what}: {reason}"),
                    );
                }
            }
            if from == to {
                err(
                    format!("correlation.label_map.{from}"),
                    "maps a label to itself".into(),
                );
            }
        }
        for (service, deps) in &self.dependencies {
            for (i, dep) in deps.iter().enumerate() {
                if dep.trim().is_empty() {
                    err(
                        format!("correlation.dependencies.{service}[{i}]"),
                        "must not be empty".into(),
                    );
                } else if dep == service {
                    err(
                        format!("correlation.dependencies.{service}[{i}]"),
                        "a service cannot depend on itself".into(),
                    );
                }
            }
        }
        let w = self.causal_window.0.as_secs();
        if !(1..=86_400).contains(&w) {
            err(
                "correlation.causal_window".into(),
                format!("must be 1s..=24h, got {}", self.causal_window),
            );
        }
    }

    /// The value of `name` through the mapping: the label itself, else the
    /// first source label mapped to it that `get` finds.
    pub fn label(&self, get: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
        get(name).or_else(|| {
            self.label_map
                .iter()
                .filter(|(_, to)| *to == name)
                .find_map(|(from, _)| get(from))
        })
    }

    /// The source label a mapped `name` came from, when it did not come
    /// from `name` itself (for explanations).
    fn source_of(&self, get: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<&str> {
        if get(name).is_some() {
            return None;
        }
        self.label_map
            .iter()
            .filter(|(_, to)| *to == name)
            .find(|(from, _)| get(from).is_some())
            .map(|(from, _)| from.as_str())
    }
}

/// Kubernetes recommended label names (`app.kubernetes.io/name`) are not
/// Prometheus label names, but alerts forwarded from other systems carry
/// them; accept them as mapping sources.
fn is_k8s_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 317
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'))
}

/// Groups anomalies into incidents; owns the open incidents.
#[derive(Debug)]
pub struct Correlator {
    cluster: String,
    config: IncidentConfig,
    open: HashMap<String, Incident>,
    /// Per signal: data time up to which it has been fully read.
    watermarks: HashMap<String, TimestampMs>,
    /// Incidents closed because a new episode of their group began; handed
    /// out with the next batch's updates.
    closed: Vec<IncidentUpdate>,
    /// When a re-firing alert counts as flapping.
    flapping: FlappingConfig,
    /// Per alert fingerprint: episodes in a row so far and the latest
    /// episode's start (bounded by [`MAX_FLAP_TRACKED`]).
    episodes: HashMap<String, (u32, TimestampMs)>,
    /// Label mapping and declared dependencies.
    correlation: CorrelationConfig,
    /// The `noise:` section the incident stage consults before applying
    /// an item (verdict matching, learned suppression); kept here because
    /// the correlator travels with the stage.
    noise: NoiseConfig,
}

/// Most fingerprints whose episode chain is remembered; beyond it, chains
/// already broken (last start older than the flapping window) are
/// forgotten first. Bounds memory under an alert storm.
const MAX_FLAP_TRACKED: usize = 100_000;

impl Correlator {
    /// A correlator with no open incidents.
    pub fn new(config: IncidentConfig, cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            config,
            open: HashMap::new(),
            watermarks: HashMap::new(),
            closed: Vec::new(),
            flapping: FlappingConfig::default(),
            episodes: HashMap::new(),
            correlation: CorrelationConfig::default(),
            noise: NoiseConfig::default(),
        }
    }

    /// Uses `flapping` (from `noise.flapping`) instead of the defaults.
    pub fn with_flapping(mut self, flapping: FlappingConfig) -> Self {
        self.flapping = flapping;
        self.noise.flapping = flapping;
        self
    }

    /// Uses the whole `noise:` section (flapping, verdict similarity,
    /// learned suppression) instead of the defaults.
    pub fn with_noise(mut self, noise: &NoiseConfig) -> Self {
        self.flapping = noise.flapping;
        self.noise = noise.clone();
        self
    }

    /// Uses the `correlation:` section (label mapping, dependencies).
    pub fn with_correlation(mut self, correlation: CorrelationConfig) -> Self {
        self.correlation = correlation;
        self
    }

    /// The `noise:` section in use.
    pub fn noise(&self) -> &NoiseConfig {
        &self.noise
    }

    /// The `correlation:` section in use.
    pub fn correlation(&self) -> &CorrelationConfig {
        &self.correlation
    }

    /// `incidents.group_window` in ms: also how far apart suppressed
    /// anomalies of one series may be and still count as one episode.
    pub fn group_window_ms(&self) -> i64 {
        self.config.group_window.as_millis_i64()
    }

    /// True when an open incident has a member alert with this
    /// fingerprint (any episode): its next episode continues that incident
    /// (flapping) and is not a candidate for learned suppression.
    pub fn knows_fingerprint(&self, fingerprint: &str) -> bool {
        self.open
            .values()
            .any(|inc| inc.alerts.iter().any(|e| e.fingerprint == fingerprint))
    }

    /// True when this anomaly's series is already a member of the open
    /// incident of its group: it continues that incident and is never
    /// suppressed.
    pub fn knows_series(&self, anomaly: &Anomaly) -> bool {
        let key = super::group_key(&self.group_of(anomaly));
        self.open
            .get(&key)
            .is_some_and(|inc| inc.signals.iter().any(|s| s.series == *anomaly.key))
    }

    /// True when this alert episode is already a member of an open
    /// incident: its later states (resolved) must reach that incident even
    /// if a silence started meanwhile.
    pub fn knows_alert(&self, alert: &Alert) -> bool {
        self.open.values().any(|inc| {
            inc.alerts
                .iter()
                .any(|e| e.fingerprint == alert.fingerprint && e.starts_at == alert.starts_at)
        })
    }

    /// Counts a new firing episode of `fingerprint` starting at `starts_at`
    /// and returns how many episodes in a row it makes (each starting
    /// within the flapping window of the previous one). Idempotent: the
    /// same start again, or an older one (a replay), does not count.
    fn count_episode(&mut self, fingerprint: &str, starts_at: TimestampMs) -> u32 {
        let window = self.flapping.window.as_millis_i64();
        if self.episodes.len() >= MAX_FLAP_TRACKED && !self.episodes.contains_key(fingerprint) {
            self.episodes
                .retain(|_, (_, last)| starts_at.saturating_sub(*last) <= window);
        }
        let entry = self
            .episodes
            .entry(fingerprint.to_string())
            .or_insert((0, starts_at));
        if entry.0 > 0 && starts_at <= entry.1 {
            return entry.0;
        }
        entry.0 = if entry.0 > 0 && starts_at.saturating_sub(entry.1) <= window {
            entry.0.saturating_add(1)
        } else {
            1
        };
        entry.1 = starts_at;
        entry.0
    }

    /// Until when a flapping member alert holds `incident` open: the
    /// flapping window after its latest end, so the next episode joins
    /// this incident instead of opening another. `None` without one.
    fn flap_hold_until(&self, incident: &Incident) -> Option<TimestampMs> {
        let window = self.flapping.window.as_millis_i64();
        incident
            .alerts
            .iter()
            .filter(|a| a.flap_count >= self.flapping.min_episodes)
            .filter_map(|a| a.ends_at)
            .map(|e| e.saturating_add(window))
            .max()
    }

    /// Takes over incidents that were open when the daemon last stopped, so
    /// new anomalies join them instead of opening duplicates.
    pub fn restore(&mut self, open: impl IntoIterator<Item = Incident>) {
        for incident in open {
            if incident.state == IncidentState::Open {
                // Flap chains continue across a restart: the members carry
                // their counts.
                for a in &incident.alerts {
                    let e = self
                        .episodes
                        .entry(a.fingerprint.clone())
                        .or_insert((a.flap_count, a.starts_at));
                    if a.starts_at >= e.1 {
                        *e = (a.flap_count, a.starts_at);
                    }
                }
                self.open.insert(incident.group_key(), incident);
            }
        }
    }

    /// Records the store id of an open incident (after it was first saved).
    pub fn assign_id(&mut self, group_key: &str, id: IncidentId) {
        if let Some(incident) = self.open.get_mut(group_key) {
            incident.id = Some(id);
        }
    }

    /// Replaces the open incident of its group by `incident` — the store's
    /// merge of a save into an already stored incident with the same
    /// identity — so later updates carry the merged evidence.
    pub fn adopt(&mut self, incident: Incident) {
        if incident.state == IncidentState::Open {
            self.open.insert(incident.group_key(), incident);
        }
    }

    /// Open incidents, for gauges and tests.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.open.values()
    }

    /// Applies one batch: its anomalies, then its watermark.
    ///
    /// Returns one update per incident touched (opened or updated), then one
    /// per incident resolved — an incident opened and resolved within the
    /// same batch (a long backfill) appears twice, first `Opened`.
    pub fn on_batch(
        &mut self,
        signal: &str,
        anomalies: &[Anomaly],
        until: TimestampMs,
    ) -> Vec<IncidentUpdate> {
        let mut opened = BTreeSet::new();
        let mut touched = BTreeSet::new();
        let mut updates = Vec::new();
        for anomaly in anomalies {
            let (key, is_new) = self.attach(anomaly);
            if is_new {
                opened.insert(key.clone());
                touched.extend(self.link_causes(&key));
            }
            touched.insert(key);
        }
        updates.append(&mut self.closed);
        updates.extend(touched.iter().filter_map(|key| {
            self.open.get(key).map(|incident| IncidentUpdate {
                kind: if opened.contains(key) {
                    UpdateKind::Opened
                } else {
                    UpdateKind::Updated
                },
                incident: incident.clone(),
            })
        }));
        updates.extend(self.advance(signal, until));
        updates
    }

    /// Applies one stored alert (its latest state): a firing alert joins the
    /// open incident of its group (the `incidents.group_by` labels of the
    /// alert), or opens one; a resolved alert marks its member resolved, so
    /// it counts as normal from its `ends_at`. An incident is not resolved
    /// while a member alert fires ([`Correlator::advance`] resolves it once
    /// every alert is resolved and every signal was quiet for
    /// `resolve_after`).
    ///
    /// Idempotent: applying the same state again (a replay after a crash, a
    /// sweep racing the channel) changes nothing and returns no update; a
    /// `firing` state after `resolved` of the same episode is stale and
    /// ignored. An alert seen only as resolved (it fired while aiopsd was
    /// away) still becomes evidence, so nothing accepted is invisible.
    pub fn on_alert(&mut self, alert: &Alert) -> Vec<IncidentUpdate> {
        self.on_alert_noted(alert, None)
    }

    /// [`Correlator::on_alert`], and when the alert joins or opens an
    /// incident, `note` on its timeline (kind `unsuppressed`): why an alert
    /// that was suppressed reaches an incident after all.
    pub fn on_alert_noted(&mut self, alert: &Alert, note: Option<&str>) -> Vec<IncidentUpdate> {
        let mut updates = self.apply_alert(alert);
        let Some(note) = note else { return updates };
        let Some(last) = updates.last_mut() else {
            return updates;
        };
        if last.kind == UpdateKind::Resolved {
            return updates;
        }
        let entry = TimelineEntry {
            at: alert.starts_at,
            kind: "unsuppressed".into(),
            message: format!("Alert {} is no longer suppressed: {note}.", alert.name()),
        };
        if let Some(open) = self.open.get_mut(&last.incident.group_key()) {
            if !open.timeline.contains(&entry) {
                open.timeline.push(entry.clone());
            }
        }
        if !last.incident.timeline.contains(&entry) {
            last.incident.timeline.push(entry);
        }
        updates
    }

    fn apply_alert(&mut self, alert: &Alert) -> Vec<IncidentUpdate> {
        let (group, mapped) = self.group_of_alert(alert);
        let key = super::group_key(&group);
        let mut updates = Vec::new();

        if let Some(incident) = self.open.get_mut(&key) {
            let member = incident
                .alerts
                .iter_mut()
                .find(|e| e.fingerprint == alert.fingerprint && e.starts_at == alert.starts_at);
            if let Some(member) = member {
                if member.status == AlertStatus::Firing && alert.status == AlertStatus::Resolved {
                    member.status = AlertStatus::Resolved;
                    member.ends_at = alert.ends_at;
                    let at = alert.ends_at.unwrap_or(alert.starts_at);
                    incident.timeline.push(TimelineEntry {
                        at,
                        kind: "alert_resolved".into(),
                        message: format!("Alert {} resolved.", alert.name()),
                    });
                    updates.push(IncidentUpdate {
                        kind: UpdateKind::Updated,
                        incident: incident.clone(),
                    });
                }
                return updates;
            }
        }

        // Like an anomaly: an open incident that went quiet longer than the
        // grouping window before this alert started is a past episode.
        // A flapping alert's next episode is not a new episode of trouble:
        // an incident it holds open is never stale for it.
        // An episode seen only as resolved (it fired while aiopsd was away)
        // still counts: it did fire.
        let flap_count = self.count_episode(&alert.fingerprint, alert.starts_at);
        let window = self.config.group_window.as_millis_i64();
        let stale = self.open.get(&key).is_some_and(|inc| {
            !inc.has_firing_alerts()
                && alert.starts_at.saturating_sub(quiet_since(inc)) > window
                && self
                    .flap_hold_until(inc)
                    .is_none_or(|until| alert.starts_at > until)
        });
        if stale {
            if let Some(mut old) = self.open.remove(&key) {
                let at = quiet_since(&old)
                    .saturating_add(self.config.resolve_after.as_millis_i64())
                    .min(alert.starts_at);
                old.state = IncidentState::Resolved;
                old.resolved_at = Some(at);
                old.timeline.push(TimelineEntry {
                    at,
                    kind: "resolved".into(),
                    message: "Resolved: a new, separate episode started after a quiet period."
                        .into(),
                });
                updates.push(IncidentUpdate {
                    kind: UpdateKind::Resolved,
                    incident: old,
                });
            }
        }

        let evidence = AlertEvidence {
            alert_id: alert.id,
            fingerprint: alert.fingerprint.clone(),
            name: alert.name().to_string(),
            status: alert.status,
            starts_at: alert.starts_at,
            ends_at: alert.ends_at,
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            generator_url: alert.generator_url.clone(),
            flap_count,
        };
        let flapping = flap_count >= self.flapping.min_episodes;
        let flap_window = self.flapping.window;
        let what = describe_alert(alert);
        let is_new = !self.open.contains_key(&key);
        let cluster = &self.cluster;
        let incident = self.open.entry(key).or_insert_with(|| Incident {
            id: None,
            cluster: cluster.clone(),
            group,
            state: IncidentState::Open,
            severity: Severity::Warning,
            opened_at: alert.starts_at,
            last_anomaly_at: alert.starts_at,
            resolved_at: None,
            anomaly_count: 0,
            signals: Vec::new(),
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![TimelineEntry {
                at: alert.starts_at,
                kind: "opened".into(),
                message: format!("Opened: {what}"),
            }],
        });
        if flapping {
            incident.timeline.push(TimelineEntry {
                at: alert.starts_at,
                kind: "flapping".into(),
                message: format!(
                    "Alert {} is flapping: firing episode {flap_count} in a row, each within \
                     {flap_window} of the previous one. Its episodes are grouped in this \
                     incident, which stays open {flap_window} after the alert last resolves.",
                    alert.name()
                ),
            });
        } else if !is_new {
            incident.timeline.push(TimelineEntry {
                at: alert.starts_at,
                kind: "alert_added".into(),
                message: format!(
                    "Also: {what} Grouped here: {}.",
                    grouped_because(&incident.group, &mapped, &self.config)
                ),
            });
        } else if !mapped.is_empty() {
            incident.timeline.push(TimelineEntry {
                at: alert.starts_at,
                kind: "grouping".into(),
                message: format!("Grouped by {}.", describe_group(&incident.group, &mapped)),
            });
        }
        incident.opened_at = incident.opened_at.min(alert.starts_at);
        incident.alerts.push(evidence);
        // The alert's own `severity` label, when it says critical, is the
        // rule author's judgement and is taken as is.
        let critical = alert
            .labels
            .get("severity")
            .is_some_and(|s| s.eq_ignore_ascii_case("critical"));
        if critical && incident.severity < Severity::Critical {
            incident.severity = Severity::Critical;
            if !is_new {
                incident.timeline.push(TimelineEntry {
                    at: alert.starts_at,
                    kind: "severity_raised".into(),
                    message: format!("Severity raised to {}.", Severity::Critical.as_str()),
                });
            }
        }
        let key = incident.group_key();
        let linked = if is_new {
            self.link_causes(&key)
        } else {
            Vec::new()
        };
        if let Some(incident) = self.open.get(&key) {
            updates.push(IncidentUpdate {
                kind: if is_new {
                    UpdateKind::Opened
                } else {
                    UpdateKind::Updated
                },
                incident: incident.clone(),
            });
        }
        updates.extend(linked.iter().filter_map(|k| {
            self.open.get(k).map(|incident| IncidentUpdate {
                kind: UpdateKind::Updated,
                incident: incident.clone(),
            })
        }));
        updates
    }

    /// Links the just-opened incident `key` with open incidents of declared
    /// dependencies (possible causes) or dependents (possibly affected)
    /// when the dependency's incident started at most `causal_window`
    /// before the dependent's. Adds a `causal_hint` line to both
    /// timelines; returns the keys of the *other* incidents it changed.
    fn link_causes(&mut self, key: &str) -> Vec<String> {
        if self.correlation.dependencies.is_empty() {
            return Vec::new();
        }
        let Some(new) = self.open.get(key) else {
            return Vec::new();
        };
        let Some(new_service) = new.group_label("service").map(str::to_string) else {
            return Vec::new();
        };
        let window = self.correlation.causal_window.as_millis_i64();
        let depends = |dependent: &str, dependency: &str| {
            self.correlation
                .dependencies
                .get(dependent)
                .is_some_and(|deps| deps.iter().any(|d| d == dependency))
        };
        // (other key, dependency is the new one?, gap)
        let mut links = Vec::new();
        for (other_key, other) in &self.open {
            if other_key == key {
                continue;
            }
            let Some(other_service) = other.group_label("service") else {
                continue;
            };
            let (dependency, dependent) = if depends(&new_service, other_service) {
                (other, new)
            } else if depends(other_service, &new_service) {
                (new, other)
            } else {
                continue;
            };
            let gap = dependent.opened_at.saturating_sub(dependency.opened_at);
            if (0..=window).contains(&gap) {
                links.push((other_key.clone(), std::ptr::eq(dependency, new), gap));
            }
        }
        let mut changed = Vec::new();
        for (other_key, new_is_dependency, gap) in links {
            let (Some(new), Some(other)) = (self.open.get(key), self.open.get(&other_key)) else {
                continue;
            };
            let (dependency, dependent) = if new_is_dependency {
                (new, other)
            } else {
                (other, new)
            };
            let first = |inc: &Incident| {
                inc.alerts
                    .first()
                    .map(|a| format!("alert {}", a.name))
                    .or_else(|| {
                        inc.signals
                            .first()
                            .map(|s| format!("anomaly on {}", s.series.signal))
                    })
                    .unwrap_or_else(|| "trouble".into())
            };
            let id = |inc: &Incident| {
                inc.id
                    .map_or_else(String::new, |id| format!(" (incident {id})"))
            };
            let reason = format!(
                "{} {} {} before {} {}: declared dependency ({} depends on {}, within {})",
                dependency.group_label("service").unwrap_or_default(),
                first(dependency),
                minutes(gap),
                dependent.group_label("service").unwrap_or_default(),
                first(dependent),
                dependent.group_label("service").unwrap_or_default(),
                dependency.group_label("service").unwrap_or_default(),
                self.correlation.causal_window,
            );
            let at = dependent.opened_at;
            let on_dependent = TimelineEntry {
                at,
                kind: "causal_hint".into(),
                message: format!(
                    "Possible cause: {}{}; {reason}.",
                    dependency.subject(),
                    id(dependency)
                ),
            };
            let on_dependency = TimelineEntry {
                at,
                kind: "causal_hint".into(),
                message: format!(
                    "Possibly affecting: {}{}; {reason}.",
                    dependent.subject(),
                    id(dependent)
                ),
            };
            let (dep_key, dependent_key) = if new_is_dependency {
                (key.to_string(), other_key.clone())
            } else {
                (other_key.clone(), key.to_string())
            };
            for (k, entry) in [(dependent_key, on_dependent), (dep_key, on_dependency)] {
                if let Some(inc) = self.open.get_mut(&k) {
                    if !inc.timeline.contains(&entry) {
                        inc.timeline.push(entry);
                    }
                }
            }
            changed.push(other_key);
        }
        changed
    }

    /// The group of an alert: its `incidents.group_by` labels (through
    /// `correlation.label_map`), as for a series, and which group labels
    /// came from which mapped label. An alert with none of them is a group
    /// of its own (its name and fingerprint) rather than lumped with every
    /// other such alert.
    fn group_of_alert(&self, alert: &Alert) -> (BTreeMap<String, String>, Vec<(String, String)>) {
        let get = |n: &str| alert.labels.get(n).cloned();
        let mut mapped = Vec::new();
        let group: BTreeMap<String, String> = self
            .config
            .group_by
            .iter()
            .filter_map(|label| {
                let value = self.correlation.label(&get, label)?;
                if let Some(from) = self.correlation.source_of(&get, label) {
                    mapped.push((label.clone(), from.to_string()));
                }
                Some((label.clone(), value))
            })
            .collect();
        if group.is_empty() {
            let own = BTreeMap::from([
                ("alertname".to_string(), alert.name().to_string()),
                ("fingerprint".to_string(), alert.fingerprint.clone()),
            ]);
            (own, Vec::new())
        } else {
            (group, mapped)
        }
    }

    /// Moves `signal`'s watermark to `until` and resolves every incident
    /// whose signals have all been quiet for `resolve_after`.
    pub fn advance(&mut self, signal: &str, until: TimestampMs) -> Vec<IncidentUpdate> {
        let mark = self.watermarks.entry(signal.to_string()).or_insert(until);
        *mark = (*mark).max(until);
        let resolve_after = self.config.resolve_after.as_millis_i64();
        let quiet: Vec<String> = self
            .open
            .iter()
            .filter_map(|(key, incident)| {
                if incident.has_firing_alerts() {
                    return None;
                }
                let seen_until = self.members_watermark(incident)?;
                if self
                    .flap_hold_until(incident)
                    .is_some_and(|until| seen_until < until)
                {
                    return None;
                }
                (seen_until.saturating_sub(quiet_since(incident)) >= resolve_after)
                    .then(|| key.clone())
            })
            .collect();
        let mut updates = Vec::new();
        for key in quiet {
            let Some(mut incident) = self.open.remove(&key) else {
                continue;
            };
            let at = self
                .members_watermark(&incident)
                .unwrap_or(incident.last_anomaly_at);
            incident.state = IncidentState::Resolved;
            incident.resolved_at = Some(at);
            let message = if incident.alerts.is_empty() {
                format!(
                    "Resolved: every signal has been normal since {} ({} without an anomaly).",
                    format_ts(incident.last_anomaly_at),
                    self.config.resolve_after
                )
            } else {
                format!(
                    "Resolved: every alert is resolved and every signal normal since {} \
                     ({} without an anomaly or firing alert).",
                    format_ts(quiet_since(&incident)),
                    self.config.resolve_after
                )
            };
            incident.timeline.push(TimelineEntry {
                at,
                kind: "resolved".into(),
                message,
            });
            updates.push(IncidentUpdate {
                kind: UpdateKind::Resolved,
                incident,
            });
        }
        updates
    }

    /// The data time up to which *all* of an incident's signals were read;
    /// `None` while any of them has not reported since start.
    ///
    /// An incident of alerts only has no signal of its own: its clock is the
    /// furthest any signal has been read (alerts carry wall times, and
    /// signals are read up to wall time minus `prometheus.lag`), and `None`
    /// until some signal has reported.
    fn members_watermark(&self, incident: &Incident) -> Option<TimestampMs> {
        if incident.signals.is_empty() {
            return self.watermarks.values().copied().max();
        }
        let signals: BTreeSet<&str> = incident
            .signals
            .iter()
            .map(|e| e.series.signal.as_str())
            .collect();
        signals
            .into_iter()
            .map(|s| self.watermarks.get(s).copied())
            .try_fold(TimestampMs::MAX, |acc, w| w.map(|w| acc.min(w)))
    }

    /// The group labels of an anomaly; a series without any of them forms
    /// a group of its own (its full key), rather than lumping together with
    /// every other unlabelled series.
    fn group_of(&self, anomaly: &Anomaly) -> BTreeMap<String, String> {
        let get = |n: &str| anomaly.key.label(n).map(str::to_string);
        let group: BTreeMap<String, String> = self
            .config
            .group_by
            .iter()
            .filter_map(|label| {
                self.correlation
                    .label(&get, label)
                    .map(|v| (label.clone(), v))
            })
            .collect();
        if group.is_empty() {
            BTreeMap::from([("series".to_string(), anomaly.key.to_string())])
        } else {
            group
        }
    }

    /// Adds an anomaly to its group's open incident, opening one if needed.
    /// Returns the group key and whether the incident is new.
    fn attach(&mut self, anomaly: &Anomaly) -> (String, bool) {
        let group = self.group_of(anomaly);
        let key = super::group_key(&group);
        let window = self.config.group_window.as_millis_i64();

        // An open incident whose last anomaly is too long ago for this one to
        // belong: close it at the point it went quiet, then start afresh.
        // One with a firing alert is ongoing, however old its anomalies.
        let stale = self.open.get(&key).is_some_and(|inc| {
            !inc.has_firing_alerts()
                && (anomaly.t.saturating_sub(quiet_since(inc)) > window
                    || inc.opened_at.saturating_sub(anomaly.t) > window)
        });
        if stale {
            if let Some(mut old) = self.open.remove(&key) {
                let at = old
                    .last_anomaly_at
                    .saturating_add(self.config.resolve_after.as_millis_i64())
                    .min(anomaly.t);
                old.state = IncidentState::Resolved;
                old.resolved_at = Some(at);
                old.timeline.push(TimelineEntry {
                    at,
                    kind: "resolved".into(),
                    message: "Resolved: a new, separate episode started after a quiet period."
                        .into(),
                });
                self.closed.push(IncidentUpdate {
                    kind: UpdateKind::Resolved,
                    incident: old,
                });
            }
        }

        let is_new = !self.open.contains_key(&key);
        let config = &self.config;
        let cluster = &self.cluster;
        let incident = self.open.entry(key.clone()).or_insert_with(|| Incident {
            id: None,
            cluster: cluster.clone(),
            group: group.clone(),
            state: IncidentState::Open,
            severity: Severity::Warning,
            opened_at: anomaly.t,
            last_anomaly_at: anomaly.t,
            resolved_at: None,
            anomaly_count: 0,
            signals: Vec::new(),
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![TimelineEntry {
                at: anomaly.t,
                kind: "opened".into(),
                message: format!(
                    "Opened: {} is {} (expected {}).",
                    anomaly.key,
                    describe_deviation(anomaly.score),
                    short(anomaly.expected)
                ),
            }],
        });
        let get = |n: &str| anomaly.key.label(n).map(str::to_string);
        let mapped: Vec<(String, String)> = config
            .group_by
            .iter()
            .filter_map(|l| {
                self.correlation
                    .source_of(&get, l)
                    .map(|from| (l.clone(), from.to_string()))
            })
            .collect();
        add_evidence(incident, anomaly, config.evidence_samples, &|group| {
            grouped_because(group, &mapped, config)
        });
        let severity = severity_of(incident, config);
        if severity > incident.severity {
            incident.severity = severity;
            if !is_new || incident.anomaly_count > 1 {
                incident.timeline.push(TimelineEntry {
                    at: anomaly.t,
                    kind: "severity_raised".into(),
                    message: format!("Severity raised to {}.", severity.as_str()),
                });
            }
        }
        (key, is_new)
    }
}

/// Since when an incident has had nothing abnormal: its latest anomaly or
/// the latest end of a member alert, whichever is later.
fn quiet_since(incident: &Incident) -> TimestampMs {
    incident
        .alerts
        .iter()
        .filter_map(|a| a.ends_at)
        .fold(incident.last_anomaly_at, TimestampMs::max)
}

/// `alert HighErrorRate is firing: <summary>` (or `fired and resolved`).
fn describe_alert(alert: &Alert) -> String {
    let state = match alert.status {
        AlertStatus::Firing => "is firing",
        AlertStatus::Resolved => "fired and resolved",
    };
    match alert.annotations.get("summary").filter(|s| !s.is_empty()) {
        Some(summary) => format!("alert {} {state}: {summary}", alert.name()),
        None => format!("alert {} {state}.", alert.name()),
    }
}

/// Why a member joined: `same namespace=shop, service=cart (service from
/// label app.kubernetes.io/name) within the 15m grouping window`.
fn grouped_because(
    group: &BTreeMap<String, String>,
    mapped: &[(String, String)],
    config: &IncidentConfig,
) -> String {
    format!(
        "same {} within the {} grouping window",
        describe_group(group, mapped),
        config.group_window
    )
}

fn describe_group(group: &BTreeMap<String, String>, mapped: &[(String, String)]) -> String {
    let mut text = group
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    if !mapped.is_empty() {
        let notes: Vec<String> = mapped
            .iter()
            .map(|(to, from)| format!("{to} from label {from}"))
            .collect();
        text.push_str(&format!(" ({})", notes.join(", ")));
    }
    text
}

/// A gap in ms as `2m`, `45s`, `1m 30s`, for sentences.
fn minutes(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    }
}

fn describe_deviation(score: f64) -> String {
    if score >= 0.0 {
        format!("{:.1} spreads above normal", score)
    } else {
        format!("{:.1} spreads below normal", -score)
    }
}

fn short(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 9) as usize;
    format!("{x:.digits$}")
}

/// Critical when one score is very large or several signals are off.
fn severity_of(incident: &Incident, config: &IncidentConfig) -> Severity {
    let max_score = incident
        .signals
        .iter()
        .map(|e| e.peak.score.abs())
        .fold(0.0, f64::max);
    let signals: BTreeSet<&str> = incident
        .signals
        .iter()
        .map(|e| e.series.signal.as_str())
        .collect();
    if max_score >= config.critical_score || signals.len() >= config.critical_signals {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

/// Folds one anomaly into the incident's evidence for its series.
/// `why` says why the anomaly was grouped here, for the timeline line
/// of a signal that joins an incident.
fn add_evidence(
    incident: &mut Incident,
    anomaly: &Anomaly,
    cap: usize,
    why: &dyn Fn(&BTreeMap<String, String>) -> String,
) {
    incident.anomaly_count += 1;
    incident.last_anomaly_at = incident.last_anomaly_at.max(anomaly.t);
    incident.opened_at = incident.opened_at.min(anomaly.t);
    let peak = Peak {
        t: anomaly.t,
        value: anomaly.value,
        expected: anomaly.expected,
        spread: anomaly.spread,
        score: anomaly.score,
    };
    let position = incident
        .signals
        .iter()
        .position(|e| e.series == *anomaly.key);
    let evidence = match position {
        Some(i) => &mut incident.signals[i],
        None => {
            let new_signal = !incident
                .signals
                .iter()
                .any(|e| e.series.signal == anomaly.key.signal);
            if new_signal && !incident.signals.is_empty() {
                incident.timeline.push(TimelineEntry {
                    at: anomaly.t,
                    kind: "signal_added".into(),
                    message: format!(
                        "Also anomalous: {} is {}. Grouped here: {}.",
                        anomaly.key,
                        describe_deviation(anomaly.score),
                        why(&incident.group)
                    ),
                });
            }
            incident.signals.push(SignalEvidence {
                series: (*anomaly.key).clone(),
                first_at: anomaly.t,
                last_at: anomaly.t,
                anomaly_count: 0,
                peak,
                samples: Vec::new(),
                anomalous_at: Vec::new(),
            });
            let last = incident.signals.len() - 1;
            &mut incident.signals[last]
        }
    };
    evidence.first_at = evidence.first_at.min(anomaly.t);
    evidence.last_at = evidence.last_at.max(anomaly.t);
    evidence.anomaly_count += 1;
    if anomaly.score.abs() > evidence.peak.score.abs() {
        evidence.peak = peak;
    }
    merge_samples(&mut evidence.samples, &anomaly.context, cap);
    if !evidence.anomalous_at.contains(&anomaly.t) {
        evidence.anomalous_at.push(anomaly.t);
        evidence.anomalous_at.sort_unstable();
    }
    if let Some(oldest) = evidence.samples.first().map(|s| s.t) {
        evidence.anomalous_at.retain(|&t| t >= oldest);
    }
}

/// Merges `new` into the time-ordered `samples`, without duplicates,
/// keeping the newest `cap`.
fn merge_samples(samples: &mut Vec<Sample>, new: &[Sample], cap: usize) {
    let newest = samples.last().map(|s| s.t);
    if new.iter().all(|s| newest.is_none_or(|n| s.t > n)) {
        samples.extend_from_slice(new);
    } else {
        samples.extend_from_slice(new);
        samples.sort_by_key(|s| s.t);
        samples.dedup_by_key(|s| s.t);
    }
    if samples.len() > cap {
        let excess = samples.len() - cap;
        samples.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;
    use crate::signal::SeriesKey;
    use std::sync::Arc;
    use std::time::Duration;

    const MIN: i64 = 60_000;

    fn config() -> IncidentConfig {
        IncidentConfig {
            group_window: HumanDuration(Duration::from_secs(15 * 60)),
            resolve_after: HumanDuration(Duration::from_secs(10 * 60)),
            ..IncidentConfig::default()
        }
    }

    fn anomaly(signal: &str, service: &str, t: i64, score: f64) -> Anomaly {
        Anomaly {
            key: Arc::new(SeriesKey::new(
                signal,
                [
                    ("namespace".to_string(), "shop".to_string()),
                    ("service".to_string(), service.to_string()),
                    ("pod".to_string(), format!("{service}-1")),
                ],
            )),
            t,
            value: 10.0,
            expected: 1.0,
            spread: 1.0,
            score,
            context: vec![
                Sample {
                    t: t - 30_000,
                    v: 1.0,
                },
                Sample { t, v: 10.0 },
            ],
        }
    }

    #[test]
    fn anomalies_of_one_service_group_into_one_incident() {
        let mut c = Correlator::new(config(), "test");
        let u = c.on_batch("errors", &[anomaly("errors", "cart", 0, 7.0)], 0);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].kind, UpdateKind::Opened);
        let u = c.on_batch(
            "latency",
            &[anomaly("latency", "cart", 2 * MIN, 8.0)],
            2 * MIN,
        );
        assert_eq!(u[0].kind, UpdateKind::Updated);
        let inc = &u[0].incident;
        assert_eq!(inc.signals.len(), 2);
        assert_eq!(
            inc.severity,
            Severity::Critical,
            "two signals make it critical"
        );
        assert!(inc.timeline.iter().any(|e| e.kind == "signal_added"));
        assert_eq!(c.open_incidents().count(), 1);
    }

    #[test]
    fn different_services_open_different_incidents() {
        let mut c = Correlator::new(config(), "test");
        let u = c.on_batch(
            "errors",
            &[
                anomaly("errors", "cart", 0, 7.0),
                anomaly("errors", "pay", 0, 7.0),
            ],
            0,
        );
        assert_eq!(u.len(), 2);
        assert!(u.iter().all(|u| u.kind == UpdateKind::Opened));
    }

    #[test]
    fn resolves_only_after_every_member_signal_was_quiet_long_enough() {
        let mut c = Correlator::new(config(), "test");
        c.on_batch("errors", &[anomaly("errors", "cart", 0, 7.0)], 0);
        c.on_batch("latency", &[anomaly("latency", "cart", MIN, 7.0)], MIN);
        // errors advances far, latency has not: still open (its source may be down).
        assert!(c.advance("errors", 60 * MIN).is_empty());
        assert!(c.advance("latency", 5 * MIN).is_empty());
        let u = c.advance("latency", 11 * MIN);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].kind, UpdateKind::Resolved);
        assert_eq!(u[0].incident.resolved_at, Some(11 * MIN));
        assert_eq!(c.open_incidents().count(), 0);
    }

    #[test]
    fn restored_incident_absorbs_new_anomalies_instead_of_duplicating() {
        let mut first = Correlator::new(config(), "test");
        let u = first.on_batch("errors", &[anomaly("errors", "cart", 0, 7.0)], 0);
        let mut saved = u[0].incident.clone();
        saved.id = Some(42);
        let mut second = Correlator::new(config(), "test");
        second.restore([saved]);
        let u = second.on_batch("errors", &[anomaly("errors", "cart", MIN, 7.0)], MIN);
        assert_eq!(u[0].kind, UpdateKind::Updated);
        assert_eq!(u[0].incident.id, Some(42));
    }

    #[test]
    fn long_backfill_opens_and_resolves_in_one_batch() {
        let mut c = Correlator::new(config(), "test");
        let u = c.on_batch("errors", &[anomaly("errors", "cart", 0, 7.0)], 60 * MIN);
        let kinds: Vec<UpdateKind> = u.iter().map(|u| u.kind).collect();
        assert_eq!(kinds, vec![UpdateKind::Opened, UpdateKind::Resolved]);
    }

    #[test]
    fn evidence_keeps_peak_and_caps_samples() {
        let mut cfg = config();
        cfg.evidence_samples = 3;
        let mut c = Correlator::new(cfg, "test");
        c.on_batch("errors", &[anomaly("errors", "cart", 0, 7.0)], 0);
        let u = c.on_batch(
            "errors",
            &[
                anomaly("errors", "cart", MIN, 20.0),
                anomaly("errors", "cart", 2 * MIN, 9.0),
            ],
            2 * MIN,
        );
        let e = &u[0].incident.signals[0];
        assert_eq!(e.peak.score, 20.0);
        assert_eq!(e.anomaly_count, 3);
        assert_eq!(e.samples.len(), 3);
        assert!(e.samples.windows(2).all(|w| w[0].t < w[1].t));
        assert_eq!(u[0].incident.severity, Severity::Critical);
    }

    #[test]
    fn a_new_episode_after_a_gap_closes_the_old_incident_and_opens_another() {
        let mut c = Correlator::new(config(), "test");
        c.on_batch("errors", &[anomaly("errors", "cart", 0, 7.0)], 0);
        // No watermark advance in between (e.g. the batch arrived late):
        // the next anomaly is beyond the 15-minute grouping window.
        let u = c.on_batch(
            "errors",
            &[anomaly("errors", "cart", 40 * MIN, 7.0)],
            40 * MIN,
        );
        let kinds: Vec<UpdateKind> = u.iter().map(|u| u.kind).collect();
        assert_eq!(kinds, vec![UpdateKind::Resolved, UpdateKind::Opened]);
        assert_eq!(u[0].incident.resolved_at, Some(10 * MIN));
        assert_eq!(u[1].incident.opened_at, 40 * MIN);
        assert_eq!(c.open_incidents().count(), 1);
    }

    fn alert(fingerprint: &str, service: &str, status: AlertStatus, starts_at: i64) -> Alert {
        Alert {
            id: 7,
            fingerprint: fingerprint.into(),
            status,
            labels: BTreeMap::from([
                ("alertname".to_string(), "HighErrorRate".to_string()),
                ("namespace".to_string(), "shop".to_string()),
                ("service".to_string(), service.to_string()),
            ]),
            annotations: BTreeMap::from([("summary".to_string(), "5xx above 5%".to_string())]),
            starts_at,
            ends_at: (status == AlertStatus::Resolved).then_some(starts_at + 5 * MIN),
            generator_url: String::new(),
            receiver: "aiopsd".into(),
            received_at: starts_at,
        }
    }

    #[test]
    fn an_alert_joins_its_services_incident_and_holds_it_open_while_firing() {
        let mut c = Correlator::new(config(), "test");
        c.on_batch("errors", &[anomaly("errors", "cart", 0, 7.0)], 0);
        let u = c.on_alert(&alert("f1", "cart", AlertStatus::Firing, MIN));
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].kind, UpdateKind::Updated);
        assert_eq!(u[0].incident.alerts.len(), 1);
        assert!(u[0]
            .incident
            .timeline
            .iter()
            .any(|e| e.kind == "alert_added"));
        // Signals quiet for far longer than resolve_after: still open.
        assert!(c.advance("errors", 120 * MIN).is_empty());
        // Resolved: the alert counts as normal from its end (6 min).
        let u = c.on_alert(&alert("f1", "cart", AlertStatus::Resolved, MIN));
        assert_eq!(u[0].kind, UpdateKind::Updated);
        assert_eq!(u[0].incident.alerts[0].status, AlertStatus::Resolved);
        let u = c.advance("errors", 121 * MIN);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].kind, UpdateKind::Resolved);
        assert!(u[0]
            .incident
            .timeline
            .iter()
            .any(|e| e.kind == "alert_resolved"));
    }

    #[test]
    fn an_alert_alone_opens_an_incident_that_resolves_after_the_quiet_period() {
        let mut c = Correlator::new(config(), "test");
        let mut critical = alert("f2", "pay", AlertStatus::Firing, 0);
        critical.labels.insert("severity".into(), "critical".into());
        let u = c.on_alert(&critical);
        assert_eq!(u[0].kind, UpdateKind::Opened);
        assert_eq!(u[0].incident.severity, Severity::Critical);
        assert_eq!(u[0].incident.opened_at, 0);
        assert!(u[0].incident.signals.is_empty());
        // The same state again (a replay) changes nothing.
        assert!(c.on_alert(&critical).is_empty());
        let resolved = alert("f2", "pay", AlertStatus::Resolved, 0);
        assert_eq!(c.on_alert(&resolved).len(), 1);
        assert!(c.on_alert(&resolved).is_empty(), "idempotent");
        // A late firing retry of the same episode is stale.
        assert!(c.on_alert(&critical).is_empty());
        // Resolved at 5 min; quiet for 10 min on the signals' clock.
        assert!(c.advance("errors", 14 * MIN).is_empty());
        let u = c.advance("errors", 15 * MIN);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].kind, UpdateKind::Resolved);
        assert_eq!(u[0].incident.resolved_at, Some(15 * MIN));
    }

    #[test]
    fn alerts_of_different_services_or_without_group_labels_stay_apart() {
        let mut c = Correlator::new(config(), "test");
        c.on_alert(&alert("f3", "cart", AlertStatus::Firing, 0));
        c.on_alert(&alert("f4", "pay", AlertStatus::Firing, 0));
        let mut bare = alert("f5", "x", AlertStatus::Firing, 0);
        bare.labels.retain(|k, _| k == "alertname");
        let u = c.on_alert(&bare);
        assert_eq!(u[0].kind, UpdateKind::Opened);
        assert_eq!(
            u[0].incident.group_key(),
            "alertname=HighErrorRate,fingerprint=f5"
        );
        assert_eq!(c.open_incidents().count(), 3);
    }

    /// Fires at `start` and resolves 5 min later; returns the updates of
    /// both notifications.
    fn episode(c: &mut Correlator, start: i64) -> Vec<IncidentUpdate> {
        let mut u = c.on_alert(&alert("ff", "web", AlertStatus::Firing, start));
        u.extend(c.on_alert(&alert("ff", "web", AlertStatus::Resolved, start)));
        u
    }

    #[test]
    fn a_fast_flapping_alert_is_one_incident_with_a_flap_count() {
        let mut c = Correlator::new(config(), "test");
        let mut opened = 0;
        // Five episodes 8 min apart (each 5 min long), the signals' clock
        // following along: without flap handling the quiet gaps would
        // resolve the incident (resolve_after 10 min) between later ones.
        for i in 0..5 {
            let start = i * 8 * MIN;
            let u = episode(&mut c, start);
            opened += u.iter().filter(|u| u.kind == UpdateKind::Opened).count();
            assert!(c.advance("errors", start + 7 * MIN).is_empty());
        }
        assert_eq!(opened, 1);
        let inc = c.open_incidents().next().expect("one open incident");
        assert_eq!(inc.flap_count(), 5);
        assert_eq!(inc.alerts.len(), 5);
        assert!(inc
            .timeline
            .iter()
            .any(|e| e.kind == "flapping" && e.message.contains("episode 3 in a row")));
        // Held open for the flapping window (1 h) after the last end
        // (32 + 5 = 37 min), not just resolve_after.
        assert!(c.advance("errors", 60 * MIN).is_empty());
        let u = c.advance("errors", 97 * MIN);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].kind, UpdateKind::Resolved);
    }

    #[test]
    fn flap_counting_is_idempotent_and_a_break_in_the_chain_starts_over() {
        let mut c = Correlator::new(config(), "test").with_flapping(FlappingConfig {
            min_episodes: 2,
            window: HumanDuration(Duration::from_secs(30 * 60)),
        });
        assert_eq!(c.count_episode("x", 0), 1);
        assert_eq!(c.count_episode("x", 0), 1, "same episode again");
        assert_eq!(c.count_episode("x", 20 * MIN), 2);
        assert_eq!(c.count_episode("x", 10 * MIN), 2, "an older replay");
        assert_eq!(c.count_episode("x", 40 * MIN), 3);
        // 31 min after the previous start: the chain is broken.
        assert_eq!(c.count_episode("x", 71 * MIN), 1);
        assert_eq!(c.count_episode("y", 71 * MIN), 1);

        // A slow flapper (gaps longer than resolve_after): once flapping,
        // later episodes join its incident instead of opening new ones.
        let mut c = Correlator::new(config(), "test").with_flapping(FlappingConfig {
            min_episodes: 2,
            window: HumanDuration(Duration::from_secs(60 * 60)),
        });
        let mut opened = 0;
        for i in 0..4 {
            let start = i * 30 * MIN;
            let u = episode(&mut c, start);
            opened += u.iter().filter(|u| u.kind == UpdateKind::Opened).count();
            c.advance("errors", start + 25 * MIN);
        }
        // The first episode resolved on its own before the second began;
        // from the second (flapping) on, one incident.
        assert_eq!(opened, 2);
        assert_eq!(c.open_incidents().next().map(Incident::flap_count), Some(4));
    }

    #[test]
    fn label_mapping_groups_an_alert_with_its_services_anomalies_and_says_why() {
        let correlation: CorrelationConfig = serde_saphyr::from_str(
            "label_map: {'app.kubernetes.io/name': service, kubernetes_namespace: namespace}\n",
        )
        .expect("config");
        let mut c = Correlator::new(config(), "test").with_correlation(correlation);
        c.on_batch("errors", &[anomaly("errors", "cart", 0, 7.0)], 0);
        let mut a = alert("fm", "x", AlertStatus::Firing, MIN);
        a.labels.remove("service");
        a.labels.remove("namespace");
        a.labels
            .insert("app.kubernetes.io/name".into(), "cart".into());
        a.labels
            .insert("kubernetes_namespace".into(), "shop".into());
        let u = c.on_alert(&a);
        assert_eq!(u.len(), 1);
        assert_eq!(
            u[0].kind,
            UpdateKind::Updated,
            "joined the anomaly's incident"
        );
        let added = u[0]
            .incident
            .timeline
            .iter()
            .find(|e| e.kind == "alert_added")
            .expect("alert_added");
        assert!(
            added.message.contains("same namespace=shop, service=cart")
                && added
                    .message
                    .contains("service from label app.kubernetes.io/name")
                && added.message.contains("15m grouping window"),
            "{}",
            added.message
        );
        // A label the alert has itself wins over a mapped one.
        let mut own = alert("fo", "pay", AlertStatus::Firing, MIN);
        own.labels
            .insert("app.kubernetes.io/name".into(), "cart".into());
        assert_eq!(c.on_alert(&own)[0].kind, UpdateKind::Opened);
    }

    #[test]
    fn a_dependency_in_trouble_shortly_before_is_linked_as_a_possible_cause() {
        let correlation: CorrelationConfig =
            serde_saphyr::from_str("dependencies: {checkout: [payments, db]}\ncausal_window: 5m\n")
                .expect("config");
        let mut c = Correlator::new(config(), "test").with_correlation(correlation);
        let u = c.on_alert(&alert("fp", "payments", AlertStatus::Firing, 0));
        c.assign_id(&u[0].incident.group_key(), 12);
        let u = c.on_batch(
            "latency",
            &[anomaly("latency", "checkout", 2 * MIN, 7.0)],
            2 * MIN,
        );
        let checkout = u
            .iter()
            .find(|u| u.incident.group_label("service") == Some("checkout"))
            .expect("checkout's incident");
        assert_eq!(checkout.kind, UpdateKind::Opened);
        let hint = checkout
            .incident
            .timeline
            .iter()
            .find(|e| e.kind == "causal_hint")
            .expect("a causal hint");
        assert!(
            hint.message
                .contains("Possible cause: payments (shop) (incident 12)")
                && hint
                    .message
                    .contains("payments alert HighErrorRate 2m before checkout")
                && hint.message.contains("declared dependency"),
            "{}",
            hint.message
        );
        let payments = u
            .iter()
            .find(|u| u.incident.group_label("service") == Some("payments"))
            .expect("the dependency's incident is updated too");
        assert!(payments
            .incident
            .timeline
            .iter()
            .any(|e| e.kind == "causal_hint"
                && e.message.starts_with("Possibly affecting: checkout")));

        // Too long before, not declared, or the wrong way round: no link.
        let mut c = Correlator::new(config(), "test").with_correlation(
            serde_saphyr::from_str("dependencies: {checkout: [payments]}\ncausal_window: 5m\n")
                .expect("config"),
        );
        c.on_alert(&alert("fp", "payments", AlertStatus::Firing, 0));
        c.on_alert(&alert("fd", "db", AlertStatus::Firing, 9 * MIN));
        let u = c.on_batch(
            "latency",
            &[anomaly("latency", "checkout", 10 * MIN, 7.0)],
            10 * MIN,
        );
        assert_eq!(u.len(), 1);
        assert!(!u[0]
            .incident
            .timeline
            .iter()
            .any(|e| e.kind == "causal_hint"));
        let u = c.on_alert(&alert("fp2", "payments", AlertStatus::Firing, 12 * MIN));
        assert!(
            u.iter()
                .all(|u| !u.incident.timeline.iter().any(|e| e.kind == "causal_hint")),
            "a dependency that starts after its dependent is no cause"
        );
    }

    #[test]
    fn an_unsuppressed_alert_says_why_on_its_incident() {
        let mut c = Correlator::new(config(), "test");
        let u = c.on_alert_noted(
            &alert("fl", "cart", AlertStatus::Firing, 0),
            Some("still firing 10m after it started"),
        );
        let entry = u[0]
            .incident
            .timeline
            .iter()
            .find(|e| e.kind == "unsuppressed")
            .expect("unsuppressed");
        assert!(
            entry.message.contains("still firing 10m"),
            "{}",
            entry.message
        );
    }

    #[test]
    fn correlation_config_errors_name_the_field() {
        let bad: CorrelationConfig = serde_saphyr::from_str(
            "label_map: {'bad label': service, job: job}\ndependencies: {a: [a, '']}\ncausal_window: 0s\n",
        )
        .expect("parses");
        let mut problems = Vec::new();
        bad.validate(&mut |p, r| problems.push(format!("{p}: {r}")));
        let text = problems.join("\n");
        for needle in [
            "correlation.label_map.bad label",
            "correlation.label_map.job: maps a label to itself",
            "correlation.dependencies.a[0]",
            "correlation.dependencies.a[1]",
            "correlation.causal_window",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
