//! Store methods for remediation (migration 5): the gate's decisions, the
//! diagnosis, and each action's execution from intent to verification.
//!
//! The same rule as the outbox: every state change and its event commit in
//! one transaction. And the rule of remediation: the intent and the
//! pre-state are written **before** the API call ([`Store::begin_execution`]
//! only succeeds once per action), so a crash leaves a row in `executing`
//! that the next start reconciles from the object's annotation instead of
//! running the action again.

use rusqlite::{params, OptionalExtension, Transaction};

use super::outbox::{
    finish_sinks, incident_cluster, load_action, load_sinks, queue_action_event, read_action,
    ACTION_COLUMNS,
};
use super::{load_incident, Store, StoreError};
use crate::diagnose::Diagnosis;
use crate::incident::IncidentId;
use crate::publish::approvals::{ActionId, PendingAction};
use crate::publish::event::{Event, EventKind};
use crate::publish::outbox::EnqueueReport;
use crate::remediate::plan::{PlannedAction, PreState};
use crate::remediate::record::{DecisionOutcome, DecisionRecord, ExecState, Execution};
use crate::signal::{format_ts, TimestampMs};

/// What the remediation stage asks the store to record with a decision
/// that carries an action.
#[derive(Debug, Clone)]
pub struct ActionPlanRecord {
    /// `auto`, `approve` or `dry_run`.
    pub mode: String,
    /// Pods the action touches (for blast-radius accounting).
    pub pods_touched: u32,
    /// How long a person has to approve (approve mode).
    pub approval_ttl_ms: i64,
}

/// A setting an operator flipped (the kill switch), with who and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Its value.
    pub value: String,
    /// Who changed it.
    pub changed_by: String,
    /// Why.
    pub reason: String,
    /// When (wall ms).
    pub changed_at: TimestampMs,
}

fn write_err(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + Copy {
    move |source| StoreError::Write { what, source }
}

fn query_err(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + Copy {
    move |source| StoreError::Query { what, source }
}

fn encode<T: serde::Serialize>(value: &T, what: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode {
        group_key: what.to_string(),
        source,
    })
}

impl Store {
    /// Records one decision of the gate about an incident and, when it
    /// carries an action, the action row (state `pending` in approve mode,
    /// else approved by the policy) with `action.proposed` — all in one
    /// transaction. Returns the action, if one was created, with the
    /// decision's `action_id` filled in the stored record.
    pub fn record_decision(
        &self,
        incident_id: IncidentId,
        decision: &DecisionRecord,
        plan: Option<&ActionPlanRecord>,
        now: TimestampMs,
    ) -> Result<(Option<PendingAction>, EnqueueReport), StoreError> {
        let write = write_err("decision");
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let cluster = incident_cluster(&tx, incident_id)?
            .ok_or(StoreError::UnknownIncident { id: incident_id })?;
        let mut record = decision.clone();
        let mut report = EnqueueReport::default();
        let mut created = None;
        if let (Some(action), Some(plan)) = (&decision.action, plan) {
            let pending = plan.mode == "approve";
            let (state, channel, decided_by, decided_at, exec_state) = if pending {
                ("pending", None, None, None, ExecState::Planned)
            } else {
                let exec = if decision.outcome == DecisionOutcome::DryRun {
                    ExecState::DryRun
                } else {
                    ExecState::Planned
                };
                (
                    "approved",
                    Some("policy"),
                    Some(format!("policy:{}", decision.rule)),
                    Some(now),
                    exec,
                )
            };
            let expires_at = now.saturating_add(plan.approval_ttl_ms.max(0));
            let detail = encode(action, "action plan")?;
            let id: ActionId = tx
                .query_row(
                    "INSERT INTO pending_actions
                         (incident_id, description, detail, requested_at, expires_at, state,
                          decided_by, reason, decided_at, channel,
                          rule, mode, proposed_by, plan, exec_state, target, pods_touched)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                             ?11, ?12, ?13, ?3, ?14, ?15, ?16) RETURNING id",
                    params![
                        incident_id,
                        action.describe(),
                        detail,
                        now,
                        expires_at,
                        state,
                        decided_by,
                        decision.reasons.first(),
                        decided_at,
                        channel,
                        decision.rule,
                        plan.mode,
                        decision.proposed_by,
                        exec_state.as_str(),
                        action.target().to_string(),
                        i64::from(plan.pods_touched),
                    ],
                    |row| row.get(0),
                )
                .map_err(write)?;
            record.action_id = Some(id);
            let action_row = load_action(&tx, id)?.ok_or(StoreError::Write {
                what: "action (vanished after insert)",
                source: rusqlite::Error::QueryReturnedNoRows,
            })?;
            let mut sinks = load_sinks(&tx)?;
            let message = match decision.outcome {
                DecisionOutcome::NeedsApproval => format!(
                    "Action {id} needs approval until {} (rule {}): {}",
                    format_ts(expires_at),
                    decision.rule,
                    action_row.description
                ),
                DecisionOutcome::DryRun => format!(
                    "Dry run (rule {}): would {}",
                    decision.rule, action_row.description
                ),
                _ => format!(
                    "Allowed by rule {}: {}",
                    decision.rule, action_row.description
                ),
            };
            queue_action_event(
                &tx,
                &mut sinks,
                &mut report,
                &cluster,
                &action_row,
                EventKind::ActionProposed,
                now,
                message,
            )?;
            finish_sinks(&tx, &sinks, &mut report)?;
            created = Some(action_row);
        }
        tx.execute(
            "INSERT INTO incident_decisions (incident_id, at, detail) VALUES (?1, ?2, ?3)",
            params![incident_id, now, encode(&record, "decision")?],
        )
        .map_err(write)?;
        tx.commit().map_err(write)?;
        Ok((created, report))
    }

    /// True when the gate has decided about this incident already.
    pub fn has_decision(&self, incident_id: IncidentId) -> Result<bool, StoreError> {
        self.lock()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM incident_decisions WHERE incident_id = ?1)",
                params![incident_id],
                |row| row.get(0),
            )
            .map_err(query_err("decision exists"))
    }

    /// Stores (replaces) the diagnosis of an incident.
    pub fn save_diagnosis(
        &self,
        incident_id: IncidentId,
        diagnosis: &Diagnosis,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT INTO incident_diagnoses (incident_id, at, detail) VALUES (?1, ?2, ?3)
                 ON CONFLICT (incident_id) DO UPDATE SET at = excluded.at, detail = excluded.detail",
                params![incident_id, now, encode(diagnosis, "diagnosis")?],
            )
            .map(|_| ())
            .map_err(write_err("diagnosis"))
    }

    /// Write-ahead: records the intent to run an approved, planned action
    /// and its pre-state. Returns `false` (and changes nothing) unless the
    /// action is approved and still `planned` — so two callers, or a
    /// replay, can never both start it.
    pub fn begin_execution(
        &self,
        id: ActionId,
        pre_state: &PreState,
        now: TimestampMs,
    ) -> Result<bool, StoreError> {
        let pre = encode(pre_state, "pre-state")?;
        let changed = self
            .lock()
            .execute(
                "UPDATE pending_actions
                    SET exec_state = 'executing', pre_state = ?2, exec_message = ?3
                  WHERE id = ?1 AND state = 'approved' AND exec_state = 'planned'",
                params![id, pre, format!("started at {}", format_ts(now))],
            )
            .map_err(write_err("execution intent"))?;
        Ok(changed == 1)
    }

    /// Records the API call's outcome (`executed` with the data time from
    /// which verification judges, or `failed`) and queues
    /// `action.executed`.
    pub fn finish_execution(
        &self,
        id: ActionId,
        outcome: Result<&str, &str>,
        verify_from: Option<TimestampMs>,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        let (state, message) = match outcome {
            Ok(m) => (ExecState::Executed, m),
            Err(m) => (ExecState::Failed, m),
        };
        let finished = (state == ExecState::Failed).then_some(now);
        self.transition(
            id,
            &[ExecState::Executing],
            state,
            message,
            now,
            EventKind::ActionExecuted,
            |tx| {
                tx.execute(
                    "UPDATE pending_actions SET executed_at = ?2, verify_from = ?3,
                            finished_at = ?4 WHERE id = ?1",
                    params![id, now, verify_from, finished],
                )
                .map(|_| ())
            },
        )
    }

    /// Records the verification verdict and queues `action.verified`.
    pub fn finish_verification(
        &self,
        id: ActionId,
        recovered: bool,
        message: &str,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        let state = if recovered {
            ExecState::Verified
        } else {
            ExecState::Failed
        };
        self.transition(
            id,
            &[ExecState::Executed],
            state,
            message,
            now,
            EventKind::ActionVerified,
            |tx| {
                tx.execute(
                    "UPDATE pending_actions SET finished_at = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .map(|_| ())
            },
        )
    }

    /// Records a revert (after a failed verification, or a person's
    /// request) and queues `action.reverted`.
    pub fn record_revert(
        &self,
        id: ActionId,
        ok: bool,
        message: &str,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        let state = if ok {
            ExecState::Reverted
        } else {
            ExecState::RevertFailed
        };
        self.transition(
            id,
            &[
                ExecState::Executed,
                ExecState::Verified,
                ExecState::Failed,
                ExecState::RevertFailed,
            ],
            state,
            message,
            now,
            EventKind::ActionReverted,
            |tx| {
                tx.execute(
                    "UPDATE pending_actions SET finished_at = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .map(|_| ())
            },
        )
    }

    /// Asks for an executed action to be undone (the remediation stage,
    /// which holds the cluster client and runs only on the leader, carries
    /// it out). `Ok(Err(why))` when it cannot be: unknown, never executed,
    /// already reverted, or irreversible.
    pub fn request_revert(
        &self,
        id: ActionId,
        by: &str,
        reason: &str,
    ) -> Result<Result<PendingAction, String>, StoreError> {
        let write = write_err("revert request");
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let Some(action) = load_action(&tx, id)? else {
            return Ok(Err(format!("there is no action {id}")));
        };
        let Some(exec) = &action.execution else {
            return Ok(Err(format!("action {id} was not run by remediation")));
        };
        if !matches!(
            exec.state,
            ExecState::Executed | ExecState::Verified | ExecState::Failed
        ) {
            return Ok(Err(format!(
                "action {id} is {}; only an executed action can be reverted",
                exec.state.as_str()
            )));
        }
        match &exec.pre_state {
            None => return Ok(Err(format!("action {id} has no recorded pre-state"))),
            Some(PreState::Irreversible { why, .. }) => {
                return Ok(Err(format!("action {id} cannot be reverted: {why}")))
            }
            Some(_) => {}
        }
        if let Some(by) = &exec.revert_requested_by {
            return Ok(Err(format!(
                "a revert of action {id} was already requested by {by}"
            )));
        }
        tx.execute(
            "UPDATE pending_actions SET revert_requested_by = ?2, revert_reason = ?3 WHERE id = ?1",
            params![id, by, reason],
        )
        .map_err(write)?;
        let action = load_action(&tx, id)?.unwrap_or(action);
        tx.commit().map_err(write)?;
        Ok(Ok(action))
    }

    /// Marks a planned action that will never run (approval denied or
    /// expired, incident resolved first). No event: the approval flow
    /// already announced the denial or expiry.
    pub fn cancel_action(
        &self,
        id: ActionId,
        message: &str,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE pending_actions SET exec_state = 'cancelled', exec_message = ?2,
                        finished_at = ?3
                  WHERE id = ?1 AND exec_state = 'planned'",
                params![id, message, now],
            )
            .map(|_| ())
            .map_err(write_err("action cancel"))
    }

    /// Moves an action between execution states (only from one of `from`),
    /// runs `extra` in the same transaction and queues `event`. A row in
    /// another state is left alone (the transition already happened).
    #[allow(clippy::too_many_arguments)] // one shape for four callers
    fn transition(
        &self,
        id: ActionId,
        from: &[ExecState],
        to: ExecState,
        message: &str,
        now: TimestampMs,
        event: EventKind,
        extra: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let write = write_err("action state");
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let Some(action) = load_action(&tx, id)? else {
            return Ok(());
        };
        let current = action.execution.as_ref().map(|e| e.state);
        if !current.is_some_and(|s| from.contains(&s)) {
            return Ok(());
        }
        tx.execute(
            "UPDATE pending_actions SET exec_state = ?2, exec_message = ?3 WHERE id = ?1",
            params![id, to.as_str(), message],
        )
        .map_err(write)?;
        extra(&tx).map_err(write)?;
        let action = load_action(&tx, id)?.unwrap_or(action);
        let cluster = incident_cluster(&tx, action.incident_id)?.unwrap_or_default();
        let mut report = EnqueueReport::default();
        let mut sinks = load_sinks(&tx)?;
        queue_action_event(
            &tx,
            &mut sinks,
            &mut report,
            &cluster,
            &action,
            event,
            now,
            message.to_string(),
        )?;
        finish_sinks(&tx, &sinks, &mut report)?;
        tx.commit().map_err(write)?;
        Ok(())
    }

    /// Adds an `escalated` line to an incident's timeline and queues
    /// `incident.escalated`: remediation did not (or may not) fix it and a
    /// person must look. Idempotent for the same `at` and message.
    pub fn escalate_incident(
        &self,
        incident_id: IncidentId,
        message: &str,
        at: TimestampMs,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        let write = write_err("escalation");
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO incident_events (incident_id, at, kind, message)
                 VALUES (?1, ?2, 'escalated', ?3)",
                params![incident_id, at, message],
            )
            .map_err(write)?;
        if inserted == 1 {
            let detail: Option<String> = tx
                .query_row(
                    "SELECT detail FROM incidents WHERE id = ?1",
                    params![incident_id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(query_err("incident"))?;
            let detail = detail.ok_or(StoreError::UnknownIncident { id: incident_id })?;
            let incident = load_incident(&tx, incident_id, &detail)?;
            let mut sinks = load_sinks(&tx)?;
            let mut report = EnqueueReport::default();
            super::outbox::enqueue(
                &tx,
                &mut sinks,
                &mut report,
                incident_id,
                now,
                EventKind::IncidentEscalated,
                |seq| {
                    Event::for_incident(
                        EventKind::IncidentEscalated,
                        &incident,
                        incident_id,
                        seq,
                        at,
                        message.to_string(),
                    )
                },
            )?;
            finish_sinks(&tx, &sinks, &mut report)?;
        }
        tx.commit().map_err(write)?;
        Ok(())
    }

    /// Actions in the given execution states, oldest first.
    pub fn actions_in(&self, states: &[ExecState]) -> Result<Vec<PendingAction>, StoreError> {
        let query = query_err("actions by execution state");
        let conn = self.lock();
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let placeholders = vec!["?"; names.len()].join(",");
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM pending_actions
              WHERE exec_state IN ({placeholders}) ORDER BY id"
        );
        let mut stmt = conn.prepare(&sql).map_err(&query)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(names), read_action)
            .map_err(&query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Every action of an incident, oldest first (for its report).
    pub fn actions_for_incident(
        &self,
        incident_id: IncidentId,
    ) -> Result<Vec<PendingAction>, StoreError> {
        let query = query_err("actions of an incident");
        let conn = self.lock();
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM pending_actions WHERE incident_id = ?1 ORDER BY id"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(&query)?;
        let rows = stmt
            .query_map(params![incident_id], read_action)
            .map_err(&query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Actions the gate decided since `since` (wall ms), for cooldowns and
    /// rate limits: read from the store so they survive a restart.
    pub fn actions_since(&self, since: TimestampMs) -> Result<Vec<PendingAction>, StoreError> {
        let query = query_err("recent actions");
        let conn = self.lock();
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM pending_actions
              WHERE requested_at >= ?1 AND rule IS NOT NULL ORDER BY id"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(&query)?;
        let rows = stmt
            .query_map(params![since], read_action)
            .map_err(&query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Records a person's verdict on an incident (`noise`, `expected` or
    /// `real`) and a `verdict` line on its timeline, in one transaction.
    /// A later verdict supersedes an earlier one; all are kept.
    pub fn record_verdict(
        &self,
        incident_id: IncidentId,
        verdict: &str,
        by: &str,
        reason: &str,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        let write = write_err("verdict");
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        incident_cluster(&tx, incident_id)?
            .ok_or(StoreError::UnknownIncident { id: incident_id })?;
        tx.execute(
            "INSERT INTO incident_verdicts (incident_id, verdict, by_whom, reason, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![incident_id, verdict, by, reason, now],
        )
        .map_err(write)?;
        tx.execute(
            "INSERT OR IGNORE INTO incident_events (incident_id, at, kind, message)
             VALUES (?1, ?2, 'verdict', ?3)",
            params![
                incident_id,
                now,
                format!("Marked as {verdict} by {by}: {reason}")
            ],
        )
        .map_err(write)?;
        tx.commit().map_err(write)?;
        Ok(())
    }

    /// The latest verdict on an incident: `(verdict, by, reason, at)`.
    pub fn latest_verdict(
        &self,
        incident_id: IncidentId,
    ) -> Result<Option<(String, String, String, TimestampMs)>, StoreError> {
        self.lock()
            .query_row(
                "SELECT verdict, by_whom, reason, at FROM incident_verdicts
                  WHERE incident_id = ?1 ORDER BY id DESC LIMIT 1",
                params![incident_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(query_err("verdict"))
    }

    /// Sets an operator setting (e.g. the kill switch), with who and why.
    pub fn set_setting(
        &self,
        name: &str,
        value: &str,
        changed_by: &str,
        reason: &str,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT INTO settings (name, value, changed_by, reason, changed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                     changed_by = excluded.changed_by, reason = excluded.reason,
                     changed_at = excluded.changed_at",
                params![name, value, changed_by, reason, now],
            )
            .map(|_| ())
            .map_err(write_err("setting"))
    }

    /// An operator setting, if it was ever set.
    pub fn setting(&self, name: &str) -> Result<Option<Setting>, StoreError> {
        self.lock()
            .query_row(
                "SELECT value, changed_by, reason, changed_at FROM settings WHERE name = ?1",
                params![name],
                |row| {
                    Ok(Setting {
                        value: row.get(0)?,
                        changed_by: row.get(1)?,
                        reason: row.get(2)?,
                        changed_at: row.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(query_err("setting"))
    }
}

/// The remediation columns of an action row, starting at `first`
/// (`rule`, ...). `None` when the row did not come from the gate.
pub(super) fn read_execution(
    row: &rusqlite::Row<'_>,
    first: usize,
) -> rusqlite::Result<Option<Execution>> {
    let rule: Option<String> = row.get(first)?;
    let Some(rule) = rule else {
        return Ok(None);
    };
    let text = |i: usize| -> rusqlite::Result<Option<String>> { row.get(first + i) };
    let plan: Option<PlannedAction> = text(3)?.and_then(|p| serde_json::from_str(&p).ok());
    let pre_state: Option<PreState> = text(4)?.and_then(|p| serde_json::from_str(&p).ok());
    // An unknown state (a newer aiopsd's) reads as cancelled: never as
    // planned, so nothing runs what this build cannot read.
    let state = text(5)?
        .as_deref()
        .and_then(ExecState::parse)
        .unwrap_or(ExecState::Cancelled);
    Ok(Some(Execution {
        state,
        rule,
        mode: text(1)?.unwrap_or_default(),
        proposed_by: text(2)?.unwrap_or_default(),
        plan,
        pre_state,
        message: text(6)?,
        executed_at: row.get(first + 7)?,
        verify_from: row.get(first + 8)?,
        finished_at: row.get(first + 9)?,
        revert_requested_by: text(10)?,
        revert_reason: text(11)?,
    }))
}

/// The stored diagnosis of an incident, if any.
pub(super) fn load_diagnosis(
    conn: &rusqlite::Connection,
    id: IncidentId,
) -> Result<Option<Diagnosis>, StoreError> {
    let detail: Option<String> = conn
        .query_row(
            "SELECT detail FROM incident_diagnoses WHERE incident_id = ?1",
            params![id],
            |row| row.get(0),
        )
        .optional()
        .map_err(query_err("diagnosis"))?;
    detail
        .map(|d| serde_json::from_str(&d).map_err(|source| StoreError::Decode { id, source }))
        .transpose()
}

/// The gate's decisions about an incident, oldest first.
pub(super) fn load_decisions(
    conn: &rusqlite::Connection,
    id: IncidentId,
) -> Result<Vec<DecisionRecord>, StoreError> {
    let query = query_err("decisions");
    let mut stmt = conn
        .prepare_cached("SELECT detail FROM incident_decisions WHERE incident_id = ?1 ORDER BY id")
        .map_err(&query)?;
    let rows = stmt
        .query_map(params![id], |row| row.get::<_, String>(0))
        .map_err(&query)?;
    let mut out = Vec::new();
    for detail in rows {
        let detail = detail.map_err(&query)?;
        out.push(
            serde_json::from_str(&detail).map_err(|source| StoreError::Decode { id, source })?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::{Incident, IncidentState, Severity, UpdateKind};
    use crate::publish::outbox::{SinkSpec, MQTT_SINK};
    use crate::remediate::plan::{WorkloadKind, WorkloadRef};

    const T0: TimestampMs = 1_700_000_000_000;

    fn stored_incident(store: &Store) -> IncidentId {
        let group: BTreeMap<String, String> = [("namespace", "shop"), ("service", "cart")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let incident = Incident {
            id: None,
            cluster: "prod".into(),
            group,
            state: IncidentState::Open,
            severity: Severity::Critical,
            opened_at: T0,
            last_anomaly_at: T0,
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
        store
            .save_incident_with_events(&incident, UpdateKind::Opened, T0)
            .expect("save")
            .id
    }

    fn store() -> Store {
        let store = Store::open_in_memory().expect("open");
        store
            .configure_outbox(&[SinkSpec {
                name: MQTT_SINK.into(),
                max_events: 1000,
            }])
            .expect("sink");
        store
    }

    fn target() -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "cart".into(),
        }
    }

    fn decision(outcome: DecisionOutcome) -> DecisionRecord {
        DecisionRecord {
            at: T0,
            outcome,
            rule: "default.yaml:scale-on-saturation".into(),
            reasons: vec!["saturation with traffic up".into()],
            action: Some(PlannedAction::Scale {
                target: target(),
                from: 2,
                to: 3,
                via_hpa: false,
            }),
            proposed_by: "rules".into(),
            action_id: None,
        }
    }

    fn plan(mode: &str) -> ActionPlanRecord {
        ActionPlanRecord {
            mode: mode.into(),
            pods_touched: 1,
            approval_ttl_ms: 600_000,
        }
    }

    fn kinds(store: &Store) -> Vec<String> {
        store
            .outbox_batch(MQTT_SINK, 0, 1000)
            .expect("batch")
            .into_iter()
            .filter_map(|r| r.kind.map(|k| k.as_str().to_string()))
            .collect()
    }

    #[test]
    fn an_action_runs_once_from_intent_to_verification_with_its_events() {
        let store = store();
        let incident = stored_incident(&store);
        let (action, _) = store
            .record_decision(
                incident,
                &decision(DecisionOutcome::Execute),
                Some(&plan("auto")),
                T0,
            )
            .expect("decide");
        let action = action.expect("an action row");
        let exec = action.execution.clone().expect("execution columns");
        assert_eq!(exec.state, ExecState::Planned);
        assert_eq!(exec.rule, "default.yaml:scale-on-saturation");
        assert_eq!(
            action.state.as_str(),
            "approved",
            "auto mode: approved by policy"
        );

        let pre = PreState::Replicas {
            target: target(),
            replicas: 2,
        };
        assert!(store.begin_execution(action.id, &pre, T0).expect("intent"));
        assert!(
            !store.begin_execution(action.id, &pre, T0).expect("again"),
            "an action can be started once only"
        );
        store
            .finish_execution(action.id, Ok("replicas 2 → 3"), Some(T0 + 60_000), T0 + 1)
            .expect("executed");
        store
            .finish_verification(action.id, true, "error ratio back to normal", T0 + 2)
            .expect("verified");
        let loaded = store.get_action(action.id).expect("read").expect("found");
        let exec = loaded.execution.expect("execution");
        assert_eq!(exec.state, ExecState::Verified);
        assert_eq!(exec.pre_state, Some(pre));
        assert_eq!(exec.verify_from, Some(T0 + 60_000));
        assert_eq!(
            kinds(&store),
            ["action.proposed", "action.executed", "action.verified"]
        );
        // The incident carries the decision, with the action's id.
        let inc = store.get_incident(incident).expect("read").expect("found");
        assert_eq!(inc.decisions.len(), 1);
        assert_eq!(inc.decisions[0].action_id, Some(action.id));
    }

    #[test]
    fn approve_mode_waits_and_dry_run_never_becomes_executable() {
        let store = store();
        let incident = stored_incident(&store);
        let (pending, _) = store
            .record_decision(
                incident,
                &decision(DecisionOutcome::NeedsApproval),
                Some(&plan("approve")),
                T0,
            )
            .expect("decide");
        let pending = pending.expect("row");
        assert_eq!(pending.state.as_str(), "pending");
        let pre = PreState::Replicas {
            target: target(),
            replicas: 2,
        };
        assert!(
            !store.begin_execution(pending.id, &pre, T0).expect("intent"),
            "a pending action cannot start before approval"
        );

        let (dry, _) = store
            .record_decision(
                incident,
                &decision(DecisionOutcome::DryRun),
                Some(&plan("dry_run")),
                T0,
            )
            .expect("decide");
        let dry = dry.expect("row");
        assert_eq!(
            dry.execution.as_ref().map(|e| e.state),
            Some(ExecState::DryRun)
        );
        assert!(!store.begin_execution(dry.id, &pre, T0).expect("intent"));
        assert_eq!(
            store.actions_in(&[ExecState::Planned]).expect("list").len(),
            1,
            "only the pending one is planned"
        );
    }

    #[test]
    fn refusals_are_recorded_and_diagnosis_survives_incident_saves() {
        let store = store();
        let incident = stored_incident(&store);
        let mut refused = decision(DecisionOutcome::Refused);
        refused.action = None;
        refused.rule = "kill-switch".into();
        let (action, _) = store
            .record_decision(incident, &refused, None, T0)
            .expect("decide");
        assert!(action.is_none());
        assert!(store.has_decision(incident).expect("exists"));
        store
            .save_diagnosis(incident, &Diagnosis::default(), T0)
            .expect("diagnosis");
        // The incident stage saves again (it knows nothing of either).
        let mut inc = store.get_incident(incident).expect("read").expect("found");
        inc.diagnosis = None;
        inc.decisions.clear();
        store.upsert_incident(&inc).expect("resave");
        let inc = store.get_incident(incident).expect("read").expect("found");
        assert_eq!(inc.decisions[0].rule, "kill-switch");
        assert!(inc.diagnosis.is_some());
    }

    #[test]
    fn escalation_adds_a_timeline_line_and_one_event() {
        let store = store();
        let incident = stored_incident(&store);
        for _ in 0..2 {
            store
                .escalate_incident(incident, "verification failed", T0 + 5, T0 + 5)
                .expect("escalate");
        }
        let inc = store.get_incident(incident).expect("read").expect("found");
        assert!(inc.timeline.iter().any(|e| e.kind == "escalated"));
        assert_eq!(kinds(&store), ["incident.escalated"]);
    }

    #[test]
    fn settings_remember_who_and_why() {
        let store = store();
        assert_eq!(store.setting("kill_switch").expect("read"), None);
        store
            .set_setting("kill_switch", "on", "alice", "freeze", T0)
            .expect("set");
        let s = store.setting("kill_switch").expect("read").expect("set");
        assert_eq!((s.value.as_str(), s.changed_by.as_str()), ("on", "alice"));
    }
}
