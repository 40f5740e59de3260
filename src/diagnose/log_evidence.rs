//! Log evidence: templates whose rate changed between a window before the
//! incident and the incident itself, as `Log` items with redacted example
//! lines and the downstream services the lines mention.
//!
//! The log miner ([`crate::logs::TemplateMiner`]) groups lines into
//! templates; [`count_templates`] counts each template in the two windows,
//! [`push_log_changes`] keeps the ones that appeared or rose and turns
//! them into evidence. Mentions are what lets the rules see "cart's errors
//! name payments" and then look at payments' own signals.

use std::collections::{BTreeMap, BTreeSet};

use super::bundle::fmt_num;
use super::evidence::{EvidenceBundle, EvidenceDetail, EvidenceId, EvidenceSource};
use crate::logs::{mask::mask_line, redact_secrets, TemplateId, TemplateMiner};
use crate::signal::TimestampMs;

/// One template's occurrences before and during the incident.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateWindowCounts {
    /// The template text (variables masked).
    pub template: String,
    /// Lines in the window before the incident.
    pub before: u64,
    /// Lines during the incident.
    pub during: u64,
    /// A few raw lines, from the incident window when there are any
    /// (redacted later, when they become evidence).
    pub examples: Vec<String>,
}

/// Mines `lines` (data time, message) and counts each template before and
/// from `during_from`, keeping up to `max_examples` lines per template
/// (incident-window lines first). Templates come out most-changed first.
pub fn count_templates<'a>(
    miner: &mut TemplateMiner,
    lines: impl IntoIterator<Item = (TimestampMs, &'a str)>,
    during_from: TimestampMs,
    max_examples: usize,
) -> Vec<TemplateWindowCounts> {
    struct Acc {
        before: u64,
        during: u64,
        during_examples: Vec<String>,
        before_examples: Vec<String>,
    }
    let mut by_id: BTreeMap<TemplateId, Acc> = BTreeMap::new();
    for (t, line) in lines {
        let id = miner.add(line);
        let acc = by_id.entry(id).or_insert(Acc {
            before: 0,
            during: 0,
            during_examples: Vec::new(),
            before_examples: Vec::new(),
        });
        let (count, examples) = if t >= during_from {
            (&mut acc.during, &mut acc.during_examples)
        } else {
            (&mut acc.before, &mut acc.before_examples)
        };
        *count += 1;
        if examples.len() < max_examples {
            examples.push(line.to_string());
        }
    }
    let mut out: Vec<TemplateWindowCounts> = by_id
        .into_iter()
        .map(|(id, acc)| {
            let mut examples = acc.during_examples;
            examples.extend(acc.before_examples);
            examples.truncate(max_examples);
            // An evicted template falls back to the masked first line.
            let template = miner
                .template(id)
                .map(|t| t.text)
                .or_else(|| examples.first().map(|l| mask_line(l)))
                .unwrap_or_default();
            TemplateWindowCounts {
                template,
                before: acc.before,
                during: acc.during,
                examples,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (b.during as i64 - b.before as i64)
            .cmp(&(a.during as i64 - a.before as i64))
            .then_with(|| a.template.cmp(&b.template))
    });
    out
}

/// The windows the counts cover, and whose logs they are.
#[derive(Debug, Clone, PartialEq)]
pub struct LogWindow {
    /// Service/workload whose logs these are.
    pub service: String,
    /// Length of the window before the incident, in minutes (> 0).
    pub before_minutes: f64,
    /// Length of the incident window, in minutes (> 0).
    pub during_minutes: f64,
    /// Time given to the items (usually the incident's start).
    pub at: TimestampMs,
}

/// When a template's change is worth an item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogChangeParams {
    /// A template that existed before must be at least this many times
    /// more frequent during the incident. Default 3.
    pub min_ratio: f64,
    /// Lowest rate during the incident, per minute: one stray line is not
    /// a change. Default 0.5.
    pub min_rate_during: f64,
    /// Items kept, largest rise first. Default 8.
    pub max_items: usize,
}

impl Default for LogChangeParams {
    fn default() -> Self {
        Self {
            min_ratio: 3.0,
            min_rate_during: 0.5,
            max_items: 8,
        }
    }
}

/// Adds a `Log` item for each template that appeared or rose (see
/// [`LogChangeParams`]), largest rise first. Example lines and the
/// template are redacted with [`redact_secrets`]; `mentions` lists the
/// `known_services` (other than the window's own service) named in the
/// template or examples. Returns the new ids.
pub fn push_log_changes(
    bundle: &mut EvidenceBundle,
    window: &LogWindow,
    counts: &[TemplateWindowCounts],
    known_services: &[String],
    params: &LogChangeParams,
) -> Vec<EvidenceId> {
    let before_min = window.before_minutes.max(f64::MIN_POSITIVE);
    let during_min = window.during_minutes.max(f64::MIN_POSITIVE);
    let mut changed: Vec<(f64, f64, &TemplateWindowCounts)> = counts
        .iter()
        .filter_map(|c| {
            let before = c.before as f64 / before_min;
            let during = c.during as f64 / during_min;
            let rose = during >= params.min_rate_during
                && (c.before == 0 || during >= params.min_ratio * before);
            rose.then_some((before, during, c))
        })
        .collect();
    changed.sort_by(|a, b| (b.1 - b.0).total_cmp(&(a.1 - a.0)));
    changed
        .into_iter()
        .take(params.max_items)
        .map(|(before, during, c)| {
            let tag = (c.before == 0).then_some("new");
            let rates = (before, during, tag);
            push_log_item(
                bundle,
                window.at,
                &window.service,
                &c.template,
                &c.examples,
                rates,
                known_services,
            )
        })
        .collect()
}

/// Adds a `Log` item for each of `incident.logs` (the templates the log
/// pipeline found changed around the incident's start, already redacted
/// when stored; redacted again here, cheaply, in case a store predates
/// that), with per-minute rates and the `known_services` the lines
/// mention. Returns the new ids. This is how stored log evidence reaches
/// the rules and the LLM.
pub fn push_incident_logs(
    bundle: &mut EvidenceBundle,
    incident: &crate::incident::Incident,
    known_services: &[String],
) -> Vec<EvidenceId> {
    incident
        .logs
        .iter()
        .map(|c| {
            let minutes = (c.window_ms as f64 / 60_000.0).max(f64::MIN_POSITIVE);
            let rates = (
                c.before as f64 / minutes,
                c.after as f64 / minutes,
                Some(c.change.as_str()),
            );
            let at = incident.opened_at;
            push_log_item(
                bundle,
                at,
                &c.service,
                &c.template,
                &c.examples,
                rates,
                known_services,
            )
        })
        .collect()
}

/// One `Log` item: the template and examples redacted, the services they
/// mention, and a one-line summary with the per-minute rates before and
/// during (`rates.2` tags the change, e.g. `new`). Shared by live windows
/// and stored incident evidence so both read alike.
fn push_log_item(
    bundle: &mut EvidenceBundle,
    at: TimestampMs,
    service: &str,
    template: &str,
    examples: &[String],
    rates: (f64, f64, Option<&str>),
    known_services: &[String],
) -> EvidenceId {
    let (before, during, tag) = rates;
    let examples: Vec<String> = examples
        .iter()
        .map(|l| redact_secrets(l).into_owned())
        .collect();
    let template = redact_secrets(template).into_owned();
    let mut mentions = BTreeSet::new();
    for text in examples.iter().chain(std::iter::once(&template)) {
        mentions.extend(find_mentions(text, known_services, service));
    }
    let mentions: Vec<String> = mentions.into_iter().collect();
    let summary = format!(
        "{service} logs: \"{}\" {} → {}/min{}{}.",
        shorten(&template, 120),
        fmt_num(before),
        fmt_num(during),
        tag.map(|t| format!(" ({t})")).unwrap_or_default(),
        if mentions.is_empty() {
            String::new()
        } else {
            format!(", mentions {}", mentions.join(", "))
        },
    );
    bundle.push(
        EvidenceSource::Log,
        at,
        summary,
        EvidenceDetail::Log {
            service: service.to_string(),
            template,
            rate_before: before,
            rate_during: during,
            examples,
            mentions,
        },
    )
}

/// The `known` services named in `text` as whole words (split on
/// anything but letters, digits, `-` and `_`, so `payments.shop.svc:8080`
/// and `http://payments/charge` both name `payments`), except `own`.
pub fn find_mentions(text: &str, known: &[String], own: &str) -> Vec<String> {
    let words: BTreeSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut found: Vec<String> = known
        .iter()
        .filter(|s| s.as_str() != own && words.contains(s.as_str()))
        .cloned()
        .collect();
    found.sort();
    found.dedup();
    found
}

fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max_chars).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["payments", "cart", "pay"].map(String::from).to_vec()
    }

    #[test]
    fn mentions_are_whole_words_and_skip_own_service() {
        assert_eq!(
            find_mentions(
                "cart: POST http://payments.shop.svc:8080/charge failed",
                &known(),
                "cart"
            ),
            ["payments"]
        );
        assert!(find_mentions("paymentservice down", &known(), "cart").is_empty());
    }

    #[test]
    fn stored_incident_logs_become_items_with_rates_and_mentions() {
        let mut incident = crate::incident::Incident {
            id: Some(1),
            cluster: "c".into(),
            group: [("service".to_string(), "cart".to_string())].into(),
            state: crate::incident::IncidentState::Open,
            severity: crate::incident::Severity::Warning,
            opened_at: 600_000,
            last_anomaly_at: 600_000,
            resolved_at: None,
            anomaly_count: 1,
            signals: Vec::new(),
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: Vec::new(),
        };
        incident.logs.push(crate::incident::LogTemplateChange {
            service: "cart".into(),
            template_id: 3,
            template: "POST http://payments/charge failed token=<*>".into(),
            level: Some("error".into()),
            change: crate::incident::LogChangeKind::New,
            before: 0,
            after: 50,
            window_ms: 300_000,
            first_seen: Some(590_000),
            examples: vec!["POST http://payments/charge failed password=hunter2".into()],
        });
        let mut b = EvidenceBundle::default();
        let ids = push_incident_logs(&mut b, &incident, &known());
        assert_eq!(ids.len(), 1);
        let EvidenceDetail::Log {
            rate_before,
            rate_during,
            examples,
            mentions,
            ..
        } = &b.items[0].detail
        else {
            panic!("expected a log item");
        };
        assert_eq!((*rate_before, *rate_during), (0.0, 10.0));
        assert_eq!(mentions, &["payments"]);
        assert!(!examples[0].contains("hunter2"), "{examples:?}");
        assert!(
            b.items[0].summary.contains("(new)"),
            "{}",
            b.items[0].summary
        );
    }

    #[test]
    fn new_and_risen_templates_become_redacted_items() {
        let mut miner = TemplateMiner::default();
        let mut lines: Vec<(i64, String)> = Vec::new();
        // 10 minutes before: steady "served" lines, a few warnings.
        for i in 0..100 {
            lines.push((i * 6_000, format!("served request {i} in 12 ms")));
        }
        lines.push((30_000, "cache warm for user 17".into()));
        // 5 minutes during: payments failures (new) with a token, served
        // at the same rate.
        for i in 0..50 {
            let t = 600_000 + i * 6_000;
            lines.push((t, format!("served request {i} in 13 ms")));
            lines.push((
                t,
                format!("call to payments.shop.svc failed attempt {i} token=abc{i}secret"),
            ));
        }
        lines.sort_by_key(|l| l.0);
        let counts = count_templates(
            &mut miner,
            lines.iter().map(|(t, l)| (*t, l.as_str())),
            600_000,
            3,
        );
        let mut b = EvidenceBundle::default();
        let window = LogWindow {
            service: "cart".into(),
            before_minutes: 10.0,
            during_minutes: 5.0,
            at: 600_000,
        };
        let ids = push_log_changes(
            &mut b,
            &window,
            &counts,
            &known(),
            &LogChangeParams::default(),
        );
        assert_eq!(
            ids.len(),
            1,
            "only the new failure template changed: {:?}",
            b.items
        );
        let EvidenceDetail::Log {
            rate_before,
            rate_during,
            examples,
            mentions,
            ..
        } = &b.items[0].detail
        else {
            panic!("expected a log item");
        };
        assert_eq!(*rate_before, 0.0);
        assert_eq!(*rate_during, 10.0);
        assert_eq!(mentions, &["payments"]);
        assert_eq!(examples.len(), 3);
        for e in examples {
            assert!(!e.contains("secret"), "unredacted example: {e}");
        }
        assert!(b.items[0].summary.contains("(new)"));
    }
}
