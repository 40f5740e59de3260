//! Time-to-breach: when will a series cross its limit, and how sure is
//! that?
//!
//! Why the probability is the *largest per-step* probability of being past
//! the limit, and not the chance that any single sample crosses: the
//! forecast errors at neighbouring steps are strongly correlated (a level
//! or slope error persists), so the per-step maximum is what a sustained
//! breach — a leak reaching the memory limit, a disk filling — looks like,
//! while a noisy series hovering near its limit has a small probability at
//! every step and does not alarm. It is a lower bound on the chance of
//! touching the limit at least once; docs/FORECAST.md says so too.
//!
//! The breach time comes from the quantile paths: the step where the point
//! forecast crosses is the expected time; where the 90 % quantile (upper
//! edge of the 80 % band) crosses is the earliest plausible time, where the
//! 10 % quantile crosses the latest — together an 80 % interval.
//!
//! Probabilities and these paths use the measured error spread *around the
//! point forecast* (the error quantiles minus their median), so "expected"
//! and "probability ≥ 50 %" always agree. Errors measured while the series
//! was changing (the start of a leak, before the slope was learnt) are
//! biased; adding that bias to a forecast that has since caught up made
//! the corpus alarm a day or two early with no expected time at all.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{horizon_steps, FittedModel, ForecastPoint, Forecaster, ModelSummary};
use super::{ForecastError, MAX_HORIZON_MS};
use crate::signal::{format_ts, Sample, TimestampMs};

/// Most points of history and of forecast kept for a chart.
const CHART_POINTS: usize = 720;

/// A limit a series must stay on one side of.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// The limit value (e.g. the container memory limit in bytes).
    pub value: f64,
    /// True when values at or above `value` breach it (memory, disk, queue
    /// depth); false when values at or below do (free space, certificate
    /// days left).
    pub upper: bool,
}

impl Limit {
    /// A ceiling: breached at or above `value`.
    pub fn upper(value: f64) -> Self {
        Self { value, upper: true }
    }

    /// A floor: breached at or below `value`.
    pub fn lower(value: f64) -> Self {
        Self {
            value,
            upper: false,
        }
    }

    fn breached_by(&self, x: f64) -> bool {
        if self.upper {
            x >= self.value
        } else {
            x <= self.value
        }
    }
}

/// When the breach is expected, with an 80 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BreachTime {
    /// Where the point forecast crosses; `None` if it does not within the
    /// horizon (only the pessimistic side of the band does).
    pub expected: Option<TimestampMs>,
    /// Where the pessimistic edge of the 80 % band crosses (the 90 %
    /// quantile for a ceiling): the breach is unlikely (≈10 %) before it.
    pub earliest: TimestampMs,
    /// Where the optimistic edge crosses; `None`: possibly after the
    /// horizon.
    pub latest: Option<TimestampMs>,
}

/// What a chart of the prediction needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartData {
    /// The last stretch of history (as long as the horizon, thinned to at
    /// most 720 points).
    pub history: Vec<Sample>,
    /// The forecast with its bands (thinned to at most 720 points).
    pub forecast: Vec<ForecastPoint>,
    /// The limit line.
    pub limit: f64,
}

/// A failure prediction for one series: the material of a predictive
/// incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The limit checked.
    pub limit: Limit,
    /// How far ahead it was checked.
    pub horizon_ms: i64,
    /// Largest probability, over the steps of the horizon, that the
    /// series is past the limit at that step (see the module docs).
    pub probability: f64,
    /// Step with that probability (first one, if tied).
    pub most_likely_at: Option<TimestampMs>,
    /// True when the last observed sample is already past the limit: a
    /// current problem, not a prediction.
    pub already_breached: bool,
    /// Set when the pessimistic edge of the 80 % band crosses within the
    /// horizon.
    pub breach: Option<BreachTime>,
    /// One paragraph a person can check: what, when, how sure, from which
    /// model.
    pub reasoning: String,
    /// The model behind the numbers.
    pub model: ModelSummary,
    /// History tail, forecast, bands and limit.
    pub chart: ChartData,
}

impl Prediction {
    /// Should this open a predictive incident at `min_probability` (e.g.
    /// 0.8)? Not when the limit is already breached: that is an ordinary
    /// incident.
    pub fn is_alarm(&self, min_probability: f64) -> bool {
        !self.already_breached && self.probability >= min_probability
    }
}

/// Fits `history` and predicts a breach of `limit` within `horizon`.
pub fn predict_breach(
    forecaster: &Forecaster,
    history: &[Sample],
    limit: Limit,
    horizon: Duration,
) -> Result<Prediction, ForecastError> {
    let model = forecaster.fit(history)?;
    predict_breach_with_model(&model, history, limit, horizon)
}

/// Like [`predict_breach`], with a model already fitted to `history`.
pub fn predict_breach_with_model(
    model: &FittedModel,
    history: &[Sample],
    limit: Limit,
    horizon: Duration,
) -> Result<Prediction, ForecastError> {
    if !limit.value.is_finite() {
        return Err(ForecastError::Invalid {
            field: "limit.value",
            message: format!("must be finite, got {}", limit.value),
        });
    }
    let horizon_ms = i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX);
    if horizon_ms <= 0 || horizon_ms > MAX_HORIZON_MS {
        return Err(ForecastError::Invalid {
            field: "horizon",
            message: format!("must be in (0, 30d], got {horizon_ms} ms"),
        });
    }
    let steps = horizon_steps(horizon_ms, model.step_ms());
    let mut probability: f64 = 0.0;
    let mut most_likely_at = None;
    let (mut expected, mut earliest, mut latest) = (None, None, None);
    let mut points = Vec::with_capacity(steps);
    for h in 1..=steps {
        let pt = model.point(h);
        let q = model.centred_quantiles(h);
        let mean = model.mean_at(h);
        let (lo80, hi80) = (mean + q[2], mean + q[10]);
        let p_above = model.prob_above(h, limit.value);
        let p = if limit.upper { p_above } else { 1.0 - p_above };
        if p > probability + 1e-12 {
            probability = p;
            most_likely_at = Some(pt.t);
        }
        let (pessimistic, optimistic) = if limit.upper {
            (hi80, lo80)
        } else {
            (lo80, hi80)
        };
        if expected.is_none() && limit.breached_by(pt.mean) {
            expected = Some(pt.t);
        }
        if earliest.is_none() && limit.breached_by(pessimistic) {
            earliest = Some(pt.t);
        }
        if latest.is_none() && limit.breached_by(optimistic) {
            latest = Some(pt.t);
        }
        points.push(pt);
    }
    let probability = probability.clamp(0.0, 1.0);
    let last_observed = history
        .iter()
        .filter(|s| s.v.is_finite())
        .max_by_key(|s| s.t)
        .copied();
    let already_breached = last_observed.is_some_and(|s| limit.breached_by(s.v));
    let breach = earliest.map(|earliest| BreachTime {
        expected,
        earliest,
        latest,
    });
    let summary = model.summary().clone();
    let reasoning = reasoning(
        &limit,
        horizon,
        probability,
        already_breached,
        &breach,
        &summary,
    );
    let from = model.last_time() - horizon_ms;
    let mut tail: Vec<Sample> = history
        .iter()
        .copied()
        .filter(|s| s.v.is_finite() && s.t > from)
        .collect();
    tail.sort_by_key(|s| s.t);
    Ok(Prediction {
        limit,
        horizon_ms,
        probability,
        most_likely_at,
        already_breached,
        breach,
        reasoning,
        model: summary,
        chart: ChartData {
            history: thin(&tail, CHART_POINTS),
            forecast: thin(&points, CHART_POINTS),
            limit: limit.value,
        },
    })
}

/// Every k-th element so at most `max` remain, always keeping the last.
fn thin<T: Copy>(v: &[T], max: usize) -> Vec<T> {
    if v.len() <= max {
        return v.to_vec();
    }
    let k = v.len().div_ceil(max);
    let mut out: Vec<T> = v.iter().rev().step_by(k).copied().collect();
    out.reverse();
    out
}

fn reasoning(
    limit: &Limit,
    horizon: Duration,
    probability: f64,
    already: bool,
    breach: &Option<BreachTime>,
    m: &ModelSummary,
) -> String {
    let side = if limit.upper { "reach" } else { "fall to" };
    let h = humantime::format_duration(Duration::from_secs(horizon.as_secs()));
    let mut s = if already {
        format!(
            "The last sample is already past the limit {}; this is a current breach, not a prediction. ",
            limit.value
        )
    } else {
        String::new()
    };
    match breach {
        Some(b) => {
            let expected = b.expected.map_or_else(
                || "not within the horizon at the point forecast".to_string(),
                format_ts,
            );
            let latest = b
                .latest
                .map_or_else(|| "after the horizon".to_string(), format_ts);
            s.push_str(&format!(
                "The series is forecast to {side} its limit {} at {expected} \
                 (80 % interval {} to {latest}); probability of being past it within {h}: {:.0} %. ",
                limit.value,
                format_ts(b.earliest),
                probability * 100.0
            ));
        }
        None => s.push_str(&format!(
            "No breach of the limit {} expected within {h}: even the pessimistic edge of the \
             80 % band stays on the safe side (largest probability of being past it: {:.1} %). ",
            limit.value,
            probability * 100.0
        )),
    }
    s.push_str(&format!(
        "Model: {:?} seasonality, {:?} trend ({:+.4} per day), level {:.4} at {}; \
         validation MAE {:.4} ({:.2}× the seasonal-naive forecast) on {} points; \
         intervals measured up to {} ahead, extrapolated beyond.",
        m.seasonality,
        m.trend,
        m.slope_per_day,
        m.level,
        format_ts(m.last_time),
        m.fit.mae,
        m.fit.relative_mae,
        m.fit.validation_points,
        humantime::format_duration(Duration::from_millis(
            u64::try_from(m.calibrated_horizon_ms).unwrap_or(0)
        )),
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_keeps_the_last_point_and_bounds_the_length() {
        let v: Vec<u32> = (0..1000).collect();
        let t = thin(&v, 100);
        assert!(t.len() <= 100);
        assert_eq!(t.last(), Some(&999));
        assert_eq!(thin(&v[..10], 100).len(), 10);
    }

    #[test]
    fn limits_breach_on_their_side() {
        assert!(Limit::upper(10.0).breached_by(10.0));
        assert!(!Limit::upper(10.0).breached_by(9.9));
        assert!(Limit::lower(10.0).breached_by(3.0));
        assert!(!Limit::lower(10.0).breached_by(11.0));
    }
}
