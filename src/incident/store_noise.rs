//! Store methods for silences and suppressions (migration 4).
//!
//! A suppression is written in the same transaction that marks its alert
//! processed ([`Store::suppress_alert`]): an accepted alert is either
//! applied to an incident, or recorded as suppressed with its reason, or
//! still waiting — never dropped without a trace.

use rusqlite::{params, OptionalExtension};

use super::alerts::{read_alert, RawAlert, ALERT_COLUMNS};
use super::{Store, StoreError};
use crate::incident::alert::{Alert, AlertId, AlertStatus};
use crate::incident::noise::{Matcher, Silence, SilenceSource, Suppression};
use crate::signal::TimestampMs;

/// Columns of `silences` in the order [`read_silence`] expects.
const SILENCE_COLUMNS: &str = "id, matchers, starts_at, ends_at, created_by, comment";

/// Columns of `suppressions` joined with `alerts`, in the order
/// [`read_suppression`] expects.
const SUPPRESSION_COLUMNS: &str = "s.id, s.alert_id, a.fingerprint, coalesce(a.alertname, ''), \
                                   s.reason, s.reference, s.created_by, s.detail, s.at";

/// A silence to create (validated by the caller).
#[derive(Debug, Clone)]
pub struct NewSilence {
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Start (ms); `None` = now.
    pub starts_at: Option<TimestampMs>,
    /// End (ms, exclusive); `None` = until deleted.
    pub ends_at: Option<TimestampMs>,
    /// Who asked.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// Which alerts [`Store::list_alerts`] returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only alerts with this status.
    pub status: Option<AlertStatus>,
    /// Only suppressed (`true`) or only not suppressed (`false`) alerts.
    pub suppressed: Option<bool>,
    /// Page size; 0 = 50, at most 500.
    pub limit: usize,
    /// Only alerts with a smaller id (the previous page's last id).
    pub before_id: Option<AlertId>,
}

/// Page size when the caller asks for `limit: 0` (as for incidents).
const DEFAULT_PAGE: usize = 50;

/// Largest page returned, whatever the caller asks for.
const MAX_PAGE: usize = 500;

fn page(limit: usize) -> i64 {
    let limit = if limit == 0 { DEFAULT_PAGE } else { limit };
    i64::try_from(limit.min(MAX_PAGE)).unwrap_or(50)
}

impl Store {
    /// Stores a silence made through the API and returns it with its id.
    pub fn create_silence(
        &self,
        silence: &NewSilence,
        now: TimestampMs,
    ) -> Result<Silence, StoreError> {
        let write = |source| StoreError::Write {
            what: "silence",
            source,
        };
        let matchers: Vec<String> = silence.matchers.iter().map(ToString::to_string).collect();
        let matchers =
            serde_json::to_string(&matchers).map_err(|source| StoreError::AlertData {
                fingerprint: "(silence matchers)".into(),
                source,
            })?;
        let starts_at = silence.starts_at.unwrap_or(now);
        let id: i64 = self
            .lock()
            .query_row(
                "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment,
                                       created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![
                    matchers,
                    starts_at,
                    silence.ends_at,
                    silence.created_by,
                    silence.comment,
                    now
                ],
                |row| row.get(0),
            )
            .map_err(write)?;
        Ok(Silence {
            id: format!("api-{id}"),
            source: SilenceSource::Api,
            matchers: silence.matchers.clone(),
            starts_at: Some(starts_at),
            ends_at: silence.ends_at,
            created_by: silence.created_by.clone(),
            comment: silence.comment.clone(),
        })
    }

    /// API silences not deleted and not ended before `now`, oldest first
    /// (the incident stage checks them; `GET /api/v1/silences` lists them).
    pub fn silences(&self, now: TimestampMs) -> Result<Vec<Silence>, StoreError> {
        let query = |source| StoreError::Query {
            what: "silences",
            source,
        };
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {SILENCE_COLUMNS} FROM silences
                 WHERE deleted_at IS NULL AND (ends_at IS NULL OR ends_at > ?1)
                 ORDER BY id"
            ))
            .map_err(query)?;
        let rows = stmt.query_map(params![now], read_silence).map_err(query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Deletes (ends) an API silence; `false` when there is none with that
    /// id or it was deleted already. The row stays, so suppressions it
    /// caused still say who silenced and why.
    pub fn delete_silence(&self, id: i64, now: TimestampMs) -> Result<bool, StoreError> {
        self.lock()
            .execute(
                "UPDATE silences SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                params![id, now],
            )
            .map(|n| n > 0)
            .map_err(|source| StoreError::Write {
                what: "silence deletion",
                source,
            })
    }

    /// Records that `alert` (in the state the incident stage read) opened
    /// or joined no incident because of `silence`, and marks that state
    /// processed, in one transaction. Idempotent: an episode keeps its
    /// first suppression.
    pub fn suppress_alert(
        &self,
        alert: &Alert,
        silence: &Silence,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        let write = |source| StoreError::Write {
            what: "alert suppression",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(write)?;
        tx.execute(
            "INSERT OR IGNORE INTO suppressions (alert_id, reason, reference, created_by, detail, at)
             VALUES (?1, 'silence', ?2, ?3, ?4, ?5)",
            params![
                alert.id,
                silence.id,
                silence.created_by,
                silence.describe(),
                now
            ],
        )
        .map_err(write)?;
        tx.execute(
            "UPDATE alerts SET processed = 1 WHERE id = ?1 AND status = ?2",
            params![alert.id, alert.status.as_str()],
        )
        .map_err(write)?;
        tx.commit().map_err(write)
    }

    /// The suppression of an alert episode, if it was suppressed.
    pub fn suppression_of(&self, alert_id: AlertId) -> Result<Option<Suppression>, StoreError> {
        self.lock()
            .query_row(
                &format!(
                    "SELECT {SUPPRESSION_COLUMNS} FROM suppressions s
                     JOIN alerts a ON a.id = s.alert_id WHERE s.alert_id = ?1"
                ),
                params![alert_id],
                read_suppression,
            )
            .optional()
            .map_err(|source| StoreError::Query {
                what: "suppression",
                source,
            })
    }

    /// Suppressions, newest first; `before_id` pages.
    pub fn list_suppressions(
        &self,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<Suppression>, StoreError> {
        let query = |source| StoreError::Query {
            what: "suppressions",
            source,
        };
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {SUPPRESSION_COLUMNS} FROM suppressions s
                 JOIN alerts a ON a.id = s.alert_id
                 WHERE (?1 IS NULL OR s.id < ?1) ORDER BY s.id DESC LIMIT ?2"
            ))
            .map_err(query)?;
        let rows = stmt
            .query_map(params![before_id, page(limit)], read_suppression)
            .map_err(query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Stored alerts, newest first, each with its suppression if any.
    pub fn list_alerts(
        &self,
        filter: &AlertFilter,
    ) -> Result<Vec<(Alert, Option<Suppression>)>, StoreError> {
        let query = |source| StoreError::Query {
            what: "alert list",
            source,
        };
        let raws = {
            let conn = self.lock();
            let columns = ALERT_COLUMNS
                .split(", ")
                .map(|c| format!("a.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {columns} FROM alerts a
                     WHERE (?1 IS NULL OR a.status = ?1)
                       AND (?2 IS NULL OR ?2 = EXISTS (SELECT 1 FROM suppressions s
                                                       WHERE s.alert_id = a.id))
                       AND (?3 IS NULL OR a.id < ?3)
                     ORDER BY a.id DESC LIMIT ?4"
                ))
                .map_err(query)?;
            let rows = stmt
                .query_map(
                    params![
                        filter.status.map(AlertStatus::as_str),
                        filter.suppressed,
                        filter.before_id,
                        page(filter.limit)
                    ],
                    read_alert,
                )
                .map_err(query)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(query)?
        };
        raws.into_iter()
            .map(|raw| {
                let alert = RawAlert::decode(raw)?;
                let suppression = self.suppression_of(alert.id)?;
                Ok((alert, suppression))
            })
            .collect()
    }
}

fn read_silence(row: &rusqlite::Row<'_>) -> rusqlite::Result<Silence> {
    let id: i64 = row.get(0)?;
    let text: String = row.get(1)?;
    // The matchers were valid when stored; failing to read them back is a
    // damaged row, reported as such rather than as an empty (match-all)
    // silence.
    let matchers: Vec<Matcher> = serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Silence {
        id: format!("api-{id}"),
        source: SilenceSource::Api,
        matchers,
        starts_at: row.get(2)?,
        ends_at: row.get(3)?,
        created_by: row.get(4)?,
        comment: row.get(5)?,
    })
}

fn read_suppression(row: &rusqlite::Row<'_>) -> rusqlite::Result<Suppression> {
    Ok(Suppression {
        id: row.get(0)?,
        alert_id: row.get(1)?,
        fingerprint: row.get(2)?,
        alertname: row.get(3)?,
        reason: row.get(4)?,
        reference: row.get(5)?,
        created_by: row.get(6)?,
        detail: row.get(7)?,
        at: row.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::alert::NewAlert;

    const T0: TimestampMs = 1_800_000_000_000;

    #[test]
    fn silences_are_created_listed_deleted_and_suppressions_recorded() {
        let store = Store::open_in_memory().expect("store");
        let silence = store
            .create_silence(
                &NewSilence {
                    matchers: vec![Matcher::parse("namespace=shop").expect("m")],
                    starts_at: None,
                    ends_at: Some(T0 + 3_600_000),
                    created_by: "alice".into(),
                    comment: "db maintenance".into(),
                },
                T0,
            )
            .expect("create");
        assert_eq!(silence.id, "api-1");
        assert_eq!(
            store.silences(T0).expect("list"),
            std::slice::from_ref(&silence)
        );
        assert!(store.silences(T0 + 3_600_000).expect("list").is_empty());

        let stored = store
            .record_alerts(
                "aiopsd",
                "{}",
                &[NewAlert {
                    fingerprint: "00000000000000aa".into(),
                    status: AlertStatus::Firing,
                    labels: BTreeMap::from([
                        ("alertname".to_string(), "DiskFull".to_string()),
                        ("namespace".to_string(), "shop".to_string()),
                    ]),
                    annotations: BTreeMap::new(),
                    starts_at: T0,
                    ends_at: None,
                    generator_url: String::new(),
                }],
                T0,
            )
            .expect("record");
        let alert = stored[0].0.clone();
        store
            .suppress_alert(&alert, &silence, T0)
            .expect("suppress");
        store
            .suppress_alert(&alert, &silence, T0 + 1)
            .expect("again");
        assert!(store.unprocessed_alerts(10).expect("pending").is_empty());
        let listed = store.list_suppressions(0, None).expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].reference, "api-1");
        assert_eq!(listed[0].alertname, "DiskFull");
        assert!(listed[0].detail.contains("alice"), "{}", listed[0].detail);

        let only = |suppressed| AlertFilter {
            suppressed: Some(suppressed),
            ..AlertFilter::default()
        };
        assert_eq!(store.list_alerts(&only(true)).expect("list").len(), 1);
        assert!(store.list_alerts(&only(false)).expect("list").is_empty());

        assert!(store.delete_silence(1, T0).expect("delete"));
        assert!(!store.delete_silence(1, T0).expect("again"));
        assert!(store.silences(T0).expect("list").is_empty());
    }
}
