//! Predictive incidents: a [`Prediction`] that a series will cross its
//! limit becomes an [`Incident`] before anything is broken.
//!
//! [`PredictiveScanner`] is pure and synchronous like the detectors: the
//! daemon feeds it the samples of signals that have a limit
//! ([`PredictiveScanner::observe`]) and asks it, with the data time, what
//! changed ([`PredictiveScanner::scan`]). Per series it keeps a bounded
//! history, when it last fitted, and whether a predictive incident is open.
//! Why the hysteresis: a forecast is refitted every `refit_every`, and a
//! leak's probability hovers around the threshold for a while; opening at
//! `min_probability` and closing only after `resolve_after` evaluations
//! below the lower `clear_probability` gives one incident per leak, not one
//! per poll.
//!
//! A predictive incident is an ordinary [`Incident`] (so the store, the
//! report and the policy gate need nothing new) told apart by the group
//! label [`PREDICTION_LABEL`] (`prediction: memory`) and a timeline entry of
//! kind `predicted` whose message carries the reasoning. The label also
//! keeps it from being merged with a detected incident of the same group,
//! which the store keys by group.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{predict_breach, ForecastConfig, ForecastError, Forecaster, Limit, Prediction};
use crate::config::{FieldError, HumanDuration};
use crate::incident::{
    ForecastBand, Incident, IncidentState, Peak, PredictionRecord, Severity, SignalEvidence,
    TimelineEntry,
};
use crate::signal::{Sample, SeriesKey, TimestampMs};

/// Group label that marks an incident as predictive; its value is the
/// signal predicted to breach (e.g. `memory`). Policy rules can match it.
pub const PREDICTION_LABEL: &str = "prediction";

/// Timeline kind of the entry carrying a prediction.
pub const PREDICTED_KIND: &str = "predicted";

/// The unit a limit is in, for the sentence a person reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Bytes, shown as KiB/MiB/GiB.
    Bytes,
    /// CPU cores.
    Cores,
    /// A ratio in [0, 1], shown as a percentage.
    Ratio,
    /// Plain number.
    #[default]
    None,
}

impl Unit {
    /// `512 MiB`, `1.5 cores`, `99.0 %`, `42`.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Bytes => {
                let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
                for (name, size) in units {
                    let x = v / size as f64;
                    if x.abs() >= 1.0 {
                        return if (x - x.round()).abs() < 0.05 {
                            format!("{:.0} {name}", x.round())
                        } else {
                            format!("{x:.1} {name}")
                        };
                    }
                }
                format!("{v:.0} B")
            }
            Unit::Cores => format!("{v:.2} cores"),
            Unit::Ratio => format!("{:.1} %", v * 100.0),
            Unit::None => format!("{v}"),
        }
    }
}

/// Where a signal's limit comes from: a fixed value or another signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// A fixed limit (e.g. an SLO's error ratio `0.01`).
    #[serde(default)]
    pub value: Option<f64>,
    /// The name of a signal whose series carry the limit (e.g.
    /// `memory_limit` from `kube_pod_container_resource_limits`). Its
    /// series must have the **same labels** as the limited signal's (align
    /// them with the signals' queries or `labels`); its latest sample is
    /// the limit.
    #[serde(default)]
    pub series: Option<String>,
    /// `true` (default): breached at or above the limit (memory, disk,
    /// queue depth); `false`: at or below (free space, days to expiry).
    #[serde(default = "d_true")]
    pub upper: bool,
    /// Unit for messages. Default `none`.
    #[serde(default)]
    pub unit: Unit,
}

fn d_true() -> bool {
    true
}

/// Tunables of failure prediction; a section of the daemon's config
/// (`predictive:` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictiveConfig {
    /// Signal name → its limit. Only these signals are predicted.
    #[serde(default)]
    pub limits: BTreeMap<String, LimitConfig>,
    /// Probability of a breach within `horizon` that opens a predictive
    /// incident. Default `0.8`; in (0, 1].
    #[serde(default = "d_min_p")]
    pub min_probability: f64,
    /// An open predictive incident closes once the probability stays below
    /// this for `resolve_after` evaluations in a row. Default `0.5`; below
    /// `min_probability`.
    #[serde(default = "d_clear_p")]
    pub clear_probability: f64,
    /// Evaluations in a row below `clear_probability` before closing.
    /// Default `2`; at least 1.
    #[serde(default = "d_resolve_after")]
    pub resolve_after: u32,
    /// How far ahead to look. Default `7d`; in (0, 30d].
    #[serde(default = "d_horizon")]
    pub horizon: HumanDuration,
    /// How often each series is refitted (data time). Default `1h`.
    #[serde(default = "d_refit")]
    pub refit_every: HumanDuration,
    /// History kept per series for fitting. Default `7d`; at least `1h`.
    #[serde(default = "d_history")]
    pub history: HumanDuration,
    /// Least history (first to last sample) before a series is predicted
    /// at all. A slope fitted on a few hours is mostly noise: with 7 hours
    /// of a leak the tests saw a predictive incident open and close again
    /// before the real one. Default `1d`; at most `history`.
    #[serde(default = "d_min_history")]
    pub min_history: HumanDuration,
    /// A breach expected sooner than this is `critical`, later `warning`.
    /// Default `6h`.
    #[serde(default = "d_critical")]
    pub critical_within: HumanDuration,
    /// History tail samples kept as the incident's evidence. Default `120`.
    #[serde(default = "d_evidence")]
    pub evidence_samples: usize,
}

fn d_min_p() -> f64 {
    0.8
}
fn d_clear_p() -> f64 {
    0.5
}
fn d_resolve_after() -> u32 {
    2
}
fn d_horizon() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 86_400))
}
fn d_refit() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn d_history() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 86_400))
}
fn d_min_history() -> HumanDuration {
    HumanDuration(Duration::from_secs(86_400))
}
fn d_critical() -> HumanDuration {
    HumanDuration(Duration::from_secs(6 * 3600))
}
fn d_evidence() -> usize {
    120
}

impl Default for PredictiveConfig {
    fn default() -> Self {
        Self {
            limits: BTreeMap::new(),
            min_probability: d_min_p(),
            clear_probability: d_clear_p(),
            resolve_after: d_resolve_after(),
            horizon: d_horizon(),
            refit_every: d_refit(),
            history: d_history(),
            min_history: d_min_history(),
            critical_within: d_critical(),
            evidence_samples: d_evidence(),
        }
    }
}

impl PredictiveConfig {
    /// What `aiopsd demo` predicts: container memory against its limit,
    /// a day ahead, refitted every half hour (the demo's simulated day
    /// passes in seconds).
    pub fn demo() -> Self {
        Self {
            limits: [(
                "memory_working_set_bytes".to_string(),
                LimitConfig {
                    value: None,
                    series: Some("memory_limit_bytes".into()),
                    upper: true,
                    unit: Unit::Bytes,
                },
            )]
            .into(),
            horizon: HumanDuration(Duration::from_secs(86_400)),
            refit_every: HumanDuration(Duration::from_secs(1800)),
            history: HumanDuration(Duration::from_secs(2 * 86_400)),
            min_history: HumanDuration(Duration::from_secs(12 * 3600)),
            evidence_samples: 240,
            ..Self::default()
        }
    }

    /// Checks ranges; paths start with `prefix` (e.g. `predictive`).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |field: String, reason: String| {
            errors.push(FieldError {
                path: format!("{prefix}.{field}"),
                reason,
            })
        };
        if !(self.min_probability > 0.0 && self.min_probability <= 1.0) {
            err(
                "min_probability".into(),
                format!("must be in (0, 1], got {}", self.min_probability),
            );
        }
        if !(self.clear_probability >= 0.0 && self.clear_probability < self.min_probability) {
            err(
                "clear_probability".into(),
                format!(
                    "must be in [0, min_probability), got {}",
                    self.clear_probability
                ),
            );
        }
        if self.resolve_after == 0 {
            err("resolve_after".into(), "must be at least 1, got 0".into());
        }
        let h = self.horizon.as_millis_i64();
        if h <= 0 || h > super::MAX_HORIZON_MS {
            err(
                "horizon".into(),
                format!("must be in (0, 30d], got {}", self.horizon),
            );
        }
        if self.refit_every.0.is_zero() {
            err("refit_every".into(), "must be more than 0s".into());
        }
        if self.history.0 < Duration::from_secs(3600) {
            err(
                "history".into(),
                format!("must be at least 1h, got {}", self.history),
            );
        }
        if self.min_history > self.history {
            err(
                "min_history".into(),
                format!(
                    "must not exceed history ({}), got {}",
                    self.history, self.min_history
                ),
            );
        }
        for (name, limit) in &self.limits {
            match (limit.value, &limit.series) {
                (Some(v), None) if v.is_finite() => {}
                (Some(v), None) => err(
                    format!("limits.{name}.value"),
                    format!("must be finite, got {v}"),
                ),
                (None, Some(s)) if s == name => err(
                    format!("limits.{name}.series"),
                    "a signal cannot be its own limit".into(),
                ),
                (None, Some(_)) => {}
                _ => err(
                    format!("limits.{name}"),
                    "set exactly one of `value` and `series`".into(),
                ),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Why the scanner could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PredictiveError {
    /// A `PredictiveConfig` field is out of range.
    #[error("invalid predictive config: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<FieldError>),
    /// The forecaster's own config is invalid.
    #[error("invalid forecast config")]
    Forecast(#[source] ForecastError),
}

/// A breach predicted for one series, with what a person needs to read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictedBreach {
    /// The series predicted to breach.
    pub series: SeriesKey,
    /// Data time of the evaluation (the last sample seen).
    pub at: TimestampMs,
    /// The prediction, with chart data and reasoning.
    pub prediction: Prediction,
    /// Unit of the limit, for messages.
    pub unit: Unit,
    /// `critical` when the expected breach is within `critical_within`.
    pub severity: Severity,
    /// Below this probability the breach no longer holds (the config's
    /// `clear_probability`), kept with the record for verification.
    pub clear_probability: f64,
}

impl PredictedBreach {
    /// The headline sentence, e.g. `memory of cart (shop) reaches its
    /// 512 MiB limit in ~6 h (p=0.93)`.
    pub fn headline(&self, subject: &str) -> String {
        let p = &self.prediction;
        let verb = if p.limit.upper { "reaches" } else { "falls to" };
        let limit = self.unit.format(p.limit.value);
        let when = match p.breach {
            Some(b) => match b.expected {
                Some(t) => format!("in ~{}", approx(t - self.at)),
                None => format!("as early as in ~{}", approx(b.earliest - self.at)),
            },
            None => format!("within {}", approx(p.horizon_ms)),
        };
        format!(
            "{} of {subject} {verb} its {limit} limit {when} (p={:.2})",
            self.series.signal, p.probability
        )
    }

    /// The forecast as the incident stores it (chart, band, reasoning).
    pub fn record(&self) -> PredictionRecord {
        let p = &self.prediction;
        let fit = &p.model.fit;
        let model = format!(
            "{:?} seasonality, {:?} trend, slope {}/day; out-of-sample MAE {} vs {} for seasonal naive ({} points)",
            p.model.seasonality,
            p.model.trend,
            self.unit.format(p.model.slope_per_day),
            self.unit.format(fit.mae),
            self.unit.format(fit.baseline_mae),
            fit.validation_points
        )
        .to_lowercase();
        PredictionRecord {
            signal: self.series.signal.clone(),
            limit: p.limit.value,
            upper: p.limit.upper,
            limit_text: self.unit.format(p.limit.value),
            probability: p.probability,
            horizon_ms: p.horizon_ms,
            at: self.at,
            expected_breach_at: p.breach.and_then(|b| b.expected),
            earliest_breach_at: p.breach.map(|b| b.earliest),
            latest_breach_at: p.breach.and_then(|b| b.latest),
            model,
            reasoning: p.reasoning.clone(),
            history: p.chart.history.clone(),
            forecast: p
                .chart
                .forecast
                .iter()
                .map(|f| ForecastBand {
                    t: f.t,
                    mean: f.mean,
                    lo80: f.lo80,
                    hi80: f.hi80,
                    lo95: f.lo95,
                    hi95: f.hi95,
                })
                .collect(),
            evaluations: 1,
            clear_probability: self.clear_probability,
        }
    }

    /// The predictive incident: group = the series' `group_by` labels (all
    /// its labels when `group_by` is empty) plus [`PREDICTION_LABEL`]; one
    /// signal whose evidence is the chart's history tail (the last
    /// `evidence_samples`), whose peak is the last sample with the limit as
    /// `expected` and the probability as `score`; a timeline entry of kind
    /// `predicted` with the headline and the reasoning. `anomaly_count` is
    /// 0: nothing anomalous has been observed yet.
    pub fn to_incident(
        &self,
        cluster: &str,
        group_by: &[String],
        evidence_samples: usize,
    ) -> Incident {
        let labels = self.series.labels.iter();
        let mut group: BTreeMap<String, String> = labels
            .filter(|(k, _)| group_by.is_empty() || group_by.iter().any(|g| g == k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        group.insert(PREDICTION_LABEL.into(), self.series.signal.clone());
        let history = &self.prediction.chart.history;
        let tail: Vec<Sample> = history[history.len().saturating_sub(evidence_samples)..].to_vec();
        let last = tail.last().copied().unwrap_or(Sample {
            t: self.at,
            v: f64::NAN,
        });
        let evidence = SignalEvidence {
            series: self.series.clone(),
            first_at: tail.first().map_or(self.at, |s| s.t),
            last_at: self.at,
            anomaly_count: 0,
            peak: Peak {
                t: last.t,
                value: last.v,
                expected: self.prediction.limit.value,
                spread: 0.0,
                score: self.prediction.probability,
            },
            samples: tail,
            anomalous_at: Vec::new(),
        };
        let mut incident = Incident {
            id: None,
            cluster: cluster.to_string(),
            group,
            state: IncidentState::Open,
            severity: self.severity,
            opened_at: self.at,
            last_anomaly_at: self.at,
            resolved_at: None,
            anomaly_count: 0,
            signals: vec![evidence],
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: Some(Box::new(self.record())),
            timeline: Vec::new(),
        };
        let subject = subject(&incident);
        incident.timeline.push(TimelineEntry {
            at: self.at,
            kind: PREDICTED_KIND.into(),
            message: format!("{}. {}", self.headline(&subject), self.prediction.reasoning),
        });
        incident
    }
}

/// `cart (shop)`, like [`Incident::subject`] but without the prediction label.
fn subject(incident: &Incident) -> String {
    match (
        incident.group_label("service"),
        incident.group_label("namespace"),
    ) {
        (Some(s), Some(ns)) => format!("{s} ({ns})"),
        (Some(s), None) => s.to_string(),
        _ => {
            let mut g = incident.group.clone();
            g.remove(PREDICTION_LABEL);
            crate::incident::group_key(&g)
        }
    }
}

/// `6 h`, `40 min`, `3 d`: a rounded duration for headlines.
fn approx(ms: i64) -> String {
    let ms = ms.max(0);
    let minutes = (ms as f64 / 60_000.0).round() as i64;
    if minutes < 90 {
        format!("{minutes} min")
    } else if minutes < 48 * 60 {
        format!("{} h", (minutes as f64 / 60.0).round() as i64)
    } else {
        format!("{} d", (minutes as f64 / 1440.0).round() as i64)
    }
}

/// A predictive incident that no longer holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictiveResolution {
    /// The series.
    pub series: SeriesKey,
    /// Data time of the evaluation that closed it.
    pub at: TimestampMs,
    /// Why, for the timeline.
    pub reason: String,
}

impl PredictiveResolution {
    /// Marks `incident` resolved with a `resolved` timeline entry.
    pub fn apply(&self, incident: &mut Incident) {
        incident.state = IncidentState::Resolved;
        incident.resolved_at = Some(self.at);
        incident.timeline.push(TimelineEntry {
            at: self.at,
            kind: "resolved".into(),
            message: self.reason.clone(),
        });
    }
}

/// What a scan found for one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PredictiveEvent {
    /// Open a predictive incident ([`PredictedBreach::to_incident`]).
    Open(Box<PredictedBreach>),
    /// The open predictive incident of this series has a new prediction
    /// (merge the new incident into it with [`Incident::merge_from`]).
    Update(Box<PredictedBreach>),
    /// Close the open predictive incident of this series.
    Resolve(PredictiveResolution),
    /// The series could not be evaluated; no incident changes. The reason
    /// is also logged (once per change of reason).
    Skipped {
        /// The series.
        series: SeriesKey,
        /// Why, e.g. `not enough data: 10 usable points …`.
        reason: String,
    },
}

/// Per-series state.
#[derive(Debug, Default)]
struct SeriesState {
    /// Samples within `history`, time order, one per timestamp.
    samples: Vec<Sample>,
    /// Data time of the last evaluation.
    last_eval: Option<TimestampMs>,
    /// A predictive incident is open.
    open: bool,
    /// Evaluations in a row below `clear_probability` while open.
    below: u32,
    /// Last reason for skipping, so it is logged once.
    last_skip: Option<String>,
}

/// Keeps per-series history and incident state, and turns predictions into
/// open / update / resolve events (see the module docs).
#[derive(Debug)]
pub struct PredictiveScanner {
    config: PredictiveConfig,
    forecaster: Forecaster,
    series: BTreeMap<SeriesKey, SeriesState>,
    /// Latest value of each limit series, keyed by that series.
    limit_values: BTreeMap<SeriesKey, f64>,
}

impl PredictiveScanner {
    /// Validates both configs. The forecaster's horizon is raised to the
    /// predictive horizon so intervals are calibrated that far.
    pub fn new(
        config: PredictiveConfig,
        forecast: ForecastConfig,
    ) -> Result<Self, PredictiveError> {
        config
            .validate("predictive")
            .map_err(PredictiveError::Config)?;
        let forecast = ForecastConfig {
            horizon: config.horizon.max(forecast.horizon),
            ..forecast
        };
        let forecaster = Forecaster::new(forecast).map_err(PredictiveError::Forecast)?;
        Ok(Self {
            config,
            forecaster,
            series: BTreeMap::new(),
            limit_values: BTreeMap::new(),
        })
    }

    /// The config in use.
    pub fn config(&self) -> &PredictiveConfig {
        &self.config
    }

    /// True when samples of `signal` matter to the scanner (it has a limit
    /// or is a limit series); the daemon can skip the rest.
    pub fn wants(&self, signal: &str) -> bool {
        self.config.limits.contains_key(signal)
            || self
                .config
                .limits
                .values()
                .any(|l| l.series.as_deref() == Some(signal))
    }

    /// Takes new samples of one series. Limited signals are kept (the last
    /// `history`); limit series update the limit; others are ignored.
    /// Non-finite values are dropped.
    pub fn observe(&mut self, series: &SeriesKey, samples: &[Sample]) {
        let is_limit = self
            .config
            .limits
            .values()
            .any(|l| l.series.as_deref() == Some(series.signal.as_str()));
        if is_limit {
            if let Some(last) = samples
                .iter()
                .filter(|s| s.v.is_finite())
                .max_by_key(|s| s.t)
            {
                self.limit_values.insert(series.clone(), last.v);
            }
        }
        if !self.config.limits.contains_key(&series.signal) {
            return;
        }
        let state = self.series.entry(series.clone()).or_default();
        state
            .samples
            .extend(samples.iter().copied().filter(|s| s.v.is_finite()));
        state.samples.sort_by_key(|s| s.t);
        state.samples.dedup_by_key(|s| s.t);
        if let Some(last) = state.samples.last().map(|s| s.t) {
            let from = last - self.config.history.as_millis_i64();
            let cut = state.samples.partition_point(|s| s.t <= from);
            state.samples.drain(..cut);
        }
    }

    /// Marks the series of a stored open predictive incident as open (after
    /// a restart), so the scanner updates or resolves it rather than
    /// opening a second one.
    pub fn restore_open(&mut self, series: &SeriesKey) {
        if self.config.limits.contains_key(&series.signal) {
            self.series.entry(series.clone()).or_default().open = true;
        }
    }

    /// Evaluates every series due for a refit at data time `now` (never
    /// evaluated, or last evaluated `refit_every` ago) and returns what
    /// changed, in series order.
    pub fn scan(&mut self, now: TimestampMs) -> Vec<PredictiveEvent> {
        let refit = self.config.refit_every.as_millis_i64();
        let mut events = Vec::new();
        let keys: Vec<SeriesKey> = self
            .series
            .iter()
            .filter(|(_, s)| s.last_eval.is_none_or(|t| now - t >= refit))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(event) = self.evaluate(&key, now) {
                events.push(event);
            }
        }
        events
    }

    /// The limit of `key`, or why there is none yet.
    fn limit_for(&self, key: &SeriesKey) -> Result<(Limit, Unit), String> {
        let Some(cfg) = self.config.limits.get(&key.signal) else {
            return Err(format!("signal `{}` has no configured limit", key.signal));
        };
        let value = match (&cfg.value, &cfg.series) {
            (Some(v), _) => *v,
            (None, Some(signal)) => {
                let limit_key = SeriesKey {
                    signal: signal.clone(),
                    labels: key.labels.clone(),
                };
                *self
                    .limit_values
                    .get(&limit_key)
                    .ok_or_else(|| format!("no limit known yet: no sample of `{limit_key}`"))?
            }
            (None, None) => return Err("the limit has neither `value` nor `series`".into()),
        };
        let limit = if cfg.upper {
            Limit::upper(value)
        } else {
            Limit::lower(value)
        };
        Ok((limit, cfg.unit))
    }

    fn evaluate(&mut self, key: &SeriesKey, now: TimestampMs) -> Option<PredictiveEvent> {
        let horizon = self.config.horizon.0;
        let min_history = self.config.min_history;
        let outcome = self.limit_for(key).and_then(|(limit, unit)| {
            let state = self.series.get(key).ok_or("no samples")?;
            let span = match (state.samples.first(), state.samples.last()) {
                (Some(a), Some(b)) => b.t - a.t,
                _ => 0,
            };
            if span < min_history.as_millis_i64() {
                return Err(format!(
                    "not enough data: {} of history, need min_history {min_history}",
                    humantime::format_duration(Duration::from_secs((span / 1000).max(0) as u64))
                ));
            }
            predict_breach(&self.forecaster, &state.samples, limit, horizon)
                .map(|p| (p, unit))
                .map_err(|e| e.to_string())
        });
        let limit_known = self.limit_for(key).is_ok();
        let cfg = &self.config;
        let state = self.series.get_mut(key)?;
        // Without a limit yet (its series comes in a later batch), evaluate
        // again on the next scan rather than a whole `refit_every` later.
        if limit_known {
            state.last_eval = Some(now);
        }
        let (prediction, unit) = match outcome {
            Ok(x) => x,
            Err(reason) => {
                if state.last_skip.as_deref() != Some(reason.as_str()) {
                    tracing::info!(series = %key, reason = %reason, "Cannot predict a breach for this series; no predictive incident.");
                    state.last_skip = Some(reason.clone());
                }
                return Some(PredictiveEvent::Skipped {
                    series: key.clone(),
                    reason,
                });
            }
        };
        state.last_skip = None;
        let at = state.samples.last().map_or(now, |s| s.t);
        if prediction.already_breached {
            if !state.open {
                return None;
            }
            state.open = false;
            state.below = 0;
            return Some(PredictiveEvent::Resolve(PredictiveResolution {
                series: key.clone(),
                at,
                reason: format!(
                    "The limit {} has been reached; the prediction came true and a current incident takes over.",
                    unit.format(prediction.limit.value)
                ),
            }));
        }
        let holds = prediction.is_alarm(cfg.min_probability)
            || (state.open && prediction.probability >= cfg.clear_probability);
        if !holds && !state.open {
            return None;
        }
        if !holds {
            state.below += 1;
        }
        if holds || state.below < cfg.resolve_after {
            // While open, every evaluation refreshes the incident's
            // forecast, so verification and people see the latest
            // probability, also while it is falling.
            let critical = cfg.critical_within.as_millis_i64();
            let severity = match prediction.breach.and_then(|b| b.expected) {
                Some(t) if t - at <= critical => Severity::Critical,
                _ => Severity::Warning,
            };
            let clear_probability = cfg.clear_probability;
            let breach = Box::new(PredictedBreach {
                series: key.clone(),
                at,
                prediction,
                unit,
                severity,
                clear_probability,
            });
            if holds {
                state.below = 0;
            }
            return Some(if state.open {
                PredictiveEvent::Update(breach)
            } else {
                state.open = true;
                tracing::info!(series = %key, probability = breach.prediction.probability, "A breach of the limit is predicted; opening a predictive incident.");
                PredictiveEvent::Open(breach)
            });
        }
        state.open = false;
        state.below = 0;
        Some(PredictiveEvent::Resolve(PredictiveResolution {
            series: key.clone(),
            at,
            reason: format!(
                "The breach is no longer predicted: probability {:.0} % within {}, below {:.0} % for {} evaluations in a row.",
                prediction.probability * 100.0,
                approx(prediction.horizon_ms),
                cfg.clear_probability * 100.0,
                cfg.resolve_after
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::DAY_MS;

    const STEP: i64 = 300_000;
    const MIB: f64 = 1_048_576.0;
    const LIMIT: f64 = 512.0 * MIB;

    fn key() -> SeriesKey {
        SeriesKey::new(
            "memory",
            [
                ("namespace".to_string(), "shop".to_string()),
                ("service".to_string(), "cart".to_string()),
                ("pod".to_string(), "cart-1".to_string()),
            ],
        )
    }

    /// Deterministic noise in [-1, 1] (a hash of the index).
    fn noise(i: i64) -> f64 {
        let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
        (x as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// `f(t)` plus a 2 % daily swing and 1 % noise, every 5 minutes.
    fn series(from_day: f64, to_day: f64, f: impl Fn(f64) -> f64) -> Vec<Sample> {
        let (a, b) = (
            (from_day * DAY_MS as f64) as i64,
            (to_day * DAY_MS as f64) as i64,
        );
        (a / STEP..b / STEP)
            .map(|i| {
                let t = i * STEP;
                let day = t as f64 / DAY_MS as f64;
                let base = f(day);
                let swing = 0.02 * base * (2.0 * std::f64::consts::PI * day).sin();
                Sample {
                    t,
                    v: base + swing + 0.01 * base * noise(i),
                }
            })
            .collect()
    }

    fn scanner(history_days: u64, limit: LimitConfig) -> PredictiveScanner {
        let config = PredictiveConfig {
            limits: [("memory".to_string(), limit)].into(),
            history: HumanDuration(Duration::from_secs(history_days * 86_400)),
            ..PredictiveConfig::default()
        };
        PredictiveScanner::new(config, ForecastConfig::default()).expect("valid config")
    }

    fn fixed(value: f64) -> LimitConfig {
        LimitConfig {
            value: Some(value),
            series: None,
            upper: true,
            unit: Unit::Bytes,
        }
    }

    /// Feeds `samples` hour by hour and scans after each hour.
    fn poll(s: &mut PredictiveScanner, samples: &[Sample]) -> Vec<PredictiveEvent> {
        let mut events = Vec::new();
        for hour in samples.chunks(12) {
            s.observe(&key(), hour);
            events.extend(s.scan(hour[hour.len() - 1].t));
        }
        events
    }

    fn count(events: &[PredictiveEvent], f: impl Fn(&PredictiveEvent) -> bool) -> usize {
        events.iter().filter(|e| f(e)).count()
    }

    /// Half the limit at day 0, reaching it at day 8.
    fn leak(day: f64) -> f64 {
        LIMIT * (0.5 + 0.5 * day / 8.0)
    }

    #[test]
    fn a_leak_opens_one_predictive_incident_not_one_per_poll() {
        let mut s = scanner(7, fixed(LIMIT));
        let events = poll(&mut s, &series(0.0, 6.0, leak));
        let opens: Vec<&PredictedBreach> = events
            .iter()
            .filter_map(|e| match e {
                PredictiveEvent::Open(b) => Some(b.as_ref()),
                _ => None,
            })
            .collect();
        assert_eq!(opens.len(), 1, "one incident per leak");
        assert!(
            count(&events, |e| matches!(e, PredictiveEvent::Update(_))) > 5,
            "later refits update the same incident"
        );
        assert_eq!(
            count(&events, |e| matches!(e, PredictiveEvent::Resolve(_))),
            0
        );
        let open = opens[0];
        assert!(open.prediction.probability >= 0.8);
        assert!(open.at < 8 * DAY_MS, "predicted before the breach");
        let incident = open.to_incident("prod", &["namespace".into(), "service".into()], 50);
        assert_eq!(
            incident.group_key(),
            "namespace=shop,prediction=memory,service=cart"
        );
        assert_eq!(incident.signals[0].samples.len(), 50);
        assert_eq!(
            incident.signals[0].samples.last().map(|x| x.t),
            Some(open.at)
        );
        let entry = &incident.timeline[0];
        assert_eq!(entry.kind, "predicted");
        assert!(
            entry
                .message
                .starts_with("memory of cart (shop) reaches its 512 MiB limit in ~"),
            "{}",
            entry.message
        );
        assert!(entry.message.contains("(p=") && entry.message.contains("Model:"));
    }

    #[test]
    fn a_flat_series_near_its_limit_opens_nothing() {
        let mut s = scanner(7, fixed(LIMIT));
        let events = poll(&mut s, &series(0.0, 7.0, |_| 0.88 * LIMIT));
        assert_eq!(
            count(&events, |e| matches!(e, PredictiveEvent::Open(_))),
            0,
            "{events:?}"
        );
    }

    #[test]
    fn a_prediction_that_goes_away_resolves_the_incident() {
        let mut s = scanner(2, fixed(LIMIT));
        let mut events = poll(&mut s, &series(0.0, 2.5, leak));
        assert_eq!(count(&events, |e| matches!(e, PredictiveEvent::Open(_))), 1);
        // The leak is fixed: memory back to 40 % and flat for three days.
        events = poll(&mut s, &series(2.5, 5.5, |_| 0.4 * LIMIT));
        let resolutions: Vec<&PredictiveResolution> = events
            .iter()
            .filter_map(|e| match e {
                PredictiveEvent::Resolve(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(resolutions.len(), 1, "{events:?}");
        assert!(resolutions[0].reason.contains("no longer predicted"));
        assert_eq!(count(&events, |e| matches!(e, PredictiveEvent::Open(_))), 0);
        let open = PredictedBreach {
            series: key(),
            at: 0,
            prediction: predict_breach(
                &Forecaster::new(ForecastConfig::default()).expect("valid"),
                &series(0.0, 2.0, leak),
                Limit::upper(LIMIT),
                Duration::from_secs(7 * 86_400),
            )
            .expect("prediction"),
            unit: Unit::Bytes,
            severity: Severity::Warning,
            clear_probability: 0.5,
        };
        let mut incident = open.to_incident("prod", &[], 10);
        resolutions[0].apply(&mut incident);
        assert_eq!(incident.state, IncidentState::Resolved);
        assert_eq!(
            incident.timeline.last().map(|e| e.kind.as_str()),
            Some("resolved")
        );
    }

    #[test]
    fn bad_input_opens_nothing_and_says_why() {
        // Too little history.
        let mut s = scanner(7, fixed(LIMIT));
        let short = series(0.0, 0.05, leak);
        assert!(short.len() < 48);
        let events = poll(&mut s, &short);
        assert!(!events.is_empty());
        for e in &events {
            match e {
                PredictiveEvent::Skipped { reason, .. } => {
                    assert!(reason.starts_with("not enough data"), "{reason}")
                }
                other => panic!("expected only skips, got {other:?}"),
            }
        }
        // A constant series (a fixed heap).
        let mut s = scanner(7, fixed(LIMIT));
        let flat: Vec<Sample> = (0..600)
            .map(|i| Sample {
                t: i * STEP,
                v: 100.0 * MIB,
            })
            .collect();
        let events = poll(&mut s, &flat);
        let reasons: Vec<&str> = events
            .iter()
            .map(|e| match e {
                PredictiveEvent::Skipped { reason, .. } => reason.as_str(),
                other => panic!("expected only skips, got {other:?}"),
            })
            .collect();
        assert!(reasons.iter().all(|r| r.starts_with("not enough data")
            || r.starts_with("constant series: every usable sample is 104857600")));
        assert!(reasons
            .last()
            .is_some_and(|r| r.starts_with("constant series")));
        // A limit series that never arrived.
        let mut s = scanner(
            7,
            LimitConfig {
                value: None,
                series: Some("memory_limit".into()),
                upper: true,
                unit: Unit::Bytes,
            },
        );
        let events = poll(&mut s, &series(0.0, 1.0, leak));
        assert!(events.iter().all(|e| matches!(e,
            PredictiveEvent::Skipped { reason, .. } if reason.starts_with("no limit known yet"))));
        // Once the limit series has a sample with the same labels, the leak opens.
        let limit_key = SeriesKey {
            signal: "memory_limit".into(),
            labels: key().labels,
        };
        assert!(s.wants("memory_limit") && s.wants("memory") && !s.wants("cpu"));
        s.observe(
            &limit_key,
            &[Sample {
                t: DAY_MS,
                v: LIMIT,
            }],
        );
        let events = poll(&mut s, &series(1.0, 6.0, leak));
        assert_eq!(count(&events, |e| matches!(e, PredictiveEvent::Open(_))), 1);
    }

    #[test]
    fn config_errors_name_the_field() {
        let config = PredictiveConfig {
            min_probability: 0.5,
            clear_probability: 0.6,
            limits: [(
                "memory".to_string(),
                LimitConfig {
                    value: Some(1.0),
                    series: Some("x".into()),
                    upper: true,
                    unit: Unit::None,
                },
            )]
            .into(),
            ..PredictiveConfig::default()
        };
        let paths: Vec<String> = config
            .validate("predictive")
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            vec!["predictive.clear_probability", "predictive.limits.memory"]
        );
    }

    #[test]
    fn units_and_durations_read_naturally() {
        assert_eq!(Unit::Bytes.format(LIMIT), "512 MiB");
        assert_eq!(Unit::Bytes.format(1.5 * 1024.0 * MIB), "1.5 GiB");
        assert_eq!(Unit::Ratio.format(0.99), "99.0 %");
        assert_eq!(approx(6 * 3_600_000 + 600_000), "6 h");
        assert_eq!(approx(40 * 60_000), "40 min");
        assert_eq!(approx(3 * DAY_MS), "3 d");
    }
}
