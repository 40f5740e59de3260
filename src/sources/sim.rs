//! A simulated service for `aiopsd demo`: realistic metrics with a daily
//! shape and noise, and one injected fault, produced in fast simulated time.
//!
//! It plays the part of Prometheus — same batch type, same backfill-then-poll
//! rhythm — so the demo runs exactly the pipeline `aiopsd run` runs, with no
//! cluster and no servers. Values are deterministic (seeded), so the demo
//! and its test see the same data every time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::detect::{DetectorSpec, SignalDetection};
use crate::remediate::sim::SimCluster;
use crate::signal::{Direction, Sample, SeriesBatch, SeriesKey, SeriesSamples, TimestampMs};
use crate::telemetry::Health;

/// Name under which the simulator reports to [`Health`].
pub const SOURCE_NAME: &str = "simulator";

const STEP_MS: i64 = 30_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The fault the demo injects, so the demo can say what to look for and
/// its test can check the report names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Affected service.
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// Data time the fault starts.
    pub start: TimestampMs,
    /// Data time it ends.
    pub end: TimestampMs,
    /// One sentence for people.
    pub description: String,
}

/// The scenario: which services, how much history, when the fault hits.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// First sample time.
    pub start: TimestampMs,
    /// Samples up to here are sent as backfill (warm-up history).
    pub live_from: TimestampMs,
    /// Last sample time.
    pub end: TimestampMs,
    /// The injected fault: errors and latency on `checkout` after a new
    /// revision; lasts an hour unless remediation fixes it.
    pub fault: Fault,
    /// A second fault the demo's policy refuses to act on: latency on
    /// `catalog`.
    pub second: Fault,
    /// Wall-clock pause between live polls (simulated time runs fast).
    pub live_pace: Duration,
}

impl Scenario {
    /// The standard demo ending at `now`: a day of history, then two hours
    /// "live". Half an hour in, right after a new revision of `checkout`
    /// rolls out, its error ratio surges from ~0.5% to 15% and p99 latency
    /// triples — for an hour, unless remediation rolls it back. (The seed
    /// system's auto-healing story: a 15% error rate against a 5%
    /// threshold.) Later, `catalog`'s latency rises for 20 minutes, which
    /// the demo's policy does not allow aiopsd to act on.
    pub fn standard(now: TimestampMs) -> Self {
        let end = now - now.rem_euclid(STEP_MS);
        let live_from = end - 2 * HOUR_MS;
        let fault_start = live_from + 30 * 60_000;
        let second_start = live_from + 75 * 60_000;
        Self {
            start: live_from - DAY_MS,
            live_from,
            end,
            fault: Fault {
                service: "checkout".into(),
                namespace: "demo".into(),
                start: fault_start,
                end: fault_start + HOUR_MS,
                description: "checkout (namespace demo): right after revision 3 rolls out, \
                              the HTTP 5xx error ratio surges from ~0.5% to 15% and p99 \
                              latency triples (for an hour unless fixed)"
                    .into(),
            },
            second: Fault {
                service: "catalog".into(),
                namespace: "demo".into(),
                start: second_start,
                end: second_start + 20 * 60_000,
                description: "catalog (namespace demo): p99 latency rises 2.5-fold for 20 \
                              minutes (no rule allows acting on it)"
                    .into(),
            },
            live_pace: Duration::from_millis(8),
        }
    }
}

/// One simulated signal.
#[derive(Debug, Clone, Copy)]
struct SimSignal {
    name: &'static str,
    direction: Direction,
    /// Scored by the anomaly detectors; memory is only forecast (failure
    /// prediction), as a `predictive:` config would do with it.
    detect: bool,
}

/// The memory limit's signal comes before memory itself, so the first
/// forecast already knows the limit.
const SIGNALS: [SimSignal; 5] = [
    SimSignal {
        name: "request_rate",
        direction: Direction::Both,
        detect: true,
    },
    SimSignal {
        name: "error_ratio",
        direction: Direction::Up,
        detect: true,
    },
    SimSignal {
        name: "latency_p99_seconds",
        direction: Direction::Up,
        detect: true,
    },
    SimSignal {
        name: "memory_limit_bytes",
        direction: Direction::Up,
        detect: false,
    },
    SimSignal {
        name: "memory_working_set_bytes",
        direction: Direction::Up,
        detect: false,
    },
];

const SERVICES: [(&str, f64); 3] = [("checkout", 1.0), ("catalog", 2.5), ("orders", 0.6)];

/// The service with the slow memory leak.
pub const LEAKING_SERVICE: &str = "orders";

const MIB: f64 = 1_048_576.0;
/// Every container's memory limit.
const MEMORY_LIMIT: f64 = 1024.0 * MIB;
/// The leak: memory starts here after each (re)start ...
const LEAK_BASE: f64 = 220.0 * MIB;
/// ... and grows this much per day.
const LEAK_PER_DAY: f64 = 480.0 * MIB;

/// A fault ends this long after the simulated cluster saw an action on
/// the faulty workload (pods replaced, caches warm).
const RECOVERY_MS: i64 = 60_000;

/// The simulated source.
#[derive(Debug, Clone)]
pub struct SimSource {
    scenario: Scenario,
    cluster: Option<Arc<SimCluster>>,
}

impl SimSource {
    /// A source playing `scenario`.
    pub fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            cluster: None,
        }
    }

    /// Ends a fault once `cluster` records an action on its workload.
    pub fn with_cluster(mut self, cluster: Arc<SimCluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Whether `fault` affects `service` at `t`.
    fn in_fault(&self, fault: &Fault, service: &str, t: TimestampMs) -> bool {
        if service != fault.service || t < fault.start || t >= fault.end {
            return false;
        }
        let remedied = self
            .cluster
            .as_ref()
            .and_then(|c| c.remedied_at(&fault.namespace, &fault.service))
            .is_some_and(|at| at >= fault.start && t >= at + RECOVERY_MS);
        !remedied
    }

    /// How the demo's signals are scored: the default detector, with the
    /// direction that matters for each.
    pub fn signal_detections() -> Vec<(String, SignalDetection)> {
        SIGNALS
            .iter()
            .filter(|s| s.detect)
            .map(|s| {
                (
                    s.name.to_string(),
                    SignalDetection {
                        spec: DetectorSpec::default(),
                        direction: s.direction,
                    },
                )
            })
            .collect()
    }

    /// The value of `signal` for `service` at `t`.
    fn value(&self, signal: &str, service: &str, scale: f64, t: TimestampMs) -> f64 {
        let day_phase = (t.rem_euclid(DAY_MS)) as f64 / DAY_MS as f64;
        // Busy in the afternoon, quiet at night.
        let load = 0.6 + 0.4 * (std::f64::consts::TAU * (day_phase - 0.35)).sin();
        let seed = hash(signal) ^ hash(service) ^ (t as u64);
        let n = noise(seed);
        let faulty = self.in_fault(&self.scenario.fault, service, t);
        let slow = self.in_fault(&self.scenario.second, service, t);
        match signal {
            "request_rate" => scale * 120.0 * load * (1.0 + 0.04 * n),
            "memory_limit_bytes" => MEMORY_LIMIT,
            "memory_working_set_bytes" => self.memory(service, load, n, t),
            "error_ratio" => {
                if faulty {
                    0.15 * (1.0 + 0.1 * n)
                } else {
                    (0.005 + 0.001 * n).max(0.0)
                }
            }
            _ => {
                let base = 0.18 + 0.05 * load;
                let v = base * (1.0 + 0.05 * n);
                if faulty {
                    v * 3.0
                } else if slow {
                    v * 2.5
                } else {
                    v
                }
            }
        }
    }

    /// Container memory: steady (with a little load-driven swing) for most
    /// services — `checkout` sits at ~70 % of its limit, close but flat,
    /// which must not be predicted to breach — and a leak for
    /// [`LEAKING_SERVICE`] that starts over when the workload restarts.
    fn memory(&self, service: &str, load: f64, n: f64, t: TimestampMs) -> f64 {
        if service != LEAKING_SERVICE {
            let base = if service == "checkout" { 700.0 } else { 420.0 };
            return (base + 20.0 * load + 6.0 * n) * MIB;
        }
        let restarted = self
            .cluster
            .as_ref()
            .and_then(|c| c.remedied_at(&self.scenario.fault.namespace, service))
            .filter(|&at| t >= at + RECOVERY_MS);
        let since = restarted.unwrap_or(self.scenario.start);
        let days = (t - since) as f64 / DAY_MS as f64;
        (LEAK_BASE + LEAK_PER_DAY * days + 4.0 * n * MIB).min(MEMORY_LIMIT)
    }

    /// All series of all signals over `[from, to)`, one batch per signal.
    fn batches(&self, from: TimestampMs, to: TimestampMs, backfill: bool) -> Vec<SeriesBatch> {
        SIGNALS
            .iter()
            .map(|signal| SeriesBatch {
                signal: signal.name.to_string(),
                series: SERVICES
                    .iter()
                    .map(|&(service, scale)| SeriesSamples {
                        key: Arc::new(SeriesKey::new(
                            signal.name,
                            [
                                ("namespace".to_string(), "demo".to_string()),
                                ("service".to_string(), service.to_string()),
                            ],
                        )),
                        samples: (from..to)
                            .step_by(STEP_MS as usize)
                            .map(|t| Sample {
                                t,
                                v: self.value(signal.name, service, scale, t),
                            })
                            .collect(),
                    })
                    .collect(),
                until: to - 1,
                backfill,
            })
            .collect()
    }

    /// The task: sends the history as backfill, then the live part one step
    /// at a time, then returns (closing its channel ends the demo pipeline).
    pub async fn run(
        self,
        tx: mpsc::Sender<SeriesBatch>,
        health: Arc<Health>,
        cancel: CancellationToken,
    ) {
        health.register_source(SOURCE_NAME);
        let s = &self.scenario;
        for batch in self.batches(s.start, s.live_from, true) {
            if tx.send(batch).await.is_err() {
                return;
            }
        }
        health.source_ok(SOURCE_NAME);
        health.source_backfilled(SOURCE_NAME);
        let mut t = s.live_from;
        while t <= s.end {
            if cancel.is_cancelled() {
                return;
            }
            for batch in self.batches(t, t + STEP_MS, false) {
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
            health.source_ok(SOURCE_NAME);
            t += STEP_MS;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(s.live_pace) => {}
            }
        }
    }
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Deterministic noise in [-1, 1) (splitmix64 finaliser); the demo's
/// other simulations share it.
pub(crate) fn noise(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_is_only_in_the_faulty_service_and_window() {
        let scenario = Scenario::standard(10 * DAY_MS);
        let fault = scenario.fault.clone();
        let sim = SimSource::new(scenario);
        let during = fault.start + 60_000;
        assert!(sim.value("error_ratio", "checkout", 1.0, during) > 0.1);
        assert!(sim.value("error_ratio", "catalog", 2.5, during) < 0.01);
        assert!(sim.value("error_ratio", "checkout", 1.0, fault.end + 60_000) < 0.01);
    }

    #[test]
    fn an_action_on_the_faulty_workload_ends_the_fault() {
        let scenario = Scenario::standard(10 * DAY_MS);
        let fault = scenario.fault.clone();
        let cluster = Arc::new(SimCluster::new(&[("demo", "checkout", 3)]));
        let sim = SimSource::new(scenario).with_cluster(Arc::clone(&cluster));
        let acted = fault.start + 5 * 60_000;
        let plan = crate::remediate::plan::PlannedAction::Restart {
            target: cluster.resolve("demo", "checkout").expect("exists"),
            max_unavailable: 1,
        };
        cluster.execute("a1", &plan, acted).expect("execute");
        assert!(sim.value("error_ratio", "checkout", 1.0, acted + 30_000) > 0.1);
        assert!(sim.value("error_ratio", "checkout", 1.0, acted + RECOVERY_MS) < 0.01);
    }

    #[test]
    fn batches_cover_every_signal_and_service_in_order() {
        let sim = SimSource::new(Scenario::standard(10 * DAY_MS));
        let batches = sim.batches(0, 10 * STEP_MS, true);
        assert_eq!(batches.len(), SIGNALS.len());
        for b in &batches {
            assert_eq!(b.series.len(), SERVICES.len());
            for s in &b.series {
                assert_eq!(s.samples.len(), 10);
                assert!(s.samples.windows(2).all(|w| w[0].t < w[1].t));
            }
        }
    }

    #[test]
    fn the_leak_grows_until_a_restart_and_then_starts_over() {
        let scenario = Scenario::standard(10 * DAY_MS);
        let start = scenario.start;
        let cluster = Arc::new(SimCluster::new(&[("demo", LEAKING_SERVICE, 2)]));
        let sim = SimSource::new(scenario.clone()).with_cluster(Arc::clone(&cluster));
        let memory = |t| sim.value("memory_working_set_bytes", LEAKING_SERVICE, 0.6, t);
        let early = memory(start + HOUR_MS);
        let late = memory(scenario.live_from);
        assert!(late - early > 400.0 * MIB, "{early} -> {late}");
        assert!(
            late < MEMORY_LIMIT,
            "not breached yet at the start of the live part"
        );
        let plan = crate::remediate::plan::PlannedAction::Restart {
            target: cluster.resolve("demo", LEAKING_SERVICE).expect("exists"),
            max_unavailable: 1,
        };
        let acted = scenario.live_from + 60_000;
        cluster.execute("a1", &plan, acted).expect("execute");
        assert!(memory(acted + RECOVERY_MS) < 260.0 * MIB);
        // The flat services stay flat, however close to the limit.
        let checkout = |t| sim.value("memory_working_set_bytes", "checkout", 1.0, t);
        assert!((checkout(scenario.live_from) - checkout(start + HOUR_MS)).abs() < 60.0 * MIB);
    }
}
