//! The durable outbox: what the store returns and takes when events are
//! queued and sent, and how a queueing result is reported.
//!
//! One queue in SQLite (table `outbox`), several senders: each row names
//! its `sink` (`mqtt` here; the webhook notifier of issue 8 adds another).
//! An event is written once per configured sink, in the *same transaction*
//! as the incident or action change that caused it, so a crash can never
//! leave a change without its event or an event without its change. A
//! sender reads its rows in id order, sends them, and deletes a row only
//! once the far side has acknowledged it: delivery is at-least-once, and
//! the consumer deduplicates by event id.
//!
//! **Bounded.** Each sink has `max_events`. At 80% a WARN line is logged
//! and `aiopsd_outbox_near_full{sink}` is 1. When full, *low-priority*
//! events (`incident.updated`, see
//! [`EventKind::priority`](super::event::EventKind::priority)) are refused
//! for that sink with an ERROR line and `aiopsd_outbox_refused_total`;
//! every other event is still queued beyond the bound. That is the
//! explicit choice: an incident that opened or resolved, or a decision on
//! an action, must never be lost, so the bound limits the chatty events
//! and the disk absorbs the rest. Nothing is ever dropped silently.

use super::event::EventKind;
use crate::incident::{Incident, IncidentId};
use crate::signal::TimestampMs;
use crate::telemetry::Metrics;

/// Sink name of the MQTT publisher.
pub const MQTT_SINK: &str = "mqtt";

/// Fraction of `max_events` at which a sink counts as near full.
pub const NEAR_FULL: f64 = 0.8;

/// A sender that takes events from the outbox, with its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpec {
    /// Sink name, stored in each row (`mqtt`, later `webhook`).
    pub name: String,
    /// Most events waiting before low-priority ones are refused.
    pub max_events: u64,
}

/// One queued event, as a sender reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Row id: the global queue order.
    pub id: i64,
    /// The event's stable id (also inside `payload`).
    pub event_id: String,
    /// The incident it belongs to (ordering key).
    pub incident_id: IncidentId,
    /// Event kind.
    pub kind: Option<EventKind>,
    /// Where the event goes below the sink's prefix: for MQTT the topic
    /// after `<topic_prefix>/`, e.g. `prod/incidents/42/opened`.
    pub route: String,
    /// The event as JSON text.
    pub payload: String,
    /// Wall time it was queued.
    pub created_at: TimestampMs,
}

/// A sink's queue length after a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkDepth {
    /// Sink name.
    pub sink: String,
    /// Events waiting.
    pub depth: u64,
    /// The bound.
    pub max_events: u64,
    /// True if this write took the depth across the near-full mark (so the
    /// WARN is logged once per crossing, not on every event).
    pub crossed_near_full: bool,
}

impl SinkDepth {
    /// Whether the depth is at or past [`NEAR_FULL`] of the bound.
    pub fn near_full(&self) -> bool {
        near_full_level(self.max_events) <= self.depth
    }
}

/// Depth at which a sink with bound `max` is near full.
pub fn near_full_level(max: u64) -> u64 {
    // Bounds are at most 10^7, so the float is exact enough.
    ((max as f64) * NEAR_FULL).ceil() as u64
}

/// An event refused by a full sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEvent {
    /// The full sink.
    pub sink: String,
    /// The event's id.
    pub event_id: String,
    /// Its kind (always low priority).
    pub kind: EventKind,
}

/// What queueing events in one transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueReport {
    /// Events written (once per sink), as `(event id, kind)`.
    pub queued: Vec<(String, EventKind)>,
    /// Events refused because a sink was full.
    pub refused: Vec<RefusedEvent>,
    /// Depth of every sink after the write.
    pub depths: Vec<SinkDepth>,
}

impl EnqueueReport {
    /// Logs and counts what happened: an ERROR per refused event, a WARN
    /// when a sink crossed the near-full mark, and the depth gauges.
    pub fn emit(&self, metrics: &Metrics) {
        for r in &self.refused {
            metrics.outbox_refused(&r.sink, &r.event_id, r.kind.as_str());
        }
        for d in &self.depths {
            metrics.outbox_depth(&d.sink, d.depth, d.max_events, d.crossed_near_full);
        }
    }
}

/// An incident saved together with its events.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedIncident {
    /// The incident's id.
    pub id: IncidentId,
    /// What was queued.
    pub report: EnqueueReport,
    /// When the save merged into an already stored incident with the same
    /// identity, the merged result (with its id): the caller's copy must
    /// be replaced by it, or its next save would drop what was merged.
    pub merged: Option<Incident>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_full_mark() {
        assert_eq!(near_full_level(100), 80);
        let d = |depth| SinkDepth {
            sink: "mqtt".into(),
            depth,
            max_events: 100,
            crossed_near_full: false,
        };
        assert!(!d(79).near_full());
        assert!(d(80).near_full());
        assert!(d(150).near_full());
    }
}
