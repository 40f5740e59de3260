//! One read window of the log pipeline, aggregated: per stream (service and
//! namespace) a template miner, and per bucket and template the lines and
//! error-level lines counted since the last commit.
//!
//! Pure and synchronous, like the miner. The pipeline feeds it every
//! document of a read ([`WindowAggregator::add`]), then takes the window's
//! [`WindowDelta`] ([`WindowAggregator::take`]) and commits it to the store
//! together with the source's checkpoint, in one transaction: the counts
//! in the store are then exactly the documents before the checkpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::elastic::{LogDoc, MAX_SERVICES, OTHER_SERVICES, UNKNOWN_SERVICE};
use super::{MinerParams, Redactor, TemplateId, TemplateMiner};

/// Example lines kept per template (redacted), newest first.
pub const MAX_EXAMPLES: usize = 3;

/// Whose logs: a service, and its namespace when the source knows it
/// (empty otherwise). Log signals carry both as labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// Namespace, or `""` when unknown.
    pub namespace: String,
    /// Service name ([`UNKNOWN_SERVICE`] when the document had none).
    pub service: String,
}

impl StreamKey {
    /// A stream key; `namespace` `None` is stored as `""`.
    pub fn new(namespace: Option<&str>, service: &str) -> Self {
        Self {
            namespace: namespace.unwrap_or_default().to_owned(),
            service: service.to_owned(),
        }
    }

    /// The namespace, if known.
    pub fn namespace(&self) -> Option<&str> {
        (!self.namespace.is_empty()).then_some(self.namespace.as_str())
    }
}

/// A template touched by a window: its current text and what the window
/// saw of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateUpdate {
    /// Whose template.
    pub stream: StreamKey,
    /// Its id within the stream's miner.
    pub id: TemplateId,
    /// Template text, secrets redacted (it keeps literal tokens of rare
    /// lines, which may be secrets).
    pub text: String,
    /// Earliest line of the template in this window (epoch ms).
    pub first_seen_ms: i64,
    /// Latest line of the template in this window (epoch ms).
    pub last_seen_ms: i64,
    /// Level of the latest line that had one.
    pub level: Option<String>,
    /// Up to [`MAX_EXAMPLES`] lines of this window, redacted, newest first.
    pub examples: Vec<String>,
}

/// Lines of one template of one stream in one bucket, as counted by a
/// window (added to what the store holds) or read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCount {
    /// Whose lines.
    pub stream: StreamKey,
    /// Start of the bucket, epoch ms (a multiple of the bucket width).
    pub bucket_ms: i64,
    /// Template id within the stream.
    pub template: TemplateId,
    /// Lines.
    pub lines: u64,
    /// Lines whose level is one of `error_levels`.
    pub errors: u64,
}

/// What one window adds to the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowDelta {
    /// Templates that matched lines in the window (new or changed text).
    pub templates: Vec<TemplateUpdate>,
    /// Counts to add, per stream, bucket and template.
    pub counts: Vec<BucketCount>,
    /// Documents in the window.
    pub documents: u64,
}

impl WindowDelta {
    /// True when the window saw no document.
    pub fn is_empty(&self) -> bool {
        self.documents == 0
    }
}

/// A template as stored, to restore the miners after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTemplate {
    /// Whose template.
    pub stream: StreamKey,
    /// Its id (kept across restarts).
    pub id: TemplateId,
    /// Its (redacted) text.
    pub text: String,
    /// First line ever seen, epoch ms.
    pub first_seen_ms: i64,
    /// Latest line seen, epoch ms.
    pub last_seen_ms: i64,
    /// Level of the latest line that had one.
    pub level: Option<String>,
    /// Example lines, redacted, newest first.
    pub examples: Vec<String>,
}

#[derive(Debug)]
struct Touched {
    first_seen_ms: i64,
    last_seen_ms: i64,
    level: Option<String>,
    examples: Vec<String>,
}

/// Mines and counts documents between two commits (see the module docs).
#[derive(Debug)]
pub struct WindowAggregator {
    bucket_ms: i64,
    error_levels: HashSet<String>,
    params: MinerParams,
    miners: HashMap<StreamKey, TemplateMiner>,
    counts: BTreeMap<(StreamKey, i64, TemplateId), (u64, u64)>,
    touched: HashMap<(StreamKey, TemplateId), Touched>,
    documents: u64,
    redactor: Redactor,
}

impl WindowAggregator {
    /// An aggregator counting per `bucket_ms` (at least 1), treating
    /// `error_levels` (any case) as errors, with miners restored from
    /// `templates` so template ids continue where the last run stopped.
    pub fn new(
        bucket_ms: i64,
        error_levels: &[String],
        params: MinerParams,
        templates: Vec<StoredTemplate>,
    ) -> Self {
        let mut by_stream: BTreeMap<StreamKey, Vec<(TemplateId, String)>> = BTreeMap::new();
        for t in templates {
            by_stream.entry(t.stream).or_default().push((t.id, t.text));
        }
        let miners = by_stream
            .into_iter()
            .map(|(stream, ts)| (stream, TemplateMiner::restore(params.clone(), ts)))
            .collect();
        Self {
            bucket_ms: bucket_ms.max(1),
            error_levels: error_levels.iter().map(|l| l.to_lowercase()).collect(),
            params,
            miners,
            counts: BTreeMap::new(),
            touched: HashMap::new(),
            documents: 0,
            redactor: Redactor::default(),
        }
    }

    /// Redacts examples and templates with `redactor` (the configured
    /// patterns) instead of the built-in rules alone.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// The bucket start of a timestamp.
    pub fn bucket_of(&self, t: i64) -> i64 {
        t.div_euclid(self.bucket_ms) * self.bucket_ms
    }

    /// Mines and counts one document; returns its stream and template.
    pub fn add(&mut self, doc: &LogDoc) -> (StreamKey, TemplateId) {
        let service = doc.service.as_deref().unwrap_or(UNKNOWN_SERVICE);
        let mut stream = StreamKey::new(doc.namespace.as_deref(), service);
        if !self.miners.contains_key(&stream) && self.miners.len() >= MAX_SERVICES {
            // Bounded memory when the service field turns out to hold
            // something high-cardinality.
            stream = StreamKey::new(None, OTHER_SERVICES);
        }
        let params = &self.params;
        let miner = self
            .miners
            .entry(stream.clone())
            .or_insert_with(|| TemplateMiner::new(params.clone()));
        let id = miner.add(&doc.message);
        let bucket = self.bucket_of(doc.timestamp_ms);
        let error = doc
            .level
            .as_deref()
            .is_some_and(|l| self.error_levels.contains(&l.to_lowercase()));
        let c = self.counts.entry((stream.clone(), bucket, id)).or_default();
        c.0 += 1;
        c.1 += u64::from(error);
        let t = self
            .touched
            .entry((stream.clone(), id))
            .or_insert_with(|| Touched {
                first_seen_ms: doc.timestamp_ms,
                last_seen_ms: doc.timestamp_ms,
                level: None,
                examples: Vec::new(),
            });
        if doc.level.is_some() {
            t.level.clone_from(&doc.level);
        }
        t.first_seen_ms = t.first_seen_ms.min(doc.timestamp_ms);
        t.last_seen_ms = t.last_seen_ms.max(doc.timestamp_ms);
        // Newest first; redacted before it is kept, as it ends up in the
        // store and in reports.
        t.examples
            .insert(0, self.redactor.redact(&doc.message).into_owned());
        t.examples.truncate(MAX_EXAMPLES);
        self.documents += 1;
        (stream, id)
    }

    /// Takes what was counted since the last call (the miners stay).
    pub fn take(&mut self) -> WindowDelta {
        let counts = std::mem::take(&mut self.counts)
            .into_iter()
            .map(
                |((stream, bucket_ms, template), (lines, errors))| BucketCount {
                    stream,
                    bucket_ms,
                    template,
                    lines,
                    errors,
                },
            )
            .collect();
        let mut templates: Vec<TemplateUpdate> = std::mem::take(&mut self.touched)
            .into_iter()
            .map(|((stream, id), t)| {
                let text = self
                    .miners
                    .get(&stream)
                    .and_then(|m| m.template(id))
                    .map(|t| self.redactor.redact(&t.text).into_owned())
                    // Evicted within the window: its first example stands in.
                    .or_else(|| t.examples.last().cloned())
                    .unwrap_or_default();
                TemplateUpdate {
                    stream,
                    id,
                    text,
                    first_seen_ms: t.first_seen_ms,
                    last_seen_ms: t.last_seen_ms,
                    level: t.level,
                    examples: t.examples,
                }
            })
            .collect();
        templates.sort_by(|a, b| (&a.stream, a.id).cmp(&(&b.stream, b.id)));
        WindowDelta {
            templates,
            counts,
            documents: std::mem::take(&mut self.documents),
        }
    }

    /// Every stream that has a miner (seen now or restored).
    pub fn streams(&self) -> BTreeSet<StreamKey> {
        self.miners.keys().cloned().collect()
    }

    /// Templates held across all miners (bounded by each miner's cap).
    pub fn template_count(&self) -> usize {
        self.miners.values().map(TemplateMiner::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(t: i64, service: &str, level: &str, message: &str) -> LogDoc {
        LogDoc {
            id: format!("{t}-{message}"),
            timestamp_ms: t,
            service: Some(service.into()),
            namespace: Some("shop".into()),
            level: Some(level.into()),
            message: message.into(),
        }
    }

    fn levels() -> Vec<String> {
        vec!["error".into(), "warn".into()]
    }

    #[test]
    fn counts_lines_and_errors_per_bucket_and_redacts_examples() {
        let mut agg = WindowAggregator::new(60_000, &levels(), MinerParams::default(), vec![]);
        agg.add(&doc(1_000, "cart", "INFO", "served order 1 in 5 ms"));
        agg.add(&doc(2_000, "cart", "info", "served order 2 in 7 ms"));
        let (stream, id) = agg.add(&doc(
            61_000,
            "cart",
            "ERROR",
            "login failed for bob password=hunter2",
        ));
        agg.add(&doc(
            62_000,
            "cart",
            "Error",
            "login failed for eve password=hunter3",
        ));
        let delta = agg.take();
        assert_eq!(delta.documents, 4);
        let failed: Vec<&BucketCount> = delta.counts.iter().filter(|c| c.template == id).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].bucket_ms, failed[0].lines, failed[0].errors),
            (60_000, 2, 2)
        );
        let served: u64 = delta
            .counts
            .iter()
            .filter(|c| c.template != id)
            .map(|c| c.lines + c.errors * 100)
            .sum();
        assert_eq!(served, 2, "two info lines, no errors");
        let t = delta
            .templates
            .iter()
            .find(|t| t.id == id && t.stream == stream)
            .expect("template update");
        assert_eq!((t.first_seen_ms, t.last_seen_ms), (61_000, 62_000));
        assert_eq!(t.examples.len(), 2);
        assert!(
            t.examples[0].contains("eve"),
            "newest first: {:?}",
            t.examples
        );
        for text in t.examples.iter().chain([&t.text]) {
            assert!(!text.contains("hunter"), "unredacted: {text}");
        }
        assert!(agg.take().is_empty(), "take empties the window");
    }

    #[test]
    fn restored_templates_keep_their_ids() {
        let mut agg = WindowAggregator::new(60_000, &levels(), MinerParams::default(), vec![]);
        agg.add(&doc(1, "cart", "info", "a"));
        let (stream, id) = agg.add(&doc(2, "cart", "info", "connected to db-1 in 5 ms"));
        let stored: Vec<StoredTemplate> = agg
            .take()
            .templates
            .into_iter()
            .map(|t| StoredTemplate {
                stream: t.stream,
                id: t.id,
                text: t.text,
                first_seen_ms: t.first_seen_ms,
                last_seen_ms: t.last_seen_ms,
                level: t.level,
                examples: t.examples,
            })
            .collect();
        let mut again = WindowAggregator::new(60_000, &levels(), MinerParams::default(), stored);
        assert_eq!(
            again.add(&doc(3, "cart", "info", "connected to db-7 in 9 ms")),
            (stream.clone(), id)
        );
        let (_, new_id) = again.add(&doc(4, "cart", "info", "something else entirely here"));
        assert!(new_id > id, "new ids continue after restored ones");
        assert_eq!(again.streams().into_iter().collect::<Vec<_>>(), [stream]);
    }
}
