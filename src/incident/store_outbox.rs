//! Store methods for the event outbox and pending actions (migration 2).
//!
//! The rule everything here follows: an event is written in the *same
//! transaction* as the change that causes it. Saving an incident and
//! queueing its `incident.*` events, or deciding an action and queueing
//! `action.approved`, commit together or not at all, so a crash can lose
//! neither the change nor its announcement. Senders then read the queue in
//! order and delete what the far side acknowledged (src/publish/outbox.rs
//! explains the queue and its bound).

use rusqlite::{params, OptionalExtension, Transaction};

use super::{write_incident, Store, StoreError};
use crate::incident::{Incident, IncidentId, UpdateKind};
use crate::publish::approvals::{
    ActionId, ActionRequest, ActionState, Channel, Decision, DecisionOutcome, DecisionRefused,
    PendingAction, Verdict,
};
use crate::publish::event::{Event, EventKind, Priority};
use crate::publish::outbox::{
    near_full_level, EnqueueReport, OutboxRow, RefusedEvent, SavedIncident, SinkDepth, SinkSpec,
};
use crate::signal::TimestampMs;

/// A sink's state while one transaction queues events.
pub(super) struct SinkState {
    name: String,
    max_events: u64,
    depth_before: u64,
    depth: u64,
}

/// Columns of `pending_actions` in the order [`read_action`] expects.
pub(super) const ACTION_COLUMNS: &str =
    "id, incident_id, description, detail, requested_at, expires_at, \
     state, decided_by, reason, decided_at, channel, \
     rule, mode, proposed_by, plan, pre_state, exec_state, exec_message, \
     executed_at, verify_from, finished_at, revert_requested_by, revert_reason";

impl Store {
    /// Declares the sinks that take events from the outbox, with their
    /// bounds; called once at start by the daemon.
    ///
    /// Rows queued for a sink that is no longer configured are deleted
    /// (nobody would ever send them, and they would count against no
    /// bound); the names and counts are returned so the caller can say so
    /// in the log. With no sink at all, events are not written (their
    /// sequence numbers still advance, so ids stay stable).
    pub fn configure_outbox(&self, sinks: &[SinkSpec]) -> Result<Vec<(String, u64)>, StoreError> {
        let write = |source| StoreError::Write {
            what: "outbox sinks",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let existing: Vec<String> = {
            let mut stmt = tx.prepare("SELECT sink FROM outbox_sinks").map_err(write)?;
            let rows = stmt.query_map([], |row| row.get(0)).map_err(write)?;
            rows.collect::<Result<_, _>>().map_err(write)?
        };
        let mut dropped = Vec::new();
        for old in existing {
            if sinks.iter().any(|s| s.name == old) {
                continue;
            }
            let n = tx
                .execute("DELETE FROM outbox WHERE sink = ?1", params![old])
                .map_err(write)?;
            tx.execute("DELETE FROM outbox_sinks WHERE sink = ?1", params![old])
                .map_err(write)?;
            if n > 0 {
                dropped.push((old, n as u64));
            }
        }
        for sink in sinks {
            // The depth is recounted here, once, so a counter that drifted
            // (a row deleted by hand) heals on restart.
            tx.execute(
                "INSERT INTO outbox_sinks (sink, max_events, depth)
                 VALUES (?1, ?2, (SELECT count(*) FROM outbox WHERE sink = ?1))
                 ON CONFLICT (sink) DO UPDATE SET
                     max_events = excluded.max_events, depth = excluded.depth",
                params![sink.name, to_i64(sink.max_events)],
            )
            .map_err(write)?;
        }
        tx.commit().map_err(write)?;
        Ok(dropped)
    }

    /// Saves an incident and queues the events its change causes, in one
    /// transaction. Returns the id and what was queued.
    ///
    /// Events come from the timeline entries this save adds (`opened` →
    /// `incident.opened`, `severity_raised` → `incident.escalated`,
    /// `resolved` → `incident.resolved`, anything else → `incident.updated`)
    /// and, for an [`UpdateKind::Updated`] that added no entry, one
    /// `incident.updated`. Saving the same incident again adds no entry and
    /// so queues nothing twice for opened/escalated/resolved.
    pub fn save_incident_with_events(
        &self,
        incident: &Incident,
        kind: UpdateKind,
        now: TimestampMs,
    ) -> Result<SavedIncident, StoreError> {
        let write = |source| StoreError::Write {
            what: "incident and its events",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let saved = save_incident_in(&tx, incident, kind, now)?;
        tx.commit().map_err(write)?;
        Ok(saved)
    }

    /// Up to `limit` queued events of `sink` with a row id above
    /// `after_id`, in queue order.
    pub fn outbox_batch(
        &self,
        sink: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let query = |source| StoreError::Query {
            what: "outbox batch",
            source,
        };
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, event_id, incident_id, kind, route, payload, created_at
                 FROM outbox WHERE sink = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(query)?;
        let rows = stmt
            .query_map(params![sink, after_id, to_i64(limit as u64)], |row| {
                let kind: String = row.get(3)?;
                Ok(OutboxRow {
                    id: row.get(0)?,
                    event_id: row.get(1)?,
                    incident_id: row.get(2)?,
                    kind: EventKind::parse(&kind),
                    route: row.get(4)?,
                    payload: row.get(5)?,
                    created_at: row.get(6)?,
                })
            })
            .map_err(query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Deletes rows of `sink` that its far side acknowledged; returns the
    /// sink's depth afterwards. Unknown ids (already deleted) are ignored,
    /// so acknowledging twice is harmless.
    pub fn outbox_ack(&self, sink: &str, ids: &[i64]) -> Result<u64, StoreError> {
        let write = |source| StoreError::Write {
            what: "outbox acknowledgement",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let mut deleted: i64 = 0;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM outbox WHERE sink = ?1 AND id = ?2")
                .map_err(write)?;
            for id in ids {
                deleted += delete.execute(params![sink, id]).map_err(write)? as i64;
            }
        }
        let depth: Option<i64> = tx
            .query_row(
                "UPDATE outbox_sinks SET depth = max(depth - ?2, 0) WHERE sink = ?1
                 RETURNING depth",
                params![sink, deleted],
                |row| row.get(0),
            )
            .optional()
            .map_err(write)?;
        tx.commit().map_err(write)?;
        Ok(depth.map_or(0, to_u64))
    }

    /// Events waiting for `sink` and its bound; `None` if the sink is not
    /// configured.
    pub fn outbox_depth(&self, sink: &str) -> Result<Option<(u64, u64)>, StoreError> {
        self.lock()
            .query_row(
                "SELECT depth, max_events FROM outbox_sinks WHERE sink = ?1",
                params![sink],
                |row| Ok((to_u64(row.get(0)?), to_u64(row.get(1)?))),
            )
            .optional()
            .map_err(|source| StoreError::Query {
                what: "outbox depth",
                source,
            })
    }

    /// Records an action that needs a person's approval and queues
    /// `action.proposed`; the entry point for the policy gate.
    pub fn request_action(
        &self,
        request: &ActionRequest,
        now: TimestampMs,
    ) -> Result<(PendingAction, EnqueueReport), StoreError> {
        let write = |source| StoreError::Write {
            what: "pending action",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let cluster =
            incident_cluster(&tx, request.incident_id)?.ok_or(StoreError::UnknownIncident {
                id: request.incident_id,
            })?;
        let detail = request.detail.to_string();
        let expires_at = now.saturating_add(request.ttl_ms.max(0));
        let id: ActionId = tx
            .query_row(
                "INSERT INTO pending_actions
                     (incident_id, description, detail, requested_at, expires_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending') RETURNING id",
                params![
                    request.incident_id,
                    request.description,
                    detail,
                    now,
                    expires_at
                ],
                |row| row.get(0),
            )
            .map_err(write)?;
        let action = load_action(&tx, id)?.ok_or(StoreError::Write {
            what: "pending action (vanished after insert)",
            source: rusqlite::Error::QueryReturnedNoRows,
        })?;
        let mut report = EnqueueReport::default();
        let mut sinks = load_sinks(&tx)?;
        let message = format!(
            "Action {id} needs approval until {}: {}",
            crate::signal::format_ts(expires_at),
            action.description
        );
        queue_action_event(
            &tx,
            &mut sinks,
            &mut report,
            &cluster,
            &action,
            EventKind::ActionProposed,
            now,
            message,
        )?;
        finish_sinks(&tx, &sinks, &mut report)?;
        tx.commit().map_err(write)?;
        Ok((action, report))
    }

    /// Records a decision on a pending action, and its event, in one
    /// transaction. A nonce (MQTT) is remembered in the same transaction,
    /// so the same signed message can never decide twice.
    ///
    /// Refusals (unknown id, already decided, expired, replayed nonce) are
    /// `Ok` with an `Err` result: the store worked, the request did not. An
    /// action found past its expiry is marked expired (and
    /// `action.expired` queued) on the way.
    pub fn decide_action(
        &self,
        id: ActionId,
        decision: &Decision,
        now: TimestampMs,
    ) -> Result<DecisionOutcome, StoreError> {
        let write = |source| StoreError::Write {
            what: "action decision",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let mut report = EnqueueReport::default();
        if let Some(nonce) = &decision.nonce {
            let inserted = tx.execute(
                "INSERT INTO approval_nonces (nonce, action_id, seen_at) VALUES (?1, ?2, ?3)",
                params![nonce, id, now],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) => {
                    return Ok(DecisionOutcome {
                        result: Err(DecisionRefused::Replayed),
                        report,
                    })
                }
                Err(e) => return Err(write(e)),
            }
        }
        let result = match load_action(&tx, id)? {
            None => Err(DecisionRefused::NotFound(id)),
            Some(action) if action.state != ActionState::Pending => {
                Err(DecisionRefused::AlreadyDecided {
                    id,
                    state: action.state,
                })
            }
            Some(action) if now > action.expires_at => {
                let mut sinks = load_sinks(&tx)?;
                expire_one(&tx, &mut sinks, &mut report, action, now)?;
                finish_sinks(&tx, &sinks, &mut report)?;
                Err(DecisionRefused::Expired(id))
            }
            Some(_) => {
                let state = match decision.verdict {
                    Verdict::Approve => ActionState::Approved,
                    Verdict::Deny => ActionState::Denied,
                };
                tx.execute(
                    "UPDATE pending_actions SET state = ?2, decided_by = ?3, reason = ?4,
                         decided_at = ?5, channel = ?6
                     WHERE id = ?1 AND state = 'pending'",
                    params![
                        id,
                        state.as_str(),
                        decision.by,
                        decision.reason,
                        now,
                        decision.channel.as_str()
                    ],
                )
                .map_err(write)?;
                let action = load_action(&tx, id)?.ok_or(StoreError::Write {
                    what: "action decision (row vanished)",
                    source: rusqlite::Error::QueryReturnedNoRows,
                })?;
                let cluster = incident_cluster(&tx, action.incident_id)?.unwrap_or_default();
                let (kind, verb) = match decision.verdict {
                    Verdict::Approve => (EventKind::ActionApproved, "approved"),
                    Verdict::Deny => (EventKind::ActionDenied, "denied"),
                };
                let mut message = format!(
                    "Action {id} {verb} by {} via {}",
                    decision.by,
                    decision.channel.as_str()
                );
                if !decision.reason.is_empty() {
                    message.push_str(": ");
                    message.push_str(&decision.reason);
                } else {
                    message.push('.');
                }
                let mut sinks = load_sinks(&tx)?;
                queue_action_event(
                    &tx,
                    &mut sinks,
                    &mut report,
                    &cluster,
                    &action,
                    kind,
                    now,
                    message,
                )?;
                finish_sinks(&tx, &sinks, &mut report)?;
                Ok(action)
            }
        };
        tx.commit().map_err(write)?;
        Ok(DecisionOutcome { result, report })
    }

    /// Marks every pending action past its expiry as expired and queues
    /// `action.expired` for each; called periodically.
    pub fn expire_actions(
        &self,
        now: TimestampMs,
    ) -> Result<(Vec<PendingAction>, EnqueueReport), StoreError> {
        let write = |source| StoreError::Write {
            what: "action expiry",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let due: Vec<ActionId> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id FROM pending_actions
                     WHERE state = 'pending' AND expires_at < ?1 ORDER BY id",
                )
                .map_err(write)?;
            let rows = stmt
                .query_map(params![now], |row| row.get(0))
                .map_err(write)?;
            rows.collect::<Result<_, _>>().map_err(write)?
        };
        let mut report = EnqueueReport::default();
        let mut expired = Vec::new();
        if !due.is_empty() {
            let mut sinks = load_sinks(&tx)?;
            for id in due {
                if let Some(action) = load_action(&tx, id)? {
                    expired.push(expire_one(&tx, &mut sinks, &mut report, action, now)?);
                }
            }
            finish_sinks(&tx, &sinks, &mut report)?;
        }
        tx.commit().map_err(write)?;
        Ok((expired, report))
    }

    /// Queues an event about an action without changing its approval
    /// state: for remediation to announce `action.executed`, `.verified`
    /// or `.reverted`. Returns `Ok(None)` if there is no such action.
    pub fn record_action_event(
        &self,
        id: ActionId,
        kind: EventKind,
        message: &str,
        now: TimestampMs,
    ) -> Result<Option<EnqueueReport>, StoreError> {
        let write = |source| StoreError::Write {
            what: "action event",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let Some(action) = load_action(&tx, id)? else {
            return Ok(None);
        };
        let cluster = incident_cluster(&tx, action.incident_id)?.unwrap_or_default();
        let mut report = EnqueueReport::default();
        let mut sinks = load_sinks(&tx)?;
        queue_action_event(
            &tx,
            &mut sinks,
            &mut report,
            &cluster,
            &action,
            kind,
            now,
            message.to_string(),
        )?;
        finish_sinks(&tx, &sinks, &mut report)?;
        tx.commit().map_err(write)?;
        Ok(Some(report))
    }

    /// The action with this id, if there is one.
    pub fn get_action(&self, id: ActionId) -> Result<Option<PendingAction>, StoreError> {
        let conn = self.lock();
        load_action(&conn, id)
    }

    /// Actions, newest first, optionally only those in `state`; at most
    /// `limit` (clamped to 1..=500).
    pub fn list_actions(
        &self,
        state: Option<ActionState>,
        limit: usize,
    ) -> Result<Vec<PendingAction>, StoreError> {
        let query = |source| StoreError::Query {
            what: "action list",
            source,
        };
        let limit = to_i64(limit.clamp(1, 500) as u64);
        let conn = self.lock();
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM pending_actions
             WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(query)?;
        let rows = stmt
            .query_map(params![state.map(ActionState::as_str), limit], read_action)
            .map_err(query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Forgets approval nonces seen before `before`. Messages that old are
    /// refused by their age anyway, so their nonces no longer matter.
    pub fn prune_nonces(&self, before: TimestampMs) -> Result<u64, StoreError> {
        self.lock()
            .execute(
                "DELETE FROM approval_nonces WHERE seen_at < ?1",
                params![before],
            )
            .map(|n| n as u64)
            .map_err(|source| StoreError::Write {
                what: "approval nonces",
                source,
            })
    }
}

/// The body of [`Store::save_incident_with_events`], inside the caller's
/// transaction, so other changes (alerts marked as applied,
/// src/incident/store_alerts.rs) commit together with the incident.
pub(super) fn save_incident_in(
    tx: &Transaction<'_>,
    incident: &Incident,
    kind: UpdateKind,
    now: TimestampMs,
) -> Result<SavedIncident, StoreError> {
    let (id, new_entries, merged) = write_incident(tx, incident)?;
    let incident = merged.as_ref().unwrap_or(incident);
    let mut sinks = load_sinks(tx)?;
    let mut report = EnqueueReport::default();
    for (event_kind, at, message) in incident_events(kind, incident, &new_entries) {
        enqueue(tx, &mut sinks, &mut report, id, now, event_kind, |seq| {
            Event::for_incident(event_kind, incident, id, seq, at, message)
        })?;
    }
    finish_sinks(tx, &sinks, &mut report)?;
    Ok(SavedIncident { id, report, merged })
}

/// The events an incident save causes; see
/// [`Store::save_incident_with_events`].
fn incident_events(
    kind: UpdateKind,
    incident: &Incident,
    new_entries: &[usize],
) -> Vec<(EventKind, TimestampMs, String)> {
    let mut events: Vec<(EventKind, TimestampMs, String)> = Vec::new();
    for entry in new_entries.iter().filter_map(|&i| incident.timeline.get(i)) {
        let kind = match entry.kind.as_str() {
            "opened" => EventKind::IncidentOpened,
            "severity_raised" => EventKind::IncidentEscalated,
            "resolved" => EventKind::IncidentResolved,
            _ => EventKind::IncidentUpdated,
        };
        // Several new `signal_added` entries in one save are one update.
        match events.last_mut() {
            Some((EventKind::IncidentUpdated, _, message))
                if kind == EventKind::IncidentUpdated =>
            {
                message.push(' ');
                message.push_str(&entry.message);
            }
            _ => events.push((kind, entry.at, entry.message.clone())),
        }
    }
    if events.is_empty() && kind == UpdateKind::Updated {
        events.push((
            EventKind::IncidentUpdated,
            incident.last_anomaly_at,
            format!(
                "{} anomalous samples so far; latest at {}.",
                incident.anomaly_count,
                crate::signal::format_ts(incident.last_anomaly_at)
            ),
        ));
    }
    events
}

pub(super) fn load_sinks(tx: &Transaction<'_>) -> Result<Vec<SinkState>, StoreError> {
    let query = |source| StoreError::Query {
        what: "outbox sinks",
        source,
    };
    let mut stmt = tx
        .prepare_cached("SELECT sink, max_events, depth FROM outbox_sinks ORDER BY sink")
        .map_err(query)?;
    let rows = stmt
        .query_map([], |row| {
            let depth = to_u64(row.get(2)?);
            Ok(SinkState {
                name: row.get(0)?,
                max_events: to_u64(row.get(1)?),
                depth_before: depth,
                depth,
            })
        })
        .map_err(query)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(query)
}

/// Assigns the incident's next sequence number, builds the event and
/// writes it once per sink (refusing low-priority events for full sinks).
pub(super) fn enqueue(
    tx: &Transaction<'_>,
    sinks: &mut [SinkState],
    report: &mut EnqueueReport,
    incident_id: IncidentId,
    now: TimestampMs,
    kind: EventKind,
    build: impl FnOnce(u64) -> Event,
) -> Result<(), StoreError> {
    let write = |source| StoreError::Write {
        what: "outbox event",
        source,
    };
    let seq: i64 = tx
        .query_row(
            "INSERT INTO event_sequences (incident_id, last_seq) VALUES (?1, 1)
             ON CONFLICT (incident_id) DO UPDATE SET last_seq = last_seq + 1
             RETURNING last_seq",
            params![incident_id],
            |row| row.get(0),
        )
        .map_err(write)?;
    if sinks.is_empty() {
        return Ok(());
    }
    let event = build(to_u64(seq));
    let payload = serde_json::to_string(&event).map_err(|source| StoreError::Encode {
        group_key: format!("event {}", event.id),
        source,
    })?;
    let route = event.route();
    let mut insert = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO outbox
                 (sink, event_id, incident_id, kind, route, payload, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(write)?;
    for sink in sinks.iter_mut() {
        if kind.priority() == Priority::Low && sink.depth >= sink.max_events {
            report.refused.push(RefusedEvent {
                sink: sink.name.clone(),
                event_id: event.id.clone(),
                kind,
            });
            continue;
        }
        let n = insert
            .execute(params![
                sink.name,
                event.id,
                incident_id,
                kind.as_str(),
                route,
                payload,
                now
            ])
            .map_err(write)?;
        sink.depth += n as u64;
    }
    report.queued.push((event.id, kind));
    Ok(())
}

/// Writes the sinks' new depths and adds them to the report.
pub(super) fn finish_sinks(
    tx: &Transaction<'_>,
    sinks: &[SinkState],
    report: &mut EnqueueReport,
) -> Result<(), StoreError> {
    let mut update = tx
        .prepare_cached("UPDATE outbox_sinks SET depth = ?2 WHERE sink = ?1")
        .map_err(|source| StoreError::Write {
            what: "outbox depth",
            source,
        })?;
    for sink in sinks {
        if sink.depth != sink.depth_before {
            update
                .execute(params![sink.name, to_i64(sink.depth)])
                .map_err(|source| StoreError::Write {
                    what: "outbox depth",
                    source,
                })?;
        }
        let level = near_full_level(sink.max_events);
        report.depths.push(SinkDepth {
            sink: sink.name.clone(),
            depth: sink.depth,
            max_events: sink.max_events,
            crossed_near_full: sink.depth_before < level && sink.depth >= level,
        });
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one call shape for four callers; a struct would only rename them
pub(super) fn queue_action_event(
    tx: &Transaction<'_>,
    sinks: &mut [SinkState],
    report: &mut EnqueueReport,
    cluster: &str,
    action: &PendingAction,
    kind: EventKind,
    now: TimestampMs,
    message: String,
) -> Result<(), StoreError> {
    let snapshot = action.snapshot();
    enqueue(tx, sinks, report, action.incident_id, now, kind, |seq| {
        Event::for_action(kind, cluster, snapshot, seq, now, message)
    })
}

fn expire_one(
    tx: &Transaction<'_>,
    sinks: &mut [SinkState],
    report: &mut EnqueueReport,
    mut action: PendingAction,
    now: TimestampMs,
) -> Result<PendingAction, StoreError> {
    tx.execute(
        "UPDATE pending_actions SET state = 'expired', decided_at = ?2
         WHERE id = ?1 AND state = 'pending'",
        params![action.id, now],
    )
    .map_err(|source| StoreError::Write {
        what: "action expiry",
        source,
    })?;
    action.state = ActionState::Expired;
    action.decided_at = Some(now);
    let cluster = incident_cluster(tx, action.incident_id)?.unwrap_or_default();
    let message = format!(
        "Action {} expired without a decision at {}.",
        action.id,
        crate::signal::format_ts(action.expires_at)
    );
    queue_action_event(
        tx,
        sinks,
        report,
        &cluster,
        &action,
        EventKind::ActionExpired,
        now,
        message,
    )?;
    Ok(action)
}

pub(super) fn incident_cluster(
    conn: &rusqlite::Connection,
    id: IncidentId,
) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT cluster FROM incidents WHERE id = ?1",
        params![id],
        |row| row.get(0),
    )
    .optional()
    .map_err(|source| StoreError::Query {
        what: "incident cluster",
        source,
    })
}

pub(super) fn load_action(
    conn: &rusqlite::Connection,
    id: ActionId,
) -> Result<Option<PendingAction>, StoreError> {
    let sql = format!("SELECT {ACTION_COLUMNS} FROM pending_actions WHERE id = ?1");
    conn.query_row(&sql, params![id], read_action)
        .optional()
        .map_err(|source| StoreError::Query {
            what: "pending action",
            source,
        })
}

pub(super) fn read_action(row: &rusqlite::Row<'_>) -> rusqlite::Result<PendingAction> {
    let detail: String = row.get(3)?;
    let state: String = row.get(6)?;
    let channel: Option<String> = row.get(10)?;
    Ok(PendingAction {
        id: row.get(0)?,
        incident_id: row.get(1)?,
        description: row.get(2)?,
        // Written by us as JSON; a hand-edited row shows as a string
        // rather than making the action unreadable.
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        requested_at: row.get(4)?,
        expires_at: row.get(5)?,
        // Unknown states (a newer aiopsd's) read as expired: never as
        // pending, so nothing acts on a decision this build cannot read.
        state: ActionState::parse(&state).unwrap_or(ActionState::Expired),
        decided_by: row.get(7)?,
        reason: row.get(8)?,
        decided_at: row.get(9)?,
        channel: channel.as_deref().and_then(|c| match c {
            "api" => Some(Channel::Api),
            "mqtt" => Some(Channel::Mqtt),
            "policy" => Some(Channel::Policy),
            _ => None,
        }),
        execution: super::remediation::read_execution(row, 11)?,
    })
}

/// True when an insert hit an existing primary key or unique key (a
/// `WITHOUT ROWID` table reports its primary key as its own code).
fn is_duplicate_key(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

pub(super) fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn to_u64(x: i64) -> u64 {
    u64::try_from(x).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::{IncidentState, Peak, Severity, SignalEvidence, TimelineEntry};
    use crate::publish::outbox::MQTT_SINK;
    use crate::signal::{Sample, SeriesKey};

    const T0: TimestampMs = 1_700_000_000_000;

    fn incident(service: &str) -> Incident {
        let group: BTreeMap<String, String> = [("namespace", "shop"), ("service", service)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Incident {
            id: None,
            cluster: "prod".into(),
            group: group.clone(),
            state: IncidentState::Open,
            severity: Severity::Warning,
            opened_at: T0,
            last_anomaly_at: T0,
            resolved_at: None,
            anomaly_count: 1,
            signals: vec![SignalEvidence {
                series: SeriesKey::new("error_ratio", group),
                first_at: T0,
                last_at: T0,
                anomaly_count: 1,
                peak: Peak {
                    t: T0,
                    value: 1.0,
                    expected: 0.0,
                    spread: 0.1,
                    score: 10.0,
                },
                samples: vec![Sample { t: T0, v: 1.0 }],
                anomalous_at: vec![T0],
            }],
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![TimelineEntry {
                at: T0,
                kind: "opened".into(),
                message: "Opened.".into(),
            }],
        }
    }

    fn store_with_sink(max_events: u64) -> Store {
        let store = Store::open_in_memory().expect("open");
        store
            .configure_outbox(&[SinkSpec {
                name: MQTT_SINK.into(),
                max_events,
            }])
            .expect("sinks");
        store
    }

    fn queued(store: &Store) -> Vec<(String, Option<EventKind>)> {
        store
            .outbox_batch(MQTT_SINK, 0, 10_000)
            .expect("batch")
            .into_iter()
            .map(|r| (r.event_id, r.kind))
            .collect()
    }

    #[test]
    fn lifecycle_events_are_queued_in_order_once() {
        let store = store_with_sink(1000);
        let mut inc = incident("cart");
        let saved = store
            .save_incident_with_events(&inc, UpdateKind::Opened, T0)
            .expect("open");
        let id = saved.id;
        // Re-saving (a retry, a restart) queues no second `opened`.
        store
            .save_incident_with_events(&inc, UpdateKind::Opened, T0)
            .expect("again");
        inc.anomaly_count = 5;
        store
            .save_incident_with_events(&inc, UpdateKind::Updated, T0)
            .expect("update");
        inc.severity = Severity::Critical;
        inc.timeline.push(TimelineEntry {
            at: T0 + 1,
            kind: "severity_raised".into(),
            message: "Severity raised to critical.".into(),
        });
        store
            .save_incident_with_events(&inc, UpdateKind::Updated, T0)
            .expect("escalate");
        inc.state = IncidentState::Resolved;
        inc.resolved_at = Some(T0 + 2);
        inc.timeline.push(TimelineEntry {
            at: T0 + 2,
            kind: "resolved".into(),
            message: "Resolved.".into(),
        });
        store
            .save_incident_with_events(&inc, UpdateKind::Resolved, T0)
            .expect("resolve");
        let rows = queued(&store);
        let expect = |seq: u64, kind| (format!("prod:{id}:{seq}"), Some(kind));
        assert_eq!(
            rows,
            vec![
                expect(1, EventKind::IncidentOpened),
                expect(2, EventKind::IncidentUpdated),
                expect(3, EventKind::IncidentEscalated),
                expect(4, EventKind::IncidentResolved),
            ]
        );
        // The payload is the documented schema.
        let first = &store.outbox_batch(MQTT_SINK, 0, 1).expect("batch")[0];
        let event: Event = serde_json::from_str(&first.payload).expect("event JSON");
        assert_eq!(event.schema, "aiopsd.event/v1");
        assert_eq!(event.incident.as_ref().map(|i| i.id), Some(id));
        assert_eq!(first.route, format!("prod/incidents/{id}/opened"));
        assert_eq!(
            store.outbox_depth(MQTT_SINK).expect("depth"),
            Some((4, 1000))
        );
    }

    #[test]
    fn ack_deletes_and_batches_continue_after_the_last_id() {
        let store = store_with_sink(1000);
        let mut ids = Vec::new();
        for s in ["a", "b", "c"] {
            ids.push(
                store
                    .save_incident_with_events(&incident(s), UpdateKind::Opened, T0)
                    .expect("save")
                    .id,
            );
        }
        let batch = store.outbox_batch(MQTT_SINK, 0, 2).expect("batch");
        assert_eq!(batch.len(), 2);
        let rest = store
            .outbox_batch(MQTT_SINK, batch[1].id, 10)
            .expect("rest");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].incident_id, ids[2]);
        let depth = store
            .outbox_ack(MQTT_SINK, &[batch[0].id, batch[1].id, batch[0].id])
            .expect("ack");
        assert_eq!(depth, 1);
        assert_eq!(queued(&store).len(), 1);
    }

    #[test]
    fn full_outbox_refuses_only_low_priority_events() {
        let store = store_with_sink(2);
        let mut inc = incident("cart");
        store
            .save_incident_with_events(&inc, UpdateKind::Opened, T0)
            .expect("open");
        let other = store
            .save_incident_with_events(&incident("auth"), UpdateKind::Opened, T0)
            .expect("second");
        assert!(other.report.depths[0].crossed_near_full, "{other:?}");
        // Full: an update is refused and reported...
        inc.anomaly_count = 9;
        let saved = store
            .save_incident_with_events(&inc, UpdateKind::Updated, T0)
            .expect("update");
        assert_eq!(saved.report.refused.len(), 1);
        assert_eq!(saved.report.refused[0].kind, EventKind::IncidentUpdated);
        // ...a resolution is still queued beyond the bound.
        inc.state = IncidentState::Resolved;
        inc.resolved_at = Some(T0 + 5);
        inc.timeline.push(TimelineEntry {
            at: T0 + 5,
            kind: "resolved".into(),
            message: "Resolved.".into(),
        });
        let saved = store
            .save_incident_with_events(&inc, UpdateKind::Resolved, T0)
            .expect("resolve");
        assert!(saved.report.refused.is_empty());
        assert_eq!(saved.report.depths[0].depth, 3);
        // The refused update left a gap in seq (3 is missing), not a reorder.
        let ids: Vec<String> = queued(&store).into_iter().map(|r| r.0).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids[2].ends_with(":3"), "{ids:?}");
    }

    #[test]
    fn without_sinks_nothing_is_queued_and_removed_sinks_are_cleared() {
        let store = store_with_sink(100);
        store
            .save_incident_with_events(&incident("a"), UpdateKind::Opened, T0)
            .expect("save");
        let dropped = store.configure_outbox(&[]).expect("no sinks");
        assert_eq!(dropped, vec![(MQTT_SINK.to_string(), 1)]);
        let saved = store
            .save_incident_with_events(&incident("b"), UpdateKind::Opened, T0)
            .expect("save");
        assert!(saved.report.queued.is_empty());
        assert!(queued(&store).is_empty());
    }

    fn approve(by: &str, nonce: Option<&str>) -> Decision {
        Decision {
            verdict: Verdict::Approve,
            by: by.into(),
            reason: "ok".into(),
            channel: Channel::Mqtt,
            nonce: nonce.map(str::to_string),
        }
    }

    #[test]
    fn actions_are_decided_once_and_expire() {
        let store = store_with_sink(1000);
        let incident_id = store
            .save_incident_with_events(&incident("cart"), UpdateKind::Opened, T0)
            .expect("save")
            .id;
        let request = ActionRequest {
            incident_id,
            description: "Restart shop/cart".into(),
            detail: serde_json::json!({"kind": "rollout_restart"}),
            ttl_ms: 60_000,
        };
        let (action, _) = store.request_action(&request, T0).expect("request");
        assert_eq!(action.state, ActionState::Pending);
        assert_eq!(action.expires_at, T0 + 60_000);

        let outcome = store
            .decide_action(action.id, &approve("alice", Some("nonce-1")), T0 + 1)
            .expect("decide");
        let decided = outcome.result.expect("approved");
        assert_eq!(decided.state, ActionState::Approved);
        assert_eq!(decided.decided_by.as_deref(), Some("alice"));
        assert_eq!(decided.channel, Some(Channel::Mqtt));
        // The same nonce again: replay, whatever the action.
        let again = store
            .decide_action(action.id, &approve("alice", Some("nonce-1")), T0 + 2)
            .expect("decide");
        assert_eq!(again.result, Err(DecisionRefused::Replayed));
        let twice = store
            .decide_action(action.id, &approve("bob", Some("nonce-2")), T0 + 2)
            .expect("decide");
        assert_eq!(
            twice.result,
            Err(DecisionRefused::AlreadyDecided {
                id: action.id,
                state: ActionState::Approved
            })
        );
        let unknown = store
            .decide_action(9999, &approve("bob", None), T0)
            .expect("decide");
        assert_eq!(unknown.result, Err(DecisionRefused::NotFound(9999)));

        // A second action expires: on decision, and by the sweeper.
        let (late, _) = store.request_action(&request, T0).expect("request");
        let outcome = store
            .decide_action(late.id, &approve("carol", None), T0 + 60_001)
            .expect("decide");
        assert_eq!(outcome.result, Err(DecisionRefused::Expired(late.id)));
        let (swept, _) = store.request_action(&request, T0).expect("request");
        let (expired, _) = store.expire_actions(T0 + 120_000).expect("sweep");
        assert_eq!(expired.iter().map(|a| a.id).collect::<Vec<_>>(), [swept.id]);

        let kinds: Vec<Option<EventKind>> = queued(&store).into_iter().map(|r| r.1).collect();
        assert_eq!(
            kinds,
            [
                Some(EventKind::IncidentOpened),
                Some(EventKind::ActionProposed),
                Some(EventKind::ActionApproved),
                Some(EventKind::ActionProposed),
                Some(EventKind::ActionExpired),
                Some(EventKind::ActionProposed),
                Some(EventKind::ActionExpired),
            ]
        );
        let pending = store
            .list_actions(Some(ActionState::Pending), 50)
            .expect("list");
        assert!(pending.is_empty());
        assert_eq!(store.list_actions(None, 50).expect("list").len(), 3);
        assert!(matches!(
            store.request_action(
                &ActionRequest {
                    incident_id: 424242,
                    ..request
                },
                T0
            ),
            Err(StoreError::UnknownIncident { id: 424242 })
        ));
        // nonce-1 and nonce-2 (a refused decision still uses up its nonce).
        assert_eq!(store.prune_nonces(T0 + 10).expect("prune"), 2);
    }
}
