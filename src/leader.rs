//! Leader election over a `coordination.k8s.io/v1` Lease, so that of the
//! replicas of the Deployment exactly one runs the pipeline.
//!
//! Why: aiopsd is a single writer. Two replicas polling the same signals
//! would open every incident twice, and with remediation (a later issue)
//! would act twice. Running two replicas buys fast fail-over only if the
//! second one waits. The Lease is the Kubernetes-native way to agree on
//! who runs: the API server serialises writes to it with `resourceVersion`
//! (optimistic concurrency), so two replicas racing for it cannot both
//! win.
//!
//! The algorithm is client-go's `leaderelection` package, reduced to what
//! aiopsd needs:
//!
//! - **acquire**: read the Lease; create it when it is absent (a 409
//!   `AlreadyExists` means another replica created it first); take it over
//!   when it is free or expired by replacing it with the `resourceVersion`
//!   that was read (a 409 `Conflict` means another replica wrote first and
//!   won). Retry every `retry_period`.
//! - **expiry is measured on this replica's clock**, from the moment it
//!   last saw the Lease *change*, not from the `renewTime` written by the
//!   holder: clocks of two nodes may disagree, but the local monotonic
//!   clock measures an interval correctly. A standby that starts therefore
//!   waits one full `lease_duration` before it takes over a lease it has
//!   not seen move.
//! - **renew** every `retry_period`; when no renewal has succeeded for
//!   `renew_deadline` (which is shorter than `lease_duration`), step down —
//!   *before* another replica may consider the lease expired, so there is
//!   never a moment with two leaders, even when the API server is
//!   unreachable (fail safe).
//! - **release** on a clean shutdown: the Lease is given up (no holder) so
//!   the standby takes over at once instead of after `lease_duration`.
//!
//! What happens after losing the lease is the daemon's decision (see
//! `daemon::run`): it stops the pipeline and exits non-zero, so Kubernetes
//! restarts the pod, which comes back as a standby.
//!
//! While leading, the replica labels its own pod `aiopsd.io/leader=true`
//! (and clears the label when it starts, steps down or stops); the Service
//! selects that label, so traffic reaches the one replica whose store is
//! written while every replica is Ready.
//!
//! API calls made (and only these; deploy/ grants exactly them):
//! `get`, `create` and `update` on `leases` in the `coordination.k8s.io`
//! group, and `patch` on `pods` (its own), in one namespace.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::HumanDuration;
use crate::telemetry::error_chain;

/// Field manager recorded on every write, so `kubectl get lease -o yaml
/// --show-managed-fields` says which program wrote the Lease.
pub const FIELD_MANAGER: &str = "aiopsd";

/// The `leader_election` section of the config.
///
/// Off by default: a single instance (the demo, a laptop, the `dev`
/// overlay) needs no Kubernetes API. The Deployment in deploy/base runs two
/// replicas and turns it on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Take part in leader election; only the holder of the Lease runs the
    /// pipeline. Default: `false` (this instance always runs it).
    #[serde(default)]
    pub enabled: bool,
    /// Namespace of the Lease. Default: the namespace of the Kubernetes
    /// client — the pod's own namespace in a cluster (from its service
    /// account), the kubeconfig context's namespace elsewhere.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name of the Lease; every replica of one aiopsd installation must use
    /// the same one. Default: `aiopsd`. A DNS-1123 subdomain.
    #[serde(default = "default_lease_name")]
    pub lease_name: String,
    /// This replica's name in the Lease (`holderIdentity`). Default: the
    /// `POD_NAME` environment variable (set it from the downward API), else
    /// the host name with the process id appended. Must differ between
    /// replicas: two replicas with the same identity would both believe
    /// they hold the lease.
    #[serde(default)]
    pub identity: Option<String>,
    /// How long a Lease stays valid after its last renewal; a standby takes
    /// over a lease that has not moved for this long. Default: `15s`.
    /// A whole number of seconds (the Lease stores seconds), more than
    /// `renew_deadline`.
    #[serde(default = "default_lease_duration")]
    pub lease_duration: HumanDuration,
    /// The leader steps down when it could not renew for this long.
    /// Default: `10s`. Less than `lease_duration` (so the leader stops
    /// before anyone else may start) and more than `retry_period`.
    #[serde(default = "default_renew_deadline")]
    pub renew_deadline: HumanDuration,
    /// Time between two attempts to acquire or renew. Default: `2s`.
    /// More than 0s.
    #[serde(default = "default_retry_period")]
    pub retry_period: HumanDuration,
    /// URL of the Kubernetes API server, e.g. `http://127.0.0.1:8001`
    /// (`kubectl proxy`) or a test server. Default: none — the in-cluster
    /// service account, or the local kubeconfig, as `kubectl` would find
    /// them. With a URL, no credentials are sent.
    #[serde(default)]
    pub api_url: Option<String>,
    /// This replica's pod, which the leader labels `aiopsd.io/leader=true`
    /// (and a standby clears) so that the Service, which selects that
    /// label, sends API calls and webhooks to the leader only while every
    /// replica stays Ready (PodDisruptionBudgets and rolling updates then
    /// work as usual). Default: the `POD_NAME` environment variable; with
    /// neither, no pod is labelled.
    #[serde(default)]
    pub pod_name: Option<String>,
}

/// The label the leader sets on its own pod; deploy/'s Service selects it.
pub const LEADER_LABEL: &str = "aiopsd.io/leader";

fn default_lease_name() -> String {
    "aiopsd".into()
}
fn default_lease_duration() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}
fn default_renew_deadline() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_retry_period() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: None,
            lease_name: default_lease_name(),
            identity: None,
            lease_duration: default_lease_duration(),
            renew_deadline: default_renew_deadline(),
            retry_period: default_retry_period(),
            api_url: None,
            pod_name: None,
        }
    }
}

impl LeaderElectionConfig {
    /// Reports every problem through `err(path, reason)`, with paths under
    /// `leader_election.`, so `Config::validate` lists them with the rest.
    ///
    /// Checked even when `enabled` is false, so a mistake is found before
    /// the day someone turns election on.
    pub fn validate(&self, err: &mut impl FnMut(String, String)) {
        let at = |field: &str| format!("leader_election.{field}");
        if let Some(ns) = &self.namespace {
            if let Err(reason) = check_dns_label(ns) {
                err(at("namespace"), reason);
            }
        }
        if let Err(reason) = check_dns_subdomain(&self.lease_name) {
            err(at("lease_name"), reason);
        }
        if let Some(identity) = &self.identity {
            if identity.trim().is_empty() || identity.len() > 253 {
                err(at("identity"), "must be 1 to 253 characters".into());
            }
        }
        let (lease, renew, retry) = (
            self.lease_duration.0,
            self.renew_deadline.0,
            self.retry_period.0,
        );
        if retry.is_zero() {
            err(at("retry_period"), "must be more than 0s".into());
        }
        if lease.subsec_nanos() != 0 || lease.as_secs() == 0 || lease.as_secs() > i32::MAX as u64 {
            err(
                at("lease_duration"),
                format!(
                    "must be a whole number of seconds, at least 1s, got {}",
                    self.lease_duration
                ),
            );
        }
        if renew >= lease {
            err(
                at("renew_deadline"),
                format!(
                    "must be less than lease_duration ({}), so a leader that cannot renew \
                     steps down before another replica may take over",
                    self.lease_duration
                ),
            );
        }
        if renew <= retry {
            err(
                at("renew_deadline"),
                format!(
                    "must be more than retry_period ({}), so a leader gets more than one \
                     attempt to renew",
                    self.retry_period
                ),
            );
        }
        if let Some(url) = &self.api_url {
            match url.parse::<axum::http::Uri>() {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) => {}
                Ok(_) => err(at("api_url"), format!("{url:?} is not an http(s) URL")),
                Err(e) => err(at("api_url"), format!("{url:?} is not a URL: {e}")),
            }
        }
    }
}

/// `name` is a DNS-1123 label (what a namespace name must be).
fn check_dns_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid namespace name (lowercase letters, digits and '-', \
             at most 63, starting and ending with a letter or digit)"
        ))
    }
}

/// `name` is a DNS-1123 subdomain (what most object names must be).
fn check_dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| check_dns_label(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid object name (lowercase letters, digits, '-' and '.', \
             at most 253)"
        ))
    }
}

/// Why a leader-election step failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// No Kubernetes client configuration could be found or built.
    #[error("cannot set up the Kubernetes client for leader election")]
    Client(#[source] kube::Error),
    /// The configured `api_url` does not parse.
    #[error("leader_election.api_url {0:?} is not a URL")]
    Url(String),
    /// No identity was configured and none could be derived.
    #[error(
        "cannot tell this replica's identity: set leader_election.identity or the \
         POD_NAME environment variable"
    )]
    NoIdentity,
    /// Reading the Lease failed.
    #[error("cannot read Lease {namespace}/{name}")]
    Get {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Creating the Lease failed (other than losing the race).
    #[error("cannot create Lease {namespace}/{name}")]
    Create {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the Lease failed (other than losing the race).
    #[error("cannot update Lease {namespace}/{name}")]
    Update {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("the Kubernetes API did not answer within {0:?}")]
    Timeout(Duration),
    /// Setting or clearing the leader label on this replica's pod failed.
    #[error("cannot set the {LEADER_LABEL} label on pod {namespace}/{pod}")]
    Label {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Resolved election settings: what [`LeaderElector`] runs with.
#[derive(Debug, Clone)]
pub struct ElectionSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's `holderIdentity`.
    pub identity: String,
    /// See [`LeaderElectionConfig::lease_duration`].
    pub lease_duration: Duration,
    /// See [`LeaderElectionConfig::renew_deadline`].
    pub renew_deadline: Duration,
    /// See [`LeaderElectionConfig::retry_period`].
    pub retry_period: Duration,
}

/// Result of one acquire-or-renew attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the lease (it just took or renewed it).
    Leader,
    /// Another replica holds it and its lease has not expired.
    Follower {
        /// The current holder's identity.
        holder: String,
    },
    /// Another writer got in between this replica's read and its write
    /// (409 `AlreadyExists` on create, 409 `Conflict` on replace). Who won
    /// is known only after the next read, so callers simply retry: a
    /// leader keeps its deadline, a standby keeps waiting.
    LostRace,
}

/// Why [`LeaderElector::hold`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Shutdown was requested while leading; the lease is still held (call
    /// [`LeaderElector::release`]).
    Cancelled,
    /// Leadership is gone; `reason` says why, for the log and the exit error.
    Lost {
        /// Why, in words.
        reason: String,
    },
}

/// The last version of the Lease this replica saw, and when (local clock).
#[derive(Debug, Clone)]
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

/// Takes part in the election for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: ElectionSettings,
    observed: Option<Observed>,
    pod_label: Option<PodLabel>,
}

/// The leader label on this replica's own pod.
#[derive(Clone)]
pub struct PodLabel {
    api: Api<Pod>,
    pod: String,
    namespace: String,
}

impl PodLabel {
    /// The label of pod `pod` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, pod: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            pod: pod.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// Sets (`true`) or removes (`false`) [`LEADER_LABEL`] with a JSON
    /// merge patch — only that one label is touched.
    pub async fn set(&self, leader: bool) -> Result<(), LeaderError> {
        let value = if leader {
            serde_json::Value::String("true".into())
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: value}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match tokio::time::timeout(
            Duration::from_secs(10),
            self.api.patch(&self.pod, &params, &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(LeaderError::Label {
                namespace: self.namespace.clone(),
                pod: self.pod.clone(),
                source,
            }),
            Err(_) => Err(LeaderError::Timeout(Duration::from_secs(10))),
        }
    }
}

impl LeaderElector {
    /// Builds the Kubernetes client from `config` (its `api_url`, else the
    /// in-cluster or kubeconfig settings) and resolves namespace and
    /// identity.
    ///
    /// Call [`crate::install_crypto_provider`] first (the CLI does).
    pub async fn connect(config: &LeaderElectionConfig) -> Result<Self, LeaderError> {
        let kube_config = match &config.api_url {
            Some(url) => {
                let uri: axum::http::Uri =
                    url.parse().map_err(|_| LeaderError::Url(url.clone()))?;
                kube::Config::new(uri)
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| LeaderError::Client(kube::Error::InferConfig(e)))?,
        };
        let mut kube_config = kube_config;
        // The election loop retries on its own schedule and must see each
        // failure at once to keep the renew deadline honest; kube's built-in
        // retry of 429/503 would hide failures behind its own backoff.
        kube_config.default_retry = false;
        let client = kube::Client::try_from(kube_config).map_err(LeaderError::Client)?;
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let identity = match &config.identity {
            Some(id) => id.clone(),
            None => default_identity().ok_or(LeaderError::NoIdentity)?,
        };
        let elector = Self::new(
            client,
            ElectionSettings {
                namespace,
                lease_name: config.lease_name.clone(),
                identity,
                lease_duration: config.lease_duration.0,
                renew_deadline: config.renew_deadline.0,
                retry_period: config.retry_period.0,
            },
        );
        let pod = config.pod_name.clone().or_else(|| {
            std::env::var("POD_NAME")
                .ok()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
        });
        Ok(match pod {
            Some(pod) => elector.with_pod_label(&pod),
            None => elector,
        })
    }

    /// An elector using `client`.
    pub fn new(client: kube::Client, settings: ElectionSettings) -> Self {
        let api = Api::namespaced(client, &settings.namespace);
        Self {
            api,
            settings,
            observed: None,
            pod_label: None,
        }
    }

    /// Also label pod `pod` (in the Lease's namespace) while leading.
    pub fn with_pod_label(mut self, pod: &str) -> Self {
        self.pod_label = Some(PodLabel::new(
            self.api.clone().into_client(),
            &self.settings.namespace,
            pod,
        ));
        self
    }

    /// The leader label of this replica's pod, when one is configured.
    pub fn pod_label(&self) -> Option<PodLabel> {
        self.pod_label.clone()
    }

    /// The settings in use (identity, namespace, timings).
    pub fn settings(&self) -> &ElectionSettings {
        &self.settings
    }

    fn post_params() -> PostParams {
        PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.into()),
        }
    }

    /// Bounds one API call so a hung connection cannot outlive the renew
    /// deadline.
    async fn call<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, LeaderError>>,
    ) -> Result<T, LeaderError> {
        let limit = self.settings.renew_deadline;
        tokio::time::timeout(limit, future)
            .await
            .map_err(|_| LeaderError::Timeout(limit))?
    }

    fn lease_duration_secs(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One attempt: creates the Lease, takes it over, or renews it.
    ///
    /// Losing a race (409 on create or replace) is not an error: it returns
    /// [`Attempt::LostRace`].
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, LeaderError> {
        let started = Instant::now();
        let name = self.settings.lease_name.clone();
        let now = MicroTime(Timestamp::now());
        let current = self
            .call(async {
                self.api
                    .get_opt(&name)
                    .await
                    .map_err(|source| LeaderError::Get {
                        namespace: self.settings.namespace.clone(),
                        name: name.clone(),
                        source,
                    })
            })
            .await?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.settings.identity.clone()),
                    lease_duration_seconds: Some(self.lease_duration_secs()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            let created = self
                .call(async {
                    match self.api.create(&Self::post_params(), &lease).await {
                        Ok(created) => Ok(Some(created)),
                        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(None),
                        Err(source) => Err(LeaderError::Create {
                            namespace: self.settings.namespace.clone(),
                            name: name.clone(),
                            source,
                        }),
                    }
                })
                .await?;
            return Ok(match created {
                Some(created) => {
                    self.observe(&created, started);
                    Attempt::Leader
                }
                None => Attempt::LostRace,
            });
        };

        self.observe_if_changed(&lease, started);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec
            .holder_identity
            .clone()
            .filter(|h| !h.trim().is_empty());
        let mine = holder.as_deref() == Some(self.settings.identity.as_str());
        if let (Some(other), false) = (&holder, mine) {
            // The holder's own stated duration decides, not ours: replicas
            // mid-upgrade may be configured differently.
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.settings.lease_duration);
            let seen_at = self.observed.as_ref().map_or(started, |o| o.at);
            if started.duration_since(seen_at) < duration {
                return Ok(Attempt::Follower {
                    holder: other.clone(),
                });
            }
            tracing::info!(
                lease = %name,
                previous = %other,
                "The lease was not renewed in time; taking it over."
            );
        }

        let mut new_spec = spec.clone();
        if !mine {
            new_spec.acquire_time = Some(now.clone());
            new_spec.lease_transitions =
                Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        new_spec.holder_identity = Some(self.settings.identity.clone());
        new_spec.lease_duration_seconds = Some(self.lease_duration_secs());
        new_spec.renew_time = Some(now);
        lease.spec = Some(new_spec);
        // `lease.metadata.resource_version` is the version just read: the
        // API server refuses the write with 409 if anyone wrote since.
        let replaced = self
            .call(async {
                match self.api.replace(&name, &Self::post_params(), &lease).await {
                    Ok(l) => Ok(Some(l)),
                    Err(kube::Error::Api(status)) if status.is_conflict() => Ok(None),
                    Err(source) => Err(LeaderError::Update {
                        namespace: self.settings.namespace.clone(),
                        name: name.clone(),
                        source,
                    }),
                }
            })
            .await?;
        Ok(match replaced {
            Some(l) => {
                self.observe(&l, started);
                Attempt::Leader
            }
            None => Attempt::LostRace,
        })
    }

    fn observe(&mut self, lease: &Lease, at: Instant) {
        self.observed = Some(Observed {
            resource_version: lease.metadata.resource_version.clone(),
            at,
        });
    }

    /// Restarts the expiry clock only when the Lease changed since it was
    /// last seen; an unchanged Lease keeps ageing.
    fn observe_if_changed(&mut self, lease: &Lease, at: Instant) {
        let changed = match &self.observed {
            Some(o) => o.resource_version != lease.metadata.resource_version,
            None => true,
        };
        if changed {
            self.observe(lease, at);
        }
    }

    /// Tries every `retry_period` until this replica holds the lease
    /// (`true`) or `cancel` fires (`false`). Errors are logged and retried:
    /// a standby waits out an API outage.
    pub async fn acquire(&mut self, cancel: &CancellationToken) -> bool {
        let mut last_holder: Option<String> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => {
                    tracing::info!(
                        lease = %self.settings.lease_name,
                        namespace = %self.settings.namespace,
                        identity = %self.settings.identity,
                        "This replica now holds the leader lease."
                    );
                    return true;
                }
                Ok(Attempt::Follower { holder }) => {
                    if last_holder.as_deref() != Some(holder.as_str()) {
                        tracing::info!(
                            lease = %self.settings.lease_name,
                            holder = %holder,
                            "Another replica holds the leader lease; standing by."
                        );
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::LostRace) => {
                    tracing::debug!("Another replica wrote the lease first; retrying.");
                }
                Err(error) => {
                    tracing::warn!(
                        error = %error_chain(&error),
                        "Cannot take part in leader election; retrying."
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.retry_period) => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    /// Renews the lease every `retry_period` until leadership is lost or
    /// `cancel` fires.
    ///
    /// Leadership is lost when another replica is found holding the lease,
    /// or when no renewal succeeded for `renew_deadline` (measured from
    /// the start of the last successful attempt, the conservative end).
    pub async fn hold(&mut self, cancel: &CancellationToken) -> HoldOutcome {
        let mut renewed_at = self.observed.as_ref().map_or_else(Instant::now, |o| o.at);
        const NO_ATTEMPT: &str = "no renewal attempted";
        let mut last_error = String::from(NO_ATTEMPT);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.retry_period) => {}
                _ = cancel.cancelled() => return HoldOutcome::Cancelled,
            }
            let deadline = renewed_at + self.settings.renew_deadline;
            let attempt_started = Instant::now();
            let attempt = tokio::select! {
                r = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()) => r,
                _ = cancel.cancelled() => return HoldOutcome::Cancelled,
            };
            match attempt {
                Ok(Ok(Attempt::Leader)) => renewed_at = attempt_started,
                // Someone wrote in between: the next read tells whether it
                // was a take-over; until then the deadline still runs.
                Ok(Ok(Attempt::LostRace)) => {
                    last_error = "another writer changed the lease first (409)".into();
                }
                Ok(Ok(Attempt::Follower { holder })) => {
                    return HoldOutcome::Lost {
                        reason: format!("replica {holder} holds the lease now"),
                    }
                }
                Ok(Err(error)) => {
                    last_error = error_chain(&error);
                    tracing::warn!(error = %last_error, "Renewing the leader lease failed; retrying.");
                }
                // Cut off by the deadline: the error of an earlier attempt,
                // if any, says more than the timeout does.
                Err(_) if last_error == NO_ATTEMPT => {
                    last_error = "the renewal did not complete in time".into();
                }
                Err(_) => {}
            }
            if Instant::now() >= renewed_at + self.settings.renew_deadline {
                return HoldOutcome::Lost {
                    reason: format!(
                        "could not renew the lease for {} (last error: {last_error})",
                        humantime::format_duration(self.settings.renew_deadline)
                    ),
                };
            }
        }
    }

    /// Gives the lease up (no holder, 1 s duration) if this replica holds
    /// it, so a standby takes over at once rather than after
    /// `lease_duration`. Called on a clean shutdown; failure only delays
    /// the take-over, so callers log it and go on.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let name = self.settings.lease_name.clone();
        let current = self
            .call(async {
                self.api
                    .get_opt(&name)
                    .await
                    .map_err(|source| LeaderError::Get {
                        namespace: self.settings.namespace.clone(),
                        name: name.clone(),
                        source,
                    })
            })
            .await?;
        let Some(mut lease) = current else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        self.call(async {
            match self.api.replace(&name, &Self::post_params(), &lease).await {
                // Someone else wrote since: it is not ours to release.
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.is_conflict() => Ok(()),
                Err(source) => Err(LeaderError::Update {
                    namespace: self.settings.namespace.clone(),
                    name: name.clone(),
                    source,
                }),
            }
        })
        .await?;
        self.observed = None;
        tracing::info!(lease = %name, "Released the leader lease.");
        Ok(())
    }
}

/// `POD_NAME` (unique per pod, set from the downward API), else the host
/// name plus the process id (two processes on one host must not share an
/// identity).
fn default_identity() -> Option<String> {
    if let Ok(pod) = std::env::var("POD_NAME") {
        if !pod.trim().is_empty() {
            return Some(pod.trim().to_string());
        }
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })?;
    Some(format!("{host}_{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &LeaderElectionConfig) -> Vec<String> {
        let mut out = Vec::new();
        config.validate(&mut |path, reason| out.push(format!("{path}: {reason}")));
        out
    }

    fn secs(s: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(s))
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let c = LeaderElectionConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.lease_name, "aiopsd");
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    }

    #[test]
    fn timing_rules_are_reported_with_paths() {
        let c = LeaderElectionConfig {
            lease_duration: secs(5),
            renew_deadline: secs(5),
            retry_period: secs(6),
            ..LeaderElectionConfig::default()
        };
        let p = problems(&c).join("\n");
        assert!(
            p.contains("leader_election.renew_deadline: must be less than lease_duration"),
            "{p}"
        );
        assert!(
            p.contains("leader_election.renew_deadline: must be more than retry_period"),
            "{p}"
        );
        let c = LeaderElectionConfig {
            lease_duration: HumanDuration(Duration::from_millis(15_500)),
            ..LeaderElectionConfig::default()
        };
        assert!(problems(&c)[0].starts_with("leader_election.lease_duration: must be a whole"));
    }

    #[test]
    fn names_and_url_are_checked() {
        let c = LeaderElectionConfig {
            namespace: Some("Not_A_Namespace".into()),
            lease_name: "-bad".into(),
            identity: Some(" ".into()),
            api_url: Some("ftp://x".into()),
            ..LeaderElectionConfig::default()
        };
        let p = problems(&c).join("\n");
        for needle in [
            "leader_election.namespace:",
            "leader_election.lease_name:",
            "leader_election.identity:",
            "leader_election.api_url:",
        ] {
            assert!(p.contains(needle), "missing {needle} in {p}");
        }
        assert!(check_dns_subdomain("aiopsd.leader").is_ok());
    }
}
