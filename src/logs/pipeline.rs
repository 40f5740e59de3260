//! The log pipeline task: reads Elasticsearch in windows, mines and counts
//! templates, stores counts and checkpoint together, sends template-rate
//! signals to the detect stage, and attaches log evidence to incidents.
//!
//! One [`LogPipeline::step`] is one cycle:
//!
//! 1. **Read** every document after the stored checkpoint and before
//!    `now - lag` ([`ElasticSource::read`], PIT + `search_after`) into a
//!    [`WindowAggregator`] (one template miner per service).
//! 2. **Commit** the window's counts, the templates it touched (redacted
//!    text and examples) and the checkpoint after it in one transaction
//!    ([`Store::commit_log_window`]). A read that fails part way commits
//!    what it read, with the checkpoint matching it; a commit that fails is
//!    forgotten and re-read from the stored checkpoint. Either way nothing
//!    is skipped or counted twice.
//! 3. **Signals**: every bucket completed since the last cycle becomes
//!    samples of `log_error_rate`, `log_new_templates` and
//!    `log_template_rate` ([`SignalBuilder`], docs in `logs::signals`),
//!    read back from the store so a restart emits the same values. After a
//!    (re)start the stored history (up to `retention`) is replayed first,
//!    marked as backfill, so the detectors are warm at once.
//! 4. **Evidence**: each open incident whose service has logs and whose
//!    after-window has been read gets the templates that changed around
//!    its start ([`template_changes`]), stored once
//!    ([`Store::record_incident_logs`]) and attached as `Incident::logs`.
//!
//! The daemon runs [`LogPipeline::run`] beside the Prometheus source,
//! sending into the same detect channel.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::changes::{template_changes, ChangeThresholds, EvidenceWindows};
use super::elastic::{Checkpoint, ElasticConfig, ElasticError, ElasticSource, ReadStats};
use super::metrics::LogMetrics;
use super::signals::SignalBuilder;
use super::window::{StreamKey, WindowAggregator};
use super::MinerParams;
use super::Redactor;
use crate::incident::{Incident, IncidentId, Store, StoreError};
use crate::signal::{SeriesBatch, TimestampMs};
use crate::telemetry::{error_chain, Health, Metrics};

/// Name of the source in /readyz and `aiopsd_source_up`, and of its row
/// in the store's `log_checkpoints`.
pub const SOURCE_NAME: &str = "elasticsearch";

/// Why the log pipeline could not be built or a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum LogPipelineError {
    /// The Elasticsearch source could not be set up (configuration).
    #[error("cannot set up the Elasticsearch log source")]
    Source(#[source] ElasticError),
    /// Reading or writing the store failed.
    #[error("the log pipeline could not use the store")]
    Store(#[source] StoreError),
    /// A blocking store task panicked or was cancelled.
    #[error("a store task of the log pipeline did not finish")]
    Join(#[source] tokio::task::JoinError),
    /// A configured redaction pattern is invalid (names the field).
    #[error("{0}")]
    Redaction(String),
}

/// What one [`LogPipeline::step`] did.
#[derive(Debug, Default)]
pub struct StepOutcome {
    /// Figures of the read.
    pub stats: ReadStats,
    /// Why the read stopped early, if it did (what it read is committed).
    pub read_error: Option<String>,
    /// Signal batches for the buckets completed by this step (none when no
    /// bucket completed).
    pub batches: Vec<SeriesBatch>,
    /// Every bucket ending at or before this time is complete (epoch ms).
    pub complete_until: TimestampMs,
    /// Incidents that got their log evidence in this step.
    pub evidence_for: Vec<IncidentId>,
}

/// State restored from the store at the first step.
#[derive(Debug)]
struct Loaded {
    checkpoint: Checkpoint,
    aggregator: WindowAggregator,
    /// Buckets before this were sent to the detect stage.
    emitted_until: TimestampMs,
    /// Whether the next emission replays history (backfill).
    replaying: bool,
    complete_until: TimestampMs,
}

/// The log pipeline (see the module docs).
#[derive(Debug)]
pub struct LogPipeline {
    source: ElasticSource,
    store: Store,
    metrics: LogMetrics,
    error_levels: Vec<String>,
    bucket_ms: i64,
    retention_ms: i64,
    backfill_ms: i64,
    evidence_ms: i64,
    poll_interval: Duration,
    builder: SignalBuilder,
    state: Option<Loaded>,
    /// Redaction of examples and templates before they are stored.
    redactor: Redactor,
}

impl LogPipeline {
    /// Validates `config` and builds the source; nothing is read yet.
    pub fn new(
        config: &ElasticConfig,
        store: Store,
        metrics: LogMetrics,
    ) -> Result<Self, LogPipelineError> {
        let source = ElasticSource::new(config).map_err(LogPipelineError::Source)?;
        let redactor = config.redactor().map_err(|(i, reason)| {
            LogPipelineError::Redaction(format!("elasticsearch.redact_patterns[{i}]: {reason}"))
        })?;
        let bucket_ms = config.bucket.as_millis_i64().max(1);
        Ok(Self {
            source,
            store,
            metrics,
            error_levels: config.error_levels.clone(),
            bucket_ms,
            retention_ms: config.retention.as_millis_i64(),
            backfill_ms: config.backfill.as_millis_i64(),
            evidence_ms: config.evidence_window.as_millis_i64(),
            poll_interval: config.poll_interval.0,
            builder: SignalBuilder::new(
                bucket_ms,
                config.labels.clone(),
                config.max_template_series,
            ),
            state: None,
            redactor,
        })
    }

    fn align(&self, t: TimestampMs) -> TimestampMs {
        t.div_euclid(self.bucket_ms) * self.bucket_ms
    }

    /// Runs `f` on the store off the async threads.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, LogPipelineError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(LogPipelineError::Join)?
            .map_err(LogPipelineError::Store)
    }

    /// The stored checkpoint and templates, or a fresh start `backfill`
    /// before `now`.
    async fn load(&self, now: TimestampMs) -> Result<Loaded, LogPipelineError> {
        let (stored, templates) = self
            .with_store(|s| Ok((s.log_checkpoint(SOURCE_NAME)?, s.log_templates()?)))
            .await?;
        let resumed = stored.is_some();
        let checkpoint =
            stored.unwrap_or_else(|| Checkpoint::starting_at(self.align(now - self.backfill_ms)));
        let restored = templates.len();
        let aggregator = WindowAggregator::new(
            self.bucket_ms,
            &self.error_levels,
            MinerParams::default(),
            templates,
        )
        .with_redactor(self.redactor.clone());
        let complete_until = self.align(checkpoint.timestamp_ms);
        tracing::info!(
            resumed,
            from = %crate::signal::format_ts(checkpoint.timestamp_ms),
            templates = restored,
            "Log pipeline started; reading Elasticsearch from its checkpoint."
        );
        Ok(Loaded {
            // Replays what the store still holds, to warm the detectors.
            emitted_until: self.align(checkpoint.timestamp_ms - self.retention_ms),
            replaying: true,
            complete_until,
            checkpoint,
            aggregator,
        })
    }

    /// One cycle at wall time `now` (see the module docs). An `Err` means
    /// the store failed; the next step starts again from the stored
    /// checkpoint.
    pub async fn step(&mut self, now: TimestampMs) -> Result<StepOutcome, LogPipelineError> {
        let mut state = match self.state.take() {
            Some(s) => s,
            None => self.load(now).await?,
        };
        let until = self.source.window_end(now);
        let mut checkpoint = state.checkpoint.clone();
        let started = Instant::now();
        let aggregator = &mut state.aggregator;
        let read = self
            .source
            .read(&mut checkpoint, until, |doc| {
                aggregator.add(&doc);
            })
            .await;
        let (stats, read_error) = match read {
            Ok(stats) => {
                if checkpoint.timestamp_ms < until {
                    // Everything before `until` is consumed and nothing at
                    // or after it: the exact position is `until` itself.
                    checkpoint = Checkpoint::starting_at(until);
                }
                (stats, None)
            }
            Err(error) => (ReadStats::default(), Some(error_chain(&error))),
        };
        self.metrics
            .read(&stats, started.elapsed(), read_error.as_deref());
        self.metrics
            .set_templates(state.aggregator.template_count());

        let delta = state.aggregator.take();
        let prune_before = self.align(until - self.retention_ms);
        let cp = checkpoint.clone();
        let committed = self
            .with_store(move |s| s.commit_log_window(SOURCE_NAME, &cp, &delta, prune_before, now))
            .await;
        if let Err(error) = committed {
            self.metrics.commit_failed(&error_chain(&error));
            // Forget the window: the next step re-reads it from the stored
            // checkpoint (the miners keep what they learnt, which only
            // means the same lines get the same ids again).
            self.state = Some(state);
            return Err(error);
        }
        state.checkpoint = checkpoint;
        let complete = if read_error.is_none() {
            self.align(until)
        } else {
            self.align(state.checkpoint.timestamp_ms)
        };
        state.complete_until = state.complete_until.max(complete);

        let mut outcome = StepOutcome {
            stats,
            read_error,
            complete_until: state.complete_until,
            ..StepOutcome::default()
        };
        let result = self.emit_and_attach(&mut state, now, &mut outcome).await;
        self.state = Some(state);
        result.map(|()| outcome)
    }

    async fn emit_and_attach(
        &mut self,
        state: &mut Loaded,
        now: TimestampMs,
        outcome: &mut StepOutcome,
    ) -> Result<(), LogPipelineError> {
        let (from, until) = (state.emitted_until, state.complete_until);
        let streams = state.aggregator.streams();
        if until > from {
            let (counts, first_seen) = self
                .with_store(move |s| {
                    Ok((s.log_counts(from, until)?, s.log_first_seen(from, until)?))
                })
                .await?;
            outcome.batches =
                self.builder
                    .build(from, until, &counts, &first_seen, &streams, state.replaying);
            state.emitted_until = until;
            state.replaying = false;
        }
        outcome.evidence_for = self.attach_evidence(&streams, until, now).await?;
        Ok(())
    }

    /// Stores log evidence for open incidents whose after-window is read.
    async fn attach_evidence(
        &self,
        streams: &BTreeSet<StreamKey>,
        complete_until: TimestampMs,
        now: TimestampMs,
    ) -> Result<Vec<IncidentId>, LogPipelineError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let open: Vec<Incident> = self.with_store(|s| s.open_incidents()).await?;
        let mut done = Vec::new();
        for incident in open {
            let Some(id) = incident.id else { continue };
            let Some(stream) = stream_of(&incident, streams) else {
                continue;
            };
            let windows =
                EvidenceWindows::around(incident.opened_at, self.bucket_ms, self.evidence_ms);
            if complete_until < windows.after_until
                || self.with_store(move |s| s.has_incident_logs(id)).await?
            {
                continue;
            }
            let key = stream.clone();
            let (counts, info) = self
                .with_store(move |s| {
                    Ok((
                        s.log_counts(windows.before_from, windows.after_until)?,
                        s.log_template_info(&key)?,
                    ))
                })
                .await?;
            let changes = template_changes(
                stream,
                windows,
                &counts,
                &info,
                &ChangeThresholds::default(),
            );
            let n = changes.len();
            self.with_store(move |s| s.record_incident_logs(id, &changes, now))
                .await?;
            tracing::info!(
                incident = id,
                service = %stream.service,
                changed_templates = n,
                "Attached the log templates that changed around the incident's start."
            );
            done.push(id);
        }
        Ok(done)
    }

    /// Polls every `poll_interval` until `cancel` fires or the detect
    /// stage goes away, reporting readiness as a source.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<SeriesBatch>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        cancel: CancellationToken,
    ) {
        health.register_source(SOURCE_NAME);
        let mut interval = tokio::time::interval(self.poll_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backfilled = false;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                outcome = self.step(crate::signal::now_ms()) => outcome,
            };
            let batches = match outcome {
                Ok(outcome) => {
                    match &outcome.read_error {
                        None => {
                            health.source_ok(SOURCE_NAME);
                            metrics.set_source_up(SOURCE_NAME, true);
                            if !backfilled {
                                backfilled = true;
                                health.source_backfilled(SOURCE_NAME);
                                tracing::info!(
                                    documents = outcome.stats.documents,
                                    "Log backfill finished; polling."
                                );
                            }
                        }
                        Some(error) => {
                            health.source_failed(SOURCE_NAME, error);
                            metrics.set_source_up(SOURCE_NAME, false);
                        }
                    }
                    outcome.batches
                }
                Err(error) => {
                    metrics.store_error();
                    tracing::warn!(error = %error_chain(&error), "A log pipeline cycle failed; retrying at the next poll.");
                    continue;
                }
            };
            for batch in batches {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return self.stopped(),
                    sent = tx.send(batch) => {
                        if sent.is_err() {
                            return self.stopped();
                        }
                    }
                }
            }
        }
        self.stopped();
    }

    fn stopped(&self) {
        tracing::info!(index = %self.source.config().index, "Log pipeline stopped.");
    }
}

/// The log stream of an incident's group: its `service` label, and its
/// `namespace` label when both sides know one.
fn stream_of<'a>(incident: &Incident, streams: &'a BTreeSet<StreamKey>) -> Option<&'a StreamKey> {
    let service = incident.group_label("service")?;
    let namespace = incident.group_label("namespace");
    streams.iter().find(|s| {
        s.service == service
            && match (namespace, s.namespace()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    })
}
