//! Store methods for alerts received from Alertmanager (migration 3).
//!
//! The webhook answers 2xx only after [`Store::record_alerts`] committed,
//! so an accepted alert is never lost; the incident stage applies it later
//! and marks it applied (`processed`) in the transaction that saves the
//! incident ([`Store::save_incident_with_alerts`]). Whatever crashes when,
//! an alert is either applied with its incident saved, or still unprocessed
//! and replayed at the next start ([`Store::unprocessed_alerts`]).

use rusqlite::{params, OptionalExtension, Transaction};

use super::outbox::save_incident_in;
use super::{Store, StoreError};
use crate::incident::alert::{Alert, AlertId, AlertReceipt, AlertStatus, AppliedAlert, NewAlert};
use crate::incident::{Incident, UpdateKind};
use crate::publish::outbox::SavedIncident;
use crate::signal::TimestampMs;

/// Columns of `alerts` in the order [`read_alert`] expects.
pub(super) const ALERT_COLUMNS: &str =
    "id, fingerprint, status, labels, annotations, starts_at, ends_at, \
                             generator_url, receiver, received_at";

impl Store {
    /// Stores the alerts of one webhook delivery in one transaction and says
    /// what each did. Identity is `(fingerprint, starts_at)`:
    ///
    /// - unknown → inserted ([`AlertReceipt::New`]), to be applied;
    /// - known and firing, now `resolved` → resolved with its `ends_at`
    ///   ([`AlertReceipt::Resolved`]), to be applied;
    /// - anything else (a retry; a late `firing` after `resolved`, which
    ///   is final for an episode) → unchanged ([`AlertReceipt::Duplicate`]).
    pub fn record_alerts(
        &self,
        receiver: &str,
        group_key: &str,
        alerts: &[NewAlert],
        now: TimestampMs,
    ) -> Result<Vec<(Alert, AlertReceipt)>, StoreError> {
        let write = |source| StoreError::Write {
            what: "alerts",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let mut out = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let existing: Option<(AlertId, String)> = tx
                .query_row(
                    "SELECT id, status FROM alerts WHERE fingerprint = ?1 AND starts_at = ?2",
                    params![alert.fingerprint, alert.starts_at],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(write)?;
            let (id, receipt) = match existing {
                None => (
                    insert_alert(&tx, receiver, group_key, alert, now)?,
                    AlertReceipt::New,
                ),
                Some((id, status))
                    if status == AlertStatus::Firing.as_str()
                        && alert.status == AlertStatus::Resolved =>
                {
                    tx.execute(
                        "UPDATE alerts SET status = 'resolved', ends_at = ?2, updated_at = ?3,
                                           processed = 0
                         WHERE id = ?1",
                        params![id, alert.ends_at, now],
                    )
                    .map_err(write)?;
                    (id, AlertReceipt::Resolved)
                }
                Some((id, _)) => (id, AlertReceipt::Duplicate),
            };
            let stored = load_alert(&tx, id)?.ok_or(StoreError::Write {
                what: "alerts",
                source: rusqlite::Error::QueryReturnedNoRows,
            })?;
            out.push((stored, receipt));
        }
        tx.commit().map_err(write)?;
        Ok(out)
    }

    /// Up to `limit` alerts whose latest change was not applied to
    /// incidents yet, oldest first: replayed at start, and swept up when the
    /// channel to the incident stage was full.
    pub fn unprocessed_alerts(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        let query = |source| StoreError::Query {
            what: "unprocessed alerts",
            source,
        };
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE processed = 0 ORDER BY id LIMIT ?1"
            ))
            .map_err(query)?;
        let rows = stmt
            .query_map(
                params![i64::try_from(limit).unwrap_or(i64::MAX)],
                read_alert,
            )
            .map_err(query)?;
        let rows = rows.collect::<Result<Vec<_>, _>>().map_err(query)?;
        rows.into_iter().map(RawAlert::decode).collect()
    }

    /// Marks applied alert changes as processed (when applying them changed
    /// no incident, e.g. a change already applied before a crash).
    pub fn mark_alerts_processed(&self, applied: &[AppliedAlert]) -> Result<(), StoreError> {
        let write = |source| StoreError::Write {
            what: "alert processed flags",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        mark_processed(&tx, applied)?;
        tx.commit().map_err(write)
    }

    /// [`Store::save_incident_with_events`] that also marks `applied`
    /// alerts as processed, in the same transaction.
    pub fn save_incident_with_alerts(
        &self,
        incident: &Incident,
        kind: UpdateKind,
        now: TimestampMs,
        applied: &[AppliedAlert],
    ) -> Result<SavedIncident, StoreError> {
        let write = |source| StoreError::Write {
            what: "incident, its events and alerts",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        let saved = save_incident_in(&tx, incident, kind, now)?;
        mark_processed(&tx, applied)?;
        tx.commit().map_err(write)?;
        Ok(saved)
    }

    /// The stored alert with this identity and whether its latest change
    /// was applied to incidents.
    pub fn alert(
        &self,
        fingerprint: &str,
        starts_at: TimestampMs,
    ) -> Result<Option<(Alert, bool)>, StoreError> {
        let query = |source| StoreError::Query {
            what: "alert",
            source,
        };
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!(
                    "SELECT {ALERT_COLUMNS}, processed FROM alerts
                     WHERE fingerprint = ?1 AND starts_at = ?2"
                ),
                params![fingerprint, starts_at],
                |row| Ok((read_alert(row)?, row.get::<_, bool>(10)?)),
            )
            .optional()
            .map_err(query)?;
        match row {
            Some((raw, processed)) => Ok(Some((raw.decode()?, processed))),
            None => Ok(None),
        }
    }

    /// How many alert identities are stored.
    pub fn alert_count(&self) -> Result<u64, StoreError> {
        self.lock()
            .query_row("SELECT count(*) FROM alerts", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|source| StoreError::Query {
                what: "alert count",
                source,
            })
    }
}

fn insert_alert(
    tx: &Transaction<'_>,
    receiver: &str,
    group_key: &str,
    alert: &NewAlert,
    now: TimestampMs,
) -> Result<AlertId, StoreError> {
    let encode = |map| {
        serde_json::to_string(map).map_err(|source| StoreError::AlertData {
            fingerprint: alert.fingerprint.clone(),
            source,
        })
    };
    let labels = encode(&alert.labels)?;
    let annotations = encode(&alert.annotations)?;
    let ends_at = match alert.status {
        AlertStatus::Firing => None,
        AlertStatus::Resolved => alert.ends_at,
    };
    tx.query_row(
        "INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, labels,
                             annotations, generator_url, receiver, group_key, received_at,
                             updated_at, processed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, 0)
         RETURNING id",
        params![
            alert.fingerprint,
            alert.starts_at,
            ends_at,
            alert.status.as_str(),
            alert.labels.get("alertname"),
            labels,
            annotations,
            alert.generator_url,
            receiver,
            group_key,
            now,
        ],
        |row| row.get(0),
    )
    .map_err(|source| StoreError::Write {
        what: "alert",
        source,
    })
}

fn mark_processed(tx: &Transaction<'_>, applied: &[AppliedAlert]) -> Result<(), StoreError> {
    let write = |source| StoreError::Write {
        what: "alert processed flags",
        source,
    };
    let mut stmt = tx
        .prepare_cached("UPDATE alerts SET processed = 1 WHERE id = ?1 AND status = ?2")
        .map_err(write)?;
    for (id, status) in applied {
        stmt.execute(params![id, status.as_str()]).map_err(write)?;
    }
    Ok(())
}

fn load_alert(tx: &Transaction<'_>, id: AlertId) -> Result<Option<Alert>, StoreError> {
    let raw = tx
        .query_row(
            &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"),
            params![id],
            read_alert,
        )
        .optional()
        .map_err(|source| StoreError::Query {
            what: "alert",
            source,
        })?;
    raw.map(RawAlert::decode).transpose()
}

/// A row before its JSON columns are decoded (decoding errors are ours,
/// not SQLite's).
pub(super) struct RawAlert {
    id: AlertId,
    fingerprint: String,
    status: AlertStatus,
    labels: String,
    annotations: String,
    starts_at: TimestampMs,
    ends_at: Option<TimestampMs>,
    generator_url: String,
    receiver: String,
    received_at: TimestampMs,
}

impl RawAlert {
    pub(super) fn decode(self) -> Result<Alert, StoreError> {
        let decode = |text: &str| {
            serde_json::from_str(text).map_err(|source| StoreError::AlertData {
                fingerprint: self.fingerprint.clone(),
                source,
            })
        };
        let labels = decode(&self.labels)?;
        let annotations = decode(&self.annotations)?;
        Ok(Alert {
            id: self.id,
            fingerprint: self.fingerprint,
            status: self.status,
            labels,
            annotations,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            generator_url: self.generator_url,
            receiver: self.receiver,
            received_at: self.received_at,
        })
    }
}

pub(super) fn read_alert(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawAlert> {
    let status: String = row.get(2)?;
    let status = AlertStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            format!("unknown alert status {status:?}").into(),
        )
    })?;
    Ok(RawAlert {
        id: row.get(0)?,
        fingerprint: row.get(1)?,
        status,
        labels: row.get(3)?,
        annotations: row.get(4)?,
        starts_at: row.get(5)?,
        ends_at: row.get(6)?,
        generator_url: row.get(7)?,
        receiver: row.get(8)?,
        received_at: row.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::{IncidentState, Severity};

    const T0: TimestampMs = 1_800_000_000_000;

    fn new_alert(fingerprint: &str, status: AlertStatus) -> NewAlert {
        NewAlert {
            fingerprint: fingerprint.into(),
            status,
            labels: BTreeMap::from([
                ("alertname".to_string(), "HighErrorRate".to_string()),
                ("service".to_string(), "cart".to_string()),
            ]),
            annotations: BTreeMap::from([("summary".to_string(), "errors".to_string())]),
            starts_at: T0,
            ends_at: (status == AlertStatus::Resolved).then_some(T0 + 60_000),
            generator_url: "http://prometheus/graph".into(),
        }
    }

    #[test]
    fn repeated_delivery_is_idempotent_and_resolved_is_final() {
        let store = Store::open_in_memory().expect("store");
        let firing = new_alert("a1b2c3d4e5f60718", AlertStatus::Firing);
        let resolved = new_alert("a1b2c3d4e5f60718", AlertStatus::Resolved);
        let receipts = |r: Vec<(Alert, AlertReceipt)>| -> Vec<AlertReceipt> {
            r.into_iter().map(|(_, receipt)| receipt).collect()
        };
        let first = store
            .record_alerts("aiopsd", "{}", std::slice::from_ref(&firing), T0)
            .expect("first");
        let id = first[0].0.id;
        assert_eq!(first[0].1, AlertReceipt::New);
        assert_eq!(first[0].0.ends_at, None);
        let again = store
            .record_alerts("aiopsd", "{}", std::slice::from_ref(&firing), T0 + 1)
            .expect("retry");
        assert_eq!(receipts(again), [AlertReceipt::Duplicate]);
        let done = store
            .record_alerts("aiopsd", "{}", std::slice::from_ref(&resolved), T0 + 2)
            .expect("resolved");
        assert_eq!(done[0].1, AlertReceipt::Resolved);
        assert_eq!(done[0].0.id, id);
        assert_eq!(done[0].0.ends_at, Some(T0 + 60_000));
        // A late firing retry does not reopen the episode.
        let late = store
            .record_alerts("aiopsd", "{}", &[firing, resolved], T0 + 3)
            .expect("late");
        assert_eq!(
            receipts(late),
            [AlertReceipt::Duplicate, AlertReceipt::Duplicate]
        );
        assert_eq!(store.alert_count().expect("count"), 1);
        let (stored, processed) = store
            .alert("a1b2c3d4e5f60718", T0)
            .expect("read")
            .expect("stored");
        assert_eq!(stored.status, AlertStatus::Resolved);
        assert!(!processed);
    }

    #[test]
    fn processed_flag_is_set_with_the_incident_and_only_for_the_applied_status() {
        let store = Store::open_in_memory().expect("store");
        let stored = store
            .record_alerts(
                "aiopsd",
                "{}",
                &[new_alert("00000000000000aa", AlertStatus::Firing)],
                T0,
            )
            .expect("record");
        let alert = stored[0].0.clone();
        assert_eq!(
            store.unprocessed_alerts(10).expect("list"),
            std::slice::from_ref(&alert)
        );

        // Resolved arrives after the stage read the firing state: marking
        // the firing state must leave the resolved change to be applied.
        store
            .record_alerts(
                "aiopsd",
                "{}",
                &[new_alert("00000000000000aa", AlertStatus::Resolved)],
                T0 + 1,
            )
            .expect("resolve");
        store
            .mark_alerts_processed(&[(alert.id, AlertStatus::Firing)])
            .expect("mark");
        assert_eq!(store.unprocessed_alerts(10).expect("list").len(), 1);

        let incident = Incident {
            id: None,
            cluster: "test".into(),
            group: BTreeMap::from([("service".to_string(), "cart".to_string())]),
            state: IncidentState::Open,
            severity: Severity::Warning,
            opened_at: T0,
            last_anomaly_at: T0,
            resolved_at: None,
            anomaly_count: 0,
            signals: Vec::new(),
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: Vec::new(),
        };
        store
            .save_incident_with_alerts(
                &incident,
                UpdateKind::Opened,
                T0,
                &[(alert.id, AlertStatus::Resolved)],
            )
            .expect("save");
        assert!(store.unprocessed_alerts(10).expect("list").is_empty());
        let (_, processed) = store
            .alert("00000000000000aa", T0)
            .expect("read")
            .expect("stored");
        assert!(processed);
    }
}
