//! Forecasting: seasonal forecasts with prediction intervals,
//! time-to-breach for signals with a limit, trends and capacity plans
//! (docs/FORECAST.md).
//!
//! Start at [`Forecaster::fit`]: it resamples a series to a regular step
//! ([`prepare`]), chooses a model (daily / weekly seasonality, flat or
//! linear trend) by its error on the last fifth of the history, refits it
//! at several earlier origins to measure its own out-of-sample errors at
//! each horizon, and returns a [`FittedModel`] whose
//! [`FittedModel::forecast`] gives point forecasts with 80 % and 95 %
//! intervals taken from those errors. Everything else builds on it:
//!
//! - [`predict_breach`]: probability and time of crossing a limit
//!   ([`Prediction`], with the chart data a predictive incident needs);
//! - [`analyze_trend`]: week-over-week, month-over-month, growth and change
//!   points ([`TrendReport`]); [`service_trends`] for a service's CPU,
//!   memory and request rate ([`ServiceTrends`]);
//! - [`plan_capacity`]: peaks per day, replicas and requests needed, the
//!   date today's capacity runs out ([`CapacityPlan`]);
//! - [`backtest_corpus`] and the synthetic corpora in [`quality`]: the
//!   measured accuracy and interval coverage.
//!
//! Everything here is pure and synchronous: series in, numbers out. The
//! daemon, the CLI and the API fetch the series and call these functions.
//! Bad input gets a typed [`ForecastError`] ("not enough data", "constant",
//! "gap too long"), never a made-up number.

mod breach;
mod capacity;
pub mod fetch;
mod model;
pub mod open_predictions;
pub mod predictive;
mod prepare;
pub mod quality;
pub mod service;
pub mod stage;
mod trend;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::HumanDuration;
use crate::signal::TimestampMs;

pub use breach::{
    predict_breach, predict_breach_with_model, BreachTime, ChartData, Limit, Prediction,
};
pub use capacity::{
    plan_capacity, CapacityInput, CapacityPlan, CapacitySeries, Confidence, ConfidenceLevel,
    DayPeak, Hpa, PodResources, Recommendation, ResourcePlan, RunOut,
};
pub use model::{
    CandidateScore, FitQuality, FittedModel, Forecast, ForecastPoint, Forecaster, ModelSummary,
    Seasonality, TrendKind,
};
pub use prepare::{prepare, Prepared};
pub use quality::{backtest_corpus, ForecastScore, SeriesScore};
pub use quality::{leak_backtest, LeakResult, LeakScore};
pub use trend::{
    analyze_trend, service_trends, Change, ChangeKind, ChangePoint, Growth, ResourceTrend,
    ServiceTrends, TrendReport,
};

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// One week in milliseconds.
pub const WEEK_MS: i64 = 7 * DAY_MS;
/// The longest horizon a forecast may have (issue 11: hours to 30 days).
pub const MAX_HORIZON_MS: i64 = 30 * DAY_MS;

/// Why a series could not be forecast. Each variant says what was wrong
/// with the input in numbers, so the caller can show it as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    /// Too few usable samples (after dropping NaN/Inf and history before a
    /// long gap) to fit and calibrate a model.
    #[error("not enough data: {have} usable points at a {step_ms} ms step, need at least {need}")]
    NotEnoughData {
        /// Usable points.
        have: usize,
        /// Points needed.
        need: usize,
        /// The step the series was resampled to (0 when unknown).
        step_ms: i64,
    },
    /// Every usable sample has the same value: there is no variation to
    /// model and no honest interval to give.
    #[error("constant series: every usable sample is {value}; nothing to forecast")]
    Constant {
        /// The value.
        value: f64,
    },
    /// A gap longer than `max_gap` leaves too little history after it.
    #[error(
        "gap too long: no data from {from} to {to} ({gap_ms} ms > max_gap {max_gap_ms} ms), \
         and only {remaining} points after it"
    )]
    LongGap {
        /// Last sample before the gap.
        from: TimestampMs,
        /// First sample after the gap.
        to: TimestampMs,
        /// Length of the gap.
        gap_ms: i64,
        /// The configured maximum.
        max_gap_ms: i64,
        /// Points left after the gap.
        remaining: usize,
    },
    /// A configuration value or argument is out of range.
    #[error("invalid forecast setting `{field}`: {message}")]
    Invalid {
        /// The field or argument.
        field: &'static str,
        /// What is wrong, with the value.
        message: String,
    },
}

/// Tunables of the forecaster; a section of the daemon's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastConfig {
    /// Longest horizon the model is calibrated for (intervals are measured
    /// up to here, or as far as the history allows, and extrapolated
    /// beyond).
    ///
    /// Default `7d`; at most `30d`.
    #[serde(default = "d_horizon")]
    pub horizon: HumanDuration,
    /// Resampling step. Unset: the median spacing of the samples, coarsened
    /// so the history fits in `max_points`.
    #[serde(default)]
    pub step: Option<HumanDuration>,
    /// Most points kept after resampling; a longer history is resampled to
    /// a coarser step (averages), not truncated. Bounds fit time and memory.
    ///
    /// Default `10080` (7 days at 1 minute, 35 days at 5 minutes).
    #[serde(default = "d_max_points")]
    pub max_points: usize,
    /// Fewest usable points for a forecast. Default `48`; at least `24`.
    #[serde(default = "d_min_points")]
    pub min_points: usize,
    /// Longest gap bridged by interpolation. Points inside a bridged gap are
    /// interpolated for continuity but never used to fit or to measure
    /// errors; history before a longer gap is dropped (and said so in the
    /// model summary).
    ///
    /// Default `2d`: a night or a day without data is part of many series'
    /// lives (a sensor or a batch service idle at night, on a holiday) and
    /// the history on both sides is the same series — dropping it at every
    /// nightly hole left NAB's TravelTime_387 with less than a day to
    /// learn from. A longer silence is more likely a different workload.
    #[serde(default = "d_max_gap")]
    pub max_gap: HumanDuration,
}

fn d_horizon() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 86_400))
}
fn d_max_points() -> usize {
    10_080
}
fn d_min_points() -> usize {
    48
}
fn d_max_gap() -> HumanDuration {
    HumanDuration(Duration::from_secs(2 * 86_400))
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            horizon: d_horizon(),
            step: None,
            max_points: d_max_points(),
            min_points: d_min_points(),
            max_gap: d_max_gap(),
        }
    }
}

impl ForecastConfig {
    /// The default config with another horizon.
    pub fn with_horizon(horizon: Duration) -> Self {
        Self {
            horizon: HumanDuration(horizon),
            ..Self::default()
        }
    }

    /// Checks the ranges; the error names the field and the value.
    pub fn validate(&self) -> Result<(), ForecastError> {
        let h = self.horizon.as_millis_i64();
        if h <= 0 || h > MAX_HORIZON_MS {
            return Err(ForecastError::Invalid {
                field: "horizon",
                message: format!("must be in (0, 30d], got {}", self.horizon),
            });
        }
        if let Some(step) = self.step {
            let s = step.as_millis_i64();
            if s <= 0 || s > DAY_MS {
                return Err(ForecastError::Invalid {
                    field: "step",
                    message: format!("must be in (0, 1d], got {step}"),
                });
            }
        }
        if self.min_points < 24 {
            return Err(ForecastError::Invalid {
                field: "min_points",
                message: format!("must be at least 24, got {}", self.min_points),
            });
        }
        if self.max_points < 2 * self.min_points {
            return Err(ForecastError::Invalid {
                field: "max_points",
                message: format!(
                    "must be at least twice min_points ({}), got {}",
                    self.min_points, self.max_points
                ),
            });
        }
        if self.max_gap.as_millis_i64() <= 0 {
            return Err(ForecastError::Invalid {
                field: "max_gap",
                message: format!("must be positive, got {}", self.max_gap),
            });
        }
        Ok(())
    }
}
