//! The NAB scoring algorithm (Numenta Anomaly Benchmark), implemented from
//! its published description and reference scorer (`nab/sweeper.py`,
//! `optimizer.py`, `scorer.py`, `runner.normalize`).
//!
//! Why our own: `aiopsd backtest` must give the same number NAB gives, with
//! no Python on the machine, and fast enough to tune detectors in a loop.
//! The test against `../shared/data/nab/reference/` pins that it does.
//!
//! In short, per file: the first `min(floor(0.15·n), 750)` rows are
//! probationary and not scored. A row inside a labelled window scores, if
//! detected, `tp·S(p)/S(-1)` where `p ∈ [-1, 0)` is its relative position
//! in the window and `S(p) = 2·sigmoid(-5p) - 1` (earlier is better); only
//! the best (earliest) detection of a window counts, and an undetected
//! window costs `-fn`. A detected row outside windows costs
//! `fp·S(distance past the previous window / (its width - 1))`, or `-fp`
//! if no window preceded it. One threshold is chosen for the whole corpus
//! (the anomaly score that maximises the summed score), and the total is
//! normalised to 0 for the null detector and 100 for the perfect one.

use std::collections::BTreeMap;

/// The weights of one application profile (NAB's "cost matrix").
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostMatrix {
    /// Reward for the earliest detection of a window (scaled by position).
    pub tp_weight: f64,
    /// Cost of one detection outside any window (scaled by distance).
    pub fp_weight: f64,
    /// Cost of a window with no detection.
    pub fn_weight: f64,
}

/// A named application profile: NAB scores every detector under three.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// `standard`, `reward_low_FP_rate` or `reward_low_FN_rate` in NAB.
    pub name: String,
    /// Its weights.
    pub costs: CostMatrix,
}

/// NAB's three profiles, as in its `config/profiles.json`, so the
/// backtest works without that file.
pub fn standard_profiles() -> Vec<Profile> {
    let p = |name: &str, fp_weight, fn_weight| Profile {
        name: name.to_string(),
        costs: CostMatrix {
            tp_weight: 1.0,
            fp_weight,
            fn_weight,
        },
    };
    vec![
        p("standard", 0.11, 1.0),
        p("reward_low_FP_rate", 0.22, 1.0),
        p("reward_low_FN_rate", 0.11, 2.0),
    ]
}

/// Share of each file, at the start, that is not scored (NAB: 15%).
pub const PROBATION_PERCENT: f64 = 0.15;

/// Rows at the start of a file of `n` rows that are not scored:
/// `min(floor(0.15·n), 0.15·5000)` exactly as NAB computes it.
pub fn probationary_length(n: usize) -> usize {
    let a = (PROBATION_PERCENT * n as f64).floor();
    let b = PROBATION_PERCENT * 5000.0;
    // Rows with index >= this bound are scored; ceil handles a fractional cap.
    a.min(b).ceil() as usize
}

/// NAB's scaled sigmoid: 0.987 at the left edge of a window (-1), 0 at
/// its right edge (0), -0.987 one window-width past it, -1 beyond 3.
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// One file to score: row timestamps, the detector's anomaly scores and
/// the labelled windows as row index ranges (inclusive).
#[derive(Debug, Clone, Copy)]
pub struct FileInput<'a> {
    /// Anomaly score per row, in [0, 1].
    pub scores: &'a [f64],
    /// Labelled windows as `(first row, last row)`, inclusive, sorted.
    pub windows: &'a [(usize, usize)],
}

/// A scorable row: its anomaly score, the score it earns if detected,
/// and the window (corpus-wide index) it belongs to.
#[derive(Debug, Clone, Copy)]
struct Point {
    anomaly: f64,
    sweep: f64,
    window: Option<usize>,
}

/// The per-row sweep scores of one file (NAB's `calcSweepScore`);
/// probationary rows are dropped. `first_window` numbers the windows
/// corpus-wide so they stay distinct.
fn sweep_file(file: FileInput<'_>, costs: CostMatrix, first_window: usize) -> Vec<Point> {
    let n = file.scores.len();
    let probation = probationary_length(n);
    let max_tp = scaled_sigmoid(-1.0);
    let mut out = Vec::with_capacity(n.saturating_sub(probation));
    let mut next = 0usize; // next window to enter
    let mut cur: Option<(usize, usize, usize)> = None; // (id, left, right)
    let mut prev: Option<(usize, f64)> = None; // (right index, width)
    for (i, &anomaly) in file.scores.iter().enumerate() {
        if cur.is_none() {
            if let Some(&(l, r)) = file.windows.get(next) {
                if l == i {
                    cur = Some((first_window + next, l, r));
                    next += 1;
                }
            }
        }
        let (sweep, window) = match cur {
            Some((id, l, r)) => {
                let width = (r - l + 1) as f64;
                let pos = -((r as f64 - i as f64 + 1.0) / width);
                (scaled_sigmoid(pos) * costs.tp_weight / max_tp, Some(id))
            }
            None => {
                let unweighted = match prev {
                    None => -1.0,
                    Some((right, width)) => {
                        scaled_sigmoid((right as f64 - i as f64).abs() / (width - 1.0))
                    }
                };
                (unweighted * costs.fp_weight, None)
            }
        };
        if i >= probation {
            out.push(Point {
                anomaly,
                sweep,
                window,
            });
        }
        if let Some((_, l, r)) = cur {
            if i == r {
                prev = Some((r, (r - l + 1) as f64));
                cur = None;
            }
        }
    }
    out
}

/// The corpus score at one threshold: rows with `anomaly >= threshold`
/// are detections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdScore {
    /// The anomaly-score threshold.
    pub threshold: f64,
    /// The summed (raw, unnormalised) score.
    pub score: f64,
}

/// Scores at every distinct threshold, highest threshold first (NAB's
/// `calcScoreByThreshold`); the first entry (1.1) detects nothing.
fn scores_by_threshold(
    mut points: Vec<Point>,
    costs: CostMatrix,
    n_windows: usize,
) -> Vec<ThresholdScore> {
    // Windows count (as misses) only if at least one of their rows is scorable.
    let mut best: Vec<Option<f64>> = vec![None; n_windows];
    for p in &points {
        if let Some(w) = p.window {
            best[w] = Some(-costs.fn_weight);
        }
    }
    let mut total: f64 = best.iter().flatten().sum();
    points.sort_by(|a, b| b.anomaly.total_cmp(&a.anomaly));
    let mut out = Vec::new();
    let mut threshold = 1.1;
    for p in &points {
        if p.anomaly != threshold {
            out.push(ThresholdScore {
                threshold,
                score: total,
            });
            threshold = p.anomaly;
        }
        match p.window {
            None => total += p.sweep,
            Some(w) => {
                if let Some(b) = best[w].as_mut() {
                    if p.sweep > *b {
                        total += p.sweep - *b;
                        *b = p.sweep;
                    }
                }
            }
        }
    }
    out.push(ThresholdScore {
        threshold,
        score: total,
    });
    out
}

/// What one file earns at the corpus threshold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FileScore {
    /// Raw score (sum of the window rewards/costs and false-positive costs).
    pub raw: f64,
    /// Windows with at least one scorable row.
    pub windows: usize,
    /// Of those, windows detected.
    pub detected: usize,
    /// Detections outside windows (rows).
    pub false_positives: usize,
}

/// Scores one file at a fixed threshold (NAB's `scoreDataSet`).
pub fn score_file(file: FileInput<'_>, costs: CostMatrix, threshold: f64) -> FileScore {
    let points = sweep_file(file, costs, 0);
    let mut best: BTreeMap<usize, Option<f64>> = BTreeMap::new();
    let mut out = FileScore::default();
    for p in &points {
        let detected = p.anomaly >= threshold;
        match p.window {
            None if detected => {
                out.raw += p.sweep;
                out.false_positives += 1;
            }
            None => {}
            Some(w) => {
                let b = best.entry(w).or_insert(None);
                if detected {
                    *b = Some(b.map_or(p.sweep, |v: f64| v.max(p.sweep)));
                }
            }
        }
    }
    out.windows = best.len();
    for b in best.values() {
        match b {
            Some(v) => {
                out.raw += v;
                out.detected += 1;
            }
            None => out.raw -= costs.fn_weight,
        }
    }
    out
}

/// The result of scoring a whole corpus under one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusScore {
    /// The threshold that maximises the summed raw score.
    pub threshold: f64,
    /// That maximal raw score.
    pub raw: f64,
    /// The raw score of NAB's null detector (constant 0.5) on the corpus.
    pub null: f64,
    /// The raw score of a perfect detector: `tp` per labelled window.
    pub perfect: f64,
    /// `100·(raw - null)/(perfect - null)`: NAB's published figure.
    pub normalized: f64,
    /// Each file's share at `threshold`, in input order.
    pub files: Vec<FileScore>,
}

/// The optimal threshold and its raw score over all files.
fn optimize(files: &[FileInput<'_>], costs: CostMatrix) -> ThresholdScore {
    let mut points = Vec::new();
    let mut n_windows = 0;
    for f in files {
        points.extend(sweep_file(*f, costs, n_windows));
        n_windows += f.windows.len();
    }
    let all = scores_by_threshold(points, costs, n_windows);
    // NAB sorts by score, highest first, keeping the first (highest
    // threshold) among equals: a stable max-by that prefers earlier entries.
    let mut best = all[0];
    for s in &all[1..] {
        if s.score > best.score {
            best = *s;
        }
    }
    best
}

/// Scores a corpus the NAB way: optimise one threshold over all files,
/// score each file at it, normalise between the null and perfect detector.
pub fn score_corpus(files: &[FileInput<'_>], costs: CostMatrix) -> CorpusScore {
    let best = optimize(files, costs);
    let per_file: Vec<FileScore> = files
        .iter()
        .map(|f| score_file(*f, costs, best.threshold))
        .collect();
    let raw: f64 = per_file.iter().map(|f| f.raw).sum();
    let null_scores: Vec<Vec<f64>> = files.iter().map(|f| vec![0.5; f.scores.len()]).collect();
    let null_files: Vec<FileInput<'_>> = files
        .iter()
        .zip(&null_scores)
        .map(|(f, s)| FileInput {
            scores: s,
            windows: f.windows,
        })
        .collect();
    let null = optimize(&null_files, costs).score;
    let perfect = costs.tp_weight * files.iter().map(|f| f.windows.len()).sum::<usize>() as f64;
    CorpusScore {
        threshold: best.threshold,
        raw,
        null,
        perfect,
        normalized: normalize(raw, null, perfect),
        files: per_file,
    }
}

/// `100·(raw - null)/(perfect - null)`, or 0 when the corpus has no
/// windows (null and perfect coincide).
pub fn normalize(raw: f64, null: f64, perfect: f64) -> f64 {
    if perfect - null <= f64::EPSILON {
        0.0
    } else {
        100.0 * (raw - null) / (perfect - null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STD: CostMatrix = CostMatrix {
        tp_weight: 1.0,
        fp_weight: 0.11,
        fn_weight: 1.0,
    };

    #[test]
    fn scaled_sigmoid_matches_the_published_points() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert!(scaled_sigmoid(0.0).abs() < 1e-12);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn probation_is_capped_at_750_rows() {
        assert_eq!(probationary_length(1000), 150);
        assert_eq!(probationary_length(10_000), 750);
    }

    #[test]
    fn earliest_detection_in_window_earns_full_tp_and_a_miss_costs_fn() {
        let windows = [(500, 599)];
        let mut scores = vec![0.0; 1000];
        scores[500] = 1.0;
        let f = FileInput {
            scores: &scores,
            windows: &windows,
        };
        let s = score_file(f, STD, 0.5);
        assert!((s.raw - 1.0).abs() < 1e-9, "{s:?}");
        let none = score_file(f, STD, 1.1);
        assert_eq!(none.raw, -1.0);
        let c = score_corpus(&[f], STD);
        assert!((c.normalized - 100.0).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn false_positive_far_from_windows_costs_fp_weight() {
        let scores = {
            let mut s = vec![0.0; 1000];
            s[900] = 1.0;
            s
        };
        let f = FileInput {
            scores: &scores,
            windows: &[],
        };
        assert!((score_file(f, STD, 0.5).raw + 0.11).abs() < 1e-12);
        // The optimiser then prefers detecting nothing.
        assert_eq!(score_corpus(&[f], STD).raw, 0.0);
    }
}
