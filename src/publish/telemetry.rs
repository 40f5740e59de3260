//! Telemetry of the publishing stage: broker connection, outbox depth,
//! events sent, approvals. As in `crate::telemetry`, each method writes
//! the log line *and* the metric, so wording and names live in one place.
//!
//! The metrics are registered into aiopsd's one registry
//! ([`PublishMetrics::register`], called by `Metrics::new`); the methods
//! are on [`Metrics`] so callers need only the one handle.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::approvals::{ApprovalRefused, Channel, PendingAction};
use super::outbox::near_full_level;
use crate::signal::{format_ts, now_ms};
use crate::telemetry::{Health, Metrics};

/// Label set naming an outbox sink.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// Sink name (`mqtt`).
    pub sink: String,
}

/// Label set of an approval outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApprovalLabel {
    /// `api` or `mqtt`.
    pub channel: String,
    /// `approved`, `denied`, or the refusal reason (`bad_signature`, ...).
    pub outcome: String,
}

/// The publishing stage's metrics.
#[derive(Debug, Default)]
pub struct PublishMetrics {
    broker_connected: Family<SinkLabel, Gauge>,
    broker_connection_failures: Family<SinkLabel, Counter>,
    outbox_depth: Family<SinkLabel, Gauge>,
    outbox_max: Family<SinkLabel, Gauge>,
    outbox_near_full: Family<SinkLabel, Gauge>,
    outbox_refused: Family<SinkLabel, Counter>,
    events_sent: Family<SinkLabel, Counter>,
    events_failed: Family<SinkLabel, Counter>,
    events_poisoned: Family<SinkLabel, Counter>,
    approvals: Family<ApprovalLabel, Counter>,
}

impl PublishMetrics {
    /// Creates the metrics and registers them (prefix `aiopsd_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "broker_connected",
            "1 while connected to the event broker",
            m.broker_connected.clone(),
        );
        registry.register(
            "broker_connection_failures",
            "Broker connections that failed or dropped",
            m.broker_connection_failures.clone(),
        );
        registry.register(
            "outbox_depth",
            "Events waiting in the outbox for a sink",
            m.outbox_depth.clone(),
        );
        registry.register(
            "outbox_max_events",
            "The outbox bound of a sink (outbox.max_events)",
            m.outbox_max.clone(),
        );
        registry.register(
            "outbox_near_full",
            "1 when a sink's outbox is at 80% of its bound or more",
            m.outbox_near_full.clone(),
        );
        registry.register(
            "outbox_refused",
            "Low-priority events refused because the sink's outbox was full",
            m.outbox_refused.clone(),
        );
        registry.register(
            "events_sent",
            "Events delivered and acknowledged by a sink",
            m.events_sent.clone(),
        );
        registry.register(
            "events_failed",
            "Event sends that failed (connection lost before acknowledgement); each is sent again",
            m.events_failed.clone(),
        );
        registry.register(
            "events_poisoned",
            "Events a sink gave up on because the far side refuses them for good (e.g. a webhook 400); each is logged at ERROR",
            m.events_poisoned.clone(),
        );
        registry.register(
            "approvals",
            "Approval decisions and refusals, by channel and outcome",
            m.approvals.clone(),
        );
        m
    }
}

/// One event a sink gave up on, for [`Metrics::event_poisoned`].
#[derive(Debug, Clone, Copy)]
pub struct PoisonedEvent<'a> {
    /// Sink name (`webhook`, `mqtt`).
    pub sink: &'a str,
    /// Where it was going: the receiver URL (without query) or broker.
    pub target: &'a str,
    /// The event id (`X-Aiopsd-Event-Id`).
    pub event_id: &'a str,
    /// The event kind (`incident.opened`, ...), or `unknown`.
    pub kind: &'a str,
    /// The HTTP status of the refusal, for HTTP sinks.
    pub status: Option<u16>,
    /// Why it was refused, e.g. the start of the receiver's answer.
    pub reason: &'a str,
}

/// A publisher's state as /readyz shows it. A broker outage does not make
/// aiopsd unready: detection goes on and events wait in the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct PublisherStatus {
    /// Sink name.
    pub sink: String,
    /// Broker URL.
    pub broker: String,
    /// True while connected.
    pub connected: bool,
    /// Since when connected or disconnected (RFC 3339).
    pub since: Option<String>,
    /// Why the last connection failed.
    pub last_error: Option<String>,
    /// Events waiting in the outbox.
    pub outbox_depth: u64,
    /// The outbox bound.
    pub outbox_max_events: u64,
}

fn sink(name: &str) -> SinkLabel {
    SinkLabel {
        sink: name.to_string(),
    }
}

fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

impl Metrics {
    /// The broker accepted the connection.
    pub fn broker_up(&self, health: &Health, sink_name: &str, broker: &str) {
        self.set_broker_connected(sink_name, true);
        health.publisher_connected(sink_name, true, None);
        tracing::info!(
            sink = sink_name,
            broker,
            "Connected to the event broker; sending queued events."
        );
    }

    /// The connection failed or dropped; the next attempt is in `retry_in`.
    pub fn broker_down(&self, health: &Health, sink_name: &str, error: &str, retry_in: Duration) {
        self.set_broker_connected(sink_name, false);
        self.publish
            .broker_connection_failures
            .get_or_create(&sink(sink_name))
            .inc();
        health.publisher_connected(sink_name, false, Some(error.to_string()));
        tracing::warn!(
            sink = sink_name,
            error,
            retry_in_ms = retry_in.as_millis() as u64,
            "The event broker is not reachable; events wait in the outbox and detection goes on."
        );
    }

    /// Sets the broker-connected gauge.
    pub fn set_broker_connected(&self, sink_name: &str, connected: bool) {
        self.publish
            .broker_connected
            .get_or_create(&sink(sink_name))
            .set(i64::from(connected));
    }

    /// `n` events were acknowledged by the sink's far side.
    pub fn events_sent(&self, sink_name: &str, n: u64) {
        self.publish
            .events_sent
            .get_or_create(&sink(sink_name))
            .inc_by(n);
        tracing::trace!(sink = sink_name, n, "Events delivered.");
    }

    /// `n` sent events were not acknowledged before the connection was
    /// lost; they stay in the outbox and are sent again.
    pub fn events_failed(&self, sink_name: &str, n: u64) {
        if n > 0 {
            self.publish
                .events_failed
                .get_or_create(&sink(sink_name))
                .inc_by(n);
        }
    }

    /// A sink gave up on one event for good: the far side refuses *this*
    /// event and would refuse it on every retry, so keeping it would block
    /// every later event. The one place an event is dropped, so it is
    /// never silent: an ERROR line with the event's id, kind and the
    /// refusal, and `aiopsd_events_poisoned_total{sink}` (alert on it).
    pub fn event_poisoned(&self, poisoned: &PoisonedEvent<'_>) {
        self.publish
            .events_poisoned
            .get_or_create(&sink(poisoned.sink))
            .inc();
        tracing::error!(
            sink = poisoned.sink,
            target = poisoned.target,
            event = poisoned.event_id,
            kind = poisoned.kind,
            status = poisoned.status,
            error = poisoned.reason,
            "The sink refused this event for good; it was dropped so later events can go. \
             Fix the receiver or the event schema; the event's id and kind are in this line's fields."
        );
    }

    /// The outbox depth after a write; WARNs when it crossed 80%.
    pub fn outbox_depth(&self, sink_name: &str, depth: u64, max: u64, crossed_near_full: bool) {
        let label = sink(sink_name);
        self.publish
            .outbox_depth
            .get_or_create(&label)
            .set(to_i64(depth));
        self.publish
            .outbox_max
            .get_or_create(&label)
            .set(to_i64(max));
        self.publish
            .outbox_near_full
            .get_or_create(&label)
            .set(i64::from(depth >= near_full_level(max)));
        if crossed_near_full {
            tracing::warn!(
                sink = sink_name,
                depth,
                max_events = max,
                "The event outbox is 80% full; is the sink down? When full, incident.updated events \
                 are refused (other events are still queued)."
            );
        }
    }

    /// The outbox depth after a delivery (it only shrinks here).
    pub fn outbox_depth_now(&self, health: &Health, sink_name: &str, depth: u64) {
        let label = sink(sink_name);
        self.publish
            .outbox_depth
            .get_or_create(&label)
            .set(to_i64(depth));
        let max = health.publisher_set_depth(sink_name, depth);
        if let Some(max) = max {
            self.publish
                .outbox_max
                .get_or_create(&label)
                .set(to_i64(max));
            self.publish
                .outbox_near_full
                .get_or_create(&label)
                .set(i64::from(depth >= near_full_level(max)));
        }
    }

    /// A low-priority event was refused because the outbox is full: a
    /// person must look at the sink.
    pub fn outbox_refused(&self, sink_name: &str, event_id: &str, kind: &str) {
        self.publish
            .outbox_refused
            .get_or_create(&sink(sink_name))
            .inc();
        tracing::error!(
            sink = sink_name,
            event = event_id,
            kind,
            "The event outbox is full; this low-priority event was refused and will not be sent. \
             Bring the sink back or raise outbox.max_events."
        );
    }

    /// A pending action was approved or denied.
    pub fn approval_decided(&self, action: &PendingAction) {
        let channel = action.channel.map_or("unknown", Channel::as_str);
        self.publish
            .approvals
            .get_or_create(&ApprovalLabel {
                channel: channel.into(),
                outcome: action.state.as_str().into(),
            })
            .inc();
        tracing::info!(
            action = action.id,
            incident = action.incident_id,
            state = action.state.as_str(),
            by = action.decided_by.as_deref().unwrap_or_default(),
            channel,
            "An action was decided."
        );
    }

    /// An approval was refused; `action` is the id the message claimed, if
    /// it could be read. Never logs the secret or the signature.
    pub fn approval_refused(
        &self,
        channel: Channel,
        action: Option<i64>,
        refused: &ApprovalRefused,
    ) {
        self.publish
            .approvals
            .get_or_create(&ApprovalLabel {
                channel: channel.as_str().into(),
                outcome: refused.label().into(),
            })
            .inc();
        tracing::warn!(
            channel = channel.as_str(),
            action,
            reason = refused.label(),
            error = %refused,
            "An approval was refused."
        );
    }

    /// A pending action expired without a decision.
    pub fn action_expired(&self, action: &PendingAction) {
        self.publish
            .approvals
            .get_or_create(&ApprovalLabel {
                channel: "none".into(),
                outcome: "expired".into(),
            })
            .inc();
        tracing::info!(
            action = action.id,
            incident = action.incident_id,
            "A pending action expired without a decision."
        );
    }
}

impl Health {
    fn with_publisher<T>(&self, sink_name: &str, f: impl FnOnce(&mut PublisherStatus) -> T) -> T {
        let mut all = match self.publishers.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(p) = all.iter_mut().find(|p| p.sink == sink_name) {
            return f(p);
        }
        all.push(PublisherStatus {
            sink: sink_name.to_string(),
            broker: String::new(),
            connected: false,
            since: None,
            last_error: None,
            outbox_depth: 0,
            outbox_max_events: 0,
        });
        let last = all.len() - 1;
        f(&mut all[last])
    }

    /// Declares a publisher, shown (not connected) until it connects.
    pub fn publisher_registered(&self, sink_name: &str, broker: &str) {
        self.with_publisher(sink_name, |p| p.broker = broker.to_string());
    }

    /// Records a connection change.
    pub fn publisher_connected(&self, sink_name: &str, connected: bool, error: Option<String>) {
        self.with_publisher(sink_name, |p| {
            if p.connected != connected || p.since.is_none() {
                p.since = Some(format_ts(now_ms()));
            }
            p.connected = connected;
            if error.is_some() || connected {
                p.last_error = error;
            }
        });
    }

    /// Records the outbox depth and bound.
    pub fn publisher_depth(&self, sink_name: &str, depth: u64, max: u64) {
        self.with_publisher(sink_name, |p| {
            p.outbox_depth = depth;
            p.outbox_max_events = max;
        });
    }

    /// Records the depth; returns the known bound.
    fn publisher_set_depth(&self, sink_name: &str, depth: u64) -> Option<u64> {
        self.with_publisher(sink_name, |p| {
            p.outbox_depth = depth;
            (p.outbox_max_events > 0).then_some(p.outbox_max_events)
        })
    }

    /// Every publisher's status, for /readyz.
    pub fn publishers(&self) -> Vec<PublisherStatus> {
        match self.publishers.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
