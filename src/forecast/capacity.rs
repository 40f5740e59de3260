//! Capacity planning: from a service's CPU, memory and request-rate
//! series, the forecast peak per day, the replicas and requests needed to
//! stay under a target utilisation at that peak, and when today's capacity
//! runs out.
//!
//! Why the 90 % quantile drives the sizing: a plan sized on the point
//! forecast is short half of the time at the peak. The upper edge of the
//! 80 % band (the forecast's own measured error, see [`super::model`]) is
//! the usual "P90" planning number; both figures are shown, and every
//! division is written out in [`CapacityPlan::arithmetic`] so a reviewer
//! can redo it.
//!
//! Conventions: `cpu_cores`, `memory_bytes` and `requests_per_second` are
//! **totals for the service** (sums over its pods, e.g.
//! `sum(rate(container_cpu_usage_seconds_total[5m]))`); requests and limits
//! in [`PodResources`] are **per pod**; utilisation is usage / requests.
//! Days are 24-hour windows starting at the first forecast step.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::breach::{predict_breach_with_model, Limit};
use super::model::{FittedModel, Forecaster, ModelSummary};
use super::trend::{service_trends, ServiceTrends};
use super::{ForecastConfig, ForecastError, DAY_MS};
use crate::config::HumanDuration;
use crate::signal::{format_ts, Sample, TimestampMs};

/// Requests and limits of one pod of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodResources {
    /// CPU request per pod, cores (> 0).
    pub cpu_request_cores: f64,
    /// CPU limit per pod, cores, if set.
    #[serde(default)]
    pub cpu_limit_cores: Option<f64>,
    /// Memory request per pod, bytes (> 0).
    pub memory_request_bytes: f64,
    /// Memory limit per pod, bytes, if set.
    #[serde(default)]
    pub memory_limit_bytes: Option<f64>,
}

/// The service's HorizontalPodAutoscaler bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hpa {
    /// `minReplicas` (≥ 1).
    pub min_replicas: u32,
    /// `maxReplicas` (≥ `min_replicas`).
    pub max_replicas: u32,
}

/// What the plan is for, besides the series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityInput {
    /// Service name, for the report.
    pub service: String,
    /// Days to plan for, 1..=30.
    pub days: u32,
    /// Replicas running now (≥ 1).
    pub replicas: u32,
    /// Requests and limits per pod.
    pub pod: PodResources,
    /// HPA bounds, when the service has an HPA.
    #[serde(default)]
    pub hpa: Option<Hpa>,
    /// Utilisation of requests to stay under at the peak, in (0, 1]
    /// (e.g. 0.7).
    pub target_utilisation: f64,
}

impl CapacityInput {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), ForecastError> {
        let bad =
            |field: &'static str, message: String| Err(ForecastError::Invalid { field, message });
        if !(1..=30).contains(&self.days) {
            return bad("days", format!("must be 1..=30, got {}", self.days));
        }
        if self.replicas == 0 {
            return bad("replicas", "must be at least 1, got 0".into());
        }
        if !(self.pod.cpu_request_cores.is_finite() && self.pod.cpu_request_cores > 0.0) {
            return bad(
                "pod.cpu_request_cores",
                format!("must be > 0, got {}", self.pod.cpu_request_cores),
            );
        }
        if !(self.pod.memory_request_bytes.is_finite() && self.pod.memory_request_bytes > 0.0) {
            return bad(
                "pod.memory_request_bytes",
                format!("must be > 0, got {}", self.pod.memory_request_bytes),
            );
        }
        if !(self.target_utilisation > 0.0 && self.target_utilisation <= 1.0) {
            return bad(
                "target_utilisation",
                format!("must be in (0, 1], got {}", self.target_utilisation),
            );
        }
        if let Some(h) = self.hpa {
            if h.min_replicas == 0 || h.max_replicas < h.min_replicas {
                return bad(
                    "hpa",
                    format!(
                        "need 1 <= min_replicas <= max_replicas, got {}..{}",
                        h.min_replicas, h.max_replicas
                    ),
                );
            }
        }
        Ok(())
    }

    /// Replicas the service can have today: the HPA maximum, or the
    /// current count without an HPA.
    fn replicas_today(&self) -> u32 {
        self.hpa.map_or(self.replicas, |h| h.max_replicas)
    }
}

/// The series of one service (totals over its pods).
#[derive(Debug, Clone, Copy)]
pub struct CapacitySeries<'a> {
    /// CPU used, cores.
    pub cpu_cores: &'a [Sample],
    /// Memory used (working set), bytes.
    pub memory_bytes: &'a [Sample],
    /// Request rate, requests per second, if known.
    pub requests_per_second: Option<&'a [Sample]>,
}

/// Forecast peaks of one 24-hour window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayPeak {
    /// Start of the window.
    pub from: TimestampMs,
    /// CPU: largest point forecast, cores.
    pub cpu_peak: Option<f64>,
    /// CPU: largest 90 % quantile, cores.
    pub cpu_p90: Option<f64>,
    /// Memory: largest point forecast, bytes.
    pub memory_peak: Option<f64>,
    /// Memory: largest 90 % quantile, bytes.
    pub memory_p90: Option<f64>,
    /// Request rate: largest point forecast.
    pub rps_peak: Option<f64>,
    /// Replicas needed that day to keep CPU and memory under target at
    /// their P90 peaks (before HPA bounds).
    pub replicas_needed: u32,
}

/// The plan for one resource (CPU or memory).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourcePlan {
    /// `cpu` or `memory`.
    pub resource: String,
    /// `cores` or `bytes`.
    pub unit: String,
    /// Largest observed value over the last 7 days of history.
    pub observed_peak: Option<f64>,
    /// Largest point forecast over the planned days.
    pub forecast_peak: Option<f64>,
    /// Largest 90 % quantile over the planned days.
    pub forecast_p90: Option<f64>,
    /// Request per pod.
    pub request_per_pod: f64,
    /// Today's capacity at target: replicas today × request × target.
    pub capacity_at_target: f64,
    /// Replicas needed at the P90 peak: ⌈P90 ÷ (request × target)⌉.
    pub replicas_needed: Option<u32>,
    /// Request per pod needed at the current replica count:
    /// P90 ÷ (replicas × target).
    pub request_needed_per_pod: Option<f64>,
    /// Why this resource has no forecast, when it has none.
    pub error: Option<String>,
    /// The model behind the forecast.
    pub model: Option<ModelSummary>,
}

/// When today's capacity (at target) is first exceeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOut {
    /// The resource that runs out first.
    pub resource: String,
    /// When the point forecast first exceeds the capacity.
    pub expected: Option<TimestampMs>,
    /// When the 90 % quantile first exceeds it.
    pub earliest: TimestampMs,
    /// Largest per-step probability of being above it within the planned
    /// days.
    pub probability: f64,
}

/// How far to trust the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceLevel {
    /// Two weeks or more of history, small errors, narrow bands.
    High,
    /// Usable with care.
    Medium,
    /// Short or noisy history: a rough guide only.
    Low,
}

/// Confidence with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confidence {
    /// The level.
    pub level: ConfidenceLevel,
    /// Why, in sentences with numbers.
    pub reasons: Vec<String>,
}

/// What to change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Replicas needed at the P90 peak over the planned days, within the
    /// HPA minimum.
    pub replicas: u32,
    /// CPU request per pod needed at the current replica count.
    pub cpu_request_cores: Option<f64>,
    /// Memory request per pod needed at the current replica count.
    pub memory_request_bytes: Option<f64>,
    /// Set when the HPA maximum is below `replicas`: raise it to this.
    pub raise_hpa_max_to: Option<u32>,
    /// One-sentence summary.
    pub summary: String,
}

/// A capacity plan for one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityPlan {
    /// Service.
    pub service: String,
    /// Last data time of the series (the plan's "now").
    pub as_of: TimestampMs,
    /// What it was planned with.
    pub input: CapacityInput,
    /// Peaks per 24-hour window.
    pub daily: Vec<DayPeak>,
    /// CPU plan.
    pub cpu: ResourcePlan,
    /// Memory plan.
    pub memory: ResourcePlan,
    /// Largest forecast request rate over the planned days, if known.
    pub rps_peak: Option<f64>,
    /// What to change.
    pub recommendation: Recommendation,
    /// When today's capacity runs out within the planned days, if it does.
    pub runs_out: Option<RunOut>,
    /// How far to trust it.
    pub confidence: Confidence,
    /// Every computation, written out.
    pub arithmetic: Vec<String>,
    /// Week-over-week, month-over-month, growth and change points of the
    /// same series (the "Trends" section of the Markdown).
    pub trends: ServiceTrends,
}

struct Fitted {
    model: Option<FittedModel>,
    constant: Option<f64>,
    error: Option<String>,
}

fn fit_resource(f: &Forecaster, s: &[Sample]) -> Fitted {
    match f.fit(s) {
        Ok(m) => Fitted {
            model: Some(m),
            constant: None,
            error: None,
        },
        // A constant series is a fine capacity input (a fixed heap): its
        // peak is its value, with no uncertainty to speak of.
        Err(ForecastError::Constant { value }) => Fitted {
            model: None,
            constant: Some(value),
            error: None,
        },
        Err(e) => Fitted {
            model: None,
            constant: None,
            error: Some(e.to_string()),
        },
    }
}

/// (peak, p90) per day window, for `days` windows after `start`.
fn day_peaks(fit: &Fitted, start: TimestampMs, days: u32, step_ms: i64) -> Vec<Option<(f64, f64)>> {
    (0..days)
        .map(|d| {
            if let Some(v) = fit.constant {
                return Some((v, v));
            }
            let m = fit.model.as_ref()?;
            let from = start + i64::from(d) * DAY_MS;
            let to = from + DAY_MS;
            let mut peak = f64::NEG_INFINITY;
            let mut p90 = f64::NEG_INFINITY;
            let h0 = usize::try_from((from - m.last_time()) / step_ms)
                .unwrap_or(0)
                .max(1);
            let h1 = usize::try_from((to - m.last_time()) / step_ms).unwrap_or(0);
            for h in h0..=h1.max(h0) {
                let pt = m.point(h);
                if pt.t >= to {
                    break;
                }
                peak = peak.max(pt.mean);
                p90 = p90.max(pt.hi80);
            }
            peak.is_finite().then_some((peak, p90))
        })
        .collect()
}

/// Plans capacity for `input.days` days from the series (see the module
/// docs for units). Errors only when the input is invalid or neither CPU
/// nor memory can be forecast; a resource that cannot be forecast is
/// reported with its reason.
pub fn plan_capacity(
    series: &CapacitySeries<'_>,
    input: &CapacityInput,
    cfg: &ForecastConfig,
) -> Result<CapacityPlan, ForecastError> {
    input.validate()?;
    let mut cfg = cfg.clone();
    cfg.horizon = HumanDuration(Duration::from_secs(u64::from(input.days) * 86_400));
    let f = Forecaster::new(cfg)?;
    let cpu = fit_resource(&f, series.cpu_cores);
    let mem = fit_resource(&f, series.memory_bytes);
    let rps = series.requests_per_second.map(|s| fit_resource(&f, s));
    if cpu.model.is_none()
        && cpu.constant.is_none()
        && mem.model.is_none()
        && mem.constant.is_none()
    {
        // Neither can be planned: return the CPU reason, typed.
        return Err(f
            .fit(series.cpu_cores)
            .err()
            .unwrap_or(ForecastError::NotEnoughData {
                have: 0,
                need: f.config().min_points,
                step_ms: 0,
            }));
    }
    let last = |s: &[Sample]| s.iter().filter(|x| x.v.is_finite()).map(|x| x.t).max();
    let as_of = [last(series.cpu_cores), last(series.memory_bytes)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
    let step_of = |fit: &Fitted| fit.model.as_ref().map(FittedModel::step_ms);
    let step = step_of(&cpu).or(step_of(&mem)).unwrap_or(300_000);
    let start = as_of + step;
    let cpu_days = day_peaks(&cpu, start, input.days, step);
    let mem_days = day_peaks(&mem, start, input.days, step);
    let rps_days = rps.as_ref().map(|r| {
        day_peaks(
            r,
            start,
            input.days,
            r.model.as_ref().map_or(step, FittedModel::step_ms),
        )
    });

    let target = input.target_utilisation;
    let replicas_for = |p90: f64, request: f64| -> u32 {
        let r = (p90 / (request * target) - 1e-9).ceil();
        if r.is_finite() && r >= 1.0 {
            r.min(f64::from(u32::MAX)) as u32
        } else {
            1
        }
    };
    let mut daily = Vec::with_capacity(input.days as usize);
    for d in 0..input.days as usize {
        let c = cpu_days[d];
        let m = mem_days[d];
        let need = [
            c.map(|c| replicas_for(c.1, input.pod.cpu_request_cores)),
            m.map(|m| replicas_for(m.1, input.pod.memory_request_bytes)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(1);
        daily.push(DayPeak {
            from: start + d as i64 * DAY_MS,
            cpu_peak: c.map(|c| c.0),
            cpu_p90: c.map(|c| c.1),
            memory_peak: m.map(|m| m.0),
            memory_p90: m.map(|m| m.1),
            rps_peak: rps_days.as_ref().and_then(|r| r[d].map(|x| x.0)),
            replicas_needed: need,
        });
    }

    let mut arithmetic = Vec::new();
    let today = input.replicas_today();
    let today_src = if input.hpa.is_some() {
        "HPA max"
    } else {
        "current"
    };
    let observed_peak = |s: &[Sample]| {
        let end = last(s)?;
        s.iter()
            .filter(|x| x.v.is_finite() && x.t > end - 7 * DAY_MS)
            .map(|x| x.v)
            .reduce(f64::max)
    };
    let plan_resource = |name: &str,
                         unit: &str,
                         fit: &Fitted,
                         days: &[Option<(f64, f64)>],
                         request: f64,
                         s: &[Sample],
                         fmt: &dyn Fn(f64) -> String,
                         arith: &mut Vec<String>|
     -> ResourcePlan {
        let peak = days.iter().flatten().map(|d| d.0).reduce(f64::max);
        let p90 = days.iter().flatten().map(|d| d.1).reduce(f64::max);
        let cap = f64::from(today) * request * target;
        arith.push(format!(
            "{name}: today's capacity at target = {today} replicas ({today_src}) × {} request × {:.0} % = {}",
            fmt(request),
            target * 100.0,
            fmt(cap)
        ));
        let (mut replicas_needed, mut request_needed) = (None, None);
        if let Some(p90) = p90 {
            let r = replicas_for(p90, request);
            arith.push(format!(
                "{name}: P90 peak {} ÷ ({} request × {:.0} %) = {:.2} → {r} replicas",
                fmt(p90),
                fmt(request),
                target * 100.0,
                p90 / (request * target)
            ));
            let per_pod = p90 / (f64::from(input.replicas) * target);
            arith.push(format!(
                "{name}: request per pod at {} current replicas = {} ÷ ({} × {:.0} %) = {}",
                input.replicas,
                fmt(p90),
                input.replicas,
                target * 100.0,
                fmt(per_pod)
            ));
            replicas_needed = Some(r);
            request_needed = Some(per_pod);
        }
        let error = fit.error.clone().map(|e| format!("{name}: {e}"));
        if let Some(e) = &error {
            arith.push(format!("{e} — not planned"));
        }
        if fit.constant.is_some() {
            arith.push(format!(
                "{name}: the series is constant; its value is its peak"
            ));
        }
        ResourcePlan {
            resource: name.to_string(),
            unit: unit.to_string(),
            observed_peak: observed_peak(s),
            forecast_peak: peak,
            forecast_p90: p90,
            request_per_pod: request,
            capacity_at_target: cap,
            replicas_needed,
            request_needed_per_pod: request_needed,
            error,
            model: fit.model.as_ref().map(|m| m.summary().clone()),
        }
    };
    let cpu_plan = plan_resource(
        "cpu",
        "cores",
        &cpu,
        &cpu_days,
        input.pod.cpu_request_cores,
        series.cpu_cores,
        &fmt_cores,
        &mut arithmetic,
    );
    let mem_plan = plan_resource(
        "memory",
        "bytes",
        &mem,
        &mem_days,
        input.pod.memory_request_bytes,
        series.memory_bytes,
        &fmt_bytes,
        &mut arithmetic,
    );

    // Replicas: the larger need, within the HPA minimum.
    let needed = [cpu_plan.replicas_needed, mem_plan.replicas_needed]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(input.replicas);
    let min = input.hpa.map_or(1, |h| h.min_replicas);
    let replicas = needed.max(min);
    arithmetic.push(format!(
        "replicas needed = max(cpu {}, memory {}) = {needed}{}",
        opt_u32(cpu_plan.replicas_needed),
        opt_u32(mem_plan.replicas_needed),
        if replicas > needed {
            format!(", raised to the HPA minimum {min}")
        } else {
            String::new()
        }
    ));
    let raise_hpa_max_to = input
        .hpa
        .and_then(|h| (replicas > h.max_replicas).then_some(replicas));
    if let Some(h) = input.hpa {
        arithmetic.push(format!(
            "HPA {}..{}: {}",
            h.min_replicas,
            h.max_replicas,
            if replicas > h.max_replicas {
                format!("the maximum is too low; raise it to {replicas}")
            } else {
                format!("{replicas} replicas fit within it")
            }
        ));
    }
    if let (Some(limit), Some(p90)) = (input.pod.memory_limit_bytes, mem_plan.forecast_p90) {
        let per_pod = p90 / f64::from(replicas);
        arithmetic.push(format!(
            "memory per pod at {replicas} replicas = {} ÷ {replicas} = {} (limit {}{})",
            fmt_bytes(p90),
            fmt_bytes(per_pod),
            fmt_bytes(limit),
            if per_pod >= limit { ": OOM risk" } else { "" }
        ));
    }
    let rps_peak = daily.iter().filter_map(|d| d.rps_peak).reduce(f64::max);
    if let (Some(rps), Some(cpu_peak)) = (rps_peak, cpu_plan.forecast_peak) {
        if rps > 0.0 {
            let per_req = cpu_peak / rps;
            arithmetic.push(format!(
                "request rate: peak {rps:.1} req/s at {} → {:.5} cores per req/s; today's CPU capacity at target serves ≈ {:.1} req/s",
                fmt_cores(cpu_peak),
                per_req,
                cpu_plan.capacity_at_target / per_req
            ));
        }
    }

    // When does today's capacity run out?
    let horizon = Duration::from_secs(u64::from(input.days) * 86_400);
    let mut runs_out: Option<RunOut> = None;
    for (name, fit, plan, s) in [
        ("cpu", &cpu, &cpu_plan, series.cpu_cores),
        ("memory", &mem, &mem_plan, series.memory_bytes),
    ] {
        let Some(m) = fit.model.as_ref() else {
            if let Some(v) = fit.constant {
                if v >= plan.capacity_at_target {
                    runs_out = Some(RunOut {
                        resource: name.to_string(),
                        expected: Some(as_of),
                        earliest: as_of,
                        probability: 1.0,
                    });
                }
            }
            continue;
        };
        let p = predict_breach_with_model(m, s, Limit::upper(plan.capacity_at_target), horizon)?;
        if let Some(b) = p.breach {
            let r = RunOut {
                resource: name.to_string(),
                expected: b.expected,
                earliest: b.earliest,
                probability: p.probability,
            };
            if runs_out.as_ref().is_none_or(|o| r.earliest < o.earliest) {
                runs_out = Some(r);
            }
        }
    }
    match &runs_out {
        Some(r) => arithmetic.push(format!(
            "today's {} capacity is exceeded at the P90 from {}, at the point forecast {} (probability {:.0} %)",
            r.resource,
            format_ts(r.earliest),
            r.expected.map_or_else(|| "not within the plan".to_string(), format_ts),
            r.probability * 100.0
        )),
        None => arithmetic.push(format!(
            "today's capacity holds for the {} planned days, even at the P90",
            input.days
        )),
    }

    let confidence = confidence(&[&cpu_plan, &mem_plan]);
    let summary = match (&runs_out, raise_hpa_max_to) {
        (Some(r), Some(max)) => format!(
            "{} capacity runs out from {}; scale to {replicas} replicas, which needs the HPA maximum raised to {max}.",
            r.resource,
            format_ts(r.earliest)
        ),
        (Some(r), None) => format!(
            "{} capacity runs out from {}; scale to {replicas} replicas (or raise requests) before then.",
            r.resource,
            format_ts(r.earliest)
        ),
        (None, _) if replicas < input.replicas => format!(
            "Capacity holds for {} days; {replicas} replicas would be enough (running {}).",
            input.days, input.replicas
        ),
        (None, _) => format!(
            "Capacity holds for {} days with {replicas} replicas at the P90 peak.",
            input.days
        ),
    };
    Ok(CapacityPlan {
        service: input.service.clone(),
        as_of,
        input: input.clone(),
        daily,
        recommendation: Recommendation {
            replicas,
            cpu_request_cores: cpu_plan.request_needed_per_pod,
            memory_request_bytes: mem_plan.request_needed_per_pod,
            raise_hpa_max_to,
            summary,
        },
        cpu: cpu_plan,
        memory: mem_plan,
        rps_peak,
        runs_out,
        confidence,
        arithmetic,
        trends: service_trends(&input.service, series, f.config()),
    })
}

fn confidence(plans: &[&ResourcePlan]) -> Confidence {
    let mut level = ConfidenceLevel::High;
    let mut reasons = Vec::new();
    let lower = |l: &mut ConfidenceLevel, to: ConfidenceLevel| {
        if (to as u8) > (*l as u8) {
            *l = to;
        }
    };
    for p in plans {
        if let Some(e) = &p.error {
            lower(&mut level, ConfidenceLevel::Low);
            reasons.push(format!("{} has no forecast ({e}).", p.resource));
            continue;
        }
        let Some(m) = &p.model else {
            continue;
        };
        let days = (m.history_points as i64 * m.step_ms) as f64 / DAY_MS as f64;
        if days < 3.0 {
            lower(&mut level, ConfidenceLevel::Low);
        } else if days < 14.0 {
            lower(&mut level, ConfidenceLevel::Medium);
        }
        let scale = p.forecast_peak.map_or(0.0, f64::abs).max(1e-300);
        let rel = m.fit.mae / scale;
        if rel > 0.25 {
            lower(&mut level, ConfidenceLevel::Low);
        } else if rel > 0.10 {
            lower(&mut level, ConfidenceLevel::Medium);
        }
        let band = match (p.forecast_p90, p.forecast_peak) {
            (Some(a), Some(b)) if b.abs() > 0.0 => a / b - 1.0,
            _ => 0.0,
        };
        if band > 0.5 {
            lower(&mut level, ConfidenceLevel::Low);
        } else if band > 0.2 {
            lower(&mut level, ConfidenceLevel::Medium);
        }
        reasons.push(format!(
            "{}: {days:.1} days of history, {:?} seasonality, validation error {:.1} % of the peak \
             ({:.2}× seasonal naive), P90 {:.0} % above the point peak.",
            p.resource,
            m.seasonality,
            rel * 100.0,
            m.fit.relative_mae,
            band * 100.0
        ));
    }
    Confidence { level, reasons }
}

fn opt_u32(v: Option<u32>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

fn fmt_cores(v: f64) -> String {
    format!("{v:.3} cores")
}

fn fmt_bytes(v: f64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    if v.abs() >= GIB {
        format!("{:.2} GiB", v / GIB)
    } else {
        format!("{:.1} MiB", v / MIB)
    }
}

fn opt(v: Option<f64>, f: &dyn Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".to_string(), f)
}

fn date(t: TimestampMs) -> String {
    let s = format_ts(t);
    s.replace('T', " ").trim_end_matches('Z').to_string()
}

impl CapacityPlan {
    /// A plain-text table for the CLI.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Capacity plan for {} — {} days from {} (target {:.0} % of requests, {} replicas now{})",
            self.service,
            self.input.days,
            format_ts(self.as_of),
            self.input.target_utilisation * 100.0,
            self.input.replicas,
            self.input
                .hpa
                .map_or(String::new(), |h| format!(", HPA {}..{}", h.min_replicas, h.max_replicas))
        );
        let _ = writeln!(
            s,
            "{:<19}  {:>12}  {:>12}  {:>11}  {:>11}  {:>10}  {:>8}",
            "day from (UTC)", "cpu peak", "cpu P90", "mem peak", "mem P90", "req/s", "replicas"
        );
        for d in &self.daily {
            let _ = writeln!(
                s,
                "{:<19}  {:>12}  {:>12}  {:>11}  {:>11}  {:>10}  {:>8}",
                date(d.from),
                opt(d.cpu_peak, &fmt_cores),
                opt(d.cpu_p90, &fmt_cores),
                opt(d.memory_peak, &fmt_bytes),
                opt(d.memory_p90, &fmt_bytes),
                opt(d.rps_peak, &|v| format!("{v:.1}")),
                d.replicas_needed
            );
        }
        let _ = writeln!(s, "\n{}", self.recommendation.summary);
        let _ = writeln!(s, "Confidence: {:?}", self.confidence.level);
        for r in &self.confidence.reasons {
            let _ = writeln!(s, "  - {r}");
        }
        let _ = writeln!(s, "Arithmetic:");
        for a in &self.arithmetic {
            let _ = writeln!(s, "  - {a}");
        }
        s
    }

    /// A Markdown section to paste into a capacity review.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Capacity plan: `{}`\n", self.service);
        let _ = writeln!(
            s,
            "As of {}, for the next {} days; target utilisation {:.0} % of requests; {} replicas running{}; \
             per pod: CPU request {}, memory request {}.\n",
            format_ts(self.as_of),
            self.input.days,
            self.input.target_utilisation * 100.0,
            self.input.replicas,
            self.input
                .hpa
                .map_or(String::new(), |h| format!(", HPA {}..{}", h.min_replicas, h.max_replicas)),
            fmt_cores(self.input.pod.cpu_request_cores),
            fmt_bytes(self.input.pod.memory_request_bytes),
        );
        let _ = writeln!(
            s,
            "**{}** (confidence: {:?})\n",
            self.recommendation.summary, self.confidence.level
        );
        let _ = writeln!(s, "| day from (UTC) | CPU peak | CPU P90 | memory peak | memory P90 | req/s peak | replicas needed |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for d in &self.daily {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                date(d.from),
                opt(d.cpu_peak, &fmt_cores),
                opt(d.cpu_p90, &fmt_cores),
                opt(d.memory_peak, &fmt_bytes),
                opt(d.memory_p90, &fmt_bytes),
                opt(d.rps_peak, &|v| format!("{v:.1}")),
                d.replicas_needed
            );
        }
        let _ = writeln!(s, "\n{}", self.trends.to_markdown());
        let _ = writeln!(s, "### Arithmetic\n");
        for a in &self.arithmetic {
            let _ = writeln!(s, "- {a}");
        }
        let _ = writeln!(s, "\n### Confidence: {:?}\n", self.confidence.level);
        for r in &self.confidence.reasons {
            let _ = writeln!(s, "- {r}");
        }
        let _ = writeln!(
            s,
            "\nP90 = upper edge of the forecast's 80 % interval, measured from the model's own \
             out-of-sample errors (docs/FORECAST.md)."
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_validation_names_the_field() {
        let mut i = CapacityInput {
            service: "cart".into(),
            days: 7,
            replicas: 3,
            pod: PodResources {
                cpu_request_cores: 0.5,
                cpu_limit_cores: None,
                memory_request_bytes: 512.0 * 1024.0 * 1024.0,
                memory_limit_bytes: None,
            },
            hpa: Some(Hpa {
                min_replicas: 2,
                max_replicas: 10,
            }),
            target_utilisation: 0.7,
        };
        assert!(i.validate().is_ok());
        i.target_utilisation = 1.5;
        let e = i.validate().expect_err("bad target").to_string();
        assert!(e.contains("target_utilisation"), "{e}");
        i.target_utilisation = 0.7;
        i.days = 31;
        assert!(i
            .validate()
            .expect_err("bad days")
            .to_string()
            .contains("days"));
    }

    #[test]
    fn bytes_format_in_binary_units() {
        assert_eq!(fmt_bytes(512.0 * 1024.0 * 1024.0), "512.0 MiB");
        assert_eq!(fmt_bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.50 GiB");
    }
}
