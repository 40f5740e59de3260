//! Secrets redaction for log lines that leave the miner as evidence
//! (example lines in incidents and reports).
//!
//! Redaction runs on the few example lines kept per template, never on the
//! mining hot path, so it can afford regexes; a regex set is also what
//! makes the patterns configurable later (issue 10: "patterns
//! configurable"). It errs on the side of redacting: a false positive
//! hides a word from a report, a false negative leaks a credential.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What replaces a secret value.
pub const REDACTED: &str = "<redacted>";

/// One rule: a pattern and what to put instead. `$k` in the replacement
/// refers to the pattern's `k` group (a key name kept for context).
struct Rule {
    re: Regex,
    replacement: &'static str,
}

/// The default rules, in the order they are applied.
///
/// - `key=value` / `key: value` / `"key": "value"` where the key names a
///   secret (password, passwd, pwd, secret, token, api key, access key,
///   private key, credential, auth, session/cookie): the value goes, the
///   key stays so the reader knows what was there.
/// - `Bearer …` / `Basic …` credentials (HTTP `Authorization` headers).
/// - PEM private key blocks.
/// - Token shapes recognisable without a key: JWTs, AWS access key ids,
///   GitHub, Slack and OpenAI-style tokens.
/// - E-mail addresses (personal data).
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rules: &[(&str, &'static str)] = &[
        (
            r#"(?i)(?P<k>["']?[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|auth|session[_-]?id|cookie)["']?\s*[:=]\s*)(?:"[^"]*"|'[^']*'|[^\s,;&"'}]+)"#,
            "${k}<redacted>",
        ),
        (
            r"(?i)\b(?P<k>bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}",
            "${k} <redacted>",
        ),
        (
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
            "<redacted>",
        ),
        (
            r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
            "<redacted>",
        ),
        (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "<redacted>"),
        (
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
            "<redacted>",
        ),
        (r"\bxox[abprs]-[A-Za-z0-9-]{10,}", "<redacted>"),
        (r"\bsk-[A-Za-z0-9_-]{20,}", "<redacted>"),
        (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "<email>"),
    ];
    rules
        .iter()
        .filter_map(|(re, replacement)| {
            // The patterns are constants covered by the tests below; a
            // broken one is dropped rather than taking the daemon down.
            Regex::new(re).ok().map(|re| Rule { re, replacement })
        })
        .collect()
});

/// Replaces secrets in `line` (the rules are `RULES` in this module's
/// source) and returns the line, borrowed unchanged when nothing matched.
///
/// Use on every log line before it is stored or shown as evidence.
pub fn redact_secrets(line: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(line);
    for rule in RULES.iter() {
        if let Cow::Owned(s) = rule.re.replace_all(&out, rule.replacement) {
            out = Cow::Owned(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact_secrets(s).into_owned()
    }

    #[test]
    fn key_value_secrets_keep_the_key() {
        assert_eq!(
            r("login password=hunter2 ok"),
            "login password=<redacted> ok"
        );
        assert_eq!(
            r("db_passwd: 's3cr3t x' next"),
            "db_passwd: <redacted> next"
        );
        assert_eq!(
            r(r#"{"api_key": "abc123", "n": 1}"#),
            r#"{"api_key": <redacted>, "n": 1}"#
        );
        assert_eq!(
            r("GET /x?access_token=abc&page=2"),
            "GET /x?access_token=<redacted>&page=2"
        );
        assert_eq!(r("client_secret=zzz;"), "client_secret=<redacted>;");
    }

    #[test]
    fn bearer_and_known_token_shapes() {
        assert_eq!(
            r("Authorization: Bearer abcdef.123456"),
            "Authorization: Bearer <redacted>"
        );
        assert_eq!(r("header Bearer abcdef.123456"), "header Bearer <redacted>");
        assert_eq!(
            r("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature-x end"),
            "jwt <redacted> end"
        );
        assert_eq!(r("key AKIAIOSFODNN7EXAMPLE used"), "key <redacted> used");
        assert_eq!(
            r("push with ghp_abcdefghijklmnopqrstuvwxyz0123 failed"),
            "push with <redacted> failed"
        );
        assert_eq!(
            r("-----BEGIN RSA PRIVATE KEY----- MIIE abc -----END RSA PRIVATE KEY----- tail"),
            "<redacted> tail"
        );
    }

    #[test]
    fn emails_are_redacted() {
        assert_eq!(
            r("mail to jane.doe+x@example.co.uk failed"),
            "mail to <email> failed"
        );
    }

    #[test]
    fn ordinary_lines_are_untouched_and_borrowed() {
        let line = "Invalid user webmaster from 173.234.31.186 port 22";
        assert!(matches!(redact_secrets(line), Cow::Borrowed(_)));
        assert_eq!(r("token bucket refilled"), "token bucket refilled");
        assert_eq!(
            r("authentication failure; uid=0"),
            "authentication failure; uid=0"
        );
    }
}
