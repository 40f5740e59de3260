//! Writing OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`.
//!
//! promtool wants: every sample with a timestamp in **seconds**, the
//! samples of one metric family together, timestamps increasing within a
//! series, and `# EOF` as the last line. Prometheus only loads blocks within
//! its retention (15 days by default), so generate data relative to now.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Milliseconds since the Unix epoch (same unit as `aiopsd::signal::TimestampMs`).
pub type Ms = i64;

/// One series of a metric family: its labels and `(time ms, value)` points.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Labels without the metric name.
    pub labels: BTreeMap<String, String>,
    /// Points in increasing time order.
    pub points: Vec<(Ms, f64)>,
}

impl Series {
    /// A series with `labels` and no points yet.
    pub fn new(labels: &[(&str, &str)]) -> Self {
        Self {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            points: Vec::new(),
        }
    }

    /// Adds a point every `step` ms from `start` to `end` (inclusive), valued `f(t)`.
    pub fn sampled(mut self, start: Ms, end: Ms, step: Ms, f: impl Fn(Ms) -> f64) -> Self {
        assert!(step > 0, "step must be positive");
        let mut t = start;
        while t <= end {
            self.points.push((t, f(t)));
            t += step;
        }
        self
    }
}

/// A gauge metric family: name, help and series.
#[derive(Debug, Clone)]
pub struct Family {
    /// Metric name, e.g. `http_errors_ratio`.
    pub name: String,
    /// `# HELP` text.
    pub help: String,
    /// The series of this family.
    pub series: Vec<Series>,
}

impl Family {
    /// A gauge family.
    pub fn gauge(name: &str, help: &str, series: Vec<Series>) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            series,
        }
    }
}

/// A step anomaly: `base` everywhere except `[from, to)` where it is `peak`.
pub fn step_anomaly(base: f64, peak: f64, from: Ms, to: Ms) -> impl Fn(Ms) -> f64 {
    move |t| if (from..to).contains(&t) { peak } else { base }
}

/// The OpenMetrics text for `families`, ending with `# EOF`.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {} gauge", family.name);
        for series in &family.series {
            let labels = series
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_value(v)))
                .collect::<Vec<_>>()
                .join(",");
            for &(t, v) in &series.points {
                let _ = writeln!(
                    out,
                    "{}{{{labels}}} {} {}",
                    family.name,
                    format_value(v),
                    format_seconds(t)
                );
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Writes [`render`]`(families)` to `path`.
pub fn write(path: &Path, families: &[Family]) -> std::io::Result<()> {
    std::fs::write(path, render(families))
}

/// A float as OpenMetrics writes it (`NaN`, `+Inf`, `-Inf`, else decimal).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn format_seconds(t: Ms) -> String {
    if t % 1000 == 0 {
        format!("{}", t / 1000)
    } else {
        format!("{:.3}", t as f64 / 1000.0)
    }
}

fn escape_value(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}
