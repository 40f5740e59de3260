//! One call that diagnoses an incident: the evidence bundle from the
//! incident itself, the Kubernetes side when a client is at hand, the rule
//! catalogue, and — when configured — the LLM's second opinion, merged and
//! put through the safety rule again.

use kube::Client;

use super::bundle::{from_incident, SignalKinds};
use super::catalogue::Catalogue;
use super::engine::{apply_safety_rule, diagnose};
use super::llm::LlmDiagnoser;
use super::Diagnosis;
use crate::incident::Incident;
use crate::signal::TimestampMs;

/// How far back the Kubernetes side looks for changes before an incident
/// opened (a rollout an hour earlier can still be its cause).
const CHANGE_LOOKBACK_MS: i64 = 60 * 60_000;

/// Largest lead or lag considered between two series of an incident.
const CORRELATION_MAX_LAG_MS: i64 = 10 * 60_000;

/// Everything diagnosis needs, built once by the daemon.
pub struct Diagnoser {
    kinds: SignalKinds,
    catalogue: Catalogue,
    kube: Option<Client>,
    sim: Option<std::sync::Arc<crate::remediate::sim::SimCluster>>,
    llm: Option<LlmDiagnoser>,
}

impl Diagnoser {
    /// Rules only, from `catalogue`.
    pub fn new(kinds: SignalKinds, catalogue: Catalogue) -> Self {
        Self {
            kinds,
            catalogue,
            kube: None,
            sim: None,
            llm: None,
        }
    }

    /// Also read pods, rollouts, HPAs and nodes through `client`.
    pub fn with_kube(mut self, client: Client) -> Self {
        self.kube = Some(client);
        self
    }

    /// Also read the demo's simulated cluster.
    pub fn with_sim(mut self, sim: std::sync::Arc<crate::remediate::sim::SimCluster>) -> Self {
        self.sim = Some(sim);
        self
    }

    /// Also ask the LLM.
    pub fn with_llm(mut self, llm: LlmDiagnoser) -> Self {
        self.llm = Some(llm);
        self
    }

    /// Ranks the incident's other series by lagged correlation with its
    /// headline series (which moved first, which moved with it) and adds
    /// the strongly correlated ones as evidence.
    fn add_correlated(&self, incident: &Incident, bundle: &mut super::evidence::EvidenceBundle) {
        let Some(headline) = incident.headline() else {
            return;
        };
        let candidates: Vec<_> = incident
            .signals
            .iter()
            .filter(|s| s.series != headline.series)
            .map(|s| (s.series.clone(), s.samples.clone()))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let ranked = super::correlate::rank_correlated(
            &headline.samples,
            &candidates,
            CORRELATION_MAX_LAG_MS,
        );
        super::correlate::push_correlated(bundle, &ranked, &self.kinds, 0.7, 5);
    }

    /// Ranked hypotheses for `incident`, with the evidence they cite.
    /// Never fails: a source that cannot be read is a gap in the result.
    pub async fn diagnose(&self, incident: &Incident, now: TimestampMs) -> Diagnosis {
        let mut bundle = from_incident(incident, &self.kinds);
        self.add_correlated(incident, &mut bundle);
        // Log templates that changed around the start (issue 10). Service
        // names for "mentions" come from the incident's own group only.
        super::log_evidence::push_incident_logs(&mut bundle, incident, &[]);
        if let Some(client) = &self.kube {
            let since = incident.opened_at.saturating_sub(CHANGE_LOOKBACK_MS);
            for target in bundle.targets.clone() {
                crate::remediate::gather::gather_workload(client, &target, since, now, &mut bundle)
                    .await;
            }
        }
        if let Some(sim) = &self.sim {
            for target in bundle.targets.clone() {
                sim.evidence(&target, &mut bundle);
            }
        }
        let mut diagnosis = diagnose(&bundle, &self.catalogue);
        if let (Some(llm), Some(id)) = (&self.llm, incident.id) {
            let outcome = llm.propose(id, &bundle).await;
            diagnosis.llm_status = Some(outcome.status());
            let mut merged = diagnosis.hypotheses.clone();
            merged.extend(outcome.into_hypotheses());
            merged.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
            diagnosis.hypotheses = merged;
            // The LLM's hypotheses meet the same rule as the catalogue's:
            // no scale or restart while a dependency outage or node
            // pressure is (nearly) as likely.
            apply_safety_rule(&mut diagnosis, &self.catalogue);
        }
        diagnosis.evidence = bundle;
        diagnosis
    }
}
