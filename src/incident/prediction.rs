//! What a *predictive* incident carries besides ordinary evidence: the
//! forecast that opened it, as numbers a person (and a chart) can check.
//!
//! Why a record of its own rather than `forecast::Prediction`: an incident
//! is stored as JSON and must load back in every later version, so it
//! keeps a small, stable, owned shape; the forecaster's types may change
//! with its models. `forecast::predictive` fills it.

use serde::{Deserialize, Serialize};

use crate::signal::{Sample, TimestampMs};

/// The forecast behind a predictive incident, as of its latest evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    /// The signal predicted to breach (e.g. `memory_working_set_bytes`).
    pub signal: String,
    /// The limit it is predicted to reach.
    pub limit: f64,
    /// `true`: breached at or above the limit; `false`: at or below.
    pub upper: bool,
    /// The limit and values as a person reads them (`1 GiB`), formatted
    /// with the signal's unit.
    pub limit_text: String,
    /// Probability of reaching the limit within the horizon, in [0, 1].
    pub probability: f64,
    /// How far ahead the forecast looks.
    pub horizon_ms: i64,
    /// Data time the forecast was made (last sample used).
    pub at: TimestampMs,
    /// Where the point forecast crosses the limit; `None` when only the
    /// pessimistic side of the band does within the horizon.
    pub expected_breach_at: Option<TimestampMs>,
    /// Before this the breach is unlikely (≈10 %).
    pub earliest_breach_at: Option<TimestampMs>,
    /// After this it is likely (≈90 %); `None`: possibly beyond the horizon.
    pub latest_breach_at: Option<TimestampMs>,
    /// Model chosen and its out-of-sample fit, in one line.
    pub model: String,
    /// The reasoning, step by step, in sentences.
    pub reasoning: String,
    /// Chart: the recent history the model saw (thinned).
    pub history: Vec<Sample>,
    /// Chart: the forecast with its 80 % and 95 % bands.
    pub forecast: Vec<ForecastBand>,
    /// Evaluations so far (1 at opening); each refit updates this record.
    #[serde(default)]
    pub evaluations: u32,
    /// Below this probability the breach no longer holds; the incident
    /// resolves after a few evaluations below it.
    #[serde(default)]
    pub clear_probability: f64,
}

impl PredictionRecord {
    /// True when the latest evaluation no longer predicts the breach.
    pub fn cleared(&self) -> bool {
        self.probability < self.clear_probability
    }
}

/// One forecast point with its prediction intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastBand {
    /// Data time.
    pub t: TimestampMs,
    /// Point forecast.
    pub mean: f64,
    /// 80 % interval.
    pub lo80: f64,
    /// 80 % interval.
    pub hi80: f64,
    /// 95 % interval.
    pub lo95: f64,
    /// 95 % interval.
    pub hi95: f64,
}
