//! Why an executor call failed, named precisely enough to act on: which
//! verb on which resource and object, the API's status code and message,
//! and whether trying again later can help.

use std::time::Duration;

use crate::remediate::plan::WorkloadRef;

/// A failed executor step. Each API variant names the RBAC verb
/// (`get`, `list`, `patch`, `create`), the resource (plural, with
/// `/subresource`) and the object (`namespace/name`).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No Kubernetes client configuration could be found or built.
    #[error("cannot set up the Kubernetes client")]
    Client(#[source] ::kube::Error),
    /// The configured API URL does not parse.
    #[error("{0:?} is not a URL")]
    Url(String),
    /// 403: RBAC does not grant this call (see deploy/ and docs/deploy.md).
    /// Not retryable: a person must grant it or change the policy.
    #[error("forbidden: aiopsd may not {verb} {resource} {object}: {message}")]
    Forbidden {
        /// RBAC verb.
        verb: &'static str,
        /// Resource, e.g. `deployments/scale`.
        resource: &'static str,
        /// `namespace/name`.
        object: String,
        /// The API server's message.
        message: String,
    },
    /// 404: the object does not exist (any more).
    #[error("cannot {verb} {resource} {object}: not found")]
    NotFound {
        /// RBAC verb.
        verb: &'static str,
        /// Resource.
        resource: &'static str,
        /// `namespace/name`.
        object: String,
    },
    /// 409 on every attempt: the object kept changing between read and
    /// write (optimistic concurrency). Retryable later.
    #[error(
        "cannot {verb} {resource} {object}: the object changed between read and write \
         (409 Conflict) on each of {attempts} attempts"
    )]
    Conflict {
        /// RBAC verb.
        verb: &'static str,
        /// Resource.
        resource: &'static str,
        /// `namespace/name`.
        object: String,
        /// How many writes were tried.
        attempts: u32,
    },
    /// 429 from the Eviction API: a PodDisruptionBudget allows no
    /// disruption now. Deliberately **not** retryable: evicting anyway
    /// would break the budget the owner set, and waiting for it inside the
    /// executor would hide the refusal; the incident is escalated instead.
    #[error("eviction of pod {object} refused by a PodDisruptionBudget (429): {message}")]
    DisruptionBudget {
        /// `namespace/pod`.
        object: String,
        /// The API server's message and cause.
        message: String,
    },
    /// Any other error status from the API server.
    #[error("cannot {verb} {resource} {object}: {code} {reason}: {message}")]
    Api {
        /// RBAC verb.
        verb: &'static str,
        /// Resource.
        resource: &'static str,
        /// `namespace/name`.
        object: String,
        /// HTTP status code.
        code: u16,
        /// The Status `reason` (e.g. `Invalid`, `ServiceUnavailable`).
        reason: String,
        /// The Status `message`.
        message: String,
    },
    /// The API server did not answer in time.
    #[error("cannot {verb} {resource} {object}: no answer within {after:?}")]
    Timeout {
        /// RBAC verb.
        verb: &'static str,
        /// Resource.
        resource: &'static str,
        /// `namespace/name`.
        object: String,
        /// The per-call limit.
        after: Duration,
    },
    /// The request did not get an API answer (connection, TLS, decoding).
    #[error("cannot {verb} {resource} {object}")]
    Transport {
        /// RBAC verb.
        verb: &'static str,
        /// Resource.
        resource: &'static str,
        /// `namespace/name`.
        object: String,
        /// The client error.
        #[source]
        source: ::kube::Error,
    },
    /// The object lacks something the action needs (no revision
    /// annotation, a malformed rollout strategy).
    #[error("{resource} {object}: {problem}")]
    Malformed {
        /// Resource.
        resource: &'static str,
        /// `namespace/name`.
        object: String,
        /// What is wrong.
        problem: String,
    },
    /// The executor refused: the plan does not fit the workload as it is
    /// now (the safety checks of the executor, on top of the gate's).
    #[error("refused to act on {target}: {reason}")]
    Refused {
        /// The workload.
        target: WorkloadRef,
        /// Why, in words for the incident report.
        reason: String,
    },
    /// A revert of a pre-state that cannot be restored (an eviction).
    #[error("cannot revert on {target}: {why}")]
    Irreversible {
        /// The workload.
        target: WorkloadRef,
        /// Why.
        why: String,
    },
}

impl ExecError {
    /// Whether the same call may succeed later without anyone changing
    /// anything: conflicts, timeouts, transport errors, 429 (other than a
    /// disruption budget) and 5xx. Refusals, 403, 404, 422, disruption
    /// budgets and irreversible reverts are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecError::Conflict { .. }
            | ExecError::Timeout { .. }
            | ExecError::Transport { .. } => true,
            ExecError::Api { code, .. } => matches!(code, 429 | 500 | 502 | 503 | 504),
            ExecError::Client(_)
            | ExecError::Url(_)
            | ExecError::Forbidden { .. }
            | ExecError::NotFound { .. }
            | ExecError::DisruptionBudget { .. }
            | ExecError::Malformed { .. }
            | ExecError::Refused { .. }
            | ExecError::Irreversible { .. } => false,
        }
    }

    /// The HTTP status code behind the error, when the API server answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            ExecError::Forbidden { .. } => Some(403),
            ExecError::NotFound { .. } => Some(404),
            ExecError::Conflict { .. } => Some(409),
            ExecError::DisruptionBudget { .. } => Some(429),
            ExecError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Maps a kube client error for one call to the variant that names it.
    pub(super) fn from_kube(
        verb: &'static str,
        resource: &'static str,
        object: String,
        error: ::kube::Error,
    ) -> ExecError {
        let ::kube::Error::Api(status) = error else {
            return ExecError::Transport {
                verb,
                resource,
                object,
                source: error,
            };
        };
        match status.code {
            403 => ExecError::Forbidden {
                verb,
                resource,
                object,
                message: status.message.clone(),
            },
            404 => ExecError::NotFound {
                verb,
                resource,
                object,
            },
            409 if status.reason == "Conflict" => ExecError::Conflict {
                verb,
                resource,
                object,
                attempts: 1,
            },
            429 if resource == "pods/eviction" => {
                let causes: Vec<String> = status
                    .details
                    .iter()
                    .flat_map(|d| d.causes.iter())
                    .filter(|c| c.reason == "DisruptionBudget" || !c.message.is_empty())
                    .map(|c| c.message.clone())
                    .collect();
                let mut message = status.message.clone();
                if !causes.is_empty() {
                    message = format!("{message} ({})", causes.join("; "));
                }
                ExecError::DisruptionBudget { object, message }
            }
            code => ExecError::Api {
                verb,
                resource,
                object,
                code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
        }
    }
}
