//! Prometheus source: reads every configured signal with range queries and
//! sends one [`SeriesBatch`] per query down the pipeline.
//!
//! # Time model
//!
//! All reads are range queries whose `start` and `end` are multiples of
//! `step` (in Unix time), so the sample timestamps of a series are the same
//! whichever poll, backfill chunk or restart read them: the detectors never
//! see two samples a fraction of a step apart. Per signal the source keeps
//! one watermark, `until`: the last step it has delivered. Each read covers
//! `(until, now - lag]`, never reaching further back than `backfill` before
//! `now - lag`. Start-up backfill and live polling are the same code path —
//! backfill is just the first read, when `until` is far behind (or unknown).
//!
//! A read that fails after its retries leaves `until` where it was, so the
//! next poll covers the gap. Reads longer than Prometheus's limit of 11,000
//! points per series are split into chunks, each sent as its own batch.
//!
//! # Health
//!
//! After each round over all signals the source reports once to
//! [`Health`] and the `source_up` metric: up if every query of the round
//! succeeded, down with every failure's reason otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_http_query::response::Data;
use prometheus_http_query::Client;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::{PrometheusConfig, RetryConfig, SignalConfig};
use crate::signal::{
    format_ts, now_ms, Sample, SeriesBatch, SeriesKey, SeriesSamples, TimestampMs,
};
use crate::telemetry::{error_chain, Health, Metrics};

/// Name under which this source reports to [`Health`] and the `source_up` metric.
pub const SOURCE_NAME: &str = "prometheus";

/// Prometheus refuses range queries returning more than this many points
/// per series (`exceeded maximum resolution of 11,000 points`).
const MAX_POINTS_PER_QUERY: i64 = 11_000;

/// Why the source could not be built, or why one read failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `prometheus.url` cannot be used as the base URL of the HTTP API.
    #[error("prometheus.url: {url:?} is not a usable Prometheus URL: {reason}")]
    Url {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `prometheus.*` setting is outside what the source can work with.
    #[error("prometheus.{field}: {reason}")]
    Setting {
        /// Path of the setting below `prometheus.`, e.g. `step`.
        field: &'static str,
        /// What is wrong, in words a person can act on.
        reason: String,
    },
    /// A signal cannot be queried as configured.
    #[error("signals[{index}].{field}: {reason}")]
    Signal {
        /// Position of the signal in the config list.
        index: usize,
        /// The offending field of the signal, e.g. `query`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// There is nothing to poll.
    #[error("signals: the Prometheus source needs at least one signal")]
    NoSignals,
    /// The HTTP client could not be built (TLS initialisation).
    #[error("prometheus: cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// A range query failed on its last attempt (or on the first, when
    /// retrying could not help: Prometheus said the query is invalid).
    #[error("signal {signal}: query failed after {attempts} attempt(s)")]
    Query {
        /// The signal whose query failed.
        signal: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: prometheus_http_query::Error,
    },
    /// Prometheus answered a range query with something other than a
    /// range vector (matrix).
    #[error("signal {signal}: expected a range vector (matrix) from a range query, got a {kind}")]
    UnexpectedResult {
        /// The signal whose query answered oddly.
        signal: String,
        /// The result type that came back.
        kind: &'static str,
    },
}

impl SourceError {
    /// True when Prometheus rejected the query itself (HTTP 400 `bad_data`):
    /// a broken query template that no retry will fix.
    pub fn is_bad_query(&self) -> bool {
        matches!(self, SourceError::Query { source, .. } if is_bad_data(source))
    }
}

fn is_bad_data(error: &prometheus_http_query::Error) -> bool {
    matches!(error, prometheus_http_query::Error::Prometheus(e) if e.is_bad_data())
}

/// One signal as the source queries it: the query rendered once, at build.
#[derive(Debug, Clone)]
struct PolledSignal {
    name: String,
    /// `signal.query.render(&signal.selectors)`: validated, escaped matchers.
    query: String,
    /// Extra labels from config, added to every series (config wins on clash).
    labels: BTreeMap<String, String>,
}

/// Per-signal read position.
#[derive(Debug, Clone, Copy)]
struct SignalState {
    /// Last step delivered (inclusive); `None` until the first read.
    until: Option<TimestampMs>,
    /// False while the signal is still being backfilled: batches carry
    /// `backfill: true` until one read reaches `now - lag`.
    caught_up: bool,
    /// The ERROR for a query Prometheus rejects is logged once, not every
    /// poll; reset by the next successful read.
    bad_query_logged: bool,
}

/// The data-time arithmetic of the source, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    step: i64,
    lag: i64,
    backfill: i64,
}

/// An inclusive range of steps, both ends multiples of the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: TimestampMs,
    end: TimestampMs,
}

/// Largest multiple of `step` at or before `t`.
fn align_down(t: TimestampMs, step: i64) -> TimestampMs {
    t - t.rem_euclid(step)
}

/// Smallest multiple of `step` at or after `t`.
fn align_up(t: TimestampMs, step: i64) -> TimestampMs {
    let down = align_down(t, step);
    if down == t {
        t
    } else {
        down.saturating_add(step)
    }
}

/// The steps to read next: after `until` up to `now - lag`, but not before
/// `now - lag - backfill`. `None` when no new step is complete yet.
fn plan(until: Option<TimestampMs>, now: TimestampMs, timing: Timing) -> Option<Span> {
    let end = align_down(now.saturating_sub(timing.lag), timing.step);
    let floor = align_up(end.saturating_sub(timing.backfill), timing.step);
    let start = match until {
        // An unaligned watermark (written by another source) still yields
        // the first step strictly after it.
        Some(u) => align_down(u, timing.step)
            .saturating_add(timing.step)
            .max(floor),
        None => floor,
    };
    (start <= end).then_some(Span { start, end })
}

/// Splits `span` into consecutive queries of at most `max_points` steps each.
fn chunks(span: Span, step: i64, max_points: i64) -> Vec<Span> {
    let width = step.saturating_mul(max_points.max(1) - 1);
    let mut out = Vec::new();
    let mut start = span.start;
    while start <= span.end {
        let end = start.saturating_add(width).min(span.end);
        out.push(Span { start, end });
        if end == span.end {
            break;
        }
        start = end + step;
    }
    out
}

/// Wait after the `failed`-th failed attempt: `initial_backoff` doubling,
/// capped at `max_backoff`.
fn backoff_delay(retry: &RetryConfig, failed: u32) -> Duration {
    let factor = 2u32.saturating_pow(failed.saturating_sub(1));
    retry
        .initial_backoff
        .0
        .saturating_mul(factor)
        .min(retry.max_backoff.0)
}

/// The key of a returned series: the signal name, the series' labels without
/// `__name__`, and the signal's configured labels (which win on clash).
///
/// `__name__` is dropped because the signal name already identifies what
/// was measured, and it is only present for some query shapes (a bare
/// selector keeps it, `rate(...)` drops it): keeping it would change a
/// series' identity when an operator edits the query.
fn series_key(
    signal: &str,
    metric: HashMap<String, String>,
    extra: &BTreeMap<String, String>,
) -> SeriesKey {
    let mut labels: BTreeMap<String, String> = metric
        .into_iter()
        .filter(|(name, _)| name != "__name__")
        .collect();
    for (name, value) in extra {
        labels.insert(name.clone(), value.clone());
    }
    SeriesKey {
        signal: signal.to_string(),
        labels: labels.into(),
    }
}

/// Prometheus time (float seconds) to data time (ms); `None` if unusable.
fn seconds_to_ms(seconds: f64) -> Option<TimestampMs> {
    let ms = (seconds * 1000.0).round();
    // i64::MAX as f64 rounds up to 2^63, so compare strictly.
    (ms.is_finite() && ms >= i64::MIN as f64 && ms < i64::MAX as f64).then_some(ms as i64)
}

/// Converts raw `(seconds, value)` points to samples in time order,
/// dropping NaN/±Inf values (stale markers, divisions by zero) and unusable
/// timestamps. Returns the samples and how many were dropped.
fn finite_samples(points: impl IntoIterator<Item = (f64, f64)>) -> (Vec<Sample>, u64) {
    let mut dropped = 0;
    let mut samples: Vec<Sample> = points
        .into_iter()
        .filter_map(|(t, v)| match seconds_to_ms(t) {
            Some(t) if v.is_finite() => Some(Sample { t, v }),
            _ => {
                dropped += 1;
                None
            }
        })
        .collect();
    samples.sort_by_key(|s| s.t);
    (samples, dropped)
}

/// What one query delivered, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BatchStats {
    series: usize,
    samples: usize,
    dropped: u64,
}

/// Turns one range-query answer into the batch sent downstream.
///
/// Series left without samples (all NaN) are omitted: to the pipeline they
/// are simply absent this time. Series that end up with the same key (a
/// configured label overriding the one label that told them apart) are
/// merged, the first sample at a timestamp winning.
fn build_batch(
    signal: &PolledSignal,
    data: Data,
    until: TimestampMs,
    backfill: bool,
) -> Result<(SeriesBatch, BatchStats), SourceError> {
    let matrix = match data {
        Data::Matrix(m) => m,
        Data::Vector(_) => return Err(unexpected(signal, "instant vector")),
        Data::Scalar(_) => return Err(unexpected(signal, "scalar")),
    };
    let mut stats = BatchStats::default();
    let mut by_key: BTreeMap<SeriesKey, Vec<Sample>> = BTreeMap::new();
    for range_vector in matrix {
        let (metric, raw) = range_vector.into_inner();
        let (samples, dropped) = finite_samples(raw.iter().map(|s| (s.timestamp(), s.value())));
        stats.dropped += dropped;
        if samples.is_empty() {
            continue;
        }
        let key = series_key(&signal.name, metric, &signal.labels);
        match by_key.get_mut(&key) {
            Some(existing) => {
                tracing::debug!(signal = %signal.name, series = %key, "Two returned series share a key; merging them.");
                existing.extend(samples);
                existing.sort_by_key(|s| s.t);
                existing.dedup_by_key(|s| s.t);
            }
            None => {
                by_key.insert(key, samples);
            }
        }
    }
    let series: Vec<SeriesSamples> = by_key
        .into_iter()
        .map(|(key, samples)| SeriesSamples {
            key: Arc::new(key),
            samples,
        })
        .collect();
    stats.series = series.len();
    stats.samples = series.iter().map(|s| s.samples.len()).sum();
    let batch = SeriesBatch {
        signal: signal.name.clone(),
        series,
        until,
        backfill,
    };
    Ok((batch, stats))
}

fn unexpected(signal: &PolledSignal, kind: &'static str) -> SourceError {
    SourceError::UnexpectedResult {
        signal: signal.name.clone(),
        kind,
    }
}

/// Whether a round finished or the task must stop (cancelled, receiver gone).
enum Flow {
    Done(RoundOutcome),
    Stop,
}

/// What one round over all signals did, for the health report.
#[derive(Debug, Default)]
struct RoundOutcome {
    queries: usize,
    failures: Vec<String>,
}

/// Reads configured signals from a Prometheus server; see the module docs.
pub struct PrometheusSource {
    client: Client,
    /// The URL without credentials, for logs.
    display_url: String,
    timing: Timing,
    /// Passed to Prometheus as the evaluation timeout too, so it stops
    /// working on a query the client has given up on.
    timeout: Duration,
    poll_interval: Duration,
    retry: RetryConfig,
    signals: Vec<PolledSignal>,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("url", &self.display_url)
            .field("timing", &self.timing)
            .field("signals", &self.signals)
            .finish_non_exhaustive()
    }
}

impl PrometheusSource {
    /// Validated config in, ready source out (errors name the bad field).
    ///
    /// Checks again what this source relies on even though
    /// `Config::validate` covers most of it: a zero poll interval would
    /// panic the timer, and a fractional step cannot be aligned to the
    /// whole seconds Prometheus's API takes.
    pub fn new(config: &PrometheusConfig, signals: &[SignalConfig]) -> Result<Self, SourceError> {
        let step = config.step.as_millis_i64();
        if step < 1000 || step % 1000 != 0 {
            return Err(SourceError::Setting {
                field: "step",
                reason: format!(
                    "must be a whole number of seconds, at least 1s (got {})",
                    config.step
                ),
            });
        }
        for (field, d) in [
            ("poll_interval", config.poll_interval),
            ("timeout", config.timeout),
        ] {
            if d.0.is_zero() {
                return Err(SourceError::Setting {
                    field,
                    reason: "must be more than 0s".into(),
                });
            }
        }
        if config.retry.attempts == 0 {
            return Err(SourceError::Setting {
                field: "retry.attempts",
                reason: "must be at least 1".into(),
            });
        }
        if signals.is_empty() {
            return Err(SourceError::NoSignals);
        }
        let mut polled = Vec::with_capacity(signals.len());
        for (index, signal) in signals.iter().enumerate() {
            signal
                .query
                .check_against(&signal.selectors)
                .map_err(|reason| SourceError::Signal {
                    index,
                    field: "query",
                    reason,
                })?;
            polled.push(PolledSignal {
                name: signal.name.clone(),
                query: signal.query.render(&signal.selectors),
                labels: signal.labels.clone(),
            });
        }

        let url_error = |reason: String| SourceError::Url {
            url: config.url.clone(),
            reason,
        };
        let mut parsed = reqwest::Url::parse(&config.url).map_err(|e| url_error(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(url_error(format!(
                "scheme {:?} is not http or https",
                parsed.scheme()
            )));
        }
        let _ = parsed.set_password(None);
        let http = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .build()
            .map_err(SourceError::HttpClient)?;
        let client = Client::from(http, &config.url).map_err(|e| url_error(error_chain(&e)))?;

        Ok(Self {
            client,
            display_url: parsed.to_string(),
            timing: Timing {
                step,
                lag: config.lag.as_millis_i64(),
                backfill: config.backfill.as_millis_i64(),
            },
            timeout: config.timeout.0,
            poll_interval: config.poll_interval.0,
            retry: config.retry.clone(),
            signals: polled,
        })
    }

    /// The task: backfill, then poll until `cancel` fires.
    ///
    /// The backfill always re-reads the whole `backfill` window, also after a
    /// restart: detectors keep no state across restarts and need that
    /// history to be warm. Not re-reporting what a previous run already
    /// reported is the detect stage's job (it knows the store's cursors).
    ///
    /// Returns when `cancel` fires (promptly, also mid-query or mid-backoff)
    /// or when the receiver of `tx` is dropped. Failures never end the task:
    /// they are reported to `health` and `metrics` and retried next poll.
    pub async fn run(
        self,
        tx: mpsc::Sender<SeriesBatch>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        cancel: CancellationToken,
    ) {
        health.register_source(SOURCE_NAME);
        tracing::info!(
            url = %self.display_url,
            signals = self.signals.len(),
            step_ms = self.timing.step,
            backfill_ms = self.timing.backfill,
            "Prometheus source started; backfilling."
        );
        let mut states: Vec<SignalState> = self
            .signals
            .iter()
            .map(|_| SignalState {
                until: None,
                // With backfill off the first read is just the latest step.
                caught_up: self.timing.backfill == 0,
                bad_query_logged: false,
            })
            .collect();
        let mut up = None;

        match self.round(&mut states, &tx, &metrics, &cancel).await {
            Flow::Stop => return self.stopped(),
            Flow::Done(outcome) => report(&outcome, &health, &metrics, &mut up),
        }
        health.source_backfilled(SOURCE_NAME);
        tracing::info!(
            caught_up = states.iter().filter(|s| s.caught_up).count(),
            signals = states.len(),
            "Prometheus backfill finished; polling."
        );

        let mut interval = tokio::time::interval(self.poll_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick completes at once; a round has just run.
        interval.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            match self.round(&mut states, &tx, &metrics, &cancel).await {
                Flow::Stop => break,
                Flow::Done(outcome) => report(&outcome, &health, &metrics, &mut up),
            }
        }
        self.stopped();
    }

    fn stopped(&self) {
        tracing::info!(url = %self.display_url, "Prometheus source stopped.");
    }

    /// Reads every signal from its watermark up to `now - lag`.
    ///
    /// Signals are read one after the other: a poll is a handful of small
    /// queries, and sequential reads keep the load on Prometheus flat.
    async fn round(
        &self,
        states: &mut [SignalState],
        tx: &mpsc::Sender<SeriesBatch>,
        metrics: &Metrics,
        cancel: &CancellationToken,
    ) -> Flow {
        let mut outcome = RoundOutcome::default();
        for (signal, state) in self.signals.iter().zip(states.iter_mut()) {
            let Some(span) = plan(state.until, now_ms(), self.timing) else {
                continue;
            };
            if let Some(until) = state.until {
                let wanted = align_down(until, self.timing.step) + self.timing.step;
                if span.start > wanted {
                    tracing::warn!(
                        signal = %signal.name,
                        from = %format_ts(wanted),
                        to = %format_ts(span.start),
                        "Signal is further behind than the backfill window; this stretch will not be read."
                    );
                }
            }
            let mut complete = true;
            for chunk in chunks(span, self.timing.step, MAX_POINTS_PER_QUERY) {
                outcome.queries += 1;
                let started = Instant::now();
                let result = match self.query(signal, chunk, cancel).await {
                    None => return Flow::Stop,
                    Some(result) => result
                        .and_then(|data| build_batch(signal, data, chunk.end, !state.caught_up)),
                };
                let took = started.elapsed();
                match result {
                    Ok((batch, stats)) => {
                        metrics.samples_dropped(&signal.name, stats.dropped);
                        metrics.poll_succeeded(&signal.name, stats.series, stats.samples, took);
                        let sent = tokio::select! {
                            biased;
                            _ = cancel.cancelled() => return Flow::Stop,
                            sent = tx.send(batch) => sent,
                        };
                        if sent.is_err() {
                            tracing::info!(
                                "The pipeline stopped receiving; Prometheus source stops."
                            );
                            return Flow::Stop;
                        }
                        state.until = Some(chunk.end);
                        state.bad_query_logged = false;
                    }
                    Err(error) => {
                        let reason = error_chain(&error);
                        if error.is_bad_query() && !state.bad_query_logged {
                            state.bad_query_logged = true;
                            tracing::error!(
                                signal = %signal.name,
                                query = %signal.query,
                                error = %reason,
                                "Prometheus rejected the query of this signal as invalid; fix its query in the config."
                            );
                        }
                        metrics.poll_failed(&signal.name, &reason, took);
                        outcome.failures.push(reason);
                        complete = false;
                        // Later chunks would leave a hole behind the watermark.
                        break;
                    }
                }
            }
            if complete {
                state.caught_up = true;
            }
        }
        Flow::Done(outcome)
    }

    /// One range query with retries. `None` when cancelled.
    async fn query(
        &self,
        signal: &PolledSignal,
        span: Span,
        cancel: &CancellationToken,
    ) -> Option<Result<Data, SourceError>> {
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = self
                .client
                .query_range(
                    &signal.query,
                    span.start / 1000,
                    span.end / 1000,
                    (self.timing.step / 1000) as f64,
                )
                .timeout(i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX))
                // POST: long queries do not hit URL length limits of proxies.
                .post();
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                result = request => result,
            };
            let source = match result {
                Ok(response) => return Some(Ok(response.into_inner().0)),
                Err(source) => source,
            };
            // A query Prometheus calls malformed stays malformed: do not retry.
            if attempt >= attempts || is_bad_data(&source) {
                return Some(Err(SourceError::Query {
                    signal: signal.name.clone(),
                    attempts: attempt,
                    source,
                }));
            }
            let delay = backoff_delay(&self.retry, attempt);
            tracing::debug!(
                signal = %signal.name,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %error_chain(&source),
                "Query failed; retrying."
            );
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// Reports a round to health and metrics; logs transitions between up and down.
fn report(outcome: &RoundOutcome, health: &Health, metrics: &Metrics, up: &mut Option<bool>) {
    if outcome.queries == 0 {
        return;
    }
    if outcome.failures.is_empty() {
        health.source_ok(SOURCE_NAME);
        metrics.set_source_up(SOURCE_NAME, true);
        if *up == Some(false) {
            tracing::info!("Prometheus answers again; source is up.");
        }
        *up = Some(true);
    } else {
        let reason = outcome.failures.join("; ");
        health.source_failed(SOURCE_NAME, &reason);
        metrics.set_source_up(SOURCE_NAME, false);
        *up = Some(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;
    use crate::signal::Direction;
    use crate::sources::promql::{QueryTemplate, Selector};

    const S: i64 = 1000;
    /// A multiple of 30s, for alignment tests.
    const T0: i64 = 1_699_999_980_000;
    /// 1_700_000_000 s, the timestamps of the wire-format tests.
    const E: i64 = 1_700_000_000_000;

    fn timing(step_s: i64, lag_s: i64, backfill_s: i64) -> Timing {
        Timing {
            step: step_s * S,
            lag: lag_s * S,
            backfill: backfill_s * S,
        }
    }

    fn signal(labels: &[(&str, &str)]) -> PolledSignal {
        PolledSignal {
            name: "error_ratio".into(),
            query: "up".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn prom_config(url: &str) -> PrometheusConfig {
        PrometheusConfig {
            url: url.into(),
            timeout: HumanDuration(Duration::from_secs(5)),
            poll_interval: HumanDuration(Duration::from_secs(30)),
            step: HumanDuration(Duration::from_secs(30)),
            backfill: HumanDuration(Duration::from_secs(3600)),
            lag: HumanDuration(Duration::from_secs(30)),
            retry: RetryConfig::default(),
        }
    }

    fn signal_config(query: &str) -> SignalConfig {
        SignalConfig {
            name: "errors".into(),
            query: QueryTemplate::new(query),
            selectors: Selector::new([("service".to_string(), "cart".to_string())])
                .expect("valid selector"),
            direction: Direction::Both,
            labels: BTreeMap::new(),
            detector: None,
            preset: None,
        }
    }

    #[test]
    fn alignment_rounds_to_step_multiples() {
        assert_eq!(align_down(T0 + 29_999, 30 * S), T0);
        assert_eq!(align_down(T0, 30 * S), T0);
        assert_eq!(align_up(T0 + 1, 30 * S), T0 + 30 * S);
        assert_eq!(align_up(T0, 30 * S), T0);
    }

    #[test]
    fn first_read_covers_backfill_window_aligned() {
        // now - lag = T0 + 47s → end T0 + 30s; floor = end - 1h, aligned.
        let span = plan(None, T0 + 77 * S, timing(30, 30, 3600)).expect("span");
        assert_eq!(span.end, T0 + 30 * S);
        assert_eq!(span.start, T0 + 30 * S - 3600 * S);
        assert_eq!(span.start % (30 * S), 0);
    }

    #[test]
    fn backfill_not_a_step_multiple_never_reaches_further_back() {
        let span = plan(None, T0, timing(30, 0, 100)).expect("span");
        assert_eq!(span.start, T0 - 90 * S);
    }

    #[test]
    fn resume_starts_one_step_after_the_cursor() {
        let t = timing(30, 30, 3600);
        let span = plan(Some(T0 - 600 * S), T0 + 30 * S, t).expect("span");
        assert_eq!(
            span,
            Span {
                start: T0 - 570 * S,
                end: T0
            }
        );
        // An unaligned cursor still yields the first step after it.
        let span = plan(Some(T0 - 600 * S + 1), T0 + 30 * S, t).expect("span");
        assert_eq!(span.start, T0 - 570 * S);
    }

    #[test]
    fn resume_older_than_backfill_is_clamped_to_backfill() {
        let span = plan(Some(T0 - 86_400 * S), T0 + 30 * S, timing(30, 30, 3600)).expect("span");
        assert_eq!(span.start, T0 - 3600 * S);
    }

    #[test]
    fn nothing_to_read_until_a_new_step_completes() {
        let t = timing(30, 30, 3600);
        assert_eq!(plan(Some(T0), T0 + 30 * S + 29 * S, t), None);
        assert_eq!(
            plan(Some(T0), T0 + 60 * S, t),
            Some(Span {
                start: T0 + 30 * S,
                end: T0 + 30 * S
            })
        );
        // A cursor from the future (clock moved back) waits.
        assert_eq!(plan(Some(T0 + 3600 * S), T0, t), None);
    }

    #[test]
    fn zero_backfill_reads_only_the_latest_step() {
        let span = plan(None, T0 + 10 * S, timing(30, 0, 0)).expect("span");
        assert_eq!(span, Span { start: T0, end: T0 });
    }

    #[test]
    fn long_ranges_are_chunked_within_the_point_limit() {
        let step = S;
        let span = Span {
            start: T0,
            end: T0 + 4 * 3600 * S, // 14,401 points
        };
        let parts = chunks(span, step, MAX_POINTS_PER_QUERY);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].start, span.start);
        assert_eq!(parts[parts.len() - 1].end, span.end);
        let mut points = 0;
        for (i, part) in parts.iter().enumerate() {
            let n = (part.end - part.start) / step + 1;
            assert!(n <= MAX_POINTS_PER_QUERY, "chunk {i} has {n} points");
            points += n;
            if i > 0 {
                assert_eq!(part.start, parts[i - 1].end + step, "gap or overlap");
            }
        }
        assert_eq!(points, (span.end - span.start) / step + 1);
    }

    #[test]
    fn short_range_is_one_chunk() {
        let span = Span { start: T0, end: T0 };
        assert_eq!(chunks(span, 30 * S, MAX_POINTS_PER_QUERY), vec![span]);
        let exact = Span {
            start: T0,
            end: T0 + (MAX_POINTS_PER_QUERY - 1) * S,
        };
        assert_eq!(chunks(exact, S, MAX_POINTS_PER_QUERY), vec![exact]);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let retry = RetryConfig {
            attempts: 10,
            initial_backoff: HumanDuration(Duration::from_millis(500)),
            max_backoff: HumanDuration(Duration::from_secs(3)),
        };
        let delays: Vec<u128> = (1..=6)
            .map(|n| backoff_delay(&retry, n).as_millis())
            .collect();
        assert_eq!(delays, vec![500, 1000, 2000, 3000, 3000, 3000]);
        assert_eq!(backoff_delay(&retry, u32::MAX).as_millis(), 3000);
    }

    #[test]
    fn series_key_drops_metric_name_and_config_labels_win() {
        let metric: HashMap<String, String> = [
            ("__name__", "http_errors_ratio"),
            ("service", "cart"),
            ("team", "from-prometheus"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let extra: BTreeMap<String, String> = [("team", "payments"), ("tier", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let key = series_key("error_ratio", metric, &extra);
        assert_eq!(
            key.to_string(),
            r#"error_ratio{service="cart",team="payments",tier="1"}"#
        );
    }

    #[test]
    fn non_finite_values_are_dropped_and_counted() {
        let (samples, dropped) = finite_samples([
            (1_700_000_060.0, 2.0),
            (1_700_000_000.0, 1.0),
            (1_700_000_030.0, f64::NAN),
            (1_700_000_090.0, f64::INFINITY),
            (1_700_000_120.0, f64::NEG_INFINITY),
            (f64::NAN, 3.0),
            (1_700_000_000.5, 0.5),
        ]);
        assert_eq!(dropped, 4);
        assert_eq!(
            samples,
            vec![
                Sample { t: E, v: 1.0 },
                Sample { t: E + 500, v: 0.5 },
                Sample {
                    t: E + 60 * S,
                    v: 2.0
                },
            ]
        );
    }

    fn matrix(json: &str) -> Data {
        serde_json::from_str(json).expect("valid Prometheus data JSON")
    }

    #[test]
    fn batch_from_wire_format_drops_stale_markers_and_empty_series() {
        let data = matrix(
            r#"{"resultType":"matrix","result":[
                {"metric":{"__name__":"x","service":"cart"},
                 "values":[[1700000000,"0.5"],[1700000030,"NaN"],[1700000060,"+Inf"],[1700000090,"1e-3"]]},
                {"metric":{"service":"gone"},"values":[[1700000000,"NaN"]]}
            ]}"#,
        );
        let (batch, stats) =
            build_batch(&signal(&[("tier", "1")]), data, E + 90 * S, true).expect("batch");
        assert_eq!(
            stats,
            BatchStats {
                series: 1,
                samples: 2,
                dropped: 3
            }
        );
        assert_eq!(batch.signal, "error_ratio");
        assert_eq!(batch.until, E + 90 * S);
        assert!(batch.backfill);
        assert_eq!(batch.series.len(), 1);
        let series = &batch.series[0];
        assert_eq!(
            series.key.to_string(),
            r#"error_ratio{service="cart",tier="1"}"#
        );
        assert_eq!(
            series.samples,
            vec![
                Sample { t: E, v: 0.5 },
                Sample {
                    t: E + 90 * S,
                    v: 0.001
                }
            ]
        );
    }

    #[test]
    fn series_colliding_after_config_labels_are_merged() {
        let data = matrix(
            r#"{"resultType":"matrix","result":[
                {"metric":{"pod":"a"},"values":[[1700000000,"1"],[1700000060,"3"]]},
                {"metric":{"pod":"b"},"values":[[1700000000,"9"],[1700000030,"2"]]}
            ]}"#,
        );
        let (batch, stats) =
            build_batch(&signal(&[("pod", "all")]), data, E, false).expect("batch");
        assert_eq!(stats.series, 1);
        let values: Vec<f64> = batch.series[0].samples.iter().map(|s| s.v).collect();
        assert_eq!(values, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn empty_result_is_a_batch_with_a_watermark() {
        let (batch, stats) = build_batch(
            &signal(&[]),
            matrix(r#"{"resultType":"matrix","result":[]}"#),
            E,
            false,
        )
        .expect("batch");
        assert!(batch.series.is_empty());
        assert_eq!(batch.until, E);
        assert_eq!(stats, BatchStats::default());
    }

    #[test]
    fn instant_vector_answer_is_an_error_not_a_panic() {
        let data =
            matrix(r#"{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"1"]}]}"#);
        let err = build_batch(&signal(&[]), data, E, false).expect_err("not a matrix");
        assert!(err.to_string().contains("instant vector"), "{err}");
    }

    #[test]
    fn new_renders_the_query_with_escaped_selectors() {
        let source = PrometheusSource::new(
            &prom_config("http://user:secret@127.0.0.1:9090"),
            &[signal_config(
                r#"rate(errors_total{$selector,code=~"5.."}[5m])"#,
            )],
        )
        .expect("valid");
        assert_eq!(
            source.signals[0].query,
            r#"rate(errors_total{service="cart",code=~"5.."}[5m])"#
        );
        assert!(
            !source.display_url.contains("secret"),
            "{}",
            source.display_url
        );
    }

    #[test]
    fn new_names_the_bad_field() {
        let ok_signal = [signal_config("up{$selector}")];
        let mut config = prom_config("http://127.0.0.1:9090");
        config.step = HumanDuration(Duration::from_millis(1500));
        let err = PrometheusSource::new(&config, &ok_signal).expect_err("fractional step");
        assert!(err.to_string().starts_with("prometheus.step: "), "{err}");

        let mut config = prom_config("http://127.0.0.1:9090");
        config.poll_interval = HumanDuration(Duration::ZERO);
        let err = PrometheusSource::new(&config, &ok_signal).expect_err("zero interval");
        assert!(
            err.to_string().starts_with("prometheus.poll_interval: "),
            "{err}"
        );

        for url in ["ftp://prom:9090", "not a url"] {
            let err = PrometheusSource::new(&prom_config(url), &ok_signal).expect_err(url);
            assert!(err.to_string().starts_with("prometheus.url: "), "{err}");
        }

        let bad = [signal_config("up{$selector}"), signal_config("up")];
        let err = PrometheusSource::new(&prom_config("http://127.0.0.1:9090"), &bad)
            .expect_err("no placeholder");
        assert!(err.to_string().starts_with("signals[1].query: "), "{err}");

        let err = PrometheusSource::new(&prom_config("http://127.0.0.1:9090"), &[])
            .expect_err("no signals");
        assert!(matches!(err, SourceError::NoSignals));
    }
}
