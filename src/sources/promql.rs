//! Safe construction of PromQL from config templates and label values.
//!
//! The seed system built queries by pasting a service name into a string, so
//! `service="x"} or vector(1) or up{a="` turned a read into whatever its
//! author wanted. Here the *template* is operator-written config, checked at
//! load, and the only values substituted into it are label matchers whose
//! names and values were validated and are rendered with PromQL string
//! escaping. A value that fails validation never reaches Prometheus.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The placeholder in a query template where label matchers go.
pub const SELECTOR_PLACEHOLDER: &str = "$selector";

/// Longest label value accepted (Kubernetes names are at most 253).
const MAX_VALUE_LEN: usize = 253;

/// Checks a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not reserved (`__`).
pub fn validate_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "{name:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if name.starts_with("__") {
        return Err(format!("{name:?} is reserved for Prometheus internals"));
    }
    Ok(())
}

/// Checks a label value used in a matcher.
///
/// Allowed: letters, digits and `_ . : / -` — enough for Kubernetes names,
/// namespaces, images and hostnames, and nothing that can end a string,
/// open a regex or start another expression. Rendering escapes anyway; this
/// check exists so a hostile value is refused loudly instead of queried.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("label value must not be empty".into());
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(format!(
            "label value is {} characters, more than {MAX_VALUE_LEN}",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-')))
    {
        return Err(format!(
            "label value {value:?} contains {bad:?}; only letters, digits and _ . : / - are allowed"
        ));
    }
    Ok(())
}

/// Renders `s` as a PromQL double-quoted string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Equality matchers a signal is restricted to, e.g. `{namespace: shop, service: cart}`.
///
/// Validated on deserialization, so a `Selector` in hand is always safe to
/// render.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Selector(BTreeMap<String, String>);

impl Selector {
    /// Builds a selector, validating each name and value.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, SelectorError> {
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            validate_label_name(&name).map_err(|reason| SelectorError {
                label: name.clone(),
                reason,
            })?;
            validate_label_value(&value).map_err(|reason| SelectorError {
                label: name.clone(),
                reason,
            })?;
            map.insert(name, value);
        }
        Ok(Selector(map))
    }

    /// True when there are no matchers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The matchers, sorted by label name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The matcher list without braces: `namespace="shop",service="cart"`.
    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A selector entry that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{label}: {reason}")]
pub struct SelectorError {
    /// The label whose name or value was refused.
    pub label: String,
    /// Why.
    pub reason: String,
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        Selector::new(map).map_err(serde::de::Error::custom)
    }
}

/// A PromQL query with a `$selector` placeholder, from config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueryTemplate(String);

impl QueryTemplate {
    /// Wraps a template string (checked later with [`QueryTemplate::check_against`]).
    pub fn new(template: impl Into<String>) -> Self {
        QueryTemplate(template.into())
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks the template is usable with `selector`: non-empty, braces and
    /// quotes balanced, the placeholder inside `{…}` when there is a
    /// selector, and no other `$` tokens (which would be left unexpanded).
    pub fn check_against(&self, selector: &Selector) -> Result<(), String> {
        let t = self.0.trim();
        if t.is_empty() {
            return Err("query must not be empty".into());
        }
        let placeholders = t.matches(SELECTOR_PLACEHOLDER).count();
        if placeholders == 0 && !selector.is_empty() {
            return Err(format!(
                "has selectors but no {SELECTOR_PLACEHOLDER} placeholder to put them in"
            ));
        }
        if t.replace(SELECTOR_PLACEHOLDER, "").contains('$') {
            return Err(format!("contains a `$` that is not {SELECTOR_PLACEHOLDER}"));
        }
        let mut depth_brace = 0i32;
        let mut depth_paren = 0i32;
        let mut in_string: Option<char> = None;
        let mut escaped = false;
        let bytes: Vec<char> = t.chars().collect();
        for (i, &c) in bytes.iter().enumerate() {
            if let Some(q) = in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    in_string = None;
                }
                continue;
            }
            match c {
                '"' | '\'' | '`' => in_string = Some(c),
                '{' => depth_brace += 1,
                '}' => depth_brace -= 1,
                '(' => depth_paren += 1,
                ')' => depth_paren -= 1,
                '$' => {
                    if depth_brace != 1 {
                        return Err(format!(
                            "{SELECTOR_PLACEHOLDER} must stand inside the braces of a series selector, \
                             e.g. metric{{{SELECTOR_PLACEHOLDER}}}"
                        ));
                    }
                    let _ = i;
                }
                _ => {}
            }
            if depth_brace < 0 || depth_paren < 0 {
                return Err("has a closing bracket without an opening one".into());
            }
        }
        if in_string.is_some() {
            return Err("has an unterminated string".into());
        }
        if depth_brace != 0 || depth_paren != 0 {
            return Err("has unbalanced brackets".into());
        }
        Ok(())
    }

    /// The query with `selector` substituted for every placeholder.
    ///
    /// With an empty selector the placeholder disappears together with its
    /// neighbouring comma, so `up{$selector,job="x"}` becomes `up{job="x"}`.
    pub fn render(&self, selector: &Selector) -> String {
        if selector.is_empty() {
            return self
                .0
                .replace(&format!("{SELECTOR_PLACEHOLDER},"), "")
                .replace(&format!(",{SELECTOR_PLACEHOLDER}"), "")
                .replace(SELECTOR_PLACEHOLDER, "");
        }
        self.0.replace(SELECTOR_PLACEHOLDER, &selector.render())
    }
}

impl fmt::Display for QueryTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(pairs: &[(&str, &str)]) -> Result<Selector, SelectorError> {
        Selector::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn renders_seed_queries_with_escaped_matchers() {
        let s = sel(&[("service", "user-service"), ("namespace", "production")]).expect("valid");
        let q = QueryTemplate::new(r#"rate(http_requests_total{$selector,status=~"5.."}[5m])"#);
        q.check_against(&s).expect("valid template");
        assert_eq!(
            q.render(&s),
            r#"rate(http_requests_total{namespace="production",service="user-service",status=~"5.."}[5m])"#
        );
    }

    #[test]
    fn injection_attempts_in_values_are_refused() {
        for hostile in [
            r#"cart"} or vector(1) or up{a=""#,
            "cart\"",
            "cart\\",
            "cart,namespace=\"kube-system\"",
            "cart}",
            "a b",
            "cart\n",
            ".*",
            "x|y",
            "",
        ] {
            let err = sel(&[("service", hostile)]).expect_err(hostile);
            assert_eq!(err.label, "service", "{hostile:?}");
        }
    }

    #[test]
    fn invalid_or_reserved_label_names_are_refused() {
        for name in ["1abc", "a-b", "__name__", "", "sërvice"] {
            assert!(sel(&[(name, "x")]).is_err(), "{name:?}");
        }
    }

    #[test]
    fn empty_selector_removes_placeholder_and_comma() {
        let empty = Selector::default();
        let q = QueryTemplate::new(r#"up{$selector,job="node"}"#);
        assert_eq!(q.render(&empty), r#"up{job="node"}"#);
        assert_eq!(QueryTemplate::new("up{$selector}").render(&empty), "up{}");
    }

    #[test]
    fn templates_that_cannot_work_are_refused() {
        let s = sel(&[("service", "cart")]).expect("valid");
        for (bad, why) in [
            ("up", "no placeholder"),
            ("up{$selector", "unbalanced"),
            ("$selector", "outside braces"),
            ("up{$selector} + $other", "stray $"),
            (r#"up{$selector,a="x}"#, "unterminated string"),
            ("", "empty"),
        ] {
            assert!(
                QueryTemplate::new(bad).check_against(&s).is_err(),
                "{bad:?} should fail: {why}"
            );
        }
    }

    #[test]
    fn quote_escapes_what_validation_would_refuse_anyway() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
