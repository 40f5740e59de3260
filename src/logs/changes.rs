//! Incident evidence from logs: the templates of the incident's service
//! whose counts changed around its start, as
//! [`crate::incident::LogTemplateChange`]s (the `Incident::logs` field).
//!
//! Detection confirms a change a sample or two after it began, and logs
//! often lead metrics, so the split is one bucket *before* the bucket
//! holding the incident's start: "before" is `evidence_window` up to the
//! split, "after" is `evidence_window` from it. Evidence is computed once,
//! when the source has read past the end of the after-window, and stored
//! in its own table, attached to the incident when it is loaded (see
//! `Store::record_incident_logs`), so the incident stage rewriting the
//! incident cannot erase it.

use std::collections::BTreeMap;

use super::window::{BucketCount, StreamKey};
use super::TemplateId;
use crate::incident::{LogChangeKind, LogTemplateChange};
use crate::signal::TimestampMs;

/// Changes kept per incident, largest first.
pub const MAX_CHANGES: usize = 8;

/// Where an incident's evidence windows lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceWindows {
    /// Start of before.
    pub before_from: TimestampMs,
    /// End of before, start of after.
    pub split_at: TimestampMs,
    /// End of after.
    pub after_until: TimestampMs,
}

impl EvidenceWindows {
    /// The windows around an incident opened at `opened_at` (see the
    /// module docs); both are whole buckets.
    pub fn around(opened_at: TimestampMs, bucket_ms: i64, window_ms: i64) -> Self {
        let bucket_ms = bucket_ms.max(1);
        let window = (window_ms.max(bucket_ms) / bucket_ms) * bucket_ms;
        let split_at = opened_at.div_euclid(bucket_ms) * bucket_ms - bucket_ms;
        Self {
            before_from: split_at - window,
            split_at,
            after_until: split_at + window,
        }
    }
}

/// What a template needs to count as changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeThresholds {
    /// Fewest lines after for a new or risen template. Default 3.
    pub min_after: u64,
    /// Factor after/before for a rise. Default 3.
    pub min_ratio: f64,
    /// Fewest lines before for a vanished or dropped template. Default 5.
    pub min_before_vanished: u64,
}

impl Default for ChangeThresholds {
    fn default() -> Self {
        Self {
            min_after: 3,
            min_ratio: 3.0,
            min_before_vanished: 5,
        }
    }
}

/// Text, level and examples of a template, as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateInfo {
    /// Redacted text.
    pub text: String,
    /// Level of its latest line, when known.
    pub level: Option<String>,
    /// Its first line ever seen (epoch ms), when known.
    pub first_seen: Option<TimestampMs>,
    /// Redacted examples, newest first.
    pub examples: Vec<String>,
}

/// The changed templates of `stream` given its bucket `counts` covering
/// `windows` (other rows are ignored) and each template's stored text.
pub fn template_changes(
    stream: &StreamKey,
    windows: EvidenceWindows,
    counts: &[BucketCount],
    info: &BTreeMap<TemplateId, TemplateInfo>,
    thresholds: &ChangeThresholds,
) -> Vec<LogTemplateChange> {
    let mut per_template: BTreeMap<TemplateId, (u64, u64)> = BTreeMap::new();
    for c in counts.iter().filter(|c| &c.stream == stream) {
        let e = per_template.entry(c.template).or_default();
        if (windows.before_from..windows.split_at).contains(&c.bucket_ms) {
            e.0 += c.lines;
        } else if (windows.split_at..windows.after_until).contains(&c.bucket_ms) {
            e.1 += c.lines;
        }
    }
    let ratio = thresholds.min_ratio;
    let mut changes: Vec<LogTemplateChange> = per_template
        .into_iter()
        .filter_map(|(id, (before, after))| {
            let (b, a) = (before as f64, after as f64);
            let change = if before == 0 && after >= thresholds.min_after {
                LogChangeKind::New
            } else if before > 0 && after >= thresholds.min_after && a >= ratio * b {
                LogChangeKind::Surge
            } else if after == 0 && before >= thresholds.min_before_vanished {
                LogChangeKind::Vanished
            } else if after > 0 && before >= thresholds.min_before_vanished && a * ratio <= b {
                LogChangeKind::Drop
            } else {
                return None;
            };
            let t = info.get(&id).cloned().unwrap_or_default();
            Some(LogTemplateChange {
                service: stream.service.clone(),
                template_id: id.0,
                template: t.text,
                level: t.level,
                change,
                before,
                after,
                window_ms: windows.split_at - windows.before_from,
                first_seen: t.first_seen,
                examples: t.examples,
            })
        })
        .collect();
    changes.sort_by(|a, b| {
        b.before
            .abs_diff(b.after)
            .cmp(&a.before.abs_diff(a.after))
            .then(a.template_id.cmp(&b.template_id))
    });
    changes.truncate(MAX_CHANGES);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(stream: &StreamKey, b: i64, t: u64, lines: u64, errors: u64) -> BucketCount {
        BucketCount {
            stream: stream.clone(),
            bucket_ms: b,
            template: TemplateId(t),
            lines,
            errors,
        }
    }

    #[test]
    fn windows_split_one_bucket_before_the_start() {
        let w = EvidenceWindows::around(630_000, 60_000, 300_000);
        assert_eq!(
            (w.before_from, w.split_at, w.after_until),
            (240_000, 540_000, 840_000)
        );
    }

    #[test]
    fn new_risen_dropped_and_vanished_templates_are_kept_steady_ones_not() {
        let cart = StreamKey::new(Some("shop"), "cart");
        let other = StreamKey::new(Some("shop"), "catalog");
        let w = EvidenceWindows::around(600_000, 60_000, 300_000);
        let mut counts = Vec::new();
        for b in (w.before_from..w.after_until).step_by(60_000) {
            let after = b >= w.split_at;
            counts.push(count(&cart, b, 1, 10, 0)); // steady
            if after {
                counts.push(count(&cart, b, 2, 8, 8)); // new, errors
                counts.push(count(&cart, b, 3, 6, 0)); // rose from 1/bucket
                counts.push(count(&cart, b, 5, 1, 0)); // dropped from 4/bucket
            } else {
                counts.push(count(&cart, b, 3, 1, 0));
                counts.push(count(&cart, b, 4, 2, 0)); // vanishes
                counts.push(count(&cart, b, 5, 4, 0));
            }
            counts.push(count(&other, b, 2, 100, 100)); // other stream
        }
        let info = BTreeMap::from([(
            TemplateId(2),
            TemplateInfo {
                text: "login failed password=<redacted>".into(),
                level: Some("ERROR".into()),
                first_seen: Some(540_000),
                examples: vec!["login failed password=<redacted>".into()],
            },
        )]);
        let c = template_changes(&cart, w, &counts, &info, &ChangeThresholds::default());
        let got: Vec<(u64, LogChangeKind, u64, u64)> = c
            .iter()
            .map(|c| (c.template_id, c.change, c.before, c.after))
            .collect();
        assert_eq!(
            got,
            [
                (2, LogChangeKind::New, 0, 40),
                (3, LogChangeKind::Surge, 5, 30),
                (5, LogChangeKind::Drop, 20, 5),
                (4, LogChangeKind::Vanished, 10, 0),
            ]
        );
        assert_eq!(c[0].service, "cart");
        assert_eq!(c[0].window_ms, 300_000);
        assert_eq!(c[0].level.as_deref(), Some("ERROR"));
        assert_eq!(c[0].examples, ["login failed password=<redacted>"]);
    }
}
