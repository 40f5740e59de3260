//! The `remediation:` section of the config: where the policies are, how
//! long to wait before deciding and before judging, and the kill switch.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::HumanDuration;

/// Remediation settings. Off by default: a fresh install detects and
/// reports; acting needs `enabled: true` *and* a policy rule that allows
/// the action (the shipped policies are all `dry_run`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediationConfig {
    /// Decide about incidents at all. Default: `false`.
    #[serde(default)]
    pub enabled: bool,
    /// Directory of policy files (`*.yaml`), reloaded on change; a bad
    /// edit keeps the last good policy. Default: `policies`.
    #[serde(default = "default_policies")]
    pub policies: PathBuf,
    /// How often the policy directory is checked for changes. Default: `10s`.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: HumanDuration,
    /// An incident is decided about once it has been open this long (data
    /// time), so the decision sees more than its first sample.
    /// Default: `2m`.
    #[serde(default = "default_decide_after")]
    pub decide_after: HumanDuration,
    /// Data time after an action before its effect is judged (pods start,
    /// caches warm). Default: `2m`.
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
    /// Data time after the settle time during which every signal of the
    /// incident must be normal for the action to count as verified.
    /// Default: `3m`.
    #[serde(default = "default_verify_window")]
    pub verify_window: HumanDuration,
    /// Wall time allowed for that data to arrive. A verification that
    /// cannot get data in time **fails** (and the action is reverted): no
    /// data is never a pass. Default: `15m`.
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout: HumanDuration,
    /// How long a person has to approve an action of an `approve` rule.
    /// Default: `30m`.
    #[serde(default = "default_approval_ttl")]
    pub approval_ttl: HumanDuration,
    /// Stop every action (decisions are still recorded, as refused by
    /// `kill-switch`). Also switchable through the API and the ConfigMap
    /// below; any one of the three being on stops actions. Default: `false`.
    #[serde(default)]
    pub kill_switch: bool,
    /// Name of a ConfigMap in aiopsd's namespace whose key `enabled` set to
    /// `"true"` stops every action — so an operator can flip it with
    /// `kubectl` alone. Default: `aiopsd-kill-switch`; `null` disables.
    #[serde(default = "default_kill_switch_configmap")]
    pub kill_switch_configmap: Option<String>,
    /// Namespace of that ConfigMap. Default: the client's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Group labels that name the workload to act on, tried in order
    /// (the value is the workload's name in the incident's namespace).
    /// Default: `[deployment, statefulset, daemonset, service]`.
    #[serde(default = "default_target_labels")]
    pub target_labels: Vec<String>,
    /// Group label holding the namespace. Default: `namespace`.
    #[serde(default = "default_namespace_label")]
    pub namespace_label: String,
    /// URL of the Kubernetes API server (e.g. a `kubectl proxy`); default:
    /// in-cluster or kubeconfig, like `leader_election.api_url`.
    #[serde(default)]
    pub api_url: Option<String>,
}

fn default_policies() -> PathBuf {
    PathBuf::from("policies")
}
fn default_reload_interval() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_decide_after() -> HumanDuration {
    HumanDuration::secs(120)
}
fn default_settle() -> HumanDuration {
    HumanDuration::secs(120)
}
fn default_verify_window() -> HumanDuration {
    HumanDuration::secs(180)
}
fn default_verify_timeout() -> HumanDuration {
    HumanDuration::secs(15 * 60)
}
fn default_approval_ttl() -> HumanDuration {
    HumanDuration::secs(30 * 60)
}
fn default_kill_switch_configmap() -> Option<String> {
    Some("aiopsd-kill-switch".into())
}
fn default_target_labels() -> Vec<String> {
    ["deployment", "statefulset", "daemonset", "service"]
        .map(String::from)
        .to_vec()
}
fn default_namespace_label() -> String {
    "namespace".into()
}

impl Default for RemediationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            policies: default_policies(),
            reload_interval: default_reload_interval(),
            decide_after: default_decide_after(),
            settle: default_settle(),
            verify_window: default_verify_window(),
            verify_timeout: default_verify_timeout(),
            approval_ttl: default_approval_ttl(),
            kill_switch: false,
            kill_switch_configmap: default_kill_switch_configmap(),
            namespace: None,
            target_labels: default_target_labels(),
            namespace_label: default_namespace_label(),
            api_url: None,
        }
    }
}

impl RemediationConfig {
    /// Reports every problem through `err(path, reason)` under
    /// `remediation.`.
    pub fn validate(&self, err: &mut impl FnMut(String, String)) {
        let positive = [
            ("reload_interval", self.reload_interval),
            ("settle", self.settle),
            ("verify_window", self.verify_window),
            ("verify_timeout", self.verify_timeout),
            ("approval_ttl", self.approval_ttl),
        ];
        for (name, value) in positive {
            if value.0.is_zero() {
                err(format!("remediation.{name}"), "must be more than 0s".into());
            }
        }
        if self.target_labels.is_empty() {
            err(
                "remediation.target_labels".into(),
                "must name at least one label (e.g. deployment)".into(),
            );
        }
        for (i, label) in self.target_labels.iter().enumerate() {
            if !is_label_name(label) {
                err(
                    format!("remediation.target_labels[{i}]"),
                    format!("{label:?} is not a valid label name"),
                );
            }
        }
        if !is_label_name(&self.namespace_label) {
            err(
                "remediation.namespace_label".into(),
                format!("{:?} is not a valid label name", self.namespace_label),
            );
        }
        if let Some(name) = &self.kill_switch_configmap {
            if !is_dns_subdomain(name) {
                err(
                    "remediation.kill_switch_configmap".into(),
                    format!("{name:?} is not a valid ConfigMap name (DNS-1123 subdomain)"),
                );
            }
        }
        if let Some(url) = &self.api_url {
            if url.parse::<axum::http::Uri>().is_err() {
                err(
                    "remediation.api_url".into(),
                    format!("{url:?} is not a URL"),
                );
            }
        }
    }
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let config = RemediationConfig::default();
        let mut problems = Vec::new();
        config.validate(&mut |p, r| problems.push(format!("{p}: {r}")));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!config.enabled, "acting must be opted into");
    }

    #[test]
    fn problems_name_the_field() {
        let config = RemediationConfig {
            settle: HumanDuration::secs(0),
            target_labels: vec!["deploy-ment".into()],
            kill_switch_configmap: Some("Kill_Switch".into()),
            ..RemediationConfig::default()
        };
        let mut problems = Vec::new();
        config.validate(&mut |p, r| problems.push(format!("{p}: {r}")));
        let text = problems.join("\n");
        assert!(
            text.contains("remediation.settle: must be more than 0s"),
            "{text}"
        );
        assert!(text.contains("remediation.target_labels[0]"), "{text}");
        assert!(text.contains("remediation.kill_switch_configmap"), "{text}");
    }
}
