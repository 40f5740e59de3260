//! Secrets redaction for log lines that leave the miner as evidence
//! (example lines in incidents and reports).
//!
//! Redaction runs on the few example lines kept per template, never on the
//! mining hot path, so it can afford regexes; a regex set is also what
//! makes the patterns configurable later (issue 10: "patterns
//! configurable"). It errs on the side of redacting: a false positive
//! hides a word from a report, a false negative leaks a credential.

use std::borrow::Cow;
use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

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
///
/// E-mail addresses are [`RedactionKind::Emails`], applied after these by
/// [`redact_secrets`] and on request by [`redact`].
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

/// Personal data that [`redact`] removes on request, on top of the secrets
/// it always removes. Credentials are never optional; whether an address
/// may leave the cluster (to an LLM endpoint, say) is the operator's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactionKind {
    /// E-mail addresses, replaced by `<email>`.
    Emails,
    /// Dotted-quad IPv4 addresses, replaced by `<ipv4>`.
    Ipv4,
    /// IPv6 addresses (any form `std::net::Ipv6Addr` parses, including
    /// `::` compression and an embedded IPv4 tail), replaced by `<ipv6>`.
    Ipv6,
}

static EMAIL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}").ok());

static IPV4: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\b").ok()
});

/// Candidates for IPv6: whole runs of word characters, colons, dots and
/// `%` with at least two colons. Times (`10:32:07`), MACs and Rust paths
/// (`Error::new`) match too, so each candidate is confirmed by
/// `Ipv6Addr`'s parser — a regex for every IPv6 form is unreadable, the
/// parser is exact. Taking the whole run keeps `Error::new` from being
/// read as `Error` + `::` + `new`.
static IPV6_CANDIDATE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"[0-9A-Za-z_:.%]*:[0-9A-Za-z_:.%]*:[0-9A-Za-z_:.%]*").ok());

/// Replaces secrets in `line` (the rules are `RULES` in this module's
/// source) and e-mail addresses, and returns the line, borrowed unchanged
/// when nothing matched.
///
/// Use on every log line before it is stored or shown as evidence.
pub fn redact_secrets(line: &str) -> Cow<'_, str> {
    redact(line, &[RedactionKind::Emails])
}

/// Replaces secrets in `line` (always) and the personal data in `kinds`,
/// and returns the line, borrowed unchanged when nothing matched.
///
/// The LLM prompt uses this with the operator's `llm.redact` list; IP
/// addresses are opt-in because they are often the very evidence a person
/// needs in a report kept inside the cluster.
pub fn redact<'a>(line: &'a str, kinds: &[RedactionKind]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(line);
    for rule in RULES.iter() {
        apply(&mut out, &rule.re, rule.replacement);
    }
    // Fixed order whatever the list's order: IPv6 before IPv4, so an
    // IPv4-mapped address (`::ffff:10.0.0.1`) goes as a whole.
    for kind in [
        RedactionKind::Emails,
        RedactionKind::Ipv6,
        RedactionKind::Ipv4,
    ] {
        if !kinds.contains(&kind) {
            continue;
        }
        match kind {
            RedactionKind::Emails => {
                if let Some(re) = EMAIL.as_ref() {
                    apply(&mut out, re, "<email>");
                }
            }
            RedactionKind::Ipv4 => {
                if let Some(re) = IPV4.as_ref() {
                    apply(&mut out, re, "<ipv4>");
                }
            }
            RedactionKind::Ipv6 => {
                if let Some(re) = IPV6_CANDIDATE.as_ref() {
                    apply(&mut out, re, replace_ipv6);
                }
            }
        }
    }
    out
}

/// Largest compiled size of one configured pattern: config input must not
/// cost the pipeline unbounded memory.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;

/// Redaction as configured (`elasticsearch.redact_patterns`,
/// `elasticsearch.redact_ip_addresses`): the built-in secret rules and
/// e-mail addresses always, plus the operator's own patterns. Configuration
/// can only add to what is redacted, never remove a built-in rule.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    extra: Vec<Regex>,
    kinds: Vec<RedactionKind>,
}

impl Redactor {
    /// Compiles `patterns` (each match becomes `<redacted>`); with
    /// `ip_addresses`, IPv4 and IPv6 addresses are redacted too. The error
    /// names the pattern's index and what is wrong with it.
    pub fn new(patterns: &[String], ip_addresses: bool) -> Result<Self, (usize, String)> {
        let extra = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                regex::RegexBuilder::new(p)
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|e| (i, format!("{p:?} is not a valid regex: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut kinds = vec![RedactionKind::Emails];
        if ip_addresses {
            kinds.extend([RedactionKind::Ipv4, RedactionKind::Ipv6]);
        }
        Ok(Self { extra, kinds })
    }

    /// `line` with every secret redacted.
    pub fn redact<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let kinds: &[RedactionKind] = if self.kinds.is_empty() {
            &[RedactionKind::Emails]
        } else {
            &self.kinds
        };
        let mut out = redact(line, kinds);
        for re in &self.extra {
            apply(&mut out, re, REDACTED);
        }
        out
    }
}

/// Replaces every match of `re` in `out`, keeping `out` borrowed when
/// nothing matched.
fn apply(out: &mut Cow<'_, str>, re: &Regex, replacement: impl regex::Replacer) {
    if let Cow::Owned(s) = re.replace_all(out, replacement) {
        *out = Cow::Owned(s);
    }
}

/// `<ipv6>` for a candidate that parses as an IPv6 address once trailing
/// punctuation (`addr 2001:db8::1: refused`, `…::1.`) and a zone
/// (`fe80::1%eth0`) are set aside; the candidate unchanged otherwise.
/// A bare `::` (as in `a :: b`) is not taken for the unspecified address.
fn replace_ipv6(caps: &Captures<'_>) -> String {
    let whole = &caps[0];
    let trimmed = whole.trim_end_matches([':', '.']);
    let core = trimmed.split('%').next().unwrap_or(trimmed);
    let tail = &whole[core.len()..];
    let has_digit = core.bytes().any(|b| b.is_ascii_hexdigit());
    if has_digit && core.parse::<Ipv6Addr>().is_ok() {
        format!("<ipv6>{tail}")
    } else {
        whole.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn configured_patterns_add_to_the_built_in_rules_and_bad_ones_are_named() {
        let r = Redactor::new(&[r"\bcust-[0-9]{6}\b".to_string()], true).expect("valid");
        let line = "order for cust-123456 from 10.1.2.3 with password=hunter2 by a@b.io";
        let out = r.redact(line);
        for secret in ["cust-123456", "10.1.2.3", "hunter2", "a@b.io"] {
            assert!(!out.contains(secret), "{out}");
        }
        // The default keeps IPs but still redacts secrets and e-mails.
        let plain = Redactor::default().redact(line);
        assert!(
            plain.contains("10.1.2.3") && !plain.contains("hunter2"),
            "{plain}"
        );
        let (index, why) =
            Redactor::new(&["ok".into(), "(unclosed".into()], false).expect_err("invalid");
        assert_eq!(index, 1);
        assert!(why.contains("(unclosed"), "{why}");
    }

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
    fn ip_addresses_only_when_asked() {
        let line = "conn from 10.1.2.3 and [2001:db8::7]:443 at 10:32:07, ::ffff:192.168.0.1 ok";
        assert_eq!(redact_secrets(line), line);
        assert_eq!(
            redact(line, &[RedactionKind::Ipv4]),
            "conn from <ipv4> and [2001:db8::7]:443 at 10:32:07, ::ffff:<ipv4> ok"
        );
        assert_eq!(
            redact(line, &[RedactionKind::Ipv4, RedactionKind::Ipv6]),
            "conn from <ipv4> and [<ipv6>]:443 at 10:32:07, <ipv6> ok"
        );
        assert_eq!(
            redact(
                "peer fe80::1%eth0: reset; version 1.2.300.4 in Error::new a :: b",
                &[RedactionKind::Ipv6, RedactionKind::Ipv4]
            ),
            "peer <ipv6>%eth0: reset; version 1.2.300.4 in Error::new a :: b"
        );
    }

    #[test]
    fn emails_are_an_opt_in_kind_but_secrets_are_not() {
        let line = "user jane@example.com password=hunter2";
        assert_eq!(
            redact(line, &[]),
            "user jane@example.com password=<redacted>"
        );
        assert_eq!(
            redact(line, &[RedactionKind::Emails]),
            "user <email> password=<redacted>"
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
