//! Bounded remediation: carry out what the policy gate allowed, verify it
//! helped, and revert or escalate when it did not.

pub mod plan;
pub mod record;
