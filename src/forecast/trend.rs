//! Trend analysis: week-over-week and month-over-month change, growth per
//! day, and change points in level and trend.
//!
//! Why these methods: the comparisons are plain means of aligned windows
//! (what a person computes by hand, so the figure can be checked); growth
//! is a repeated-median slope of daily medians (an incident or a spike
//! does not bend it); change points come from binary segmentation of the
//! deseasonalised series (block medians) into straight pieces, with a
//! penalty scaled by the robust noise level, so the daily cycle and noise
//! do not produce "changes". Each change point says whether the level
//! jumped, the slope changed, or both.

use serde::Serialize;

use super::model::{deseasonalise, median, richest_seasonality, Seasonality};
use super::prepare::{prepare, Prepared};
use super::{CapacitySeries, ForecastConfig, ForecastError, DAY_MS, WEEK_MS};
use crate::signal::{format_ts, Sample, TimestampMs};

/// At most this many blocks go into the segmentation.
const MAX_BLOCKS: usize = 400;
/// Fewest blocks in a segment.
const MIN_SEGMENT: usize = 6;
/// At most this many change points are reported.
const MAX_CHANGES: usize = 6;

/// A comparison of two aligned windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    /// Mean over the latest window.
    pub current: f64,
    /// Mean over the window before it.
    pub previous: f64,
    /// `current - previous`.
    pub absolute: f64,
    /// Relative change in percent; `None` when `previous` is 0.
    pub percent: Option<f64>,
}

/// Growth of the series per day.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Growth {
    /// Units per day (robust slope).
    pub per_day: f64,
    /// Percent of the current level per day; `None` when the level is 0.
    pub percent_per_day: Option<f64>,
    /// Days of history the slope is measured over.
    pub over_days: f64,
}

/// What changed at a change point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The level jumped.
    Level,
    /// The slope changed.
    Trend,
    /// Both.
    LevelAndTrend,
}

/// A change in level and/or trend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChangePoint {
    /// When (start of the first block after the change).
    pub t: TimestampMs,
    /// What changed.
    pub kind: ChangeKind,
    /// Deseasonalised level just before, from the straight piece before.
    pub level_before: f64,
    /// Level just after, from the piece after.
    pub level_after: f64,
    /// Slope of the piece before, per day.
    pub slope_before_per_day: f64,
    /// Slope of the piece after, per day.
    pub slope_after_per_day: f64,
}

/// Trends of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendReport {
    /// First time analysed.
    pub from: TimestampMs,
    /// Last time analysed.
    pub to: TimestampMs,
    /// Last 7 days against the 7 before (needs 14 days).
    pub week_over_week: Option<Change>,
    /// Last 30 days against the 30 before (needs 60 days).
    pub month_over_month: Option<Change>,
    /// Growth per day over the history.
    pub growth: Option<Growth>,
    /// Changes in level and trend, in time order.
    pub change_points: Vec<ChangePoint>,
    /// Why a figure is missing, in sentences.
    pub notes: Vec<String>,
}

/// Analyses the trends of `samples` (resampled with `cfg`'s step rules).
pub fn analyze_trend(
    samples: &[Sample],
    cfg: &ForecastConfig,
) -> Result<TrendReport, ForecastError> {
    let p = prepare(samples, cfg)?;
    let obs: Vec<f64> = p
        .values
        .iter()
        .zip(&p.observed)
        .filter(|(_, o)| **o)
        .map(|(v, _)| *v)
        .collect();
    let lo = obs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = obs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi - lo <= 1e-12 * lo.abs().max(hi.abs()).max(1e-300) {
        return Err(ForecastError::Constant { value: lo });
    }
    let mut notes = Vec::new();
    let week_over_week = compare(&p, 7, &mut notes);
    let month_over_month = compare(&p, 30, &mut notes);
    let growth = growth(&p);
    if growth.is_none() {
        notes.push("growth needs at least 8 observed blocks of history".to_string());
    }
    let change_points = change_points(&p);
    Ok(TrendReport {
        from: p.start,
        to: p.end(),
        week_over_week,
        month_over_month,
        growth,
        change_points,
        notes,
    })
}

/// Mean of the last `days` against the `days` before, each window at least
/// half observed.
fn compare(p: &Prepared, days: i64, notes: &mut Vec<String>) -> Option<Change> {
    let w = usize::try_from(days * DAY_MS / p.step_ms).unwrap_or(usize::MAX);
    let n = p.len();
    if w == 0 || n < 2 * w {
        notes.push(format!(
            "{days}-day comparison needs {} days of history, have {:.1}",
            2 * days,
            (n as i64 * p.step_ms) as f64 / DAY_MS as f64
        ));
        return None;
    }
    let mean = |a: usize, b: usize| {
        let (mut s, mut c) = (0.0, 0usize);
        for i in a..b {
            if p.observed[i] {
                s += p.values[i];
                c += 1;
            }
        }
        (c * 2 >= b - a).then(|| s / c as f64)
    };
    let (Some(current), Some(previous)) = (mean(n - w, n), mean(n - 2 * w, n - w)) else {
        notes.push(format!(
            "{days}-day comparison: a window is less than half observed"
        ));
        return None;
    };
    Some(Change {
        current,
        previous,
        absolute: current - previous,
        percent: (previous != 0.0).then(|| (current - previous) / previous.abs() * 100.0),
    })
}

/// Block medians of the observed points: (block centre index, median),
/// with blocks of `b` points.
fn block_medians(x: &[f64], obs: &[bool], b: usize) -> Vec<(f64, f64, usize)> {
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(b);
    for start in (0..x.len()).step_by(b.max(1)) {
        let end = (start + b).min(x.len());
        buf.clear();
        buf.extend((start..end).filter(|&i| obs[i]).map(|i| x[i]));
        if !buf.is_empty() && buf.len() * 2 >= end - start {
            out.push(((start + end - 1) as f64 / 2.0, median(&mut buf), start));
        }
    }
    out
}

/// Repeated-median slope of daily medians (or of 16 blocks when the
/// history is shorter than 8 days).
fn growth(p: &Prepared) -> Option<Growth> {
    let n = p.len();
    let per_day = (DAY_MS / p.step_ms).max(1) as usize;
    let b = if n >= 8 * per_day {
        per_day
    } else {
        (n / 16).max(1)
    };
    let pts = block_medians(&p.values, &p.observed, b);
    if pts.len() < 8 {
        return None;
    }
    let mut slopes = Vec::with_capacity(pts.len() * pts.len() / 2);
    for i in 0..pts.len() {
        for j in i + 1..pts.len() {
            slopes.push((pts[j].1 - pts[i].1) / (pts[j].0 - pts[i].0));
        }
    }
    let slope = median(&mut slopes);
    let steps_per_day = DAY_MS as f64 / p.step_ms as f64;
    let per_day_v = slope * steps_per_day;
    let level = pts[pts.len() - 1].1;
    Some(Growth {
        per_day: per_day_v,
        percent_per_day: (level != 0.0).then(|| per_day_v / level.abs() * 100.0),
        over_days: (n as i64 * p.step_ms) as f64 / DAY_MS as f64,
    })
}

/// Prefix sums for O(1) least-squares line fits over index ranges.
struct Sums {
    s: Vec<[f64; 5]>,
}

impl Sums {
    fn new(x: &[f64]) -> Self {
        let mut s = Vec::with_capacity(x.len() + 1);
        let mut acc = [0.0; 5];
        s.push(acc);
        for (k, &y) in x.iter().enumerate() {
            let t = k as f64;
            acc[0] += 1.0;
            acc[1] += t;
            acc[2] += t * t;
            acc[3] += y;
            acc[4] += t * y;
            s.push(acc);
        }
        Self { s }
    }

    /// (intercept at t = 0, slope, SSE) of the fit over `[a, b)`.
    fn fit(&self, x: &[f64], a: usize, b: usize) -> (f64, f64, f64) {
        let d: Vec<f64> = (0..5).map(|k| self.s[b][k] - self.s[a][k]).collect();
        let (n, st, stt, sy, sty) = (d[0], d[1], d[2], d[3], d[4]);
        let den = n * stt - st * st;
        let slope = if den.abs() > 0.0 {
            (n * sty - st * sy) / den
        } else {
            0.0
        };
        let icpt = (sy - slope * st) / n;
        let sse = (a..b)
            .map(|k| {
                let e = x[k] - icpt - slope * k as f64;
                e * e
            })
            .sum();
        (icpt, slope, sse)
    }
}

/// Binary segmentation of deseasonalised block medians into straight
/// pieces.
fn change_points(p: &Prepared) -> Vec<ChangePoint> {
    // A weekly profile from fewer than five weeks has three or four values
    // per bin, and a level step moves those medians: the step would
    // reappear as spurious changes in other weeks. The daily profile (a
    // median over every day) is robust to it.
    let seasonality = match richest_seasonality(p.len(), p.step_ms) {
        Seasonality::DailyWeekly if (p.len() as i64) * p.step_ms < 5 * WEEK_MS => {
            Seasonality::Daily
        }
        s => s,
    };
    let z = deseasonalise(p, seasonality);
    let b = p.len().div_ceil(MAX_BLOCKS).max(1);
    let blocks = block_medians(&z, &p.observed, b);
    let m = blocks.len();
    if m < 2 * MIN_SEGMENT {
        return Vec::new();
    }
    let centre = blocks.iter().map(|x| x.1).sum::<f64>() / m as f64;
    let x: Vec<f64> = blocks.iter().map(|x| x.1 - centre).collect();
    let mut d: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
    let md = median(&mut d.clone());
    let mut dev: Vec<f64> = d.iter_mut().map(|v| (*v - md).abs()).collect();
    let sigma = (median(&mut dev) * 1.4826 / std::f64::consts::SQRT_2).max(1e-12 * centre.abs());
    if sigma <= 0.0 {
        return Vec::new();
    }
    let sums = Sums::new(&x);
    let penalty = 6.0 * sigma * sigma * (m as f64).ln().max(1.0);
    let mut cuts: Vec<usize> = Vec::new();
    let mut segments = vec![(0usize, m)];
    while cuts.len() < MAX_CHANGES {
        let mut best: Option<(f64, usize, usize)> = None;
        for (si, &(a, bnd)) in segments.iter().enumerate() {
            if bnd - a < 2 * MIN_SEGMENT {
                continue;
            }
            let whole = sums.fit(&x, a, bnd).2;
            for c in a + MIN_SEGMENT..=bnd - MIN_SEGMENT {
                let gain = whole - sums.fit(&x, a, c).2 - sums.fit(&x, c, bnd).2;
                if best.is_none_or(|bst| gain > bst.0) {
                    best = Some((gain, si, c));
                }
            }
        }
        match best {
            Some((gain, si, c)) if gain > penalty => {
                let (a, bnd) = segments[si];
                segments[si] = (a, c);
                segments.push((c, bnd));
                cuts.push(c);
            }
            _ => break,
        }
    }
    cuts.sort_unstable();
    let per_day = DAY_MS as f64 / (p.step_ms as f64 * b as f64);
    let mut out = Vec::new();
    for (k, &c) in cuts.iter().enumerate() {
        let a = if k == 0 { 0 } else { cuts[k - 1] };
        let e = cuts.get(k + 1).copied().unwrap_or(m);
        let (i0, s0, _) = sums.fit(&x, a, c);
        let (i1, s1, _) = sums.fit(&x, c, e);
        let at = c as f64 - 0.5;
        let before = i0 + s0 * at + centre;
        let after = i1 + s1 * at + centre;
        let jump = (after - before).abs();
        let len = (c - a).min(e - c) as f64;
        let level = jump >= 3.0 * sigma;
        let trend = (s1 - s0).abs() * len >= 3.0 * sigma;
        let kind = match (level, trend) {
            (true, true) => ChangeKind::LevelAndTrend,
            (false, true) => ChangeKind::Trend,
            (true, false) => ChangeKind::Level,
            (false, false) if jump >= (s1 - s0).abs() * len => ChangeKind::Level,
            (false, false) => ChangeKind::Trend,
        };
        out.push(ChangePoint {
            t: p.time(blocks[c].2),
            kind,
            level_before: before,
            level_after: after,
            slope_before_per_day: s0 * per_day,
            slope_after_per_day: s1 * per_day,
        });
    }
    out
}

/// Trends of one of a service's resources.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceTrend {
    /// `cpu`, `memory` or `rps`.
    pub resource: String,
    /// Unit of the values: `cores`, `bytes` or `req/s`.
    pub unit: String,
    /// The analysis; `None` when the series could not be analysed.
    pub report: Option<TrendReport>,
    /// Why there is no analysis (too little data, a constant series), in a
    /// sentence.
    pub error: Option<String>,
}

/// Trends of a service's CPU, memory and request rate: the body of
/// `GET /api/v1/trends/{service}` and the "Trends" section of the capacity
/// plan, computed by one function ([`service_trends`]) for both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceTrends {
    /// Service.
    pub service: String,
    /// CPU (cores).
    pub cpu: ResourceTrend,
    /// Memory (bytes).
    pub memory: ResourceTrend,
    /// Request rate (req/s); `None` when the service has no such series.
    pub requests_per_second: Option<ResourceTrend>,
}

/// Analyses each of a service's series. A series that cannot be analysed
/// gets its reason instead of a report; the others are still analysed.
pub fn service_trends(
    service: &str,
    series: &CapacitySeries<'_>,
    cfg: &ForecastConfig,
) -> ServiceTrends {
    let one = |resource: &str, unit: &str, samples: &[Sample]| {
        let (report, error) = match analyze_trend(samples, cfg) {
            Ok(r) => (Some(r), None),
            // A fixed heap or a pinned CPU quota is an answer, not a
            // failure: nothing changed.
            Err(ForecastError::Constant { value }) => (
                None,
                Some(format!(
                    "constant at {}: no change to report",
                    fmt_unit(unit, value)
                )),
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        ResourceTrend {
            resource: resource.to_string(),
            unit: unit.to_string(),
            report,
            error,
        }
    };
    ServiceTrends {
        service: service.to_string(),
        cpu: one("cpu", "cores", series.cpu_cores),
        memory: one("memory", "bytes", series.memory_bytes),
        requests_per_second: series.requests_per_second.map(|s| one("rps", "req/s", s)),
    }
}

/// A value in its unit, as a person reads it.
fn fmt_unit(unit: &str, v: f64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    match unit {
        "bytes" if v.abs() >= GIB => format!("{:.2} GiB", v / GIB),
        "bytes" => format!("{:.1} MiB", v / MIB),
        "cores" => format!("{v:.3} cores"),
        _ => format!("{v:.1} {unit}"),
    }
}

/// A signed value in its unit (`+0.020 cores`).
fn fmt_signed(unit: &str, v: f64) -> String {
    let s = fmt_unit(unit, v);
    if v >= 0.0 {
        format!("+{s}")
    } else {
        s
    }
}

fn fmt_change(unit: &str, c: Option<Change>) -> String {
    match c {
        None => "n/a".to_string(),
        Some(c) => format!(
            "{} → {} ({})",
            fmt_unit(unit, c.previous),
            fmt_unit(unit, c.current),
            c.percent
                .map_or_else(|| "n/a".to_string(), |p| format!("{p:+.1} %"))
        ),
    }
}

impl ServiceTrends {
    fn resources(&self) -> impl Iterator<Item = &ResourceTrend> {
        [
            Some(&self.cpu),
            Some(&self.memory),
            self.requests_per_second.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// A "Trends" Markdown section (a table per resource, then the change
    /// points and the notes), for the capacity review.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "### Trends\n");
        let _ = writeln!(
            s,
            "| resource | week over week | month over month | growth per day | change points |"
        );
        let _ = writeln!(s, "|---|---|---|---|---:|");
        for r in self.resources() {
            match &r.report {
                Some(t) => {
                    let growth = t.growth.map_or_else(
                        || "n/a".to_string(),
                        |g| {
                            format!(
                                "{}{} over {:.1} days",
                                fmt_signed(&r.unit, g.per_day),
                                g.percent_per_day
                                    .map_or(String::new(), |p| format!(" ({p:+.2} %)")),
                                g.over_days
                            )
                        },
                    );
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} |",
                        r.resource,
                        fmt_change(&r.unit, t.week_over_week),
                        fmt_change(&r.unit, t.month_over_month),
                        growth,
                        t.change_points.len()
                    );
                }
                None => {
                    let _ = writeln!(s, "| {} | n/a | n/a | n/a | n/a |", r.resource);
                }
            }
        }
        let mut changes = Vec::new();
        let mut notes = Vec::new();
        for r in self.resources() {
            if let Some(e) = &r.error {
                notes.push(format!("{}: {e}", r.resource));
            }
            let Some(t) = &r.report else { continue };
            for n in &t.notes {
                notes.push(format!("{}: {n}", r.resource));
            }
            for c in &t.change_points {
                let what = match c.kind {
                    ChangeKind::Level => "level",
                    ChangeKind::Trend => "trend",
                    ChangeKind::LevelAndTrend => "level and trend",
                };
                changes.push(format!(
                    "{} at {}: {what} — level {} → {}, slope {}/day → {}/day",
                    r.resource,
                    format_ts(c.t),
                    fmt_unit(&r.unit, c.level_before),
                    fmt_unit(&r.unit, c.level_after),
                    fmt_signed(&r.unit, c.slope_before_per_day),
                    fmt_signed(&r.unit, c.slope_after_per_day),
                ));
            }
        }
        if !changes.is_empty() {
            let _ = writeln!(s, "\nChange points (deseasonalised):\n");
            for c in &changes {
                let _ = writeln!(s, "- {c}");
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(s, "\nNotes:\n");
            for n in &notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        let _ = writeln!(
            s,
            "\nWeek over week: mean of the last 7 days against the 7 before (month: 30 and 30). \
             Growth: robust slope of daily medians (docs/FORECAST.md)."
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 300_000;

    fn series(days: i64, f: impl Fn(i64) -> f64) -> Vec<Sample> {
        let n = days * DAY_MS / STEP;
        (0..n)
            .map(|i| Sample {
                t: i * STEP,
                v: f(i),
            })
            .collect()
    }

    fn noise(i: i64) -> f64 {
        // Deterministic, roughly uniform in [-1, 1).
        let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    fn daily(i: i64) -> f64 {
        20.0 * ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin()
    }

    #[test]
    fn week_over_week_and_growth_match_a_known_trend() {
        // +1 per day, daily cycle, noise; 21 days.
        let s = series(21, |i| 100.0 + i as f64 / 288.0 + daily(i) + noise(i));
        let cfg = ForecastConfig::default();
        let r = analyze_trend(&s, &cfg).expect("report");
        let wow = r.week_over_week.expect("21 days give a WoW");
        assert!((wow.absolute - 7.0).abs() < 0.3, "{wow:?}");
        let g = r.growth.expect("growth");
        assert!((g.per_day - 1.0).abs() < 0.05, "{g:?}");
        assert!(r.month_over_month.is_none());
        assert!(
            r.notes.iter().any(|n| n.contains("30-day")),
            "{:?}",
            r.notes
        );
        assert!(r.change_points.is_empty(), "{:?}", r.change_points);
    }

    #[test]
    fn a_level_step_and_a_slope_change_are_found_where_they_are() {
        let step_at = 10 * 288;
        let s = series(20, |i| {
            100.0 + daily(i) + 2.0 * noise(i) + if i >= step_at { 40.0 } else { 0.0 }
        });
        let r = analyze_trend(&s, &ForecastConfig::default()).expect("report");
        assert_eq!(r.change_points.len(), 1, "{:#?}", r.change_points);
        let cp = r
            .change_points
            .iter()
            .find(|c| matches!(c.kind, ChangeKind::Level | ChangeKind::LevelAndTrend))
            .expect("a level change");
        assert!((cp.t - step_at * STEP).abs() <= 3 * 3_600_000, "{cp:?}");
        assert!(
            (cp.level_after - cp.level_before - 40.0).abs() < 5.0,
            "{cp:?}"
        );

        let bend = 12 * 288;
        let s = series(20, |i| {
            let extra = if i >= bend {
                (i - bend) as f64 / 288.0 * 10.0
            } else {
                0.0
            };
            100.0 + daily(i) + 2.0 * noise(i) + extra
        });
        let r = analyze_trend(&s, &ForecastConfig::default()).expect("report");
        assert!(r.change_points.len() <= 2, "{:#?}", r.change_points);
        let cp = r
            .change_points
            .iter()
            .find(|c| matches!(c.kind, ChangeKind::Trend | ChangeKind::LevelAndTrend))
            .expect("a trend change");
        assert!((cp.t - bend * STEP).abs() <= DAY_MS, "{cp:?}");
        assert!(
            (cp.slope_after_per_day - cp.slope_before_per_day - 10.0).abs() < 2.0,
            "{cp:?}"
        );
    }

    #[test]
    fn service_trends_analyse_each_series_and_say_why_one_is_missing() {
        let cpu = series(21, |i| 2.0 + 0.1 * i as f64 / 288.0 + 0.01 * daily(i));
        let mem = series(21, |_| 1024.0 * 1024.0 * 1024.0);
        let short = series(21, |i| 10.0 + noise(i))
            .into_iter()
            .take(10)
            .collect::<Vec<_>>();
        let t = service_trends(
            "cart",
            &CapacitySeries {
                cpu_cores: &cpu,
                memory_bytes: &mem,
                requests_per_second: Some(&short),
            },
            &ForecastConfig::default(),
        );
        let g = t
            .cpu
            .report
            .as_ref()
            .and_then(|r| r.growth)
            .expect("growth");
        assert!((g.per_day - 0.1).abs() < 0.01, "{g:?}");
        assert_eq!(
            t.memory.error.as_deref(),
            Some("constant at 1.00 GiB: no change to report")
        );
        let rps = t.requests_per_second.as_ref().expect("rps");
        assert!(
            rps.error
                .as_deref()
                .is_some_and(|e| e.contains("not enough data")),
            "{rps:?}"
        );
        let md = t.to_markdown();
        assert!(md.starts_with("### Trends"), "{md}");
        assert!(
            // Days 7-14 average 2 + 0.1 × 10.5, days 14-21 2 + 0.1 × 17.5.
            md.contains("| cpu | 3.050 cores → 3.750 cores (+23.0 %) |")
                && md.contains(" over 21.0 days |"),
            "{md}"
        );
        assert!(md.contains("- memory: constant at 1.00 GiB"), "{md}");
        assert!(
            md.contains("- cpu: 30-day comparison needs 60 days"),
            "{md}"
        );
    }

    #[test]
    fn constant_series_is_refused() {
        let s = series(3, |_| 5.0);
        assert_eq!(
            analyze_trend(&s, &ForecastConfig::default()),
            Err(ForecastError::Constant { value: 5.0 })
        );
    }
}
