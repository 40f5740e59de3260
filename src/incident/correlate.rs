//! Correlation (being written).
use super::Incident;
/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind { /// new
 Opened, /// changed
 Updated, /// done
 Resolved }
/// An update.
#[derive(Debug, Clone)]
pub struct IncidentUpdate { /// kind
 pub kind: UpdateKind, /// snapshot
 pub incident: Incident }
/// Correlator.
#[derive(Debug, Default)]
pub struct Correlator;
