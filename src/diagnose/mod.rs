//! Diagnosis: gather evidence for an incident, rank root-cause hypotheses
//! with a data-driven rule catalogue, and optionally ask an LLM for a
//! second opinion that can only propose, never act (docs/DIAGNOSIS.md).

pub mod bundle;
pub mod catalogue;
pub mod correlate;
pub mod diagnoser;
pub mod engine;
pub mod evidence;
pub mod hypothesis;
pub mod llm;
pub mod log_evidence;
pub mod render;

pub use hypothesis::{Diagnosis, Hypothesis, ProposedBy, Suggestion};
