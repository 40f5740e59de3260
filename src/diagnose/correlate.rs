//! Correlated series: which other series moved with the incident's
//! headline series, and how much earlier or later.
//!
//! Lagged Pearson correlation on samples aligned by timestamp (range
//! queries at one step give the same timestamps for every series). A
//! series that moved *before* the headline is a candidate cause; one that
//! moved after is more likely an effect. Pure, so the ranking is tested
//! without Prometheus; the caller fetches the candidates.

use std::collections::HashMap;

use super::bundle::{fmt_num, SignalKinds};
use super::evidence::{EvidenceBundle, EvidenceDetail, EvidenceId, EvidenceSource};
use crate::signal::{Sample, SeriesKey, TimestampMs};

/// Fewest aligned pairs a correlation is computed on; fewer make |r|
/// near 1 by chance.
pub const MIN_PAIRS: usize = 6;

/// One candidate series and how it moved with the headline.
#[derive(Debug, Clone, PartialEq)]
pub struct Correlation {
    /// The candidate.
    pub series: SeriesKey,
    /// Pearson correlation at the best lag, in [-1, 1].
    pub r: f64,
    /// How much earlier (positive) or later (negative) the candidate
    /// moved, in ms: the headline at `t` pairs with the candidate at
    /// `t - lead_ms`.
    pub lead_ms: i64,
}

/// Ranks `candidates` by the strongest |Pearson r| with `headline` over
/// lags of whole steps up to `max_lag_ms` either way (the step is the
/// headline's median sample interval). Candidates with fewer than
/// [`MIN_PAIRS`] aligned samples at every lag, or flat over the pairs,
/// are left out: their correlation is undefined, not zero. Best first;
/// ties go to the smaller |lag|, then to the series key, so the order is
/// stable.
pub fn rank_correlated(
    headline: &[Sample],
    candidates: &[(SeriesKey, Vec<Sample>)],
    max_lag_ms: i64,
) -> Vec<Correlation> {
    let Some(step) = median_step(headline) else {
        return Vec::new();
    };
    let max_steps = (max_lag_ms.max(0) / step).min(1_000);
    let mut out = Vec::new();
    for (key, samples) in candidates {
        let by_t: HashMap<TimestampMs, f64> = samples.iter().map(|s| (s.t, s.v)).collect();
        let mut best: Option<(f64, i64)> = None;
        for k in 0..=max_steps {
            for lag in if k == 0 {
                vec![0]
            } else {
                vec![k * step, -k * step]
            } {
                let pairs: Vec<(f64, f64)> = headline
                    .iter()
                    .filter_map(|h| by_t.get(&(h.t - lag)).map(|c| (h.v, *c)))
                    .collect();
                let Some(r) = pearson(&pairs) else { continue };
                if best.is_none_or(|(b, _)| r.abs() > b.abs() + 1e-12) {
                    best = Some((r, lag));
                }
            }
        }
        if let Some((r, lead_ms)) = best {
            out.push(Correlation {
                series: key.clone(),
                r,
                lead_ms,
            });
        }
    }
    out.sort_by(|a, b| {
        b.r.abs()
            .total_cmp(&a.r.abs())
            .then(a.lead_ms.abs().cmp(&b.lead_ms.abs()))
            .then_with(|| a.series.cmp(&b.series))
    });
    out
}

/// Adds the correlations with |r| ≥ `min_abs_r` as `Correlated` items,
/// at most `max_items`, best first; returns their ids.
pub fn push_correlated(
    bundle: &mut EvidenceBundle,
    ranked: &[Correlation],
    kinds: &SignalKinds,
    min_abs_r: f64,
    max_items: usize,
) -> Vec<EvidenceId> {
    let at = bundle.opened_at;
    ranked
        .iter()
        .filter(|c| c.r.abs() >= min_abs_r)
        .take(max_items)
        .map(|c| {
            let when = match c.lead_ms {
                0 => "at the same time".to_string(),
                l if l > 0 => format!("{} earlier", human_ms(l)),
                l => format!("{} later", human_ms(-l)),
            };
            let summary = format!(
                "{} moved with the incident (r = {}, {when}).",
                c.series,
                fmt_num(c.r)
            );
            let labels = c
                .series
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            bundle.push(
                EvidenceSource::Correlated,
                at,
                summary,
                EvidenceDetail::Correlated {
                    signal: c.series.signal.clone(),
                    labels,
                    kind: kinds.kind_of(&c.series),
                    correlation: c.r,
                    lead_ms: c.lead_ms,
                },
            )
        })
        .collect()
}

fn human_ms(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.unsigned_abs())).to_string()
}

fn median_step(samples: &[Sample]) -> Option<i64> {
    let mut steps: Vec<i64> = samples
        .windows(2)
        .map(|w| w[1].t - w[0].t)
        .filter(|d| *d > 0)
        .collect();
    if steps.is_empty() {
        return None;
    }
    steps.sort_unstable();
    Some(steps[steps.len() / 2])
}

/// Pearson r of the pairs; `None` below [`MIN_PAIRS`] or when either side
/// is flat.
fn pearson(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < MIN_PAIRS {
        return None;
    }
    let n = pairs.len() as f64;
    let mx = pairs.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pairs.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    // Relative threshold: a series that is flat up to rounding noise has
    // no meaningful correlation.
    let eps = 1e-12;
    if sxx <= eps * (1.0 + mx * mx) * n || syy <= eps * (1.0 + my * my) * n {
        return None;
    }
    let r = sxy / (sxx.sqrt() * syy.sqrt());
    r.is_finite().then(|| r.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(i64) -> f64, n: i64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                t: i * 60_000,
                v: f(i),
            })
            .collect()
    }

    fn key(name: &str) -> SeriesKey {
        SeriesKey::new(name, [("service".to_string(), name.to_string())])
    }

    /// A bump at minute `at`, with deterministic wiggle.
    fn bump(at: i64) -> impl Fn(i64) -> f64 {
        move |i| {
            let base = ((i * 7919) % 13) as f64 * 0.05;
            if (at..at + 6).contains(&i) {
                10.0 + base
            } else {
                1.0 + base
            }
        }
    }

    #[test]
    fn leading_series_ranks_first_with_its_lead() {
        let headline = series(bump(30), 60);
        let candidates = vec![
            (key("unrelated"), series(|i| ((i * 31) % 17) as f64, 60)),
            (key("cause"), series(bump(27), 60)),
            (key("inverse"), series(|i| -bump(30)(i), 60)),
            (key("flat"), series(|_| 5.0, 60)),
            (key("short"), series(bump(30), 4)),
        ];
        let ranked = rank_correlated(&headline, &candidates, 5 * 60_000);
        let names: Vec<&str> = ranked.iter().map(|c| c.series.signal.as_str()).collect();
        assert_eq!(names.len(), 3, "flat and short are left out: {names:?}");
        // Same magnitude of shape, the inverse at lag 0 wins the tie-break.
        assert_eq!(names[0], "inverse");
        assert!(ranked[0].r < -0.99);
        assert_eq!(ranked[1].series.signal, "cause");
        assert!(ranked[1].r > 0.9);
        assert_eq!(ranked[1].lead_ms, 3 * 60_000, "moved 3 minutes earlier");
        assert!(ranked[2].r.abs() < 0.5);
    }

    #[test]
    fn lag_beyond_the_limit_is_not_searched() {
        let headline = series(bump(30), 60);
        let candidates = vec![(key("cause"), series(bump(20), 60))];
        let near = rank_correlated(&headline, &candidates, 2 * 60_000);
        let far = rank_correlated(&headline, &candidates, 10 * 60_000);
        assert!(near[0].r < 0.5);
        assert_eq!(far[0].lead_ms, 10 * 60_000);
        assert!(far[0].r > 0.9);
    }

    #[test]
    fn push_keeps_strong_correlations_only() {
        let mut b = EvidenceBundle::default();
        let ranked = vec![
            Correlation {
                series: key("a"),
                r: 0.9,
                lead_ms: 120_000,
            },
            Correlation {
                series: key("b"),
                r: 0.3,
                lead_ms: 0,
            },
        ];
        let ids = push_correlated(&mut b, &ranked, &SignalKinds::new(), 0.6, 5);
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].0, "r1");
        assert!(
            b.items[0].summary.contains("2m earlier"),
            "{}",
            b.items[0].summary
        );
    }
}
