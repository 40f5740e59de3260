//! `aiopsd backtest`: run detectors over a labelled corpus in NAB's layout
//! and score them with the NAB algorithm ([`nab`]), so detection quality is
//! a number measured the way the field measures it, not an impression.
//!
//! Start at [`run`]: it loads the corpus ([`corpus`]), runs one detector
//! per series (the same [`crate::detect::Detector`] the daemon runs, fed
//! sample by sample, so what we measure is what users get), scores every
//! profile, and optionally writes NAB's results layout so NAB's own scorer
//! can confirm the figures.

pub mod corpus;
pub mod nab;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::detect::DetectorSpec;
use crate::signal::Direction;

use corpus::Series;
use nab::{CorpusScore, FileInput, Profile};

/// What can go wrong reading a corpus or writing results.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// A file or directory could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of a CSV or JSON file is malformed.
    #[error("{}: line {line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The labels do not fit the data.
    #[error("{}: {message}", path.display())]
    Label {
        /// The labels file.
        path: PathBuf,
        /// What is wrong, naming the series.
        message: String,
    },
    /// The data directory has no `<category>/<file>.csv`.
    #[error("{}: no <category>/<file>.csv files found", .0.display())]
    EmptyCorpus(PathBuf),
    /// The detector spec is invalid.
    #[error("invalid detector: {0}")]
    Detector(String),
}

/// Runs `spec` over one series, returning an anomaly score in [0, 1] per
/// row (the detector's calibrated likelihood).
pub fn score_series(spec: &DetectorSpec, series: &Series) -> Vec<f64> {
    let mut det = spec.build(Direction::Both);
    series
        .timestamps
        .iter()
        .zip(&series.values)
        .map(|(&t, &x)| {
            let (_, p) = det.update_likelihood(t, x);
            if p.is_finite() {
                p.clamp(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect()
}

/// Scores of every profile for one set of per-series anomaly scores.
#[derive(Debug, Clone)]
pub struct Report {
    /// Series names, in corpus order.
    pub series: Vec<String>,
    /// Their categories.
    pub categories: Vec<String>,
    /// Per profile: the corpus score (with per-file parts).
    pub profiles: Vec<(Profile, CorpusScore)>,
}

/// Scores per-series anomaly scores (aligned with `corpus`) under each profile.
pub fn score(corpus: &[Series], scores: &[Vec<f64>], profiles: &[Profile]) -> Report {
    let inputs: Vec<FileInput<'_>> = corpus
        .iter()
        .zip(scores)
        .map(|(s, sc)| FileInput {
            scores: sc,
            windows: &s.windows,
        })
        .collect();
    Report {
        series: corpus.iter().map(|s| s.name.clone()).collect(),
        categories: corpus.iter().map(|s| s.category.clone()).collect(),
        profiles: profiles
            .iter()
            .map(|p| (p.clone(), nab::score_corpus(&inputs, p.costs)))
            .collect(),
    }
}

impl Report {
    /// The normalised score of the named profile, if scored.
    pub fn normalized(&self, profile: &str) -> Option<f64> {
        self.profiles
            .iter()
            .find(|(p, _)| p.name == profile)
            .map(|(_, s)| s.normalized)
    }

    /// A plain-text table: per profile the total, then per category the
    /// raw score, windows detected and false-positive rows.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for (p, s) in &self.profiles {
            let _ = writeln!(
                out,
                "profile {:<20} score {:>7.2}  (raw {:.3}, null {:.1}, perfect {:.1}, threshold {:.6})",
                p.name, s.normalized, s.raw, s.null, s.perfect, s.threshold
            );
            let mut cats: BTreeMap<&str, (f64, usize, usize, usize)> = BTreeMap::new();
            for (c, f) in self.categories.iter().zip(&s.files) {
                let e = cats.entry(c).or_default();
                e.0 += f.raw;
                e.1 += f.detected;
                e.2 += f.windows;
                e.3 += f.false_positives;
            }
            let _ = writeln!(
                out,
                "  {:<24} {:>8} {:>10} {:>9} {:>8}",
                "category", "score", "raw", "windows", "FP rows"
            );
            for (c, (raw, det, win, fp)) in cats {
                // Per-category normalisation: null misses every window (-fn each).
                let null = -p.costs.fn_weight * win as f64;
                let perfect = p.costs.tp_weight * win as f64;
                let norm = if win == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", nab::normalize(raw, null, perfect))
                };
                let _ = writeln!(
                    out,
                    "  {c:<24} {norm:>8} {raw:>10.3} {:>9} {fp:>8}",
                    format!("{det}/{win}")
                );
            }
        }
        out
    }
}

/// Writes scores in NAB's results layout:
/// `out/<detector>/<category>/<detector>_<file>.csv` with columns
/// `timestamp,value,anomaly_score,label` (label 1 inside a window), which
/// NAB's scorer reads as a detector's output.
pub fn write_results(
    out: &Path,
    detector: &str,
    corpus: &[Series],
    scores: &[Vec<f64>],
) -> Result<(), BacktestError> {
    for (s, sc) in corpus.iter().zip(scores) {
        let file = s.name.rsplit('/').next().unwrap_or(&s.name);
        let dir = out.join(detector).join(&s.category);
        let write_err = |path: &Path, source| BacktestError::Write {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
        let path = dir.join(format!("{detector}_{file}"));
        let mut text = String::with_capacity(s.values.len() * 48);
        text.push_str("timestamp,value,anomaly_score,label\n");
        let mut w = 0;
        for (i, ((t, v), a)) in s.raw_timestamps.iter().zip(&s.values).zip(sc).enumerate() {
            while w < s.windows.len() && s.windows[w].1 < i {
                w += 1;
            }
            let label = u8::from(s.windows.get(w).is_some_and(|&(l, r)| l <= i && i <= r));
            text.push_str(&format!("{t},{v},{a},{label}\n"));
        }
        std::fs::write(&path, text).map_err(|e| write_err(&path, e))?;
    }
    Ok(())
}

/// Loads the corpus, runs `spec` on every series, scores every profile
/// and writes NAB results under `results` if given.
pub fn run(
    data: &Path,
    labels: &Path,
    profiles: &[Profile],
    spec: &DetectorSpec,
    results: Option<&Path>,
) -> Result<Report, BacktestError> {
    spec.validate().map_err(BacktestError::Detector)?;
    let label_map = corpus::read_labels(labels)?;
    let series = corpus::load_corpus(data, &label_map, labels)?;
    let scores: Vec<Vec<f64>> = series.iter().map(|s| score_series(spec, s)).collect();
    if let Some(out) = results {
        write_results(out, "aiopsd", &series, &scores)?;
    }
    Ok(score(&series, &scores, profiles))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NAB sample shipped beside the repository (CI clones shared/ next to it).
    fn nab_dir() -> PathBuf {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/nab"));
        assert!(
            dir.join("labels.json").is_file(),
            "NAB test data missing at {}: clone shared/ beside the repository",
            dir.display()
        );
        dir
    }

    /// The acceptance test of the scorer: NAB's own scorer gave the numbers
    /// in reference/scores.json for these raw outputs; ours must agree.
    #[test]
    fn scorer_reproduces_nab_reference_scores() {
        let dir = nab_dir();
        let labels_path = dir.join("labels.json");
        let labels = corpus::read_labels(&labels_path).expect("labels");
        let series = corpus::load_corpus(&dir.join("data"), &labels, &labels_path).expect("corpus");
        assert_eq!(series.len(), 31);
        assert_eq!(series.iter().map(|s| s.windows.len()).sum::<usize>(), 57);
        let profiles = corpus::read_profiles(&dir.join("profiles.json")).expect("profiles");
        assert_eq!(profiles.len(), 3);
        for p in nab::standard_profiles() {
            assert!(
                profiles.contains(&p),
                "built-in profile {} differs from profiles.json",
                p.name
            );
        }
        let expected: BTreeMap<String, BTreeMap<String, f64>> = serde_json::from_str(
            &std::fs::read_to_string(dir.join("reference/scores.json")).expect("scores.json"),
        )
        .expect("scores.json parses");
        let mut checked = 0;
        for detector in ["numenta", "windowedGaussian"] {
            let scores: Vec<Vec<f64>> = series
                .iter()
                .map(|s| {
                    corpus::read_results(&dir.join("reference"), detector, s).expect("results")
                })
                .collect();
            let report = score(&series, &scores, &profiles);
            for (p, s) in &report.profiles {
                let want = expected[detector][&p.name];
                assert!(
                    (s.normalized - want).abs() < 0.05,
                    "{detector}/{}: ours {:.4}, NAB {want:.4}",
                    p.name,
                    s.normalized
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 6);
    }
}
