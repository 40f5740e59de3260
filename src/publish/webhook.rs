//! The webhook sink: POSTs the outbox's `webhook` rows, one event per
//! request, to an HTTP receiver (a pager, a chat bridge), so aiopsd can sit
//! between Alertmanager and whatever pages a person.
//!
//! One tokio task, one request at a time, in outbox order: the body is the
//! same `aiopsd.event/v1` JSON as on MQTT (docs/EVENTS.md). A row is
//! deleted only once the receiver answered 2xx, so delivery is
//! at-least-once (receivers deduplicate by the event id, also sent as
//! `X-Aiopsd-Event-Id`). While the receiver fails, the *same* event is
//! retried with capped exponential backoff and nothing behind it is sent:
//! order is kept, and an outage only makes the queue longer.
//!
//! **Poisoned events.** A 4xx answer other than 401, 403, 404, 408 and 429
//! means the receiver refuses *this event* (400 bad payload, 413 too
//! large, 422 ...), and would refuse it again on every retry. Retrying
//! would block every later event forever, so the event is logged at ERROR
//! (status and the start of the response body), counted, and
//! acknowledged: it is the one place where this sink gives an event up,
//! and never silently. 401/403/404 (and 3xx) are different: they say the
//! receiver refuses *us* (a rotated token, a wrong path, a moved
//! endpoint), which would poison every event in turn. Those are retried
//! with an ERROR line, like an outage, until someone fixes the config;
//! the events wait in the outbox.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::config::WebhookConfig;
use super::event::EventKind;
use super::outbox::OutboxRow;
use super::telemetry::PoisonedEvent;
use super::PublishError;
use crate::config::Secret;
use crate::incident::{Store, StoreError};
use crate::telemetry::{error_chain, Health, Metrics};

/// Sink name of the webhook sender (the `sink` column of the outbox).
pub const WEBHOOK_SINK: &str = "webhook";

/// Header carrying `sha256=<lowercase hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-aiopsd-signature";

/// Header carrying the event id (the deduplication key).
pub const EVENT_ID_HEADER: &str = "x-aiopsd-event-id";

/// Header carrying the event kind (`incident.opened`, ...).
pub const EVENT_KIND_HEADER: &str = "x-aiopsd-event";

/// Rows read from the store per round. Small: they are sent one by one
/// anyway, and a short read keeps memory flat with a long queue.
const READ_BATCH: usize = 64;

/// Delivered rows are deleted in batches of at most this many (and always
/// before waiting or stopping). A crash in between resends at most this
/// many events: duplicates, never losses.
const ACK_BATCH: usize = 64;

/// How often the sender looks for new rows when the queue is empty.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Most characters of a refusing receiver's body quoted in the log.
const BODY_EXCERPT: usize = 256;

/// Handled rows waiting to be deleted from the outbox.
#[derive(Default)]
struct Acks {
    ids: Vec<i64>,
    /// How many of `ids` were delivered (the rest were poisoned or
    /// filtered), for `aiopsd_events_sent_total`.
    delivered: u64,
}

/// What the sender has done since it started; shared with whoever holds
/// [`WebhookPublisher::stats`] (tests, the bench).
///
/// The poisoned count is also in the ERROR line of each poisoned event;
/// `aiopsd_events_sent_total{sink="webhook"}`,
/// `aiopsd_events_failed_total{sink="webhook"}` and
/// `aiopsd_events_poisoned_total{sink="webhook"}` are the metrics.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events the receiver answered 2xx to.
    pub delivered: AtomicU64,
    /// Events given up on because the receiver refused them (4xx).
    pub poisoned: AtomicU64,
    /// Events skipped because their kind is not in `webhook.events`.
    pub filtered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub retried: AtomicU64,
}

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: acknowledge the row.
    Delivered,
    /// The receiver refuses this event for good: log, count, acknowledge.
    Poisoned {
        /// HTTP status.
        status: u16,
    },
    /// Try the same event again after a wait.
    Retry {
        /// Why, for the log and `/readyz`.
        reason: String,
        /// The receiver's `Retry-After`, if it sent one in seconds.
        retry_after: Option<Duration>,
        /// True when a person must fix the config (401/403/404): logged
        /// at ERROR instead of WARN.
        config_problem: bool,
    },
}

/// Classifies a response status (and its `Retry-After` header value).
/// Pure, so the retry/poison rule is tested without a server.
pub fn classify(status: u16, retry_after: Option<&str>) -> Outcome {
    let retry_after =
        retry_after.and_then(|v| v.trim().parse::<u64>().ok().map(Duration::from_secs));
    match status {
        200..=299 => Outcome::Delivered,
        401 | 403 | 404 => Outcome::Retry {
            reason: format!(
                "the receiver answered {status}: check webhook.url and webhook.bearer_token"
            ),
            retry_after,
            config_problem: true,
        },
        408 | 429 => Outcome::Retry {
            reason: format!("the receiver answered {status}"),
            retry_after,
            config_problem: false,
        },
        400..=499 => Outcome::Poisoned { status },
        // 1xx/3xx (redirects are not followed: a moved endpoint is a config
        // change, and following it would resend the bearer token elsewhere)
        // and 5xx.
        _ => Outcome::Retry {
            reason: format!("the receiver answered {status}"),
            retry_after,
            config_problem: (300..=399).contains(&status),
        },
    }
}

/// The signature header value for `body`: `sha256=` and the lowercase hex
/// HMAC-SHA256 keyed with `secret`. Receivers recompute it over the raw
/// body bytes and compare in constant time.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; the error branch cannot happen.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The webhook sender, built and checked from config; [`run`](Self::run)
/// it as a task.
pub struct WebhookPublisher {
    config: WebhookConfig,
    url: reqwest::Url,
    /// The URL as logged and shown in `/readyz`: no query string (it may
    /// carry a token).
    shown_url: String,
    client: reqwest::Client,
    kinds: HashSet<EventKind>,
    store: Store,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stats: Arc<WebhookStats>,
}

impl std::fmt::Debug for WebhookPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookPublisher")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl WebhookPublisher {
    /// Checks the config and builds the HTTP client, so a bad URL or token
    /// fails at start with the field named.
    pub fn new(
        config: &WebhookConfig,
        store: Store,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, PublishError> {
        let url = config.endpoint().map_err(|reason| PublishError::Config {
            field: "webhook.url",
            reason,
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(token) = &config.bearer_token {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    PublishError::Config {
                        field: "webhook.bearer_token",
                        reason: "is not a valid header value".into(),
                    }
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aiopsd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PublishError::Config {
                field: "webhook",
                reason: format!("cannot build the HTTP client: {}", error_chain(&e)),
            })?;
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        Ok(Self {
            config: config.clone(),
            shown_url: shown.to_string(),
            url,
            client,
            kinds: config.events.iter().copied().collect(),
            store,
            metrics,
            health,
            stats: Arc::new(WebhookStats::default()),
        })
    }

    /// The sender's counters, readable while it runs.
    pub fn stats(&self) -> Arc<WebhookStats> {
        Arc::clone(&self.stats)
    }

    /// The receiver URL without its query string, as logged.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// Sends queued events in order, retrying with backoff, until `cancel`
    /// fires. Undelivered events stay in the outbox for the next start.
    pub async fn run(self, cancel: CancellationToken) {
        self.health
            .publisher_registered(WEBHOOK_SINK, &self.shown_url);
        self.refresh_depth().await;
        let initial = self.config.retry.initial_backoff.0;
        let max = self.config.retry.max_backoff.0;
        let mut backoff = initial;
        // None until the first answer; then whether the last one was good.
        let mut up: Option<bool> = None;
        let mut acked = Acks::default();
        // Highest row handled (delivered, poisoned or filtered) this run;
        // rows at or below it may still await deletion in `acked`.
        let mut done_upto: i64 = 0;
        'run: while !cancel.is_cancelled() {
            let Some(rows) = self.next_rows(done_upto).await else {
                self.flush_acks(&mut acked).await;
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(IDLE_POLL) => continue,
                }
            };
            for row in rows {
                if row
                    .kind
                    .is_some_and(|k| !self.kinds.is_empty() && !self.kinds.contains(&k))
                {
                    self.stats.filtered.fetch_add(1, Ordering::Relaxed);
                    acked.ids.push(row.id);
                    done_upto = row.id;
                    continue;
                }
                loop {
                    let outcome = tokio::select! {
                        _ = cancel.cancelled() => break 'run,
                        o = self.deliver(&row) => o,
                    };
                    match outcome {
                        Outcome::Delivered => {
                            if up != Some(true) {
                                self.metrics
                                    .broker_up(&self.health, WEBHOOK_SINK, &self.shown_url);
                                up = Some(true);
                            }
                            backoff = initial;
                            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                            acked.delivered += 1;
                            break;
                        }
                        Outcome::Poisoned { .. } => {
                            // Logged and counted in `deliver`; the receiver
                            // answered, so it is up.
                            if up != Some(true) {
                                self.metrics
                                    .broker_up(&self.health, WEBHOOK_SINK, &self.shown_url);
                                up = Some(true);
                            }
                            break;
                        }
                        Outcome::Retry {
                            reason,
                            retry_after,
                            config_problem,
                        } => {
                            // Delete what was delivered before waiting, so a
                            // long outage does not hold acknowledgements.
                            self.flush_acks(&mut acked).await;
                            let wait = retry_after.map_or(backoff, |r| r.max(backoff)).min(max);
                            self.stats.retried.fetch_add(1, Ordering::Relaxed);
                            self.metrics.events_failed(WEBHOOK_SINK, 1);
                            if config_problem {
                                tracing::error!(
                                    sink = WEBHOOK_SINK,
                                    url = %self.shown_url,
                                    event = %row.event_id,
                                    error = %reason,
                                    retry_in_ms = wait.as_millis() as u64,
                                    "The webhook receiver refuses aiopsd itself; events wait in the outbox until the config is fixed."
                                );
                            }
                            if up != Some(false) {
                                // Logs the WARN line once per outage.
                                self.metrics
                                    .broker_down(&self.health, WEBHOOK_SINK, &reason, wait);
                                up = Some(false);
                            } else {
                                self.health
                                    .publisher_connected(WEBHOOK_SINK, false, Some(reason));
                                tracing::debug!(sink = WEBHOOK_SINK, event = %row.event_id, retry_in_ms = wait.as_millis() as u64, "Webhook delivery failed again; retrying.");
                            }
                            tokio::select! {
                                _ = cancel.cancelled() => break 'run,
                                _ = tokio::time::sleep(wait) => {}
                            }
                            backoff = (backoff * 2).min(max);
                        }
                    }
                }
                acked.ids.push(row.id);
                done_upto = row.id;
                if acked.ids.len() >= ACK_BATCH {
                    self.flush_acks(&mut acked).await;
                }
            }
        }
        self.flush_acks(&mut acked).await;
        self.health.publisher_connected(WEBHOOK_SINK, false, None);
        self.metrics.set_broker_connected(WEBHOOK_SINK, false);
        tracing::info!("The webhook sender stopped; undelivered events stay in the outbox.");
    }

    /// POSTs one event and classifies the answer; logs and counts a
    /// poisoned event here, where the body is at hand.
    async fn deliver(&self, row: &OutboxRow) -> Outcome {
        let body = row.payload.as_bytes();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(EVENT_ID_HEADER, row.event_id.as_str())
            .header(
                EVENT_KIND_HEADER,
                row.kind.map_or("unknown", EventKind::as_str),
            )
            .body(row.payload.clone());
        if let Some(secret) = &self.config.signing_secret {
            request = request.header(SIGNATURE_HEADER, sign(secret.expose().as_bytes(), body));
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(error) => {
                return Outcome::Retry {
                    reason: describe(error),
                    retry_after: None,
                    config_problem: false,
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let outcome = classify(status, retry_after.as_deref());
        // Read the body either way so the connection can be reused; only a
        // refusal quotes it.
        let text = response.text().await.unwrap_or_default();
        if let Outcome::Poisoned { status } = outcome {
            self.stats.poisoned.fetch_add(1, Ordering::Relaxed);
            self.metrics.event_poisoned(&PoisonedEvent {
                sink: WEBHOOK_SINK,
                target: &self.shown_url,
                event_id: &row.event_id,
                kind: row.kind.map_or("unknown", EventKind::as_str),
                status: Some(status),
                reason: &self.excerpt(&text),
            });
        }
        outcome
    }

    /// The start of a response body for the log, on one line, with any
    /// configured secret blanked (a receiver may echo headers back).
    fn excerpt(&self, text: &str) -> String {
        let mut out: String = text
            .chars()
            .take(BODY_EXCERPT)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        for secret in [&self.config.bearer_token, &self.config.signing_secret]
            .into_iter()
            .flatten()
        {
            out = redact(&out, secret);
        }
        out
    }

    async fn next_rows(&self, after: i64) -> Option<Vec<OutboxRow>> {
        let store = self.store.clone();
        match blocking(move || store.outbox_batch(WEBHOOK_SINK, after, READ_BATCH)).await {
            Ok(rows) if rows.is_empty() => None,
            Ok(rows) => Some(rows),
            Err(error) => {
                tracing::warn!(sink = WEBHOOK_SINK, error = %error, "Reading the outbox failed; retrying shortly.");
                None
            }
        }
    }

    /// Deletes handled rows; on failure keeps them for the next try (worst
    /// case they are sent again after a restart: a duplicate, never a loss).
    async fn flush_acks(&self, acked: &mut Acks) {
        if acked.ids.is_empty() {
            return;
        }
        let Acks { ids, delivered: n } = std::mem::take(acked);
        let store = self.store.clone();
        let ids_for_store = ids.clone();
        match blocking(move || store.outbox_ack(WEBHOOK_SINK, &ids_for_store)).await {
            Ok(depth) => {
                if n > 0 {
                    self.metrics.events_sent(WEBHOOK_SINK, n);
                }
                self.metrics
                    .outbox_depth_now(&self.health, WEBHOOK_SINK, depth);
            }
            Err(error) => {
                tracing::warn!(sink = WEBHOOK_SINK, error = %error, "Deleting delivered events from the outbox failed; will retry.");
                *acked = Acks { ids, delivered: n };
            }
        }
    }

    async fn refresh_depth(&self) {
        let store = self.store.clone();
        if let Ok(Some((depth, max))) = blocking(move || store.outbox_depth(WEBHOOK_SINK)).await {
            self.health.publisher_depth(WEBHOOK_SINK, depth, max);
            self.metrics
                .outbox_depth_now(&self.health, WEBHOOK_SINK, depth);
        }
    }
}

/// `text` with every occurrence of `secret` replaced by `***`.
fn redact(text: &str, secret: &Secret) -> String {
    let s = secret.expose();
    if s.is_empty() {
        text.to_string()
    } else {
        text.replace(s, "***")
    }
}

/// A request error in words: reqwest's Display hides the cause (refused,
/// timed out, TLS).
fn describe(error: reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // Strip the URL reqwest adds: its query may hold a token.
    format!("{what}: {}", error_chain(&error.without_url()))
}

/// Runs a store call on the blocking pool and flattens the errors.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(e) => Err(format!("store task did not complete: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(200, None), Outcome::Delivered);
        assert_eq!(classify(204, None), Outcome::Delivered);
        assert_eq!(classify(400, None), Outcome::Poisoned { status: 400 });
        assert_eq!(classify(422, None), Outcome::Poisoned { status: 422 });
        for retried in [408, 429, 500, 502, 503, 302] {
            assert!(
                matches!(classify(retried, None), Outcome::Retry { .. }),
                "{retried}"
            );
        }
        for config in [401, 403, 404] {
            assert!(
                matches!(
                    classify(config, None),
                    Outcome::Retry {
                        config_problem: true,
                        ..
                    }
                ),
                "{config}"
            );
        }
        assert!(matches!(
            classify(503, Some(" 7 ")),
            Outcome::Retry { retry_after: Some(d), config_problem: false, .. } if d == Duration::from_secs(7)
        ));
        // An HTTP date is not understood: the normal backoff applies.
        assert!(matches!(
            classify(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Outcome::Retry {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// A receiver that refuses every event (422) over real HTTP on
    /// loopback; returns its URL and the server task.
    async fn refusing_receiver() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "event schema not supported",
                )
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/hook"), task)
    }

    fn incident() -> crate::incident::Incident {
        use crate::incident::{Incident, IncidentState, Severity, TimelineEntry};
        let t0 = 1_700_000_000_000;
        Incident {
            id: None,
            cluster: "test".into(),
            group: [("namespace", "shop"), ("service", "cart")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: IncidentState::Open,
            severity: Severity::Warning,
            opened_at: t0,
            last_anomaly_at: t0,
            resolved_at: None,
            anomaly_count: 1,
            signals: Vec::new(),
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![TimelineEntry {
                at: t0,
                kind: "opened".into(),
                message: "Opened.".into(),
            }],
        }
    }

    #[tokio::test]
    async fn refused_events_are_counted_as_poisoned_on_metrics() {
        crate::install_crypto_provider();
        let (url, receiver) = refusing_receiver().await;
        let config: WebhookConfig = serde_saphyr::from_str(&format!(
            "url: {url}\nretry: {{ initial_backoff: 50ms, max_backoff: 100ms }}\n"
        ))
        .expect("webhook config");
        let store = Store::open_in_memory().expect("store");
        store
            .configure_outbox(&[crate::publish::outbox::SinkSpec {
                name: WEBHOOK_SINK.into(),
                max_events: 100,
            }])
            .expect("outbox");
        let mut inc = incident();
        let id = store
            .save_incident_with_events(&inc, crate::incident::UpdateKind::Opened, 1)
            .expect("opened")
            .id;
        inc.id = Some(id);
        store
            .save_incident_with_events(&inc, crate::incident::UpdateKind::Updated, 2)
            .expect("updated");
        let metrics = Arc::new(Metrics::new());
        let publisher =
            WebhookPublisher::new(&config, store.clone(), Arc::clone(&metrics), Health::new())
                .expect("publisher");
        let stats = publisher.stats();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(publisher.run(cancel.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while stats.poisoned.load(Ordering::Relaxed) < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        let _ = task.await;
        receiver.abort();

        let exposition = metrics.encode();
        assert!(
            exposition.contains(r#"aiopsd_events_poisoned_total{sink="webhook"} 2"#),
            "{exposition}"
        );
        assert!(
            !exposition.contains(r#"aiopsd_events_sent_total{sink="webhook"} 2"#),
            "poisoned events are not sent: {exposition}"
        );
        assert!(
            store
                .outbox_batch(WEBHOOK_SINK, 0, 10)
                .expect("outbox")
                .is_empty(),
            "given up on, so the queue goes on"
        );
    }

    #[test]
    fn secrets_are_blanked_from_excerpts() {
        let s = Secret::from("tok-123");
        assert_eq!(redact("bad token tok-123 here", &s), "bad token *** here");
    }
}
