//! The pure half of the fake API server: applying the three patch content
//! types and matching label selectors, as the real API server does for the
//! shapes aiopsd sends.
//!
//! - `application/merge-patch+json`: RFC 7386 exactly (maps merge
//!   recursively, `null` deletes, anything else — arrays included —
//!   replaces).
//! - `application/strategic-merge-patch+json`: merge patch plus the parts
//!   of the strategic rules that matter for pod templates: lists of objects
//!   that all carry a `name` (containers, env, volumes, ports) merge by
//!   name, and the `$patch: replace` / `$patch: delete` directives work on
//!   maps and named list elements. Other `$`-directives are dropped.
//! - `application/apply-patch+yaml`: server-side apply reduced to "the
//!   applied fields win" (strategic merge of the applied configuration);
//!   field ownership and removal of fields a manager stopped applying are
//!   not modelled.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Strategic merge patch for maps and named lists (see the module docs).
pub(super) fn strategic_merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            match p.get("$patch").and_then(Value::as_str) {
                Some("replace") => {
                    *target = strip_directives(patch);
                    return;
                }
                Some("delete") => {
                    *target = Value::Null;
                    return;
                }
                _ => {}
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Value::Object(map) = target else { return };
            for (key, value) in p {
                if key.starts_with('$') {
                    continue;
                }
                if value.is_null() {
                    map.remove(key);
                    continue;
                }
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(slot, value);
                if slot.is_null() {
                    map.remove(key);
                }
            }
        }
        Value::Array(items)
            if named_list(items) && target.as_array().is_some_and(|t| named_list(t)) =>
        {
            let Value::Array(existing) = target else {
                return;
            };
            for item in items {
                let name = item.get("name").cloned();
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match existing.iter().position(|e| e.get("name") == name.as_ref()) {
                    Some(i) if delete => {
                        existing.remove(i);
                    }
                    Some(i) => strategic_merge(&mut existing[i], item),
                    None if delete => {}
                    None => existing.push(strip_directives(item)),
                }
            }
        }
        other => *target = strip_directives(other),
    }
}

fn named_list(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.get("name").is_some_and(Value::is_string))
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` query parameter.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub(super) fn parse(text: &str) -> Result<Selector, String> {
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut current = String::new();
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        parts.push(current);
        let mut out = Vec::new();
        for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unable to parse requirement: {part:?}"))?;
                Ok(inner.split(',').map(|s| s.trim().to_string()).collect())
            };
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set(rest)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(part.into())
            } else {
                return Err(format!("unable to parse requirement: {part:?}"));
            };
            out.push(req);
        }
        Ok(Selector(out))
    }

    /// Whether an object with these labels matches.
    pub(super) fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Whether `labels` match a `metav1.LabelSelector` object (matchLabels and
/// matchExpressions), as PDBs and workloads carry them.
pub(super) fn label_selector_matches(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str() {
                    Some("In") => label(key).is_some_and(|x| values.contains(&x)),
                    Some("NotIn") => !label(key).is_some_and(|x| values.contains(&x)),
                    Some("Exists") => label(key).is_some(),
                    Some("DoesNotExist") => label(key).is_none(),
                    _ => false,
                }
            })
        });
    match_labels && expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1});
        merge_patch(
            &mut doc,
            &json!({"a": {"b": null, "d": 3}, "l": [3], "x": null}),
        );
        assert_eq!(doc, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_named_lists_and_honours_replace() {
        let mut doc = json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}],
                             "labels": {"x": "1", "y": "2"}});
        strategic_merge(
            &mut doc,
            &json!({"containers": [{"name": "b", "image": "2"}, {"name": "c", "image": "1"}],
                    "labels": {"$patch": "replace", "z": "3"}}),
        );
        assert_eq!(
            doc,
            json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"},
                                  {"name": "c", "image": "1"}],
                   "labels": {"z": "3"}})
        );
    }

    #[test]
    fn selectors_parse_and_match() {
        let s = Selector::parse("app=web,tier in (fe, be),!canary,env!=prod").expect("parses");
        assert!(s.matches(&json!({"app": "web", "tier": "fe", "env": "dev"})));
        assert!(!s.matches(&json!({"app": "web", "tier": "db"})));
        assert!(!s.matches(&json!({"app": "web", "tier": "fe", "canary": "1"})));
        assert!(Selector::parse("a in b").is_err());
        assert!(label_selector_matches(
            &json!({"matchLabels": {"app": "web"}}),
            &json!({"app": "web", "x": "y"})
        ));
    }
}
