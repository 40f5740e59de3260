//! The remediation stage: a reconcile loop over the store.
//!
//! Each pass (woken by the incident stage, or every second):
//!
//! 1. **recover** (first pass only): actions left `executing` by a crash
//!    are settled from the object's `aiopsd.io/last-action` annotation —
//!    found: the change happened, go on to verification; absent: it did
//!    not, and it is *not* retried (the world may have moved on), the
//!    incident is escalated;
//! 2. **decide**: open incidents without a decision, open for at least
//!    `decide_after`, get a diagnosis and one decision of the policy gate,
//!    recorded with its action (if any) in one transaction;
//! 3. **execute**: approved, planned actions — pre-state and intent are
//!    written first, then the API call, then the outcome; denied or
//!    expired ones are cancelled;
//! 4. **verify**: executed actions are judged ([`super::verify`]); a
//!    failure is reverted when the pre-state allows it and the incident is
//!    escalated.
//!
//! Everything the loop knows is in the store, so a restart (or a new
//! leader) simply continues. Only the leader runs it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::RemediationConfig;
use super::kube::{ExecError, KubeCluster};
use super::plan::{
    ExecutionReport, PlannedAction, PreState, WorkloadRef, WorkloadState, ACTION_ANNOTATION,
};
use super::record::{DecisionOutcome, DecisionRecord, ExecState};
use super::sim::SimCluster;
use super::verify::{judge, Verdict};
use crate::diagnose::diagnoser::Diagnoser;
use crate::incident::{ActionPlanRecord, Incident, IncidentId, Store, StoreError};
use crate::policy::{self, PolicyReloader};
use crate::publish::approvals::{ActionState, PendingAction};
use crate::signal::{format_ts, now_ms, TimestampMs};
use crate::telemetry::{error_chain, Metrics};

/// Name of the store setting behind the API kill switch.
pub const KILL_SWITCH_SETTING: &str = "kill_switch";

/// Where actions go.
pub enum Cluster {
    /// A real API server through kube-rs.
    Kube(KubeCluster),
    /// The demo's simulated cluster.
    Sim(Arc<SimCluster>),
    /// No cluster (remediation off): incidents are diagnosed from their
    /// own evidence, nothing is resolved or acted on.
    Detached,
}

impl Cluster {
    async fn resolve(&self, namespace: &str, name: &str) -> Result<Option<WorkloadRef>, ExecError> {
        match self {
            Cluster::Kube(k) => k.resolve(namespace, name).await,
            Cluster::Sim(s) => Ok(s.resolve(namespace, name)),
            Cluster::Detached => Ok(None),
        }
    }

    async fn observe(&self, target: &WorkloadRef) -> Result<WorkloadState, ExecError> {
        match self {
            Cluster::Kube(k) => k.observe(target).await,
            Cluster::Sim(s) => s.observe(target),
            Cluster::Detached => Err(detached()),
        }
    }

    async fn pre_state(&self, plan: &PlannedAction) -> Result<PreState, ExecError> {
        match self {
            Cluster::Kube(k) => k.pre_state(plan).await,
            Cluster::Sim(s) => s.pre_state(plan),
            Cluster::Detached => Err(detached()),
        }
    }

    async fn execute(
        &self,
        action_id: &str,
        plan: &PlannedAction,
        data_now: TimestampMs,
    ) -> Result<ExecutionReport, ExecError> {
        match self {
            Cluster::Kube(k) => k.execute(action_id, plan).await,
            Cluster::Sim(s) => s.execute(action_id, plan, data_now),
            Cluster::Detached => Err(detached()),
        }
    }

    async fn revert(
        &self,
        action_id: &str,
        pre: &PreState,
        data_now: TimestampMs,
    ) -> Result<ExecutionReport, ExecError> {
        match self {
            Cluster::Kube(k) => k.revert(action_id, pre).await,
            Cluster::Sim(s) => s.revert(action_id, pre, data_now),
            Cluster::Detached => Err(detached()),
        }
    }

    async fn record_event(&self, target: &WorkloadRef, reason: &str, message: &str, warning: bool) {
        match self {
            Cluster::Kube(k) => {
                // A failed Event is logged by the executor; never fatal.
                let _ = k.record_event(target, reason, message, warning).await;
            }
            Cluster::Sim(s) => s.record_event(target, reason, message),
            Cluster::Detached => {}
        }
    }

    async fn rollback_candidate(
        &self,
        target: &WorkloadRef,
    ) -> Result<Option<policy::RollbackCandidate>, ExecError> {
        match self {
            Cluster::Kube(k) => k.rollback_candidate(target).await,
            Cluster::Sim(s) => Ok(s.rollback_candidate(target)),
            Cluster::Detached => Ok(None),
        }
    }

    /// The ConfigMap kill switch: `Some(reason)` when on. A ConfigMap
    /// that cannot be read (other than absent) counts as **on**: not
    /// knowing whether an operator pulled the switch is no ground to act.
    async fn configmap_kill_switch(&self, config: &RemediationConfig) -> Option<String> {
        let (Cluster::Kube(k), Some(name)) = (self, &config.kill_switch_configmap) else {
            return None;
        };
        match k.kill_switch(config.namespace.as_deref(), name).await {
            Ok(true) => Some(format!("the ConfigMap {name} has enabled: \"true\"")),
            Ok(false) => None,
            Err(error) => Some(format!(
                "the kill-switch ConfigMap {name} could not be read ({}); acting only when it can be",
                error_chain(&error)
            )),
        }
    }
}

fn detached() -> ExecError {
    ExecError::Malformed {
        resource: "cluster",
        object: "-".into(),
        problem: "remediation is off (remediation.enabled: false): no cluster is connected".into(),
    }
}

/// Which clock decisions and verification use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Wall time (`aiopsd run`): stale data is data older than now.
    Wall,
    /// Data time (the demo's fast simulated time): "now" is how far the
    /// data has come.
    Data,
}

/// The remediation stage.
pub struct Remediator {
    store: Store,
    metrics: Arc<Metrics>,
    cluster: Cluster,
    diagnoser: Diagnoser,
    policies: PolicyReloader,
    config: RemediationConfig,
    clock: Clock,
    last_reload: Instant,
    recovered: bool,
    policy_view: Option<tokio::sync::watch::Sender<crate::ui::PolicyView>>,
}

impl Remediator {
    /// A stage acting through `cluster` under `policies`.
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        cluster: Cluster,
        diagnoser: Diagnoser,
        policies: PolicyReloader,
        config: RemediationConfig,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            metrics,
            cluster,
            diagnoser,
            policies,
            config,
            clock,
            last_reload: Instant::now(),
            recovered: false,
            policy_view: None,
        }
    }

    /// Publishes the loaded rules (at start and on every reload) for the
    /// UI's policy page.
    pub fn with_policy_view(
        mut self,
        sender: tokio::sync::watch::Sender<crate::ui::PolicyView>,
    ) -> Self {
        self.policy_view = Some(sender);
        self.publish_policy_view();
        self
    }

    fn publish_policy_view(&self) {
        let Some(sender) = &self.policy_view else {
            return;
        };
        let set = self.policies.current();
        let source = if self.policies.dir().as_os_str().is_empty() {
            set.files().join(", ")
        } else {
            self.policies.dir().display().to_string()
        };
        let rules = set
            .rules()
            .iter()
            .map(|r| crate::ui::RuleSummary {
                name: r.id().to_string(),
                mode: r.mode().as_str().to_string(),
                verbs: vec![r.verb().as_str().to_string()],
                matches: r.describe_match(),
                limits: r.describe_limits(),
            })
            .collect();
        sender.send_replace(crate::ui::PolicyView {
            source: Some(format!("{source} (version {})", set.version())),
            loaded_at: Some(now_ms()),
            rules,
            kill_switch: None,
        });
    }

    /// Runs until `cancel`; `wake` is notified by the incident stage after
    /// each stored change so a decision follows within milliseconds.
    pub async fn run(mut self, wake: Arc<Notify>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = wake.notified() => {}
                _ = tick.tick() => {}
            }
            if let Err(error) = self.reconcile().await {
                tracing::warn!(
                    error = %error_chain(&error),
                    "Remediation pass failed; retrying on the next pass."
                );
            }
        }
        // One last pass so a decision already due is recorded.
        if let Err(error) = self.reconcile().await {
            tracing::warn!(error = %error_chain(&error), "Final remediation pass failed.");
        }
    }

    /// One pass over the store.
    pub async fn reconcile(&mut self) -> Result<(), StoreError> {
        self.maybe_reload();
        if !self.recovered {
            self.recovered = true;
            self.recover_interrupted().await?;
        }
        self.decide_new().await?;
        self.execute_ready().await?;
        self.verify_executed().await?;
        self.revert_requested().await?;
        Ok(())
    }

    fn maybe_reload(&mut self) {
        if self.last_reload.elapsed() < self.config.reload_interval.0 {
            return;
        }
        self.last_reload = Instant::now();
        match self.policies.reload_if_changed() {
            policy::ReloadOutcome::Reloaded { .. } => {
                tracing::info!(
                    dir = %self.policies.dir().display(),
                    version = %self.policies.current().version(),
                    "Policies reloaded."
                );
                self.publish_policy_view();
            }
            policy::ReloadOutcome::Rejected(errors) => tracing::error!(
                dir = %self.policies.dir().display(),
                problems = %errors,
                "A policy edit was rejected; the last good policies stay in force."
            ),
            _ => {}
        }
    }

    /// How far data has come: the furthest poll cursor (data clock), or
    /// the wall clock.
    fn now(&self, cursors: &BTreeMap<String, Option<TimestampMs>>) -> TimestampMs {
        match self.clock {
            Clock::Wall => now_ms(),
            Clock::Data => cursors.values().flatten().copied().max().unwrap_or(0),
        }
    }

    fn cursors(&self) -> Result<BTreeMap<String, Option<TimestampMs>>, StoreError> {
        Ok(self
            .store
            .cursors()?
            .into_iter()
            .map(|(signal, until)| (signal, Some(until)))
            .collect())
    }

    /// Data time of an incident's newest data: its signals' cursors (an
    /// incident of alerts only is as fresh as the clock).
    fn newest_data(
        &self,
        incident: &Incident,
        cursors: &BTreeMap<String, Option<TimestampMs>>,
        now: TimestampMs,
    ) -> TimestampMs {
        if incident.signals.is_empty() {
            return now;
        }
        incident
            .signals
            .iter()
            .filter_map(|s| cursors.get(&s.series.signal).copied().flatten())
            .max()
            .unwrap_or(incident.last_anomaly_at)
    }

    async fn kill_switch(&self) -> Result<Option<String>, StoreError> {
        if self.config.kill_switch {
            return Ok(Some("remediation.kill_switch is on in the config".into()));
        }
        if let Some(s) = self.store.setting(KILL_SWITCH_SETTING)? {
            if s.value == "on" {
                return Ok(Some(format!(
                    "switched on through the API by {} at {}: {}",
                    s.changed_by,
                    format_ts(s.changed_at),
                    s.reason
                )));
            }
        }
        Ok(self.cluster.configmap_kill_switch(&self.config).await)
    }

    async fn recover_interrupted(&mut self) -> Result<(), StoreError> {
        let cursors = self.cursors()?;
        let now = self.now(&cursors);
        for action in self.store.actions_in(&[ExecState::Executing])? {
            let Some(plan) = action.execution.as_ref().and_then(|e| e.plan.clone()) else {
                continue;
            };
            let id = action_key(&action);
            // The executor is idempotent by action id: an action that
            // happened before the crash is found on the object and not done
            // again; one cut short (a scale whose annotation was not yet
            // written) is completed; one that never reached the API server
            // runs now, after the executor re-checks that the workload is
            // still as the gate saw it.
            match self.cluster.execute(&id, &plan, now).await {
                Ok(report) => {
                    let verify_from = now.saturating_add(self.config.settle.as_millis_i64());
                    let how = if report.already_applied {
                        format!("applied before a restart ({ACTION_ANNOTATION}={id} found)")
                    } else {
                        format!("{} (completed after a restart)", report.summary)
                    };
                    self.store.finish_execution(
                        action.id,
                        Ok(&how),
                        Some(verify_from),
                        now_ms(),
                    )?;
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(
                        action = action.id,
                        error = %error_chain(&error),
                        "Cannot reconcile an interrupted action yet."
                    );
                    self.recovered = false;
                }
                Err(error) => {
                    let message =
                        format!("interrupted by a restart and could not be completed: {error}");
                    self.store
                        .finish_execution(action.id, Err(&message), None, now_ms())?;
                    self.store
                        .escalate_incident(action.incident_id, &message, now, now_ms())?;
                }
            }
        }
        Ok(())
    }

    async fn decide_new(&mut self) -> Result<(), StoreError> {
        let cursors = self.cursors()?;
        let now = self.now(&cursors);
        let decide_after = self.config.decide_after.as_millis_i64();
        for incident in self.store.open_incidents()? {
            let Some(id) = incident.id else { continue };
            if now.saturating_sub(incident.opened_at) < decide_after {
                continue;
            }
            if !self.config.enabled {
                // Diagnosis only: once per incident.
                if incident.diagnosis.is_none() {
                    let diagnosis = self.diagnoser.diagnose(&incident, now).await;
                    self.store.save_diagnosis(id, &diagnosis, now_ms())?;
                }
                continue;
            }
            if self.store.has_decision(id)? {
                continue;
            }
            let decision = self.decide(&incident, id, &cursors, now).await?;
            tracing::info!(
                incident = id,
                outcome = decision.outcome.as_str(),
                rule = %decision.rule,
                reasons = %decision.reasons.join("; "),
                "Policy decision."
            );
        }
        Ok(())
    }

    /// Diagnoses, asks the gate, records the decision (and its action).
    async fn decide(
        &mut self,
        incident: &Incident,
        id: IncidentId,
        cursors: &BTreeMap<String, Option<TimestampMs>>,
        now: TimestampMs,
    ) -> Result<DecisionRecord, StoreError> {
        let diagnosis = self.diagnoser.diagnose(incident, now).await;
        self.store.save_diagnosis(id, &diagnosis, now_ms())?;
        let target = match self.target(incident).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                let record = refusal(
                    "no-target",
                    format!(
                        "no workload found for {} from the labels {:?}",
                        incident.subject(),
                        self.config.target_labels
                    ),
                );
                self.store.record_decision(id, &record, None, now_ms())?;
                return Ok(record);
            }
            Err(error) => {
                let record = refusal(
                    "target-unreadable",
                    format!("the target workload could not be read: {error}"),
                );
                self.store.record_decision(id, &record, None, now_ms())?;
                self.store
                    .escalate_incident(id, &record.reasons[0], now, now_ms())?;
                return Ok(record);
            }
        };
        let kill_switch = self.kill_switch().await?;
        let history = self.history(now)?;
        let proposal = diagnosis.top().and_then(|h| {
            let verb = h.suggestion.as_ref().and_then(|s| s.verb)?;
            Some(policy::Proposal {
                verb,
                by: h.proposed_by,
            })
        });
        let rollback = match self.cluster.rollback_candidate(&target.target).await {
            Ok(candidate) => candidate,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "Cannot read the previous revision; rollback rules will refuse.");
                None
            }
        };
        let set = self.policies.current();
        let input = policy::GateInput {
            incident,
            kind: policy::IncidentKind::of(incident),
            workload: &target,
            proposal,
            diagnosis: Some(&diagnosis),
            history: &history,
            now,
            data_time: Some(self.newest_data(incident, cursors, now)),
            kill_switch: kill_switch.as_deref(),
            pod: None,
            rollback,
        };
        let decision = policy::decide(&set, &input);
        let record = decision.to_record(proposal.map(|p| p.by));
        self.metrics.decision(record.outcome.as_str());
        let plan = match (&record.action, record.outcome) {
            (
                Some(_),
                DecisionOutcome::Execute | DecisionOutcome::DryRun | DecisionOutcome::NeedsApproval,
            ) => Some(ActionPlanRecord {
                mode: match record.outcome {
                    DecisionOutcome::Execute => "auto",
                    DecisionOutcome::NeedsApproval => "approve",
                    _ => "dry_run",
                }
                .into(),
                pods_touched: decision.pods_touched,
                approval_ttl_ms: self.config.approval_ttl.as_millis_i64(),
            }),
            _ => None,
        };
        let (action, _) = self
            .store
            .record_decision(id, &record, plan.as_ref(), now_ms())?;
        if record.outcome == DecisionOutcome::Refused && kill_switch.is_none() {
            // A refusal of an incident that asked for help: a person decides.
            let message = format!(
                "No automatic action: {} ({}).",
                record.reasons.join("; "),
                record.rule
            );
            self.store.escalate_incident(id, &message, now, now_ms())?;
        }
        if let Some(action) = action {
            let reason = if record.outcome == DecisionOutcome::DryRun {
                "DryRun"
            } else {
                "Planned"
            };
            self.cluster
                .record_event(
                    &target.target,
                    reason,
                    &format!(
                        "aiopsd action {} (rule {}): {}",
                        action.id, record.rule, action.description
                    ),
                    false,
                )
                .await;
        }
        Ok(record)
    }

    /// The workload an incident is about, from its group labels.
    async fn target(&self, incident: &Incident) -> Result<Option<WorkloadState>, ExecError> {
        let Some(namespace) = incident.group_label(&self.config.namespace_label) else {
            return Ok(None);
        };
        for label in &self.config.target_labels {
            let Some(name) = incident.group_label(label) else {
                continue;
            };
            if let Some(target) = self.cluster.resolve(namespace, name).await? {
                return self.cluster.observe(&target).await.map(Some);
            }
        }
        Ok(None)
    }

    /// Actions in the last day, for cooldowns and rate limits.
    fn history(&self, now: TimestampMs) -> Result<Vec<policy::PastAction>, StoreError> {
        const DAY_MS: i64 = 24 * 3_600_000;
        let since = match self.clock {
            Clock::Wall => now.saturating_sub(DAY_MS),
            Clock::Data => 0,
        };
        Ok(self
            .store
            .actions_since(since)?
            .into_iter()
            .filter_map(|a| {
                let exec = a.execution?;
                let plan = exec.plan?;
                let executed = matches!(
                    exec.state,
                    ExecState::Executing
                        | ExecState::Executed
                        | ExecState::Verified
                        | ExecState::Failed
                        | ExecState::Reverted
                        | ExecState::RevertFailed
                ) || (exec.state == ExecState::Planned
                    && a.state == ActionState::Approved);
                Some(policy::PastAction {
                    target: plan.target().clone(),
                    verb: plan.verb(),
                    at: exec.executed_at.unwrap_or(a.requested_at),
                    pods_touched: 0,
                    executed,
                })
            })
            .collect())
    }

    async fn execute_ready(&mut self) -> Result<(), StoreError> {
        let planned = self.store.actions_in(&[ExecState::Planned])?;
        if planned.is_empty() {
            return Ok(());
        }
        let cursors = self.cursors()?;
        let now = self.now(&cursors);
        for action in planned {
            match action.state {
                ActionState::Pending => continue,
                ActionState::Denied | ActionState::Expired => {
                    let message = format!("not run: approval {}", action.state.as_str());
                    self.store.cancel_action(action.id, &message, now_ms())?;
                    continue;
                }
                ActionState::Approved => {}
            }
            let Some(plan) = action.execution.as_ref().and_then(|e| e.plan.clone()) else {
                self.store.cancel_action(
                    action.id,
                    "not run: the stored plan is unreadable",
                    now_ms(),
                )?;
                continue;
            };
            if let Some(reason) = self.kill_switch().await? {
                // Approved before the switch was pulled: it stays planned
                // and runs only if the switch is released in time.
                tracing::warn!(action = action.id, reason = %reason, "Kill switch on: action held.");
                continue;
            }
            if let Some(incident) = self.store.get_incident(action.incident_id)? {
                if incident.state == crate::incident::IncidentState::Resolved {
                    self.store.cancel_action(
                        action.id,
                        "not run: the incident resolved before the action could run",
                        now_ms(),
                    )?;
                    continue;
                }
            }
            self.run_action(&action, &plan, now).await?;
        }
        Ok(())
    }

    /// Write-ahead, call, outcome — for one approved action.
    async fn run_action(
        &mut self,
        action: &PendingAction,
        plan: &PlannedAction,
        now: TimestampMs,
    ) -> Result<(), StoreError> {
        let target = plan.target().clone();
        let pre = match self.cluster.pre_state(plan).await {
            Ok(pre) => pre,
            Err(error) if error.is_retryable() => {
                tracing::warn!(action = action.id, error = %error_chain(&error), "Pre-state not readable yet; retrying.");
                return Ok(());
            }
            Err(error) => {
                let message = format!("not run: the pre-state could not be read: {error}");
                self.store.cancel_action(action.id, &message, now_ms())?;
                self.store
                    .escalate_incident(action.incident_id, &message, now, now_ms())?;
                return Ok(());
            }
        };
        if !self.store.begin_execution(action.id, &pre, now_ms())? {
            return Ok(());
        }
        let key = action_key(action);
        match self.cluster.execute(&key, plan, now).await {
            Ok(report) => {
                let verify_from = now.saturating_add(self.config.settle.as_millis_i64());
                let summary = if report.already_applied {
                    format!("{} (already applied)", report.summary)
                } else {
                    report.summary.clone()
                };
                self.store.finish_execution(
                    action.id,
                    Ok(&summary),
                    Some(verify_from),
                    now_ms(),
                )?;
                self.cluster
                    .record_event(
                        &target,
                        "Remediated",
                        &format!("aiopsd action {}: {}", action.id, summary),
                        false,
                    )
                    .await;
                self.metrics.action(plan.verb().as_str(), "executed");
                tracing::info!(action = action.id, target = %target, summary = %summary, "Action executed.");
            }
            Err(error) => {
                let message = format!("failed: {error}");
                self.store
                    .finish_execution(action.id, Err(&message), None, now_ms())?;
                self.store
                    .escalate_incident(action.incident_id, &message, now, now_ms())?;
                self.cluster
                    .record_event(&target, "RemediationFailed", &message, true)
                    .await;
                self.metrics.action(plan.verb().as_str(), "failed");
                tracing::error!(action = action.id, target = %target, error = %error_chain(&error), "Action failed.");
            }
        }
        Ok(())
    }

    async fn verify_executed(&mut self) -> Result<(), StoreError> {
        let executed = self.store.actions_in(&[ExecState::Executed])?;
        if executed.is_empty() {
            return Ok(());
        }
        let cursors = self.cursors()?;
        let now = self.now(&cursors);
        for action in executed {
            let Some(exec) = action.execution.clone() else {
                continue;
            };
            let Some(incident) = self.store.get_incident(action.incident_id)? else {
                continue;
            };
            let verify_from = exec.verify_from.unwrap_or(now);
            let timed_out = exec.executed_at.is_some_and(|at| {
                now_ms().saturating_sub(at) > self.config.verify_timeout.as_millis_i64()
            });
            match judge(
                &incident,
                verify_from,
                self.config.verify_window.as_millis_i64(),
                &cursors,
                timed_out,
            ) {
                Verdict::Pending => {}
                Verdict::Recovered(why) => {
                    self.store.finish_verification(
                        action.id,
                        true,
                        &format!("verified: {why}"),
                        now_ms(),
                    )?;
                    if let Some(plan) = &exec.plan {
                        self.cluster
                            .record_event(plan.target(), "Verified", &why, false)
                            .await;
                    }
                    if let Some(plan) = &exec.plan {
                        self.metrics.action(plan.verb().as_str(), "verified");
                    }
                    tracing::info!(action = action.id, why = %why, "Action verified.");
                }
                Verdict::NotRecovered(why) => {
                    self.store.finish_verification(
                        action.id,
                        false,
                        &format!("did not help: {why}"),
                        now_ms(),
                    )?;
                    if let Some(plan) = &exec.plan {
                        self.metrics.action(plan.verb().as_str(), "not_verified");
                    }
                    let revert = self.revert(&action, exec.pre_state.as_ref(), now).await?;
                    let message = format!("Action {} did not help ({why}); {revert}.", action.id);
                    self.store
                        .escalate_incident(action.incident_id, &message, now, now_ms())?;
                    tracing::warn!(action = action.id, why = %why, revert = %revert, "Action did not help; escalated.");
                }
            }
        }
        Ok(())
    }

    /// Carries out reverts people asked for (API, `aiopsd action revert`).
    async fn revert_requested(&mut self) -> Result<(), StoreError> {
        let candidates = self.store.actions_in(&[
            ExecState::Executed,
            ExecState::Verified,
            ExecState::Failed,
        ])?;
        for action in candidates {
            let Some(exec) = action.execution.clone() else {
                continue;
            };
            let Some(by) = exec.revert_requested_by.clone() else {
                continue;
            };
            let cursors = self.cursors()?;
            let now = self.now(&cursors);
            let outcome = self.revert(&action, exec.pre_state.as_ref(), now).await?;
            tracing::info!(
                action = action.id,
                by = %by,
                reason = %exec.revert_reason.unwrap_or_default(),
                outcome = %outcome,
                "Revert requested by a person."
            );
        }
        Ok(())
    }

    /// Reverts a failed action when its pre-state allows; returns what
    /// happened, for the escalation message.
    async fn revert(
        &mut self,
        action: &PendingAction,
        pre: Option<&PreState>,
        now: TimestampMs,
    ) -> Result<String, StoreError> {
        let Some(pre) = pre else {
            return Ok("nothing to revert (no pre-state recorded)".into());
        };
        if let PreState::Irreversible { why, .. } = pre {
            return Ok(format!("not reverted: {why}"));
        }
        // Its own id: the object carries the action's id since the action
        // ran, and the executor would take the revert for done.
        let key = format!("{}-revert", action_key(action));
        let outcome = self.cluster.revert(&key, pre, now).await;
        let (ok, message) = match &outcome {
            Ok(report) => (true, format!("reverted: {}", report.summary)),
            Err(error) => (false, format!("revert failed: {error}")),
        };
        self.store
            .record_revert(action.id, ok, &message, now_ms())?;
        let verb = action
            .execution
            .as_ref()
            .and_then(|e| e.plan.as_ref())
            .map_or("unknown", |p| p.verb().as_str());
        self.metrics
            .action(verb, if ok { "reverted" } else { "revert_failed" });
        Ok(message)
    }
}

/// The id written on objects: stable per action and per installation.
fn action_key(action: &PendingAction) -> String {
    format!("action-{}", action.id)
}

/// A decision that refuses before any rule is consulted (no target, an
/// unreadable workload).
fn refusal(rule: &str, reason: String) -> DecisionRecord {
    DecisionRecord {
        at: now_ms(),
        outcome: DecisionOutcome::Refused,
        rule: rule.to_string(),
        reasons: vec![reason],
        action: None,
        proposed_by: "policy".into(),
        action_id: None,
    }
}
