//! The demo's growing service: 30 days of CPU, memory and request rate for
//! a service whose traffic grows a few percent a day, so `aiopsd demo`
//! can show a capacity plan saying when to scale — without a Prometheus.
//!
//! Deterministic (seeded noise) so the demo prints the same plan every
//! run and its test can check it. The planner is the same
//! [`plan_capacity`](crate::forecast::plan_capacity) `aiopsd capacity` uses.

use super::sim::noise;
use crate::forecast::{
    plan_capacity, CapacityInput, CapacityPlan, CapacitySeries, ForecastConfig, ForecastError, Hpa,
    PodResources,
};
use crate::signal::{Sample, TimestampMs};

const STEP_MS: i64 = 5 * 60_000;
const DAY_MS: i64 = 86_400_000;
const MIB: f64 = 1_048_576.0;

/// The growing service's name.
pub const GROWING_SERVICE: &str = "search";

/// Thirty days of a service ending at `now`: requests grow 2.5 % a day on a
/// daily curve (busy afternoons); CPU follows requests; memory grows
/// slowly with caches.
pub struct GrowingService {
    /// Requests per second.
    pub requests: Vec<Sample>,
    /// CPU cores used by all pods.
    pub cpu: Vec<Sample>,
    /// Memory used by all pods, bytes.
    pub memory: Vec<Sample>,
}

impl GrowingService {
    /// The series, 5-minute steps, ending at `now`.
    pub fn new(now: TimestampMs) -> Self {
        let end = now - now.rem_euclid(STEP_MS);
        let start = end - 30 * DAY_MS;
        let mut out = Self {
            requests: Vec::new(),
            cpu: Vec::new(),
            memory: Vec::new(),
        };
        let mut t = start;
        let mut i: u64 = 0;
        while t <= end {
            let day = (t - start) as f64 / DAY_MS as f64;
            let phase = t.rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
            let shape = 0.65 + 0.35 * (std::f64::consts::TAU * (phase - 0.35)).sin();
            let growth = 1.025f64.powf(day);
            let n = noise(i);
            let rps = 180.0 * shape * growth * (1.0 + 0.03 * n);
            out.requests.push(Sample { t, v: rps });
            // ~5 ms of CPU per request plus a floor per pod.
            out.cpu.push(Sample {
                t,
                v: 0.2 + rps * 0.005 * (1.0 + 0.02 * n),
            });
            out.memory.push(Sample {
                t,
                v: (1600.0 + 8.0 * day + 40.0 * shape) * MIB * (1.0 + 0.005 * n),
            });
            t += STEP_MS;
            i += 1;
        }
        out
    }

    /// What it runs with: 4 replicas of 0.5 core / 768 MiB requests, an HPA
    /// of 4..6, planned for `days` at a 70 % utilisation target.
    pub fn input(days: u32) -> CapacityInput {
        CapacityInput {
            service: GROWING_SERVICE.into(),
            days,
            replicas: 4,
            pod: PodResources {
                cpu_request_cores: 0.5,
                cpu_limit_cores: Some(1.0),
                memory_request_bytes: 768.0 * MIB,
                memory_limit_bytes: Some(1024.0 * MIB),
            },
            hpa: Some(Hpa {
                min_replicas: 4,
                max_replicas: 6,
            }),
            target_utilisation: 0.7,
        }
    }

    /// The plan, as `aiopsd capacity --service search --days N` would make it.
    pub fn plan(
        &self,
        days: u32,
        forecast: &ForecastConfig,
    ) -> Result<CapacityPlan, ForecastError> {
        let series = CapacitySeries {
            cpu_cores: &self.cpu,
            memory_bytes: &self.memory,
            requests_per_second: Some(&self.requests),
        };
        plan_capacity(&series, &Self::input(days), forecast)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_growing_service_runs_out_within_two_weeks_and_needs_more_replicas() {
        let service = GrowingService::new(40 * DAY_MS);
        assert_eq!(service.requests.len(), 30 * 288 + 1);
        let plan = service
            .plan(14, &ForecastConfig::default())
            .expect("a plan from 30 days of data");
        let runs_out = plan.runs_out.as_ref().expect("capacity runs out");
        assert_eq!(runs_out.resource, "cpu");
        assert!(runs_out.earliest > plan.as_of && runs_out.earliest < plan.as_of + 14 * DAY_MS);
        assert!(
            plan.recommendation.replicas > 4,
            "{}",
            plan.recommendation.summary
        );
    }
}
