//! Bounded remediation: carry out what the policy gate allowed, verify it
//! helped, and revert or escalate when it did not.

pub mod config;
pub mod gather;
pub mod kube;
pub mod plan;
pub mod record;
pub mod sim;
pub mod stage;
pub mod verify;
