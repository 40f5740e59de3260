//! Store (being written).
use super::{Incident, IncidentId, IncidentState};
use crate::signal::TimestampMs;
/// Store.
#[derive(Clone)]
pub struct Store;
/// Error.
#[derive(Debug, thiserror::Error)]
#[error("store error")]
pub struct StoreError;
/// Filter.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter { /// s
 pub state: Option<IncidentState>, /// s
 pub service: Option<String>, /// s
 pub namespace: Option<String>, /// s
 pub since: Option<TimestampMs>, /// s
 pub until: Option<TimestampMs>, /// s
 pub limit: usize, /// s
 pub before_id: Option<IncidentId> }
/// Page.
#[derive(Debug, Clone)]
pub struct IncidentPage { /// s
 pub items: Vec<Incident>, /// s
 pub next_before_id: Option<IncidentId> }
