//! The policy gate: deny by default; an action runs only when a rule in
//! `policies/*.yaml` allows it, within its bounds and limits
//! (docs/POLICY.md).
