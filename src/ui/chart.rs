//! SVG line charts of an incident's series, written directly in Rust.
//!
//! Why not plotters: its SVG backend lays out text through a font backend
//! (the `ttf` feature pulls font loading), and its output has no hooks for
//! what matters here — a `<title>`/`<desc>` a screen reader reads, CSS
//! classes so the page's stylesheet themes the chart (and a strict CSP
//! forbids inline styles), and marks that do not rely on colour. The chart
//! is small: a polyline, a shaded anomaly window with a text label, square
//! markers on anomalous samples, the peak annotated with its score, an
//! optional forecast band, and min/max/time labels. About 200 lines, no
//! dependency, and every piece of text goes through [`escape`].

use std::fmt::Write as _;

use crate::signal::{Sample, TimestampMs};

/// Drawing size in SVG units; the page scales it to its width.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 28.0;

/// Most samples drawn; longer evidence is thinned evenly (anomalous
/// samples are always kept).
const MAX_POINTS: usize = 2000;

/// One point of a forecast band: the interval expected at `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandPoint {
    /// Data time.
    pub t: TimestampMs,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

/// The peak to annotate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakMark {
    /// When.
    pub t: TimestampMs,
    /// Observed value.
    pub value: f64,
    /// Signed detector score.
    pub score: f64,
    /// What the detector expected there.
    pub expected: f64,
}

/// What to draw.
#[derive(Debug, Clone, Copy)]
pub struct ChartSpec<'a> {
    /// Unique within the page (used in element ids).
    pub id: &'a str,
    /// Accessible title, e.g. the series name.
    pub title: &'a str,
    /// Samples in time order.
    pub samples: &'a [Sample],
    /// Times of the anomalous samples.
    pub anomalous_at: &'a [TimestampMs],
    /// The anomaly window to shade (first to last anomalous sample).
    pub window: Option<(TimestampMs, TimestampMs)>,
    /// The peak, annotated with its score.
    pub peak: Option<PeakMark>,
    /// A forecast band, when one exists.
    pub band: Option<&'a [BandPoint]>,
}

/// Escapes text for SVG/HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the chart as an inline `<svg>` element. An empty series gives
/// a chart that says so rather than nothing.
pub fn render(spec: &ChartSpec<'_>) -> String {
    let samples = thin(spec.samples, spec.anomalous_at);
    let mut svg = String::with_capacity(256 + samples.len() * 24);
    let id = escape(spec.id);
    // Writing to a String cannot fail; the results are ignored below.
    let _ = write!(
        svg,
        r#"<svg class="chart" id="{id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title {id}-desc" data-samples="{}" data-anomalous="{}">"#,
        samples.len(),
        spec.anomalous_at.len()
    );
    let _ = write!(
        svg,
        r#"<title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
        escape(spec.title),
        escape(&describe(spec))
    );
    let Some(frame) = Frame::fit(&samples, spec) else {
        let _ = write!(
            svg,
            r#"<text class="empty" x="{}" y="{}" text-anchor="middle">no samples recorded</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return svg;
    };
    // Plot area outline.
    let _ = write!(
        svg,
        r#"<rect class="plot" x="{LEFT}" y="{TOP}" width="{}" height="{}"/>"#,
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
    if let Some(band) = spec.band.filter(|b| !b.is_empty()) {
        let mut points = String::new();
        for p in band {
            let _ = write!(points, "{:.1},{:.1} ", frame.x(p.t), frame.y(p.hi));
        }
        for p in band.iter().rev() {
            let _ = write!(points, "{:.1},{:.1} ", frame.x(p.t), frame.y(p.lo));
        }
        let _ = write!(
            svg,
            r#"<polygon class="band" points="{}"><title>forecast interval</title></polygon>"#,
            points.trim_end()
        );
    }
    if let Some((from, to)) = spec.window {
        let (x0, x1) = (frame.x(from), frame.x(to));
        // At least a few units wide, so a one-sample anomaly is visible.
        let (x0, w) = if x1 - x0 < 6.0 {
            ((x0 - 3.0).max(LEFT), 6.0)
        } else {
            (x0, x1 - x0)
        };
        let _ = write!(
            svg,
            r#"<rect class="anomaly-window" x="{x0:.1}" y="{TOP}" width="{w:.1}" height="{}"/><text class="window-label" x="{:.1}" y="{}">anomalous</text>"#,
            HEIGHT - TOP - BOTTOM,
            x0 + 2.0,
            TOP - 6.0
        );
    }
    if let Some(p) = spec.peak {
        if p.expected.is_finite() {
            let y = frame.y(p.expected);
            let _ = write!(
                svg,
                r#"<line class="expected" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/>"#,
                WIDTH - RIGHT
            );
        }
    }
    let mut points = String::with_capacity(samples.len() * 14);
    for s in &samples {
        let _ = write!(points, "{:.1},{:.1} ", frame.x(s.t), frame.y(s.v));
    }
    let _ = write!(
        svg,
        r#"<polyline class="line" points="{}"/>"#,
        points.trim_end()
    );
    for s in samples.iter().filter(|s| spec.anomalous_at.contains(&s.t)) {
        let _ = write!(
            svg,
            r#"<rect class="pt-anomalous" x="{:.1}" y="{:.1}" width="5" height="5"/>"#,
            frame.x(s.t) - 2.5,
            frame.y(s.v) - 2.5
        );
    }
    if let Some(p) = spec.peak {
        let (x, y) = (frame.x(p.t), frame.y(p.value));
        let anchor = if x > WIDTH / 2.0 { "end" } else { "start" };
        let dx = if x > WIDTH / 2.0 { -8.0 } else { 8.0 };
        let _ = write!(
            svg,
            r#"<circle class="peak" cx="{x:.1}" cy="{y:.1}" r="4"/><text class="peak-label" x="{:.1}" y="{:.1}" text-anchor="{anchor}">peak {} ({})</text>"#,
            x + dx,
            (y + 4.0).clamp(TOP + 10.0, HEIGHT - BOTTOM - 4.0),
            escape(&super::page::num(p.value)),
            escape(&super::page::score(p.score))
        );
    }
    // Axis labels: max, min; first and last time.
    let _ = write!(
        svg,
        r#"<text class="axis" x="{}" y="{}" text-anchor="end">{}</text><text class="axis" x="{}" y="{}" text-anchor="end">{}</text>"#,
        LEFT - 6.0,
        TOP + 8.0,
        escape(&super::page::num(frame.v_max)),
        LEFT - 6.0,
        HEIGHT - BOTTOM,
        escape(&super::page::num(frame.v_min)),
    );
    let _ = write!(
        svg,
        r#"<text class="axis" x="{LEFT}" y="{}">{}</text><text class="axis" x="{}" y="{}" text-anchor="end">{} UTC</text></svg>"#,
        HEIGHT - 8.0,
        clock(frame.t_min),
        WIDTH - RIGHT,
        HEIGHT - 8.0,
        clock(frame.t_max),
    );
    svg
}

/// The sentence a screen reader gets instead of the picture.
fn describe(spec: &ChartSpec<'_>) -> String {
    let (Some(first), Some(last)) = (spec.samples.first(), spec.samples.last()) else {
        return "No samples were recorded.".into();
    };
    let mut d = format!(
        "{} samples from {} to {} UTC",
        spec.samples.len(),
        clock(first.t),
        clock(last.t)
    );
    if let Some((from, to)) = spec.window {
        let _ = write!(d, "; anomalous from {} to {}", clock(from), clock(to));
    }
    if let Some(p) = spec.peak {
        let _ = write!(
            d,
            "; peak {} at {} where about {} was expected (score {})",
            super::page::num(p.value),
            clock(p.t),
            super::page::num(p.expected),
            super::page::score(p.score)
        );
    }
    d.push('.');
    d
}

/// `HH:MM:SS` of a data time (UTC).
fn clock(t: TimestampMs) -> String {
    let ts = crate::signal::format_ts(t);
    ts.get(11..19).unwrap_or(&ts).to_string()
}

/// Keeps at most [`MAX_POINTS`] samples, evenly, plus every anomalous one.
fn thin(samples: &[Sample], anomalous_at: &[TimestampMs]) -> Vec<Sample> {
    let finite = samples.iter().filter(|s| s.v.is_finite());
    if samples.len() <= MAX_POINTS {
        return finite.copied().collect();
    }
    let stride = samples.len().div_ceil(MAX_POINTS);
    finite
        .enumerate()
        .filter(|(i, s)| i % stride == 0 || anomalous_at.contains(&s.t))
        .map(|(_, s)| *s)
        .collect()
}

/// Maps data to drawing coordinates.
struct Frame {
    t_min: TimestampMs,
    t_max: TimestampMs,
    v_min: f64,
    v_max: f64,
}

impl Frame {
    fn fit(samples: &[Sample], spec: &ChartSpec<'_>) -> Option<Frame> {
        let t_min = samples.first()?.t;
        let t_max = samples.last()?.t;
        let mut values: Vec<f64> = samples.iter().map(|s| s.v).collect();
        if let Some(p) = spec.peak {
            values.push(p.expected);
        }
        for b in spec.band.unwrap_or_default() {
            values.extend([b.lo, b.hi]);
        }
        let finite = values.iter().copied().filter(|v| v.is_finite());
        let lo = finite.clone().fold(f64::INFINITY, f64::min);
        let hi = finite.fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if hi - lo > f64::EPSILON * hi.abs().max(1.0) {
            let pad = (hi - lo) * 0.08;
            (lo - pad, hi + pad)
        } else {
            // A flat line sits in the middle.
            let pad = (hi.abs() * 0.1).max(1.0);
            (lo - pad, hi + pad)
        };
        // A single sample gets a minute either side.
        let (t_min, t_max) = if t_max > t_min {
            (t_min, t_max)
        } else {
            (t_min - 60_000, t_max + 60_000)
        };
        Some(Frame {
            t_min,
            t_max,
            v_min: lo,
            v_max: hi,
        })
    }

    fn x(&self, t: TimestampMs) -> f64 {
        let span = (self.t_max - self.t_min) as f64;
        let f = ((t - self.t_min) as f64 / span).clamp(0.0, 1.0);
        LEFT + f * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let f = ((v - self.v_min) / (self.v_max - self.v_min)).clamp(0.0, 1.0);
        HEIGHT - BOTTOM - f * (HEIGHT - TOP - BOTTOM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[f64]) -> Vec<Sample> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample {
                t: 1_700_000_000_000 + i as i64 * 60_000,
                v,
            })
            .collect()
    }

    fn polyline_points(svg: &str) -> Vec<(f64, f64)> {
        let marker = r#"<polyline class="line" points=""#;
        let start = svg.find(marker).expect("polyline") + marker.len();
        let end = start + svg[start..].find('"').expect("end");
        svg[start..end]
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect()
    }

    #[test]
    fn a_spike_is_drawn_highest_with_its_window_and_peak() {
        let s = samples(&[1.0, 1.1, 0.9, 9.0, 8.5, 1.0]);
        let anomalous = [s[3].t, s[4].t];
        let svg = render(&ChartSpec {
            id: "c1",
            title: "latency",
            samples: &s,
            anomalous_at: &anomalous,
            window: Some((s[3].t, s[4].t)),
            peak: Some(PeakMark {
                t: s[3].t,
                value: 9.0,
                score: 12.0,
                expected: 1.0,
            }),
            band: None,
        });
        let points = polyline_points(&svg);
        assert_eq!(points.len(), 6);
        // SVG y grows downwards: the spike has the smallest y, and x grows.
        let top = points
            .iter()
            .enumerate()
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
            .map(|(i, _)| i);
        assert_eq!(top, Some(3));
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(svg.matches(r#"class="pt-anomalous""#).count(), 2);
        assert!(svg.contains(r#"class="anomaly-window""#));
        assert!(svg.contains(">anomalous</text>"), "window labelled in text");
        assert!(svg.contains("peak 9 (+12.0σ)"), "{svg}");
        assert!(svg.contains("anomalous from"), "desc for screen readers");
        assert!(svg.contains(r#"data-samples="6""#));
    }

    #[test]
    fn text_from_labels_is_escaped() {
        let s = samples(&[1.0, 2.0]);
        let svg = render(&ChartSpec {
            id: "x\"><script>",
            title: "err{service=\"<script>alert(1)</script>\"}",
            samples: &s,
            anomalous_at: &[],
            window: None,
            peak: None,
            band: None,
        });
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn empty_flat_and_single_series_render() {
        let svg = render(&ChartSpec {
            id: "e",
            title: "t",
            samples: &[],
            anomalous_at: &[],
            window: None,
            peak: None,
            band: None,
        });
        assert!(svg.contains("no samples recorded") && svg.ends_with("</svg>"));
        for values in [&[5.0, 5.0, 5.0][..], &[5.0][..]] {
            let s = samples(values);
            let svg = render(&ChartSpec {
                id: "f",
                title: "t",
                samples: &s,
                anomalous_at: &[],
                window: None,
                peak: None,
                band: None,
            });
            let points = polyline_points(&svg);
            assert_eq!(points.len(), values.len());
            assert!(points.iter().all(|(x, y)| x.is_finite() && y.is_finite()));
        }
    }

    #[test]
    fn a_forecast_band_is_a_polygon_around_the_line() {
        let s = samples(&[1.0, 2.0, 3.0]);
        let band: Vec<BandPoint> = s
            .iter()
            .map(|p| BandPoint {
                t: p.t,
                lo: p.v - 1.0,
                hi: p.v + 1.0,
            })
            .collect();
        let svg = render(&ChartSpec {
            id: "b",
            title: "t",
            samples: &s,
            anomalous_at: &[],
            window: None,
            peak: None,
            band: Some(&band),
        });
        assert!(svg.contains(r#"<polygon class="band""#));
        assert_eq!(
            svg.split(r#"points=""#).nth(1).map(|p| p
                .split('"')
                .next()
                .unwrap_or("")
                .split(' ')
                .count()),
            Some(6)
        );
    }

    #[test]
    fn long_series_are_thinned_but_keep_anomalies() {
        let values: Vec<f64> = (0..10_000).map(|i| f64::from(i % 7)).collect();
        let s = samples(&values);
        let anomalous = [s[4_321].t];
        let kept = thin(&s, &anomalous);
        assert!(kept.len() <= MAX_POINTS + 1, "{}", kept.len());
        assert!(kept.iter().any(|k| k.t == s[4_321].t));
    }
}
