//! The embedded SQLite store: incidents, their timelines and poll cursors.
//!
//! One file, one connection behind a mutex. aiopsd writes a handful of rows
//! per minute and serves a few API reads, so a single connection is simpler
//! than a pool and never contends in practice; WAL mode lets the
//! `sqlite3` CLI read the file while the daemon runs.
//!
//! Layout (see [`MIGRATIONS`]):
//! - `incidents`: one row per incident, identified by `(group_key,
//!   opened_at)`. The columns the API filters on are kept as real,
//!   indexed columns; everything else (signals and their evidence, the
//!   group) is JSON in `detail`, so the evidence format can grow without a
//!   migration.
//! - `incident_events`: the timeline, one row per entry, inserted with
//!   `INSERT OR IGNORE` under a unique index so re-saving an incident never
//!   duplicates its history.
//! - `poll_cursors`: how far each signal has been read, so a restart
//!   resumes where the last run stopped instead of re-reading the backfill.
//!
//! The schema version lives in `PRAGMA user_version`; [`Store::open`]
//! applies the missing migrations in order and refuses a file written by a
//! newer aiopsd rather than guessing at a schema it does not know.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::{Incident, IncidentId, IncidentState, TimelineEntry};
use crate::signal::TimestampMs;

// The outbox and approval tables (migration 2): a child module so it can
// use the connection and the transaction helpers here.
#[path = "store_outbox.rs"]
mod outbox;

// Alerts received from Alertmanager (migration 3).
#[path = "store_alerts.rs"]
mod alerts;

// Silences and suppressions (migration 4).
#[path = "store_noise.rs"]
mod noise;

// Remediation: decisions, diagnoses and action execution (migration 5).
#[path = "store_remediation.rs"]
mod remediation;

// The log pipeline: checkpoint, templates, counts, evidence (migration 6).
#[path = "store_logs.rs"]
mod logs;
pub use noise::{AlertFilter, NewSilence};
pub use remediation::{ActionPlanRecord, Setting};

/// Schema migrations, applied in order; migration `i` brings the schema to
/// `user_version = i + 1`.
///
/// Never edit a migration that has shipped: append a new one. Each runs in
/// its own transaction together with the `user_version` bump, so a crash
/// mid-migration leaves the file at the previous version.
const MIGRATIONS: &[&str] = &[
    // 1: incidents, their timeline, poll cursors.
    r#"
    CREATE TABLE incidents (
        -- AUTOINCREMENT: ids appear in URLs and notifications, so an id must
        -- never be reused, even after the newest row is deleted.
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        group_key       TEXT    NOT NULL,
        cluster         TEXT    NOT NULL,
        state           TEXT    NOT NULL CHECK (state IN ('open', 'resolved')),
        severity        TEXT    NOT NULL CHECK (severity IN ('warning', 'critical')),
        service         TEXT,
        namespace       TEXT,
        opened_at       INTEGER NOT NULL,
        last_anomaly_at INTEGER NOT NULL,
        resolved_at     INTEGER,
        anomaly_count   INTEGER NOT NULL,
        detail          TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX incidents_identity ON incidents (group_key, opened_at);
    -- At most one open incident per group: the correlator's invariant,
    -- enforced where a bug would otherwise become permanent.
    CREATE UNIQUE INDEX incidents_one_open_per_group
        ON incidents (group_key) WHERE state = 'open';
    CREATE INDEX incidents_by_state     ON incidents (state, id);
    CREATE INDEX incidents_by_service   ON incidents (service, id);
    CREATE INDEX incidents_by_namespace ON incidents (namespace, id);
    CREATE INDEX incidents_by_opened_at ON incidents (opened_at);

    CREATE TABLE incident_events (
        incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
        at          INTEGER NOT NULL,
        kind        TEXT    NOT NULL,
        message     TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX incident_events_identity
        ON incident_events (incident_id, at, kind, message);

    CREATE TABLE poll_cursors (
        signal   TEXT    PRIMARY KEY,
        until_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: event outbox, per-incident event sequences, pending actions and
    // approval nonces (src/incident/store_outbox.rs, src/publish/).
    r#"
    -- Last event sequence number per incident: event ids are
    -- <cluster>:<incident id>:<seq>, so consumers can deduplicate.
    CREATE TABLE event_sequences (
        incident_id INTEGER PRIMARY KEY REFERENCES incidents (id) ON DELETE CASCADE,
        last_seq    INTEGER NOT NULL
    );
    -- The senders that take events from the outbox, their bound and their
    -- current depth (kept here so a bound check is one row, not a COUNT).
    CREATE TABLE outbox_sinks (
        sink       TEXT    PRIMARY KEY,
        max_events INTEGER NOT NULL,
        depth      INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    -- One row per event per sink, deleted once the sink's far side
    -- acknowledged it. AUTOINCREMENT: the id is the queue order and must
    -- never go back, even when the queue empties.
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        sink        TEXT    NOT NULL,
        event_id    TEXT    NOT NULL,
        incident_id INTEGER NOT NULL,
        kind        TEXT    NOT NULL,
        route       TEXT    NOT NULL,
        payload     TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        -- For senders that retry rows one by one (the webhook notifier);
        -- the MQTT sender resends whole windows and leaves them alone.
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT
    );
    CREATE UNIQUE INDEX outbox_identity ON outbox (sink, event_id);
    CREATE INDEX outbox_by_sink ON outbox (sink, id);

    -- Actions waiting for (or having had) a person's decision. `state` has
    -- no CHECK so remediation can add states without rebuilding the table;
    -- the code only writes known ones.
    CREATE TABLE pending_actions (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id  INTEGER NOT NULL REFERENCES incidents (id),
        description  TEXT    NOT NULL,
        detail       TEXT    NOT NULL,
        requested_at INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        state        TEXT    NOT NULL,
        decided_by   TEXT,
        reason       TEXT,
        decided_at   INTEGER,
        channel      TEXT
    );
    CREATE INDEX pending_actions_by_state ON pending_actions (state, id);
    CREATE INDEX pending_actions_by_incident ON pending_actions (incident_id);
    -- Nonces of signed approval messages already seen: a replay is refused.
    CREATE TABLE approval_nonces (
        nonce     TEXT    PRIMARY KEY,
        action_id INTEGER NOT NULL,
        seen_at   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX approval_nonces_by_age ON approval_nonces (seen_at);
    "#,
    // 3: alerts received from Alertmanager (src/incident/store_alerts.rs).
    r#"
    -- One row per firing episode of an alert: (fingerprint, starts_at) is
    -- the identity, so a repeated delivery finds its row instead of adding
    -- one. `processed` = 0 marks a change (new, or just resolved) not yet
    -- applied to incidents; it is set in the transaction that saves the
    -- incident, and rows still at 0 are replayed on start.
    CREATE TABLE alerts (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        fingerprint   TEXT    NOT NULL,
        starts_at     INTEGER NOT NULL,
        ends_at       INTEGER,
        status        TEXT    NOT NULL CHECK (status IN ('firing', 'resolved')),
        alertname     TEXT,
        labels        TEXT    NOT NULL,
        annotations   TEXT    NOT NULL,
        generator_url TEXT    NOT NULL,
        receiver      TEXT    NOT NULL,
        group_key     TEXT    NOT NULL,
        received_at   INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        processed     INTEGER NOT NULL DEFAULT 0 CHECK (processed IN (0, 1))
    );
    CREATE UNIQUE INDEX alerts_identity ON alerts (fingerprint, starts_at);
    CREATE INDEX alerts_unprocessed ON alerts (id) WHERE processed = 0;
    "#,
    // 4: silences and alert suppressions (src/incident/store_noise.rs).
    r#"
    -- Silences created through the API (config silences live in the
    -- config). Deleting one sets deleted_at: suppressions keep pointing at
    -- a row that says who silenced and why.
    CREATE TABLE silences (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        matchers    TEXT    NOT NULL,
        starts_at   INTEGER,
        ends_at     INTEGER,
        created_by  TEXT    NOT NULL,
        comment     TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        deleted_at  INTEGER
    );
    -- One row per suppressed alert episode: why it opened or joined no
    -- incident (reason `silence`, reference `config-0` / `api-3`).
    CREATE TABLE suppressions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id    INTEGER NOT NULL UNIQUE REFERENCES alerts (id),
        reason      TEXT    NOT NULL,
        reference   TEXT    NOT NULL,
        created_by  TEXT    NOT NULL,
        detail      TEXT    NOT NULL,
        at          INTEGER NOT NULL
    );
    "#,
    // 5: remediation (src/incident/store_remediation.rs). An action is one
    // row of `pending_actions` from decision to verification: the gate's
    // rule and plan, the pre-state written *before* the API call, then the
    // outcome. Decisions (refusals included) and diagnoses hang off the
    // incident in their own tables so the incident stage, which rewrites
    // an incident's `detail`, can never erase them.
    r#"
    ALTER TABLE pending_actions ADD COLUMN rule         TEXT;
    ALTER TABLE pending_actions ADD COLUMN mode         TEXT;
    ALTER TABLE pending_actions ADD COLUMN proposed_by  TEXT;
    ALTER TABLE pending_actions ADD COLUMN plan         TEXT;
    ALTER TABLE pending_actions ADD COLUMN pre_state    TEXT;
    ALTER TABLE pending_actions ADD COLUMN exec_state   TEXT;
    ALTER TABLE pending_actions ADD COLUMN exec_message TEXT;
    ALTER TABLE pending_actions ADD COLUMN executed_at  INTEGER;
    ALTER TABLE pending_actions ADD COLUMN verify_from  INTEGER;
    ALTER TABLE pending_actions ADD COLUMN finished_at  INTEGER;
    ALTER TABLE pending_actions ADD COLUMN target       TEXT;
    ALTER TABLE pending_actions ADD COLUMN pods_touched INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE pending_actions ADD COLUMN revert_requested_by TEXT;
    ALTER TABLE pending_actions ADD COLUMN revert_reason       TEXT;
    CREATE INDEX pending_actions_by_exec ON pending_actions (exec_state, id);
    CREATE INDEX pending_actions_by_target ON pending_actions (target, requested_at);

    CREATE TABLE incident_decisions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        at          INTEGER NOT NULL,
        detail      TEXT    NOT NULL
    );
    CREATE INDEX incident_decisions_by_incident ON incident_decisions (incident_id, id);

    CREATE TABLE incident_diagnoses (
        incident_id INTEGER PRIMARY KEY REFERENCES incidents (id),
        at          INTEGER NOT NULL,
        detail      TEXT    NOT NULL
    );

    -- People's verdicts on incidents (noise / expected / real), newest
    -- last; a later verdict supersedes an earlier one.
    CREATE TABLE incident_verdicts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        verdict     TEXT    NOT NULL,
        by_whom     TEXT    NOT NULL,
        reason      TEXT    NOT NULL,
        at          INTEGER NOT NULL
    );
    CREATE INDEX incident_verdicts_by_incident ON incident_verdicts (incident_id, id);

    -- Operator switches that must survive a restart (the kill switch).
    CREATE TABLE settings (
        name       TEXT    PRIMARY KEY,
        value      TEXT    NOT NULL,
        changed_by TEXT    NOT NULL,
        reason     TEXT    NOT NULL,
        changed_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 6: the log pipeline: checkpoint, templates, per-bucket counts and
    // incidents' log evidence (src/incident/store_logs.rs).
    logs::LOGS_MIGRATION,
    // 7: verdicts that feed suppression, anomaly and learned suppressions
    // (src/incident/store_noise.rs).
    noise::NOISE_MIGRATION,
];

/// How long a statement waits for a lock held by another connection (the
/// `sqlite3` CLI, a backup) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page size when the caller asks for `limit: 0`.
const DEFAULT_PAGE: usize = 50;

/// Largest page the store returns, whatever the caller asks for.
const MAX_PAGE: usize = 500;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the store at {}", path.display())]
    Open {
        /// The file that was asked for (`:memory:` for tests).
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A connection setting (journal mode, synchronous, busy timeout,
    /// foreign keys) could not be applied.
    #[error("cannot configure the store connection ({setting})")]
    Configure {
        /// The setting that failed.
        setting: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// Reading the schema version or applying a migration failed.
    #[error("cannot migrate the store schema to version {version}")]
    Migrate {
        /// The version the failed migration would have reached.
        version: usize,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer aiopsd; opening it could corrupt it.
    #[error(
        "the store has schema version {found} but this aiopsd knows only up to {known}; \
         upgrade aiopsd or point store.path at another file"
    )]
    NewerSchema {
        /// `user_version` found in the file.
        found: i64,
        /// The newest version this build can migrate to.
        known: usize,
    },
    /// An incident could not be turned into JSON for the `detail` column.
    #[error("cannot encode incident {group_key} as JSON")]
    Encode {
        /// The incident's group key.
        group_key: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// A stored `detail` column is not a valid incident.
    #[error("stored incident {id} is not valid JSON for this version")]
    Decode {
        /// The row that failed.
        id: IncidentId,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// Saving would make a second open incident for the same group.
    #[error("another incident is already open for group {group_key}")]
    AlreadyOpen {
        /// The group that already has an open incident.
        group_key: String,
    },
    /// Writing rows failed.
    #[error("cannot write {what} to the store")]
    Write {
        /// What was being written, e.g. `incident`, `poll cursor`.
        what: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// Reading rows failed.
    #[error("cannot read {what} from the store")]
    Query {
        /// What was being read, e.g. `incident list`.
        what: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// An action was requested for an incident the store does not have.
    #[error("there is no incident {id}")]
    UnknownIncident {
        /// The id asked for.
        id: IncidentId,
    },
    /// An alert's labels or annotations could not be encoded, or a stored
    /// alert row could not be read back.
    #[error("alert {fingerprint} has data that cannot be stored or read")]
    AlertData {
        /// The alert's fingerprint.
        fingerprint: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// Checkpointing the write-ahead log into the main file failed.
    #[error("cannot checkpoint the store's write-ahead log")]
    Checkpoint {
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Whether trying the same call again may succeed.
    ///
    /// SQLite failures (a locked file, a full disk, an I/O error) can clear
    /// up; a second open incident for a group, a value that cannot be
    /// encoded, a row that cannot be decoded or a newer schema will fail
    /// the same way every time, so a retry loop must give up on them.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Open { .. }
            | StoreError::Configure { .. }
            | StoreError::Migrate { .. }
            | StoreError::Write { .. }
            | StoreError::Query { .. }
            | StoreError::Checkpoint { .. } => true,
            StoreError::NewerSchema { .. }
            | StoreError::Encode { .. }
            | StoreError::Decode { .. }
            | StoreError::AlreadyOpen { .. }
            | StoreError::AlertData { .. }
            | StoreError::UnknownIncident { .. } => false,
        }
    }
}

/// Which incidents [`Store::list_incidents`] returns.
///
/// Every filter is optional; `Default` lists everything, newest first, 50
/// at a time.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only incidents in this state.
    pub state: Option<IncidentState>,
    /// Only incidents whose group has this `service` label.
    pub service: Option<String>,
    /// Only incidents whose group has this `namespace` label.
    pub namespace: Option<String>,
    /// Only incidents opened at or after this data time.
    pub since: Option<TimestampMs>,
    /// Only incidents opened at or before this data time.
    pub until: Option<TimestampMs>,
    /// Page size; clamped to `1..=500`, and `0` means 50.
    pub limit: usize,
    /// Keyset pagination: only incidents with an id below this one. Pass
    /// the previous page's [`IncidentPage::next_before_id`].
    pub before_id: Option<IncidentId>,
}

impl IncidentFilter {
    /// The page size actually used for this filter.
    fn page_size(&self) -> usize {
        match self.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        }
    }
}

/// One page of [`Store::list_incidents`].
#[derive(Debug, Clone)]
pub struct IncidentPage {
    /// Incidents, newest id first.
    pub items: Vec<Incident>,
    /// When more incidents match, the `before_id` that fetches the next
    /// page; `None` on the last page.
    pub next_before_id: Option<IncidentId>,
}

/// Handle on the SQLite store; cheap to clone, safe to share across tasks.
///
/// Every method blocks on SQLite; async callers with many requests should
/// run them on `spawn_blocking`.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn)
    }

    /// A fresh private in-memory store, for tests; nothing survives the process.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        Self::init(conn)
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        configure(&conn)?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Locks the connection.
    ///
    /// A poisoned mutex only means another thread panicked while holding
    /// it; SQLite itself is consistent (an unfinished transaction rolled
    /// back when its guard dropped), so carrying on beats taking the whole
    /// daemon down with it.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                tracing::warn!(
                    "A thread panicked while using the store; continuing with the connection."
                );
                self.conn.clear_poison();
                poisoned.into_inner()
            }
        }
    }

    /// Saves an incident, inserting it or updating the row with the same
    /// `(group_key, opened_at)`, and appends timeline entries not stored
    /// yet. Returns the incident's id.
    ///
    /// Saving the same incident twice is harmless: the row is updated in
    /// place and no timeline entry is duplicated. Saving a second *open*
    /// incident for a group that already has one fails with
    /// [`StoreError::AlreadyOpen`].
    pub fn upsert_incident(&self, incident: &Incident) -> Result<IncidentId, StoreError> {
        let mut conn = self.lock();
        let write = |source| StoreError::Write {
            what: "incident",
            source,
        };
        let tx = conn.transaction().map_err(write)?;
        let (id, _, _) = write_incident(&tx, incident)?;
        tx.commit().map_err(write)?;
        Ok(id)
    }

    /// The incident with this id, if there is one.
    pub fn get_incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        let conn = self.lock();
        let query = |source| StoreError::Query {
            what: "incident",
            source,
        };
        let detail: Option<String> = conn
            .query_row(
                "SELECT detail FROM incidents WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(query)?;
        match detail {
            Some(detail) => Ok(Some(load_incident(&conn, id, &detail)?)),
            None => Ok(None),
        }
    }

    /// Every open incident, oldest first; the daemon resumes them at start.
    pub fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let conn = self.lock();
        let rows = select_rows(
            &conn,
            "open incidents",
            "SELECT id, detail FROM incidents WHERE state = 'open' ORDER BY id",
            Vec::new(),
        )?;
        rows.into_iter()
            .map(|(id, detail)| load_incident(&conn, id, &detail))
            .collect()
    }

    /// A page of incidents matching `filter`, newest id first.
    pub fn list_incidents(&self, filter: &IncidentFilter) -> Result<IncidentPage, StoreError> {
        use rusqlite::types::Value;

        let mut clauses: Vec<&str> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(state) = filter.state {
            clauses.push("state = ?");
            args.push(Value::Text(state.as_str().to_string()));
        }
        if let Some(service) = &filter.service {
            clauses.push("service = ?");
            args.push(Value::Text(service.clone()));
        }
        if let Some(namespace) = &filter.namespace {
            clauses.push("namespace = ?");
            args.push(Value::Text(namespace.clone()));
        }
        if let Some(since) = filter.since {
            clauses.push("opened_at >= ?");
            args.push(Value::Integer(since));
        }
        if let Some(until) = filter.until {
            clauses.push("opened_at <= ?");
            args.push(Value::Integer(until));
        }
        if let Some(before) = filter.before_id {
            clauses.push("id < ?");
            args.push(Value::Integer(before));
        }
        let page = filter.page_size();
        // One row more than the page tells whether another page exists
        // without a COUNT over the whole table.
        args.push(Value::Integer(i64::try_from(page + 1).unwrap_or(i64::MAX)));
        let where_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        // Only fixed SQL fragments are interpolated; every value is bound.
        let sql = format!("SELECT id, detail FROM incidents {where_sql} ORDER BY id DESC LIMIT ?");

        let conn = self.lock();
        let mut rows = select_rows(&conn, "incident list", &sql, args)?;
        let more = rows.len() > page;
        rows.truncate(page);
        let items = rows
            .into_iter()
            .map(|(id, detail)| load_incident(&conn, id, &detail))
            .collect::<Result<Vec<_>, _>>()?;
        let next_before_id = if more {
            items.last().and_then(|i| i.id)
        } else {
            None
        };
        Ok(IncidentPage {
            items,
            next_before_id,
        })
    }

    /// How far `signal` has been read, if it ever was.
    pub fn cursor(&self, signal: &str) -> Result<Option<TimestampMs>, StoreError> {
        self.lock()
            .query_row(
                "SELECT until_ms FROM poll_cursors WHERE signal = ?1",
                params![signal],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| StoreError::Query {
                what: "poll cursor",
                source,
            })
    }

    /// Every signal's cursor: how far each has been read (data time). The
    /// remediation stage's clock and verification read them.
    pub fn cursors(&self) -> Result<Vec<(String, TimestampMs)>, StoreError> {
        let query = |source| StoreError::Query {
            what: "cursors",
            source,
        };
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT signal, until_ms FROM poll_cursors ORDER BY signal")
            .map_err(query)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(query)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(query)
    }

    /// Records that `signal` has been read up to `until`.
    ///
    /// The cursor only moves forward: a late or replayed batch with an
    /// older watermark never makes the next start re-read data.
    pub fn set_cursor(&self, signal: &str, until: TimestampMs) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT INTO poll_cursors (signal, until_ms) VALUES (?1, ?2)
                 ON CONFLICT (signal) DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)",
                params![signal, until],
            )
            .map(drop)
            .map_err(|source| StoreError::Write {
                what: "poll cursor",
                source,
            })
    }

    /// Folds the write-ahead log into the main file and truncates it;
    /// called on shutdown so the file can be copied on its own.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let (busy, log_frames, checkpointed): (i64, i64, i64) = self
            .lock()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(|source| StoreError::Checkpoint { source })?;
        if busy != 0 {
            // Another connection (a `sqlite3` shell) holds a read lock; the
            // data is safe in the WAL and the next open replays it.
            tracing::warn!(
                log_frames,
                checkpointed,
                "The store checkpoint could not complete because another reader holds the file; \
                 the write-ahead log is kept."
            );
        }
        Ok(())
    }

    /// Checks that the store answers a query, for /readyz.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.lock()
            .query_row("SELECT count(*) FROM poll_cursors", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(drop)
            .map_err(|source| StoreError::Query {
                what: "ping",
                source,
            })
    }
}

/// Upserts an incident row and appends its timeline entries not stored
/// yet, inside the caller's transaction. Returns the id and the indices
/// (into `incident.timeline`) of the entries that were new, from which the
/// outbox derives the incident's events (src/incident/store_outbox.rs).
///
/// An incident without an id whose `(group_key, opened_at)` is already
/// stored (a crash replay re-opening what was saved, or a new episode that
/// starts at the very same instant as a resolved one) is **merged** into
/// the stored row rather than overwriting its evidence; the merged
/// incident is returned so the caller's copy (the correlator's) carries
/// everything from then on.
fn write_incident(
    tx: &rusqlite::Transaction<'_>,
    incident: &Incident,
) -> Result<(IncidentId, Vec<usize>, Option<Incident>), StoreError> {
    let group_key = incident.group_key();
    let merged = match incident.id {
        Some(_) => None,
        None => stored_with_identity(tx, &group_key, incident.opened_at)?.map(|mut stored| {
            stored.merge_from(incident);
            stored
        }),
    };
    let incident = merged.as_ref().unwrap_or(incident);
    let detail = encode_detail(incident, &group_key)?;
    let write = |source| StoreError::Write {
        what: "incident",
        source,
    };
    let mut new_entries = Vec::new();
    // A stored incident is updated by id: an INSERT .. ON CONFLICT would
    // consume a value of the AUTOINCREMENT sequence on every save, and ids
    // appear in URLs and notifications. Its start may move earlier (an
    // anomaly from before an alert-opened incident's start joins it), so
    // the row is found by id and group, and `opened_at` follows.
    let known = incident.id.or(merged.as_ref().and_then(|m| m.id));
    let updated = match known {
        Some(id) => tx
            .execute(
                "UPDATE incidents SET cluster = ?2, state = ?3, severity = ?4, service = ?5,
                        namespace = ?6, last_anomaly_at = ?7, resolved_at = ?8,
                        anomaly_count = ?9, detail = ?10, opened_at = ?12
                  WHERE id = ?1 AND group_key = ?11",
                params![
                    id,
                    incident.cluster,
                    incident.state.as_str(),
                    incident.severity.as_str(),
                    incident.group_label("service"),
                    incident.group_label("namespace"),
                    incident.last_anomaly_at,
                    incident.resolved_at,
                    i64::try_from(incident.anomaly_count).unwrap_or(i64::MAX),
                    detail,
                    group_key,
                    incident.opened_at,
                ],
            )
            .map_err(|source| {
                if is_unique_violation(&source) {
                    StoreError::AlreadyOpen {
                        group_key: group_key.clone(),
                    }
                } else {
                    write(source)
                }
            })?
            .eq(&1)
            .then_some(id),
        None => None,
    };
    let id: IncidentId = match updated {
        Some(id) => id,
        None => tx
            .query_row(
                "INSERT INTO incidents (group_key, cluster, state, severity, service, namespace,
                                    opened_at, last_anomaly_at, resolved_at, anomaly_count, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (group_key, opened_at) DO UPDATE SET
                 cluster = excluded.cluster,
                 state = excluded.state,
                 severity = excluded.severity,
                 service = excluded.service,
                 namespace = excluded.namespace,
                 last_anomaly_at = excluded.last_anomaly_at,
                 resolved_at = excluded.resolved_at,
                 anomaly_count = excluded.anomaly_count,
                 detail = excluded.detail
             RETURNING id",
                params![
                    group_key,
                    incident.cluster,
                    incident.state.as_str(),
                    incident.severity.as_str(),
                    incident.group_label("service"),
                    incident.group_label("namespace"),
                    incident.opened_at,
                    incident.last_anomaly_at,
                    incident.resolved_at,
                    // SQLite integers are i64; a count past i64::MAX is not a real case.
                    i64::try_from(incident.anomaly_count).unwrap_or(i64::MAX),
                    detail,
                ],
                |row| row.get(0),
            )
            .map_err(|source| {
                if is_unique_violation(&source) {
                    StoreError::AlreadyOpen {
                        group_key: group_key.clone(),
                    }
                } else {
                    write(source)
                }
            })?,
    };
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO incident_events (incident_id, at, kind, message)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(write)?;
        for (index, entry) in incident.timeline.iter().enumerate() {
            let inserted = insert
                .execute(params![id, entry.at, entry.kind, entry.message])
                .map_err(write)?;
            if inserted > 0 {
                new_entries.push(index);
            }
        }
    }
    let merged = merged.map(|mut m| {
        m.id = Some(id);
        m
    });
    Ok((id, new_entries, merged))
}

/// The stored incident with this identity, if any.
fn stored_with_identity(
    tx: &rusqlite::Transaction<'_>,
    group_key: &str,
    opened_at: TimestampMs,
) -> Result<Option<Incident>, StoreError> {
    let row: Option<(IncidentId, String)> = tx
        .query_row(
            "SELECT id, detail FROM incidents WHERE group_key = ?1 AND opened_at = ?2",
            params![group_key, opened_at],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(|source| StoreError::Query {
            what: "incident by identity",
            source,
        })?;
    row.map(|(id, detail)| load_incident(tx, id, &detail))
        .transpose()
}

/// Applies the per-connection settings.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    let fail = |setting| move |source| StoreError::Configure { setting, source };
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(fail("busy_timeout"))?;
    // In-memory databases answer `memory`; anything else for a file means
    // WAL is unavailable (e.g. a network filesystem) and writers will block
    // readers, which is slower but still correct.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(fail("journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        tracing::warn!(
            journal_mode = %mode,
            "The store could not switch to WAL mode; API reads will wait for writes."
        );
    }
    // NORMAL is durable across application crashes in WAL mode; only a
    // power loss can drop the last transactions, which the next poll redoes.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail("synchronous"))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(fail("foreign_keys"))?;
    Ok(())
}

/// Brings the schema to the newest version, one transaction per migration.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len();
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| StoreError::Migrate { version: 0, source })?;
    // A negative user_version was not written by aiopsd; treat it as
    // "unknown and newer" rather than running migrations over it.
    let current = match usize::try_from(found) {
        Ok(v) if v <= known => v,
        _ => return Err(StoreError::NewerSchema { found, known }),
    };
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        let fail = |source| StoreError::Migrate { version, source };
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(version).unwrap_or(i64::MAX),
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::info!(version, "Migrated the store schema.");
    }
    Ok(())
}

/// The JSON kept in `detail`: the incident without its id (the row's key)
/// and timeline (kept in `incident_events`).
fn encode_detail(incident: &Incident, group_key: &str) -> Result<String, StoreError> {
    let mut detail = incident.clone();
    detail.id = None;
    detail.timeline = Vec::new();
    // Owned by remediation's own tables, attached on load.
    detail.diagnosis = None;
    detail.decisions = Vec::new();
    // Owned by `incident_logs`, attached on load (store_logs.rs).
    detail.logs = Vec::new();
    // serde_json writes NaN and ±Inf as `null`, which then fails to read
    // back as f64: one such value would make the incident — and every list
    // page containing it — unreadable forever. Samples are finite by
    // contract, but a detector edge case must not brick the store, so
    // clamp here and say so.
    if sanitize_floats(&mut detail) {
        tracing::warn!(
            group = group_key,
            "An incident carried non-finite numbers; they were stored as 0 or ±f64::MAX."
        );
    }
    serde_json::to_string(&detail).map_err(|source| StoreError::Encode {
        group_key: group_key.to_string(),
        source,
    })
}

/// Replaces non-finite floats with finite stand-ins; true if any changed.
fn sanitize_floats(incident: &mut Incident) -> bool {
    fn fix(x: &mut f64) -> bool {
        if x.is_finite() {
            return false;
        }
        *x = if x.is_nan() {
            0.0
        } else if *x > 0.0 {
            f64::MAX
        } else {
            f64::MIN
        };
        true
    }
    let mut changed = false;
    for s in &mut incident.signals {
        for x in [
            &mut s.peak.value,
            &mut s.peak.expected,
            &mut s.peak.spread,
            &mut s.peak.score,
        ] {
            changed |= fix(x);
        }
        for sample in &mut s.samples {
            changed |= fix(&mut sample.v);
        }
    }
    changed
}

/// Runs a `SELECT id, detail` query and collects its rows.
fn select_rows(
    conn: &Connection,
    what: &'static str,
    sql: &str,
    args: Vec<rusqlite::types::Value>,
) -> Result<Vec<(IncidentId, String)>, StoreError> {
    let query = |source| StoreError::Query { what, source };
    let mut stmt = conn.prepare_cached(sql).map_err(query)?;
    let rows = stmt
        .query_map(params_from_iter(args), |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(query)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(query)
}

/// Decodes a row's `detail` and attaches its id and timeline.
fn load_incident(conn: &Connection, id: IncidentId, detail: &str) -> Result<Incident, StoreError> {
    let mut incident: Incident =
        serde_json::from_str(detail).map_err(|source| StoreError::Decode { id, source })?;
    incident.id = Some(id);
    incident.timeline = load_timeline(conn, id)?;
    incident.diagnosis = remediation::load_diagnosis(conn, id)?;
    incident.decisions = remediation::load_decisions(conn, id)?;
    incident.logs = logs::load_incident_logs(conn, id)?;
    Ok(incident)
}

/// The timeline of one incident, in the order it happened (ties in insert
/// order).
fn load_timeline(conn: &Connection, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError> {
    let query = |source| StoreError::Query {
        what: "incident timeline",
        source,
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT at, kind, message FROM incident_events
             WHERE incident_id = ?1 ORDER BY at, rowid",
        )
        .map_err(query)?;
    let rows = stmt
        .query_map(params![id], |row| {
            Ok(TimelineEntry {
                at: row.get(0)?,
                kind: row.get(1)?,
                message: row.get(2)?,
            })
        })
        .map_err(query)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(query)
}

/// True for a UNIQUE constraint failure. On `incidents`, the only unique
/// constraint the upsert does not resolve itself is one-open-per-group.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::{Peak, Severity, SignalEvidence};
    use crate::signal::{Sample, SeriesKey};

    const T0: TimestampMs = 1_700_000_000_000;

    fn incident(service: &str, namespace: &str, opened_at: TimestampMs) -> Incident {
        let group: BTreeMap<String, String> = [
            ("namespace".to_string(), namespace.to_string()),
            ("service".to_string(), service.to_string()),
        ]
        .into_iter()
        .collect();
        let series = SeriesKey::new("error_ratio", group.clone());
        Incident {
            id: None,
            cluster: "test".into(),
            group,
            state: IncidentState::Open,
            severity: Severity::Warning,
            opened_at,
            last_anomaly_at: opened_at + 60_000,
            resolved_at: None,
            anomaly_count: 3,
            signals: vec![SignalEvidence {
                series,
                first_at: opened_at,
                last_at: opened_at + 60_000,
                anomaly_count: 3,
                peak: Peak {
                    t: opened_at + 30_000,
                    value: 0.25,
                    expected: 0.5,
                    spread: 0.125,
                    score: 6.5,
                },
                samples: vec![
                    Sample {
                        t: opened_at - 30_000,
                        v: 0.5,
                    },
                    Sample {
                        t: opened_at,
                        v: 1.5,
                    },
                    Sample {
                        t: opened_at + 30_000,
                        v: 2.0,
                    },
                ],
                anomalous_at: vec![opened_at, opened_at + 30_000],
            }],
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![TimelineEntry {
                at: opened_at,
                kind: "opened".into(),
                message: format!("{service} error_ratio is anomalous."),
            }],
        }
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store
            .lock()
            .query_row(sql, [], |row| row.get(0))
            .expect("count query")
    }

    #[test]
    fn full_incident_roundtrips() {
        let store = Store::open_in_memory().expect("open");
        let mut inc = incident("cart", "shop", T0);
        inc.severity = Severity::Critical;
        inc.timeline.push(TimelineEntry {
            at: T0 + 10_000,
            kind: "severity_raised".into(),
            message: "Severity raised to critical.".into(),
        });
        let id = store.upsert_incident(&inc).expect("save");
        let loaded = store.get_incident(id).expect("read").expect("found");
        inc.id = Some(id);
        assert_eq!(loaded, inc);
        assert!(store.get_incident(id + 1).expect("read").is_none());
    }

    #[test]
    fn saving_twice_updates_in_place_without_duplicate_events() {
        let store = Store::open_in_memory().expect("open");
        let mut inc = incident("cart", "shop", T0);
        let id = store.upsert_incident(&inc).expect("first save");
        assert_eq!(store.upsert_incident(&inc).expect("same again"), id);

        inc.id = Some(id);
        inc.state = IncidentState::Resolved;
        inc.resolved_at = Some(T0 + 600_000);
        inc.timeline.push(TimelineEntry {
            at: T0 + 600_000,
            kind: "resolved".into(),
            message: "All signals normal.".into(),
        });
        assert_eq!(store.upsert_incident(&inc).expect("resolve"), id);
        assert_eq!(store.upsert_incident(&inc).expect("resolve again"), id);

        assert_eq!(count(&store, "SELECT count(*) FROM incidents"), 1);
        assert_eq!(count(&store, "SELECT count(*) FROM incident_events"), 2);
        let loaded = store.get_incident(id).expect("read").expect("found");
        assert_eq!(loaded.state, IncidentState::Resolved);
        let kinds: Vec<&str> = loaded.timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["opened", "resolved"]);
        assert!(store.open_incidents().expect("open list").is_empty());
    }

    #[test]
    fn a_new_incident_with_a_stored_identity_merges_instead_of_overwriting() {
        let store = Store::open_in_memory().expect("open");
        // A resolved incident with one signal...
        let mut first = incident("cart", "shop", T0);
        first.state = IncidentState::Resolved;
        first.resolved_at = Some(T0 + 600_000);
        let id = store.upsert_incident(&first).expect("save resolved");

        // ...and a new one (no id yet) for the same group at the same
        // instant, with another signal and a higher severity.
        let mut second = incident("cart", "shop", T0);
        second.signals[0].series = SeriesKey::new("latency_p99", second.group.clone());
        second.severity = Severity::Critical;
        let saved = store
            .save_incident_with_events(&second, crate::incident::UpdateKind::Opened, T0)
            .expect("save new");
        assert_eq!(saved.id, id, "same identity, same row");
        let merged = saved
            .merged
            .expect("the caller is handed the merged incident");
        assert_eq!(merged.id, Some(id));

        let loaded = store.get_incident(id).expect("read").expect("found");
        let names: Vec<&str> = loaded
            .signals
            .iter()
            .map(|s| s.series.signal.as_str())
            .collect();
        assert_eq!(names, ["error_ratio", "latency_p99"], "no evidence lost");
        assert_eq!(loaded.state, IncidentState::Open);
        assert_eq!(loaded.resolved_at, None);
        assert_eq!(loaded.severity, Severity::Critical);
        assert_eq!(merged.signals, loaded.signals);
    }

    #[test]
    fn replaying_the_same_incident_changes_nothing() {
        let store = Store::open_in_memory().expect("open");
        let inc = incident("cart", "shop", T0);
        let id = store.upsert_incident(&inc).expect("save");
        let before = store.get_incident(id).expect("read").expect("found");
        let saved = store
            .save_incident_with_events(&inc, crate::incident::UpdateKind::Opened, T0)
            .expect("replay");
        assert_eq!(saved.id, id);
        assert_eq!(store.get_incident(id).expect("read"), Some(before));
        assert_eq!(count(&store, "SELECT count(*) FROM incident_events"), 1);
    }

    #[test]
    fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aiopsd.db");
        let inc = incident("cart", "shop", T0);
        let id = {
            let store = Store::open(&path).expect("open");
            store.set_cursor("error_ratio", T0).expect("cursor");
            let id = store.upsert_incident(&inc).expect("save");
            store.checkpoint().expect("checkpoint");
            id
        };
        let store = Store::open(&path).expect("reopen");
        let open = store.open_incidents().expect("open incidents");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, Some(id));
        assert_eq!(open[0].timeline, inc.timeline);
        assert_eq!(store.cursor("error_ratio").expect("cursor"), Some(T0));
        store.ping().expect("ping");
    }

    #[test]
    fn filters_and_keyset_pagination() {
        let store = Store::open_in_memory().expect("open");
        // Seven incidents, one minute apart; cart ones are resolved so the
        // one-open-per-group rule allows several.
        let mut ids = Vec::new();
        for i in 0..7 {
            let (service, ns) = if i % 2 == 0 {
                ("cart", "shop")
            } else {
                ("auth", "iam")
            };
            let mut inc = incident(service, ns, T0 + i * 60_000);
            if service == "cart" || i < 5 {
                inc.state = IncidentState::Resolved;
                inc.resolved_at = Some(inc.last_anomaly_at + 1);
            }
            ids.push(store.upsert_incident(&inc).expect("save"));
        }
        let ids_of = |page: &IncidentPage| -> Vec<IncidentId> {
            page.items.iter().filter_map(|i| i.id).collect()
        };

        let all = store
            .list_incidents(&IncidentFilter::default())
            .expect("list");
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(ids_of(&all), newest_first);
        assert_eq!(all.next_before_id, None);

        let mut filter = IncidentFilter {
            limit: 3,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.list_incidents(&filter).expect("page");
            assert!(page.items.len() <= 3);
            seen.extend(ids_of(&page));
            match page.next_before_id {
                Some(next) => filter.before_id = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, newest_first);

        let open = store
            .list_incidents(&IncidentFilter {
                state: Some(IncidentState::Open),
                ..Default::default()
            })
            .expect("open");
        assert_eq!(ids_of(&open), [ids[5]]);

        let cart = store
            .list_incidents(&IncidentFilter {
                service: Some("cart".into()),
                ..Default::default()
            })
            .expect("cart");
        assert_eq!(ids_of(&cart), [ids[6], ids[4], ids[2], ids[0]]);

        let iam = store
            .list_incidents(&IncidentFilter {
                namespace: Some("iam".into()),
                since: Some(T0 + 60_000),
                until: Some(T0 + 3 * 60_000),
                ..Default::default()
            })
            .expect("iam window");
        assert_eq!(ids_of(&iam), [ids[3], ids[1]]);

        let none = store
            .list_incidents(&IncidentFilter {
                service: Some("cart' OR 1=1 --".into()),
                ..Default::default()
            })
            .expect("hostile value is just a value");
        assert!(none.items.is_empty());
    }

    #[test]
    fn page_size_is_clamped() {
        let f = |limit| IncidentFilter {
            limit,
            ..Default::default()
        };
        assert_eq!(f(0).page_size(), 50);
        assert_eq!(f(1).page_size(), 1);
        assert_eq!(f(10_000).page_size(), 500);
    }

    #[test]
    fn cursor_only_moves_forward() {
        let store = Store::open_in_memory().expect("open");
        assert_eq!(store.cursor("cpu").expect("read"), None);
        store.set_cursor("cpu", T0).expect("set");
        store
            .set_cursor("cpu", T0 - 1_000)
            .expect("older is ignored");
        assert_eq!(store.cursor("cpu").expect("read"), Some(T0));
        store.set_cursor("cpu", T0 + 1_000).expect("newer");
        assert_eq!(store.cursor("cpu").expect("read"), Some(T0 + 1_000));
        assert_eq!(store.cursor("other").expect("read"), None);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("future.db");
        {
            let conn = Connection::open(&path).expect("raw open");
            conn.pragma_update(None, "user_version", 99)
                .expect("set version");
        }
        match Store::open(&path) {
            Err(StoreError::NewerSchema { found, known }) => {
                assert_eq!(found, 99);
                assert_eq!(known, MIGRATIONS.len());
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }

    #[test]
    fn reopening_does_not_rerun_migrations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aiopsd.db");
        drop(Store::open(&path).expect("first open"));
        let store = Store::open(&path).expect("second open");
        let version = count(&store, "PRAGMA user_version");
        assert_eq!(usize::try_from(version).ok(), Some(MIGRATIONS.len()));
    }

    #[test]
    fn only_one_open_incident_per_group() {
        let store = Store::open_in_memory().expect("open");
        let mut first = incident("cart", "shop", T0);
        store.upsert_incident(&first).expect("first");
        let second = incident("cart", "shop", T0 + 3_600_000);
        match store.upsert_incident(&second) {
            Err(StoreError::AlreadyOpen { group_key }) => {
                assert_eq!(group_key, "namespace=shop,service=cart");
            }
            Err(e) => panic!("expected AlreadyOpen, got {e:?}"),
            Ok(id) => panic!("a second open incident was saved as {id}"),
        }
        assert!(!StoreError::AlreadyOpen {
            group_key: String::new()
        }
        .is_retryable());
        // Once the first is resolved, a new one may open.
        first.state = IncidentState::Resolved;
        first.resolved_at = Some(T0 + 600_000);
        store.upsert_incident(&first).expect("resolve first");
        store.upsert_incident(&second).expect("second opens");
        // Other groups are independent.
        store
            .upsert_incident(&incident("auth", "shop", T0))
            .expect("other group");
        assert_eq!(store.open_incidents().expect("open").len(), 2);
    }

    #[test]
    fn an_incident_whose_start_moves_earlier_stays_one_row() {
        // An alert opens the incident; an anomaly from 90 s before the
        // alert's start joins it, so the correlator moves `opened_at`
        // earlier. Saving it must update the same row, not try a second
        // open incident for the group (which stopped the pipeline).
        let store = Store::open_in_memory().expect("open");
        let mut inc = incident("checkout", "demo", T0);
        let id = store.upsert_incident(&inc).expect("opened");
        inc.id = Some(id);
        inc.opened_at = T0 - 90_000;
        assert_eq!(store.upsert_incident(&inc).expect("updated"), id);
        let open = store.open_incidents().expect("open");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].opened_at, T0 - 90_000);
    }

    #[test]
    fn non_finite_numbers_do_not_make_incidents_unreadable() {
        let store = Store::open_in_memory().expect("open");
        let mut inc = incident("cart", "shop", T0);
        inc.signals[0].peak.score = f64::INFINITY;
        inc.signals[0].peak.spread = f64::NAN;
        let id = store.upsert_incident(&inc).expect("save");
        let loaded = store.get_incident(id).expect("read").expect("found");
        assert_eq!(loaded.signals[0].peak.score, f64::MAX);
        assert_eq!(loaded.signals[0].peak.spread, 0.0);
        assert_eq!(
            store
                .list_incidents(&IncidentFilter::default())
                .expect("list")
                .items
                .len(),
            1
        );
    }

    #[test]
    fn store_is_usable_after_a_panic_while_locked() {
        let store = Store::open_in_memory().expect("open");
        let clone = store.clone();
        let _ = std::thread::spawn(move || {
            let _guard = clone.lock();
            panic!("simulated panic while holding the store");
        })
        .join();
        store.ping().expect("store still works");
    }
}
