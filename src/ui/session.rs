//! Browser sessions and CSRF tokens: pure functions, no I/O.
//!
//! A browser never holds the API token. After the login form checks it,
//! the browser gets a cookie `role.expires.nonce.mac`, where `mac` is
//! HMAC-SHA256 over the first three parts keyed by a *session key* that is
//! itself HMAC-SHA256 of a fixed label keyed by the token. So:
//!
//! - forging or extending a session needs the token;
//! - every replica (and a restarted daemon) accepts the same cookie,
//!   because the key is derived from configuration, not kept in memory;
//! - rotating a token logs out every session made with it;
//! - the cookie says nothing about the token (a MAC of a constant).
//!
//! The CSRF token of a session is another MAC, of the session's random
//! nonce, so it differs per login and an attacker who cannot read the page
//! (same-origin policy) cannot compute it.
//!
//! With no token configured (API open, loopback only) the key is random per
//! process; sessions then only carry the CSRF binding.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::signal::TimestampMs;

/// How long a login lasts.
pub(super) const SESSION_TTL_MS: TimestampMs = 12 * 3_600_000;

/// Name of the session cookie.
pub(super) const COOKIE_NAME: &str = "aiopsd_ui";

/// What a signed-in person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Reads every page; gets no forms, and its POSTs are refused.
    Viewer,
    /// May approve, deny and revert actions and record verdicts.
    Operator,
}

impl Role {
    /// The cookie's spelling.
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// A session key (see the module docs).
#[derive(Clone)]
pub(super) struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(***)")
    }
}

impl SessionKey {
    /// The key derived from a configured token.
    pub(super) fn from_token(token: &str) -> SessionKey {
        SessionKey(hmac(token.as_bytes(), b"aiopsd ui session v1"))
    }

    /// A key from 32 random bytes (open mode).
    pub(super) fn from_bytes(bytes: [u8; 32]) -> SessionKey {
        SessionKey(bytes)
    }

    fn mac(&self, message: &[u8]) -> [u8; 32] {
        hmac(&self.0, message)
    }

    fn verify(&self, message: &[u8], presented_hex: &str) -> bool {
        let Some(presented) = from_hex(presented_hex) else {
            return false;
        };
        match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            Ok(mut mac) => {
                mac.update(message);
                // verify_slice compares in constant time.
                mac.verify_slice(&presented).is_ok()
            }
            Err(_) => false,
        }
    }
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// What it may do.
    pub(crate) role: Role,
    /// Wall time after which it is no longer accepted.
    pub(crate) expires_at: TimestampMs,
    /// Random per login; the CSRF token is derived from it.
    pub(crate) nonce: String,
}

impl Session {
    /// A new session for `role` with a fresh `nonce` (hex).
    pub(super) fn new(role: Role, nonce: String, now: TimestampMs) -> Session {
        Session {
            role,
            expires_at: now.saturating_add(SESSION_TTL_MS),
            nonce,
        }
    }

    fn payload(&self) -> String {
        format!("{}.{}.{}", self.role.as_str(), self.expires_at, self.nonce)
    }

    /// The cookie value, signed with `key`.
    pub(super) fn to_cookie(&self, key: &SessionKey) -> String {
        let payload = self.payload();
        format!("{payload}.{}", to_hex(&key.mac(payload.as_bytes())))
    }

    /// Parses and verifies a cookie value. `key_for` gives the key of a
    /// role (`None` when that role's token is not configured). `None` for
    /// anything malformed, forged, or expired at `now`.
    pub(super) fn from_cookie(
        value: &str,
        now: TimestampMs,
        key_for: impl Fn(Role) -> Option<SessionKey>,
    ) -> Option<Session> {
        let mut parts = value.split('.');
        let (role, expires, nonce, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || nonce.is_empty() || nonce.len() > 64 {
            return None;
        }
        let role = Role::parse(role)?;
        let expires_at: TimestampMs = expires.parse().ok()?;
        let session = Session {
            role,
            expires_at,
            nonce: nonce.to_string(),
        };
        let key = key_for(role)?;
        if !key.verify(session.payload().as_bytes(), mac) || now > expires_at {
            return None;
        }
        Some(session)
    }

    /// The CSRF token forms of this session must carry.
    pub(crate) fn csrf_token(&self, key: &SessionKey) -> String {
        to_hex(&key.mac(format!("csrf.{}", self.nonce).as_bytes()))
    }

    /// True when `presented` is this session's CSRF token.
    pub(super) fn csrf_ok(&self, key: &SessionKey, presented: &str) -> bool {
        key.verify(format!("csrf.{}", self.nonce).as_bytes(), presented)
    }
}

/// The value of cookie `name` in a `Cookie` header, if present.
pub(super) fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v.trim_matches('"'))
    })
}

/// `n` random bytes as hex, from the OS; `None` if the OS refuses.
pub(super) fn random_hex(n: usize) -> Option<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).ok()?;
    Some(to_hex(&buf))
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HMAC accepts keys of any length, so this never fails; the match keeps
    // the signature total anyway.
    if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        mac.update(message);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: TimestampMs = 1_700_000_000_000;

    fn keys(role: Role) -> Option<SessionKey> {
        match role {
            Role::Operator => Some(SessionKey::from_token("operator-token-0123456789")),
            Role::Viewer => Some(SessionKey::from_token("viewer-token-0123456789")),
        }
    }

    #[test]
    fn a_cookie_round_trips_and_never_contains_the_token() {
        let s = Session::new(Role::Viewer, "00ff".into(), NOW);
        let key = keys(Role::Viewer).expect("key");
        let cookie = s.to_cookie(&key);
        assert!(!cookie.contains("viewer-token"), "{cookie}");
        assert_eq!(Session::from_cookie(&cookie, NOW, keys), Some(s));
    }

    #[test]
    fn forged_expired_or_promoted_cookies_are_refused() {
        let key = keys(Role::Viewer).expect("key");
        let cookie = Session::new(Role::Viewer, "00ff".into(), NOW).to_cookie(&key);
        // A viewer rewriting the role to operator: the MAC no longer matches
        // (and would be checked with the operator's key anyway).
        let promoted = cookie.replacen("viewer", "operator", 1);
        assert_eq!(Session::from_cookie(&promoted, NOW, keys), None);
        // Extending the expiry.
        let extended = cookie.replacen(
            &(NOW + SESSION_TTL_MS).to_string(),
            &(NOW + 10 * SESSION_TTL_MS).to_string(),
            1,
        );
        assert_eq!(Session::from_cookie(&extended, NOW, keys), None);
        // Expired.
        assert_eq!(
            Session::from_cookie(&cookie, NOW + SESSION_TTL_MS + 1, keys),
            None
        );
        // Signed with another token (rotation logs everyone out).
        let other = Session::new(Role::Viewer, "00ff".into(), NOW)
            .to_cookie(&SessionKey::from_token("a-rotated-token-0123456"));
        assert_eq!(Session::from_cookie(&other, NOW, keys), None);
        // The role's token is no longer configured.
        assert_eq!(Session::from_cookie(&cookie, NOW, |_| None), None);
        for junk in [
            "",
            "viewer",
            "viewer.1.2",
            "a.b.c.d",
            "viewer.x.00.zz",
            "viewer.1.00.ab.cd",
        ] {
            assert_eq!(Session::from_cookie(junk, NOW, keys), None, "{junk:?}");
        }
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let key = keys(Role::Operator).expect("key");
        let a = Session::new(Role::Operator, "aa".into(), NOW);
        let b = Session::new(Role::Operator, "bb".into(), NOW);
        let token = a.csrf_token(&key);
        assert!(a.csrf_ok(&key, &token));
        assert!(!b.csrf_ok(&key, &token));
        assert!(!a.csrf_ok(&key, ""));
        assert!(!a.csrf_ok(&key, "not hex"));
    }

    #[test]
    fn cookie_header_values_are_found_by_name() {
        let h = "theme=dark; aiopsd_ui=viewer.1.aa.bb; other=x";
        assert_eq!(cookie_value(h, COOKIE_NAME), Some("viewer.1.aa.bb"));
        assert_eq!(cookie_value(h, "missing"), None);
        assert_eq!(cookie_value("xaiopsd_ui=1", COOKIE_NAME), None);
    }

    #[test]
    fn random_hex_has_the_asked_length() {
        let a = random_hex(16).expect("OS randomness");
        assert_eq!(a.len(), 32);
        assert_ne!(Some(a), random_hex(16));
    }
}
