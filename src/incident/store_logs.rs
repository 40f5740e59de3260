//! Store methods of the log pipeline (migration [`LOGS_MIGRATION`]):
//! the source's checkpoint, the miners' templates, per-bucket template
//! counts, and the log evidence of incidents.
//!
//! **Exactly once.** [`Store::commit_log_window`] writes a read window's
//! counts, the templates it touched and the checkpoint after it in *one*
//! transaction: the stored counts are always exactly the documents before
//! the stored checkpoint, so a restart (or a failed commit, after which
//! the pipeline re-reads from the stored checkpoint) neither skips nor
//! counts a document twice.
//!
//! **Bounded.** Counts older than the retention are deleted with each
//! commit; so are templates not seen since, except each stream's newest
//! id, which keeps new ids from reusing old ones after a restart.
//!
//! **Redacted.** Template texts and example lines arrive redacted
//! (`logs::window` redacts before it keeps anything); nothing here sees a
//! raw log line.
//!
//! Incident evidence lives in `incident_logs` and is attached to the
//! incident when it is loaded, like diagnoses: the incident stage rewrites
//! the incident's JSON on every update and would otherwise erase it.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Store, StoreError};
use crate::incident::{IncidentId, LogTemplateChange};
use crate::logs::changes::TemplateInfo;
use crate::logs::elastic::Checkpoint;
use crate::logs::window::{BucketCount, StoredTemplate, StreamKey, WindowDelta, MAX_EXAMPLES};
use crate::logs::TemplateId;
use crate::signal::TimestampMs;

/// Migration 6: the log pipeline's tables.
pub(super) const LOGS_MIGRATION: &str = r#"
    -- Where each log source stopped: every document before the checkpoint
    -- is counted in log_counts (one transaction writes both).
    CREATE TABLE log_checkpoints (
        source     TEXT    PRIMARY KEY,
        checkpoint TEXT    NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- The miners' templates, so ids stay stable across restarts. Text and
    -- examples (JSON array, newest first) are redacted.
    CREATE TABLE log_templates (
        namespace     TEXT    NOT NULL,
        service       TEXT    NOT NULL,
        template_id   INTEGER NOT NULL,
        text          TEXT    NOT NULL,
        level         TEXT,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL,
        examples      TEXT    NOT NULL,
        PRIMARY KEY (namespace, service, template_id)
    ) WITHOUT ROWID;
    CREATE INDEX log_templates_by_first_seen ON log_templates (first_seen_ms);
    CREATE INDEX log_templates_by_last_seen  ON log_templates (last_seen_ms);

    -- Lines (and error/warn-level lines) per template and bucket.
    CREATE TABLE log_counts (
        namespace   TEXT    NOT NULL,
        service     TEXT    NOT NULL,
        bucket_ms   INTEGER NOT NULL,
        template_id INTEGER NOT NULL,
        lines       INTEGER NOT NULL,
        errors      INTEGER NOT NULL,
        PRIMARY KEY (namespace, service, bucket_ms, template_id)
    ) WITHOUT ROWID;
    CREATE INDEX log_counts_by_bucket ON log_counts (bucket_ms);

    -- The log templates that changed around an incident's start (JSON
    -- array of LogTemplateChange), computed once.
    CREATE TABLE incident_logs (
        incident_id INTEGER PRIMARY KEY REFERENCES incidents (id),
        computed_at INTEGER NOT NULL,
        detail      TEXT    NOT NULL
    );
"#;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A JSON value that could not be encoded, as a SQLite conversion error
/// (the store's errors carry SQLite's).
fn encode_error(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn decode_error(column: usize, e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
}

impl Store {
    /// The stored checkpoint of log source `source`, if any.
    pub fn log_checkpoint(&self, source: &str) -> Result<Option<Checkpoint>, StoreError> {
        let conn = self.lock();
        let query = |source| StoreError::Query {
            what: "log checkpoint",
            source,
        };
        let text: Option<String> = conn
            .query_row(
                "SELECT checkpoint FROM log_checkpoints WHERE source = ?1",
                params![source],
                |row| row.get(0),
            )
            .optional()
            .map_err(query)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| query(decode_error(0, e))))
            .transpose()
    }

    /// Commits one read window in one transaction (see the module docs):
    /// adds its counts, upserts the templates it touched (examples merged,
    /// newest first, at most [`MAX_EXAMPLES`]), stores `checkpoint`, and
    /// deletes counts of buckets before `prune_before_ms` and templates not
    /// seen since then.
    pub fn commit_log_window(
        &self,
        source: &str,
        checkpoint: &Checkpoint,
        delta: &WindowDelta,
        prune_before_ms: TimestampMs,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let write = |source| StoreError::Write {
            what: "log window",
            source,
        };
        let tx = conn.transaction().map_err(write)?;
        {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO log_counts (namespace, service, bucket_ms, template_id, lines, errors)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (namespace, service, bucket_ms, template_id) DO UPDATE SET
                         lines = lines + excluded.lines,
                         errors = errors + excluded.errors",
                )
                .map_err(write)?;
            for c in &delta.counts {
                add.execute(params![
                    c.stream.namespace,
                    c.stream.service,
                    c.bucket_ms,
                    to_i64(c.template.0),
                    to_i64(c.lines),
                    to_i64(c.errors),
                ])
                .map_err(write)?;
            }
            let mut old_examples = tx
                .prepare_cached(
                    "SELECT examples FROM log_templates
                      WHERE namespace = ?1 AND service = ?2 AND template_id = ?3",
                )
                .map_err(write)?;
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO log_templates (namespace, service, template_id, text, level,
                                                first_seen_ms, last_seen_ms, examples)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (namespace, service, template_id) DO UPDATE SET
                         text = excluded.text,
                         level = COALESCE(excluded.level, level),
                         first_seen_ms = MIN(first_seen_ms, excluded.first_seen_ms),
                         last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms),
                         examples = excluded.examples",
                )
                .map_err(write)?;
            for t in &delta.templates {
                let id = to_i64(t.id.0);
                let old: Option<String> = old_examples
                    .query_row(params![t.stream.namespace, t.stream.service, id], |row| {
                        row.get(0)
                    })
                    .optional()
                    .map_err(write)?;
                let mut examples = t.examples.clone();
                // A stored list that does not parse is replaced, not fatal.
                examples.extend(
                    old.and_then(|o| serde_json::from_str::<Vec<String>>(&o).ok())
                        .unwrap_or_default(),
                );
                examples.truncate(MAX_EXAMPLES);
                let examples =
                    serde_json::to_string(&examples).map_err(|e| write(encode_error(e)))?;
                upsert
                    .execute(params![
                        t.stream.namespace,
                        t.stream.service,
                        id,
                        t.text,
                        t.level,
                        t.first_seen_ms,
                        t.last_seen_ms,
                        examples,
                    ])
                    .map_err(write)?;
            }
        }
        let checkpoint_json =
            serde_json::to_string(checkpoint).map_err(|e| write(encode_error(e)))?;
        tx.execute(
            "INSERT INTO log_checkpoints (source, checkpoint, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (source) DO UPDATE SET
                 checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
            params![source, checkpoint_json, now],
        )
        .map_err(write)?;
        tx.execute(
            "DELETE FROM log_counts WHERE bucket_ms < ?1",
            params![prune_before_ms],
        )
        .map_err(write)?;
        tx.execute(
            "DELETE FROM log_templates
              WHERE last_seen_ms < ?1
                AND template_id < (SELECT MAX(t.template_id) FROM log_templates t
                                    WHERE t.namespace = log_templates.namespace
                                      AND t.service = log_templates.service)",
            params![prune_before_ms],
        )
        .map_err(write)?;
        tx.commit().map_err(write)
    }

    /// Every stored template, to restore the miners.
    pub fn log_templates(&self) -> Result<Vec<StoredTemplate>, StoreError> {
        let conn = self.lock();
        let query = |source| StoreError::Query {
            what: "log templates",
            source,
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT namespace, service, template_id, text, level, first_seen_ms,
                        last_seen_ms, examples
                   FROM log_templates ORDER BY namespace, service, template_id",
            )
            .map_err(query)?;
        let rows = stmt
            .query_map([], |row| {
                let examples: String = row.get(7)?;
                Ok(StoredTemplate {
                    stream: StreamKey {
                        namespace: row.get(0)?,
                        service: row.get(1)?,
                    },
                    id: TemplateId(to_u64(row.get(2)?)),
                    text: row.get(3)?,
                    level: row.get(4)?,
                    first_seen_ms: row.get(5)?,
                    last_seen_ms: row.get(6)?,
                    examples: serde_json::from_str(&examples).unwrap_or_default(),
                })
            })
            .map_err(query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Stored counts of the buckets starting in `[from_ms, until_ms)`, by
    /// stream, bucket and template.
    pub fn log_counts(
        &self,
        from_ms: TimestampMs,
        until_ms: TimestampMs,
    ) -> Result<Vec<BucketCount>, StoreError> {
        let conn = self.lock();
        let query = |source| StoreError::Query {
            what: "log counts",
            source,
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT namespace, service, bucket_ms, template_id, lines, errors
                   FROM log_counts WHERE bucket_ms >= ?1 AND bucket_ms < ?2
                  ORDER BY namespace, service, bucket_ms, template_id",
            )
            .map_err(query)?;
        let rows = stmt
            .query_map(params![from_ms, until_ms], |row| {
                Ok(BucketCount {
                    stream: StreamKey {
                        namespace: row.get(0)?,
                        service: row.get(1)?,
                    },
                    bucket_ms: row.get(2)?,
                    template: TemplateId(to_u64(row.get(3)?)),
                    lines: to_u64(row.get(4)?),
                    errors: to_u64(row.get(5)?),
                })
            })
            .map_err(query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Streams and first-seen times of the templates first seen in
    /// `[from_ms, until_ms)`.
    pub fn log_first_seen(
        &self,
        from_ms: TimestampMs,
        until_ms: TimestampMs,
    ) -> Result<Vec<(StreamKey, TimestampMs)>, StoreError> {
        let conn = self.lock();
        let query = |source| StoreError::Query {
            what: "log template first sightings",
            source,
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT namespace, service, first_seen_ms FROM log_templates
                  WHERE first_seen_ms >= ?1 AND first_seen_ms < ?2",
            )
            .map_err(query)?;
        let rows = stmt
            .query_map(params![from_ms, until_ms], |row| {
                Ok((
                    StreamKey {
                        namespace: row.get(0)?,
                        service: row.get(1)?,
                    },
                    row.get(2)?,
                ))
            })
            .map_err(query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Text, level, first sighting and examples of `stream`'s templates.
    pub fn log_template_info(
        &self,
        stream: &StreamKey,
    ) -> Result<BTreeMap<TemplateId, TemplateInfo>, StoreError> {
        let conn = self.lock();
        let query = |source| StoreError::Query {
            what: "log template texts",
            source,
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT template_id, text, level, first_seen_ms, examples FROM log_templates
                  WHERE namespace = ?1 AND service = ?2",
            )
            .map_err(query)?;
        let rows = stmt
            .query_map(params![stream.namespace, stream.service], |row| {
                let examples: String = row.get(4)?;
                Ok((
                    TemplateId(to_u64(row.get(0)?)),
                    TemplateInfo {
                        text: row.get(1)?,
                        level: row.get(2)?,
                        first_seen: Some(row.get(3)?),
                        examples: serde_json::from_str(&examples).unwrap_or_default(),
                    },
                ))
            })
            .map_err(query)?;
        rows.collect::<Result<BTreeMap<_, _>, _>>().map_err(query)
    }

    /// Stores the log evidence of incident `id` (once: a second call
    /// leaves the first result). It is attached as `Incident::logs`
    /// whenever the incident is loaded.
    pub fn record_incident_logs(
        &self,
        id: IncidentId,
        changes: &[LogTemplateChange],
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let write = |source| StoreError::Write {
            what: "incident log evidence",
            source,
        };
        let detail = serde_json::to_string(changes).map_err(|e| write(encode_error(e)))?;
        let inserted = conn
            .execute(
                "INSERT INTO incident_logs (incident_id, computed_at, detail)
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM incidents WHERE id = ?1)
                 ON CONFLICT (incident_id) DO NOTHING",
                params![id, now, detail],
            )
            .map_err(write)?;
        if inserted == 0 && !incident_exists(&conn, id)? {
            return Err(StoreError::UnknownIncident { id });
        }
        Ok(())
    }

    /// True once log evidence of incident `id` has been stored (possibly
    /// empty: the service's logs did not change).
    pub fn has_incident_logs(&self, id: IncidentId) -> Result<bool, StoreError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM incident_logs WHERE incident_id = ?1)",
            params![id],
            |row| row.get(0),
        )
        .map_err(|source| StoreError::Query {
            what: "incident log evidence",
            source,
        })
    }
}

fn incident_exists(conn: &Connection, id: IncidentId) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM incidents WHERE id = ?1)",
        params![id],
        |row| row.get(0),
    )
    .map_err(|source| StoreError::Query {
        what: "incident",
        source,
    })
}

/// The log evidence of incident `id` (empty when none was stored or the
/// stored JSON is from an incompatible version, which is logged).
pub(super) fn load_incident_logs(
    conn: &Connection,
    id: IncidentId,
) -> Result<Vec<LogTemplateChange>, StoreError> {
    let detail: Option<String> = conn
        .query_row(
            "SELECT detail FROM incident_logs WHERE incident_id = ?1",
            params![id],
            |row| row.get(0),
        )
        .optional()
        .map_err(|source| StoreError::Query {
            what: "incident log evidence",
            source,
        })?;
    Ok(match detail {
        None => Vec::new(),
        Some(d) => serde_json::from_str(&d).unwrap_or_else(|error| {
            tracing::warn!(incident = id, error = %error, "Stored log evidence of an incident does not parse; it is left out.");
            Vec::new()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::window::TemplateUpdate;

    fn cart() -> StreamKey {
        StreamKey::new(Some("shop"), "cart")
    }

    fn window(bucket: i64, lines: u64, example: &str) -> WindowDelta {
        WindowDelta {
            templates: vec![TemplateUpdate {
                stream: cart(),
                id: TemplateId(7),
                text: "login failed <*>".into(),
                first_seen_ms: bucket + 5,
                last_seen_ms: bucket + 50,
                level: Some("error".into()),
                examples: vec![example.into()],
            }],
            counts: vec![BucketCount {
                stream: cart(),
                bucket_ms: bucket,
                template: TemplateId(7),
                lines,
                errors: lines,
            }],
            documents: lines,
        }
    }

    #[test]
    fn windows_add_up_with_their_checkpoint_and_examples_stay_bounded() {
        let store = Store::open_in_memory().expect("store");
        assert_eq!(store.log_checkpoint("es").expect("read"), None);
        for (i, bucket) in [0, 0, 60_000, 60_000, 60_000].into_iter().enumerate() {
            let cp = Checkpoint::starting_at(bucket + i as i64);
            store
                .commit_log_window("es", &cp, &window(bucket, 2, &format!("ex{i}")), -1, 0)
                .expect("commit");
        }
        let counts = store.log_counts(0, 120_000).expect("counts");
        let lines: Vec<(i64, u64)> = counts.iter().map(|c| (c.bucket_ms, c.lines)).collect();
        assert_eq!(lines, [(0, 4), (60_000, 6)]);
        assert_eq!(
            store.log_checkpoint("es").expect("read"),
            Some(Checkpoint::starting_at(60_004))
        );
        let templates = store.log_templates().expect("templates");
        assert_eq!(templates.len(), 1);
        assert_eq!(templates[0].first_seen_ms, 5);
        assert_eq!(templates[0].last_seen_ms, 60_050);
        assert_eq!(templates[0].examples, ["ex4", "ex3", "ex2"]);
        assert_eq!(
            store.log_first_seen(0, 60_000).expect("first seen"),
            [(cart(), 5)]
        );
        // Retention: buckets before 60_000 go; the newest template stays.
        store
            .commit_log_window(
                "es",
                &Checkpoint::starting_at(1),
                &WindowDelta::default(),
                60_000,
                0,
            )
            .expect("prune");
        assert_eq!(store.log_counts(0, 120_000).expect("counts").len(), 1);
        assert_eq!(store.log_templates().expect("templates").len(), 1);
    }

    fn change(after: u64) -> LogTemplateChange {
        LogTemplateChange {
            service: "cart".into(),
            template_id: 7,
            template: "login failed <*>".into(),
            level: Some("error".into()),
            change: crate::incident::LogChangeKind::New,
            before: 0,
            after,
            window_ms: 300_000,
            first_seen: Some(5),
            examples: vec!["login failed password=<redacted>".into()],
        }
    }

    #[test]
    fn incident_log_evidence_is_written_once_and_survives_incident_rewrites() {
        let store = Store::open_in_memory().expect("store");
        assert!(matches!(
            store.record_incident_logs(99, &[], 0),
            Err(StoreError::UnknownIncident { id: 99 })
        ));
        let mut incident = crate::incident::Incident {
            id: None,
            cluster: "c".into(),
            group: [("service".to_string(), "cart".to_string())].into(),
            state: crate::incident::IncidentState::Open,
            severity: crate::incident::Severity::Warning,
            opened_at: 600_000,
            last_anomaly_at: 600_000,
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
        let id = store.upsert_incident(&incident).expect("save");
        assert!(!store.has_incident_logs(id).expect("read"));
        store
            .record_incident_logs(id, &[change(40)], 1)
            .expect("record");
        store
            .record_incident_logs(id, &[change(99)], 2)
            .expect("a second record is a no-op");
        assert!(store.has_incident_logs(id).expect("read"));
        // The incident stage saves its own copy, which has no logs.
        incident.id = Some(id);
        incident.anomaly_count = 2;
        store.upsert_incident(&incident).expect("save again");
        let loaded = store.get_incident(id).expect("load").expect("exists");
        assert_eq!(loaded.anomaly_count, 2);
        assert_eq!(loaded.logs, [change(40)]);
        assert_eq!(store.open_incidents().expect("open")[0].logs, [change(40)]);
    }
}
