//! Pending actions and their approval: the types the store keeps, and the
//! signed MQTT approval message.
//!
//! The policy gate (issue 9) *requests* an action with
//! [`Store::request_action`](crate::incident::Store::request_action); a
//! person decides it through `POST /api/v1/actions/{id}/approve|deny` or a
//! signed MQTT message on the approvals topic; the remediator then reads
//! the decision with [`Store::get_action`](crate::incident::Store::get_action).
//! Every request and decision is an event in the outbox, written in the
//! same transaction as the state change.
//!
//! ## The signed message
//!
//! ```json
//! {"action_id": 7, "decision": "approve", "by": "alice", "reason": "safe",
//!  "issued_at": 1700000000000, "nonce": "5f2c0e9b6a0d4e1f",
//!  "signature": "<64 hex digits>"}
//! ```
//!
//! `signature` is the lowercase hex HMAC-SHA256, keyed with
//! `approvals.secret`, of the [canonical string](canonical_string): the
//! lines `aiopsd.approval/v1`, cluster, action id, decision, by, reason,
//! issued_at (Unix milliseconds) and nonce, joined by `\n` with no trailing
//! newline. The cluster is signed so a message for one cluster cannot be
//! replayed on another that shares the secret; `issued_at` bounds a
//! message's life to `approvals.max_age`; the nonce, remembered in the
//! store, makes every message usable once.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::incident::IncidentId;
use crate::publish::event::ActionSnapshot;
use crate::publish::outbox::EnqueueReport;
use crate::signal::{format_ts, TimestampMs};

/// First line of the canonical string; names the signing scheme version.
pub const SIGNATURE_SCHEME: &str = "aiopsd.approval/v1";

/// Id of a pending action.
pub type ActionId = i64;

/// Where an action is in the approval flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Waiting for a decision.
    Pending,
    /// A person approved it.
    Approved,
    /// A person denied it.
    Denied,
    /// Nobody decided within `approvals.ttl`.
    Expired,
}

impl ActionState {
    /// The lowercase name used in the store, the API and events.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Approved => "approved",
            ActionState::Denied => "denied",
            ActionState::Expired => "expired",
        }
    }

    /// Parses a stored or queried name.
    pub fn parse(s: &str) -> Option<ActionState> {
        match s {
            "pending" => Some(ActionState::Pending),
            "approved" => Some(ActionState::Approved),
            "denied" => Some(ActionState::Denied),
            "expired" => Some(ActionState::Expired),
            _ => None,
        }
    }
}

/// Through which door a decision came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// `POST /api/v1/actions/{id}/approve|deny`.
    Api,
    /// A signed message on the approvals topic.
    Mqtt,
    /// The policy gate itself, for a rule in `auto` or `dry_run` mode.
    Policy,
}

impl Channel {
    /// The lowercase name used in the store, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Api => "api",
            Channel::Mqtt => "mqtt",
            Channel::Policy => "policy",
        }
    }
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let the action go ahead.
    Approve,
    /// Do not.
    Deny,
}

impl Verdict {
    /// `approve` or `deny`, as signed.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

/// What the policy gate asks a person to decide.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    /// The incident the action would remedy (must exist).
    pub incident_id: IncidentId,
    /// One sentence saying what would be done, e.g. "Restart deployment
    /// shop/cart (3 replicas)".
    pub description: String,
    /// Machine-readable plan for the executor (kept as JSON, shown in the
    /// API and events).
    pub detail: serde_json::Value,
    /// How long it waits for a decision (`approvals.ttl`).
    pub ttl_ms: i64,
}

/// A decision to record.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Approve or deny.
    pub verdict: Verdict,
    /// Who decided, as they say (the API token or the shared secret proves
    /// they may decide, not who they are).
    pub by: String,
    /// Why.
    pub reason: String,
    /// Where the decision came from.
    pub channel: Channel,
    /// The signed message's nonce (MQTT), remembered so it cannot be used
    /// twice.
    pub nonce: Option<String>,
}

/// A requested action and its approval state, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAction {
    /// Store id.
    pub id: ActionId,
    /// The incident it would remedy.
    pub incident_id: IncidentId,
    /// What it would do.
    pub description: String,
    /// Machine-readable plan.
    pub detail: serde_json::Value,
    /// Wall time of the request.
    pub requested_at: TimestampMs,
    /// Wall time after which it can no longer be approved.
    pub expires_at: TimestampMs,
    /// Current state.
    pub state: ActionState,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// When the decision (or expiry) was recorded.
    pub decided_at: Option<TimestampMs>,
    /// Where the decision came from.
    pub channel: Option<Channel>,
    /// What remediation did with it; `None` for a request that did not
    /// come from the policy gate.
    pub execution: Option<crate::remediate::record::Execution>,
}

impl PendingAction {
    /// The form shown by the API and carried in events.
    pub fn snapshot(&self) -> ActionSnapshot {
        ActionSnapshot {
            id: self.id,
            incident_id: self.incident_id,
            description: self.description.clone(),
            state: self.state.as_str().into(),
            requested_at: format_ts(self.requested_at),
            expires_at: format_ts(self.expires_at),
            decided_by: self.decided_by.clone(),
            reason: self.reason.clone(),
            decided_at: self.decided_at.map(format_ts),
            channel: self.channel.map(|c| c.as_str().to_string()),
            execution: self
                .execution
                .as_ref()
                .map(|e| e.state.as_str().to_string()),
            detail: self.detail.clone(),
            url: format!("/api/v1/actions/{}", self.id),
        }
    }
}

/// Why a decision was not recorded (not a store failure: the request was
/// understood and refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionRefused {
    /// No action has this id.
    #[error("no action with id {0}")]
    NotFound(ActionId),
    /// The action was already approved, denied or expired.
    #[error("action {id} is already {}", state.as_str())]
    AlreadyDecided {
        /// The action.
        id: ActionId,
        /// Its state.
        state: ActionState,
    },
    /// The action's approval window closed before this decision.
    #[error("action {0} expired before the decision arrived")]
    Expired(ActionId),
    /// The message's nonce was used before.
    #[error("nonce was already used (replayed message)")]
    Replayed,
}

/// What a decision did: the outcome, and the events it queued.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionOutcome {
    /// The decided action, or why the decision was refused.
    pub result: Result<PendingAction, DecisionRefused>,
    /// Events queued in the same transaction (`action.approved`, `.denied`
    /// or `.expired`).
    pub report: EnqueueReport,
}

/// The MQTT approval message as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalMessage {
    /// The action decided.
    pub action_id: ActionId,
    /// `approve` or `deny`.
    pub decision: Verdict,
    /// Who decided.
    pub by: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// When the message was made, Unix milliseconds.
    pub issued_at: i64,
    /// Single-use random string, 8 to 128 visible ASCII characters.
    pub nonce: String,
    /// Lowercase (or uppercase) hex HMAC-SHA256 of the canonical string.
    #[serde(default)]
    pub signature: Option<String>,
}

/// Why an MQTT approval message was refused; logged with the message's
/// action id, never with the secret or the signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefused {
    /// Not JSON, or not the message shape, or a field out of bounds.
    #[error("malformed approval message: {0}")]
    Malformed(String),
    /// No `signature` field.
    #[error("the message is not signed")]
    Unsigned,
    /// The signature does not match (wrong secret, altered message, or
    /// signed for another cluster).
    #[error("the signature does not match")]
    BadSignature,
    /// `issued_at` is older than `approvals.max_age`.
    #[error("the message is too old (issued {age_s}s ago; approvals.max_age is {max_s}s)")]
    Expired {
        /// Its age in seconds.
        age_s: i64,
        /// The limit in seconds.
        max_s: i64,
    },
    /// `issued_at` is further in the future than clock skew explains.
    #[error("the message is issued {ahead_s}s in the future")]
    FromTheFuture {
        /// How far ahead, in seconds.
        ahead_s: i64,
    },
    /// MQTT approvals are off because `approvals.secret` is not set.
    #[error("MQTT approvals are disabled (approvals.secret is not set)")]
    Disabled,
    /// The store refused the decision.
    #[error(transparent)]
    Decision(#[from] DecisionRefused),
}

impl ApprovalRefused {
    /// Short label for the `reason` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ApprovalRefused::Malformed(_) => "malformed",
            ApprovalRefused::Unsigned => "unsigned",
            ApprovalRefused::BadSignature => "bad_signature",
            ApprovalRefused::Expired { .. } => "expired_message",
            ApprovalRefused::FromTheFuture { .. } => "from_the_future",
            ApprovalRefused::Disabled => "disabled",
            ApprovalRefused::Decision(DecisionRefused::NotFound(_)) => "unknown_action",
            ApprovalRefused::Decision(DecisionRefused::AlreadyDecided { .. }) => "already_decided",
            ApprovalRefused::Decision(DecisionRefused::Expired(_)) => "action_expired",
            ApprovalRefused::Decision(DecisionRefused::Replayed) => "replayed",
        }
    }
}

/// Longest `by`, `reason` accepted (characters).
const MAX_TEXT: usize = 1000;

/// Checks a free-text field of a decision (API and MQTT alike).
pub fn check_text(name: &str, value: &str, required: bool) -> Result<(), String> {
    if required && value.trim().is_empty() {
        return Err(format!("`{name}` must not be empty"));
    }
    if value.chars().count() > MAX_TEXT {
        return Err(format!("`{name}` must be at most {MAX_TEXT} characters"));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(format!(
            "`{name}` must not contain control characters (newlines included)"
        ));
    }
    Ok(())
}

/// The exact bytes that are signed; see the module docs.
pub fn canonical_string(cluster: &str, m: &ApprovalMessage) -> String {
    [
        SIGNATURE_SCHEME,
        cluster,
        &m.action_id.to_string(),
        m.decision.as_str(),
        &m.by,
        &m.reason,
        &m.issued_at.to_string(),
        &m.nonce,
    ]
    .join("\n")
}

/// HMAC-SHA256 keyed with `secret`. HMAC accepts keys of any length, so
/// `None` cannot happen today; if a library change ever made keying fail,
/// callers fail closed (no signature verifies) rather than fall back to
/// some other key an attacker could know.
fn mac(secret: &[u8]) -> Option<Hmac<Sha256>> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()
}

/// Signs a message for `cluster`: the lowercase hex signature. Used by
/// tools and tests that send approvals.
///
/// Returns an empty string if the key cannot be used, which every verifier
/// refuses as unsigned.
pub fn sign(secret: &[u8], cluster: &str, m: &ApprovalMessage) -> String {
    let Some(mut mac) = mac(secret) else {
        return String::new();
    };
    mac.update(canonical_string(cluster, m).as_bytes());
    to_hex(&mac.finalize().into_bytes())
}

/// Parses and checks a message: shape, signature (constant time), age.
/// The nonce's freshness is checked by the store when the decision is
/// recorded, in the same transaction.
pub fn verify(
    payload: &[u8],
    secret: &[u8],
    cluster: &str,
    now: TimestampMs,
    max_age_ms: i64,
) -> Result<ApprovalMessage, ApprovalRefused> {
    let m: ApprovalMessage =
        serde_json::from_slice(payload).map_err(|e| ApprovalRefused::Malformed(e.to_string()))?;
    let signature = match m.signature.as_deref() {
        None | Some("") => return Err(ApprovalRefused::Unsigned),
        Some(s) => s,
    };
    check_text("by", &m.by, true).map_err(ApprovalRefused::Malformed)?;
    check_text("reason", &m.reason, false).map_err(ApprovalRefused::Malformed)?;
    if !(8..=128).contains(&m.nonce.len()) || !m.nonce.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApprovalRefused::Malformed(
            "`nonce` must be 8 to 128 visible ASCII characters".into(),
        ));
    }
    let presented = from_hex(signature).ok_or(ApprovalRefused::BadSignature)?;
    let mut mac = mac(secret).ok_or(ApprovalRefused::BadSignature)?;
    mac.update(canonical_string(cluster, &m).as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&presented)
        .map_err(|_| ApprovalRefused::BadSignature)?;
    // Age is checked only after the signature: an unsigned claim about
    // time means nothing.
    let age = now.saturating_sub(m.issued_at);
    if age > max_age_ms {
        return Err(ApprovalRefused::Expired {
            age_s: age / 1000,
            max_s: max_age_ms / 1000,
        });
    }
    if -age > max_age_ms {
        return Err(ApprovalRefused::FromTheFuture {
            ahead_s: -age / 1000,
        });
    }
    Ok(m)
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_700_000_000_000;

    fn message() -> ApprovalMessage {
        ApprovalMessage {
            action_id: 7,
            decision: Verdict::Approve,
            by: "alice".into(),
            reason: "looks safe".into(),
            issued_at: NOW - 1_000,
            nonce: "nonce-0001".into(),
            signature: None,
        }
    }

    fn signed(m: &ApprovalMessage) -> Vec<u8> {
        let mut m = m.clone();
        m.signature = Some(sign(SECRET, "prod", &m));
        serde_json::to_vec(&m).expect("json")
    }

    #[test]
    fn canonical_string_is_documented_form() {
        assert_eq!(
            canonical_string("prod", &message()),
            "aiopsd.approval/v1\nprod\n7\napprove\nalice\nlooks safe\n1699999999000\nnonce-0001"
        );
    }

    #[test]
    fn known_answer_signature() {
        // Pinned so a change of canonicalisation breaks this test, not the
        // operators' signing scripts. Reproduce with:
        // printf 'aiopsd.approval/v1\nprod\n7\napprove\nalice\nlooks safe\n1699999999000\nnonce-0001' \
        //   | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
        assert_eq!(
            sign(SECRET, "prod", &message()),
            "8edd926fedb5590ee817a5bcad42ec34e33f904a2b5f596483194d9433d9dff9"
        );
    }

    #[test]
    fn good_signature_verifies_in_any_hex_case() {
        let m = message();
        assert_eq!(
            verify(&signed(&m), SECRET, "prod", NOW, 300_000).map(|v| v.action_id),
            Ok(7)
        );
        let mut upper = m.clone();
        upper.signature = Some(sign(SECRET, "prod", &m).to_uppercase());
        let bytes = serde_json::to_vec(&upper).expect("json");
        assert!(verify(&bytes, SECRET, "prod", NOW, 300_000).is_ok());
    }

    #[test]
    fn refusals() {
        let m = message();
        let v = |bytes: &[u8]| verify(bytes, SECRET, "prod", NOW, 300_000);
        assert_eq!(
            v(&serde_json::to_vec(&m).expect("json")),
            Err(ApprovalRefused::Unsigned)
        );
        // Wrong secret, other cluster, altered field.
        let mut other = m.clone();
        other.signature = Some(sign(b"another-secret-another-secret-xx", "prod", &m));
        assert_eq!(
            v(&serde_json::to_vec(&other).expect("json")),
            Err(ApprovalRefused::BadSignature)
        );
        assert_eq!(
            verify(&signed(&m), SECRET, "staging", NOW, 300_000),
            Err(ApprovalRefused::BadSignature)
        );
        let mut altered: serde_json::Value = serde_json::from_slice(&signed(&m)).expect("json");
        altered["decision"] = "deny".into();
        assert_eq!(
            v(&serde_json::to_vec(&altered).expect("json")),
            Err(ApprovalRefused::BadSignature)
        );
        let mut garbage = m.clone();
        garbage.signature = Some("zz".into());
        assert_eq!(
            v(&serde_json::to_vec(&garbage).expect("json")),
            Err(ApprovalRefused::BadSignature)
        );
        // Too old, from the future.
        let mut old = m.clone();
        old.issued_at = NOW - 301_000;
        assert!(matches!(
            v(&signed(&old)),
            Err(ApprovalRefused::Expired { .. })
        ));
        let mut future = m.clone();
        future.issued_at = NOW + 301_000;
        assert!(matches!(
            v(&signed(&future)),
            Err(ApprovalRefused::FromTheFuture { .. })
        ));
        // Malformed.
        assert!(matches!(v(b"not json"), Err(ApprovalRefused::Malformed(_))));
        let mut newline = m.clone();
        newline.by = "alice\nbob".into();
        assert!(matches!(
            v(&signed(&newline)),
            Err(ApprovalRefused::Malformed(_))
        ));
        let mut short_nonce = m;
        short_nonce.nonce = "x".into();
        assert!(matches!(
            v(&signed(&short_nonce)),
            Err(ApprovalRefused::Malformed(_))
        ));
    }

    #[test]
    fn hex_roundtrip() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex("0001ABff"), Some(bytes.to_vec()));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("gg"), None);
    }
}
