//! Turns the scanner's [`PredictiveEvent`]s into incident updates the
//! incident stage stores like any other.
//!
//! Why outside the [`Correlator`](crate::incident::Correlator): the
//! correlator resolves an incident once its signals are quiet, and a
//! predictive incident's signal is never "anomalous" — it would be closed
//! on the next poll. So predictive incidents have their own small owner,
//! in the same stage, with the same store path: opened, updated at each
//! refit, resolved when the scanner says the breach is no longer predicted.
//!
//! Pure: no I/O. The daemon restores it from the store's open incidents
//! at start ([`OpenPredictions::restore`]) and tells the scanner which
//! series those were ([`OpenPredictions::series`]).

use std::collections::HashMap;

use super::predictive::{PredictedBreach, PredictiveEvent};
use crate::incident::{
    Incident, IncidentId, IncidentKind, IncidentUpdate, TimelineEntry, UpdateKind,
};
use crate::signal::SeriesKey;

/// Open predictive incidents by group key.
#[derive(Debug)]
pub struct OpenPredictions {
    cluster: String,
    group_by: Vec<String>,
    evidence_samples: usize,
    open: HashMap<String, Incident>,
}

impl OpenPredictions {
    /// An empty set; incidents are grouped by `group_by` (the
    /// `incidents.group_by` labels) like detected ones.
    pub fn new(cluster: &str, group_by: &[String], evidence_samples: usize) -> Self {
        Self {
            cluster: cluster.to_string(),
            group_by: group_by.to_vec(),
            evidence_samples,
            open: HashMap::new(),
        }
    }

    /// Takes the predictive incidents among the store's open ones (others
    /// are ignored) and returns how many it took.
    pub fn restore(&mut self, open: &[Incident]) -> usize {
        let before = self.open.len();
        for incident in open {
            if incident.kind() == IncidentKind::Predictive {
                self.open.insert(incident.group_key(), incident.clone());
            }
        }
        self.open.len() - before
    }

    /// The series of the open predictive incidents (to mark them open in
    /// the scanner after a restart).
    pub fn series(&self) -> Vec<SeriesKey> {
        self.open
            .values()
            .filter_map(|i| i.signals.first().map(|s| s.series.clone()))
            .collect()
    }

    /// Records the store id of a just-opened incident.
    pub fn assign_id(&mut self, group_key: &str, id: IncidentId) {
        if let Some(incident) = self.open.get_mut(group_key) {
            incident.id = Some(id);
        }
    }

    /// Replaces the tracked copy with the stored incident a new one was
    /// merged into (the store already had this group open).
    pub fn adopt(&mut self, stored: Incident) {
        self.open.insert(stored.group_key(), stored);
    }

    /// Open predictive incidents.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The update one scanner event causes, if any (skips cause none).
    pub fn apply(&mut self, event: &PredictiveEvent) -> Option<IncidentUpdate> {
        match event {
            PredictiveEvent::Open(breach) | PredictiveEvent::Update(breach) => {
                Some(self.predicted(breach))
            }
            PredictiveEvent::Resolve(resolution) => {
                let key = self
                    .open
                    .iter()
                    .find(|(_, i)| i.signals.first().map(|s| &s.series) == Some(&resolution.series))
                    .map(|(k, _)| k.clone())?;
                let mut incident = self.open.remove(&key)?;
                resolution.apply(&mut incident);
                Some(IncidentUpdate {
                    kind: UpdateKind::Resolved,
                    incident,
                })
            }
            PredictiveEvent::Skipped { .. } => None,
        }
    }

    /// Opens, or refreshes the open incident of the same group. A refresh
    /// replaces the evidence and the forecast; its timeline gains a line
    /// only when the severity rises (one line per refit would bury the
    /// history).
    fn predicted(&mut self, breach: &PredictedBreach) -> IncidentUpdate {
        let fresh = breach.to_incident(&self.cluster, &self.group_by, self.evidence_samples);
        let key = fresh.group_key();
        match self.open.get_mut(&key) {
            None => {
                self.open.insert(key, fresh.clone());
                IncidentUpdate {
                    kind: UpdateKind::Opened,
                    incident: fresh,
                }
            }
            Some(incident) => {
                let evaluations = incident.prediction.as_ref().map_or(1, |p| p.evaluations);
                if fresh.severity > incident.severity {
                    let message = fresh
                        .timeline
                        .last()
                        .map(|e| e.message.clone())
                        .unwrap_or_default();
                    incident.timeline.push(TimelineEntry {
                        at: breach.at,
                        kind: "severity_raised".into(),
                        message: format!("Now {}: {message}", fresh.severity.as_str()),
                    });
                    incident.severity = fresh.severity;
                }
                incident.signals = fresh.signals;
                incident.last_anomaly_at = incident.last_anomaly_at.max(fresh.last_anomaly_at);
                incident.prediction = fresh.prediction.map(|mut p| {
                    p.evaluations = evaluations.saturating_add(1);
                    p
                });
                IncidentUpdate {
                    kind: UpdateKind::Updated,
                    incident: incident.clone(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::predictive::{LimitConfig, Unit};
    use crate::forecast::predictive::{PredictiveConfig, PredictiveScanner};
    use crate::forecast::{ForecastConfig, DAY_MS};
    use crate::signal::Sample;

    const MIB: f64 = 1_048_576.0;
    const STEP: i64 = 300_000;

    fn key() -> SeriesKey {
        SeriesKey::new(
            "memory",
            [
                ("namespace".to_string(), "shop".to_string()),
                ("service".to_string(), "cart".to_string()),
            ],
        )
    }

    fn scanner() -> PredictiveScanner {
        let config = PredictiveConfig {
            limits: [(
                "memory".to_string(),
                LimitConfig {
                    value: Some(512.0 * MIB),
                    series: None,
                    upper: true,
                    unit: Unit::Bytes,
                },
            )]
            .into(),
            ..PredictiveConfig::default()
        };
        PredictiveScanner::new(config, ForecastConfig::default()).expect("valid config")
    }

    /// A leak of 40 MiB/day from 200 MiB, with a little deterministic noise.
    fn leak(from_day: f64, to_day: f64) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut t = (from_day * DAY_MS as f64) as i64;
        let mut i = 0u64;
        while t < (to_day * DAY_MS as f64) as i64 {
            let day = t as f64 / DAY_MS as f64;
            let wiggle = ((i * 7919) % 13) as f64 - 6.0;
            out.push(Sample {
                t,
                v: (200.0 + 40.0 * day + wiggle) * MIB,
            });
            t += STEP;
            i += 1;
        }
        out
    }

    fn group_by() -> Vec<String> {
        vec!["namespace".into(), "service".into()]
    }

    #[test]
    fn a_leak_opens_one_incident_and_refits_update_it_without_flooding_the_timeline() {
        let mut scanner = scanner();
        let mut open = OpenPredictions::new("c1", &group_by(), 60);
        let mut updates = Vec::new();
        for day in 0..6 {
            let samples = leak(f64::from(day), f64::from(day + 1));
            scanner.observe(&key(), &samples);
            let now = samples.last().map(|s| s.t).expect("samples");
            for event in scanner.scan(now) {
                updates.extend(open.apply(&event));
            }
        }
        let opened: Vec<_> = updates
            .iter()
            .filter(|u| u.kind == UpdateKind::Opened)
            .collect();
        assert_eq!(opened.len(), 1, "one predictive incident per leak");
        let last = updates.last().expect("updates");
        assert_eq!(last.incident.kind(), IncidentKind::Predictive);
        let record = last.incident.prediction.as_ref().expect("forecast kept");
        assert!(record.probability >= 0.8, "{}", record.probability);
        assert!(!record.forecast.is_empty() && !record.history.is_empty());
        assert_eq!(record.limit_text, "512 MiB");
        assert_eq!(
            usize::try_from(record.evaluations).ok(),
            Some(updates.len())
        );
        assert!(
            last.incident.timeline.len() <= 3,
            "refits must not add a line each: {:?}",
            last.incident.timeline
        );
        assert_eq!(last.incident.group_label("service"), Some("cart"));
    }

    #[test]
    fn restored_incident_is_updated_not_opened_twice() {
        let mut scanner = scanner();
        let mut first = OpenPredictions::new("c1", &group_by(), 60);
        let samples = leak(0.0, 5.0);
        scanner.observe(&key(), &samples);
        let now = samples.last().map(|s| s.t).expect("samples");
        let stored: Vec<Incident> = scanner
            .scan(now)
            .iter()
            .filter_map(|e| first.apply(e))
            .map(|u| u.incident)
            .collect();
        assert_eq!(stored.len(), 1);

        // A restart: a new scanner and tracker, restored from the store.
        let mut again = OpenPredictions::new("c1", &group_by(), 60);
        assert_eq!(again.restore(&stored), 1);
        let mut scanner = self::scanner();
        for series in again.series() {
            scanner.restore_open(&series);
        }
        scanner.observe(&key(), &samples);
        let updates: Vec<_> = scanner
            .scan(now + STEP)
            .iter()
            .filter_map(|e| again.apply(e))
            .collect();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].kind, UpdateKind::Updated);
    }
}
