//! Wiring: builds the stages from config and runs them as tokio tasks
//! joined by bounded channels.
//!
//! ```text
//! source task ──SeriesBatch──► detect task ──Detected──► incident task ──► store
//!  (Prometheus      (Engine)                 (Correlator,      ▲
//!   or simulator)                              write first)    │
//!                                               HTTP server ───┘ (reads)
//! ```
//!
//! Shutdown flows downstream: the cancellation token stops the source, its
//! channel closes, the detect task drains and closes its own, the incident
//! task stores what is left and checkpoints the database, and only then
//! does the HTTP server stop. Nothing is lost between stages because each
//! one finishes its input before exiting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::detect::{Engine, SignalDetection};
use crate::diagnose::bundle::SignalKinds;
use crate::diagnose::catalogue::Catalogue;
use crate::diagnose::diagnoser::Diagnoser;
use crate::forecast::open_predictions::OpenPredictions;
use crate::forecast::predictive::{PredictiveEvent, PredictiveScanner};
use crate::forecast::stage::run_scanner;
use crate::incident::noise::{self, Silence};
use crate::incident::{
    report, Alert, AlertBatch, AppliedAlert, Correlator, Incident, IncidentKind, IncidentUpdate,
    Store, StoreError, UpdateKind,
};
use crate::leader::{HoldOutcome, LeaderElector, PodLabel, LEADER_LABEL};
use crate::policy::{PolicyReloader, PolicySet};
use crate::remediate::sim::SimCluster;
use crate::remediate::stage::{Clock, Cluster, Remediator};
use crate::server::{self, AppState};
use crate::signal::{now_ms, Anomaly, SeriesBatch, TimestampMs};
use crate::sources::prometheus::PrometheusSource;
use crate::sources::sim::{Fault, Scenario, SimSource};
use crate::telemetry::{error_chain, Health, Metrics};

/// Capacity of the channels between stages: small, so a slow stage makes
/// the source wait (back-pressure) instead of growing memory.
const CHANNEL_CAPACITY: usize = 16;

/// Capacity of the webhook → incident stage channel, in deliveries. When it
/// is full the webhook does not wait: the alerts are already stored and the
/// incident stage sweeps them up (see [`ALERT_SWEEP`]).
const ALERT_CHANNEL_CAPACITY: usize = 64;

/// How often the incident stage looks in the store for alerts the channel
/// did not bring (it was full); also the most a swept alert waits.
const ALERT_SWEEP: Duration = Duration::from_secs(5);

/// Most stored alerts applied per sweep (the next sweep takes the rest).
const ALERT_SWEEP_BATCH: usize = 500;

/// What the detect stage hands to the incident stage for one batch.
/// Where fitted detector state is kept between runs
/// (`detection.models_path`).
struct ModelFile {
    path: PathBuf,
    every: Duration,
}

impl ModelFile {
    /// Restores saved detector state; a missing file is a first start, a
    /// bad one is logged and the detectors start cold (never a crash).
    fn load_into(&self, engine: &mut Engine) {
        if !self.path.exists() {
            tracing::info!(path = %self.path.display(), "No saved detector state yet; detectors warm up from backfill.");
            return;
        }
        match engine.load_models(&self.path) {
            Ok(load) => tracing::info!(
                path = %self.path.display(),
                restored = load.restored,
                spec_changed = load.spec_changed,
                unknown_signal = load.unknown_signal,
                refused = load.refused,
                "Restored saved detector state."
            ),
            Err(error) => tracing::warn!(
                error = %error_chain(&error),
                "Cannot restore saved detector state; detectors warm up from backfill."
            ),
        }
    }

    /// Saves detector state (write to a temporary file, then rename).
    fn save(&self, engine: &Engine) {
        match engine.save_models(&self.path) {
            Ok(series) => {
                tracing::debug!(path = %self.path.display(), series, "Saved detector state.")
            }
            Err(error) => tracing::warn!(
                error = %error_chain(&error),
                "Cannot save detector state; the next start warms up from backfill."
            ),
        }
    }
}

/// Where the detect stage tees batches for failure prediction.
struct Prediction {
    /// Signals the scanner wants (limited signals and their limit series).
    signals: std::collections::HashSet<String>,
    tx: mpsc::Sender<SeriesBatch>,
}

/// The owners of open incidents in the incident stage: the correlator for
/// detected and alert incidents, [`OpenPredictions`] for predictive ones.
struct Owners {
    correlator: Correlator,
    predictions: OpenPredictions,
}

struct Detected {
    signal: String,
    anomalies: Vec<Anomaly>,
    until: TimestampMs,
}

/// The parts every mode shares: store, telemetry, readiness, and the
/// sending side of the webhook's alerts channel (the incident stage gets
/// the receiving side from [`Shared::open`]).
struct Shared {
    store: Store,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    alert_tx: mpsc::Sender<AlertBatch>,
    /// Silences from `noise.silences` (API silences are read from the
    /// store per batch, so they apply as soon as they are created).
    config_silences: Arc<[Silence]>,
    /// Wakes the remediation stage after the incident stage stored
    /// something (an incident change, a cursor that moved).
    wake: Arc<Notify>,
    /// The loaded policy rules, published by the remediation stage for the
    /// UI's policy page.
    policy_view: tokio::sync::watch::Sender<crate::ui::PolicyView>,
}

impl Shared {
    fn open(config: &Config) -> anyhow::Result<(Self, mpsc::Receiver<AlertBatch>)> {
        let store = Store::open(&config.store.path)
            .with_context(|| format!("cannot open store {}", config.store.path.display()))?;
        let health = Health::new();
        health.set_store_ok(true);
        let (alert_tx, alert_rx) = mpsc::channel(ALERT_CHANNEL_CAPACITY);
        let shared = Self {
            store,
            metrics: Arc::new(Metrics::new()),
            health,
            alert_tx,
            config_silences: config.noise.silences().into(),
            wake: Arc::new(Notify::new()),
            policy_view: tokio::sync::watch::Sender::new(crate::ui::PolicyView::default()),
        };
        Ok((shared, alert_rx))
    }

    fn app_state(&self, config: &Config) -> AppState {
        AppState {
            store: self.store.clone(),
            metrics: Arc::clone(&self.metrics),
            health: Arc::clone(&self.health),
            api_token: config.server.api_token.clone(),
            cluster: config.cluster.clone(),
            alertmanager: config.alertmanager.clone(),
            alert_tx: Some(self.alert_tx.clone()),
            config_silences: Arc::clone(&self.config_silences),
            remediation: config.remediation.clone(),
            config: Some(Arc::new(config.clone())),
        }
    }
}

/// `aiopsd run`: polls Prometheus until `cancel` fires.
///
/// Everything that can fail on bad config or a bad store is done before
/// the HTTP server starts; once it runs, every exit path goes through the
/// same shutdown (pipeline, lease, server), so an error never leaves a
/// lease held or a server half-stopped.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let prometheus = config
        .prometheus
        .as_ref()
        .context("config has no `prometheus` section; nothing to watch")?;
    if config.signals.is_empty() {
        anyhow::bail!("config has no `signals`; nothing to watch");
    }
    let source = PrometheusSource::new(prometheus, &config.signals)
        .context("cannot set up the Prometheus source")?;
    let (shared, alert_rx) = Shared::open(&config)?;
    let resume = load_cursors(&shared.store, &config)?;
    let listener = bind(config.server.listen, false).await?;
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        signals = config.signals.len(),
        prometheus = %prometheus.url,
        "aiopsd is starting."
    );
    let server = spawn_server(&config, &shared, listener, cancel.clone());

    // With leader election on, this replica serves /healthz, /readyz and
    // the API from here on, but starts nothing that polls or writes until
    // it holds the lease.
    let elector = match wait_for_leadership(&config, &shared, &cancel).await {
        Ok(Leadership::Leader(elector)) => Some(*elector),
        Ok(Leadership::NotElecting) => None,
        Ok(Leadership::Cancelled) => {
            cancel.cancel();
            let _ = server.await;
            tracing::info!("aiopsd stopped while standing by.");
            return Ok(());
        }
        Err(error) => {
            cancel.cancel();
            let _ = server.await;
            return Err(error);
        }
    };
    // The pipeline's own token: cancelled by shutdown (it is a child of
    // `cancel`) or by losing the lease, which must stop the pipeline but
    // leave the HTTP server to the end.
    let pipeline_cancel = cancel.child_token();
    let holder = elector.map(|elector| spawn_lease_holder(elector, &shared, &pipeline_cancel));
    shared.metrics.set_leader(true);
    let result = lead(
        &config,
        source,
        &shared,
        resume,
        alert_rx,
        pipeline_cancel.clone(),
    )
    .await;
    pipeline_cancel.cancel();
    shared.metrics.set_leader(false);
    let lost = match holder {
        Some(holder) => end_leadership(holder).await,
        None => None,
    };
    cancel.cancel();
    let _ = server.await;
    tracing::info!("aiopsd stopped.");
    if let Some(reason) = lost {
        // Exiting (non-zero) rather than re-entering the election in
        // process: the pipeline's state (detectors, correlator, store) was
        // built as the single writer, and a restart is the one clean way
        // back to "standby with nothing running". Kubernetes restarts the
        // pod, which then waits for the lease like any standby.
        anyhow::bail!(
            "lost the leader lease ({reason}); exiting so Kubernetes restarts this pod as a standby"
        );
    }
    result
}

/// Per signal, the data time up to which a previous run already reported.
fn load_cursors(store: &Store, config: &Config) -> anyhow::Result<HashMap<String, TimestampMs>> {
    let mut resume = HashMap::new();
    for signal in &config.signals {
        if let Some(t) = store
            .cursor(&signal.name)
            .with_context(|| format!("cannot read the cursor of signal {}", signal.name))?
        {
            resume.insert(signal.name.clone(), t);
        }
    }
    Ok(resume)
}

/// The leader's work: publisher, source and pipeline, until `cancel` fires
/// or the source ends.
async fn lead(
    config: &Config,
    source: PrometheusSource,
    shared: &Shared,
    resume: HashMap<String, TimestampMs>,
    alerts: mpsc::Receiver<AlertBatch>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    // Issue 10: the Elasticsearch log pipeline, when configured; built
    // before anything is spawned so a failure leaves nothing running. Its
    // signals' cursors join `resume`: the history it replays at start to
    // warm the detectors is not reported again.
    let mut resume = resume;
    let log_pipeline = match &config.elasticsearch {
        Some(es) => {
            for name in crate::logs::signals::LOG_SIGNALS {
                if let Some(t) = shared
                    .store
                    .cursor(name)
                    .with_context(|| format!("cannot read the cursor of signal {name}"))?
                {
                    resume.insert(name.to_string(), t);
                }
            }
            Some(
                crate::logs::pipeline::LogPipeline::new(
                    es,
                    shared.store.clone(),
                    shared.metrics.logs.clone(),
                )
                .context("cannot set up the Elasticsearch log pipeline")?,
            )
        }
        None => None,
    };
    // Sends the events the incident stage queues; reads the outbox at its
    // own pace, so a slow or absent broker never holds up detection.
    let publisher = crate::publish::start(
        config,
        &shared.store,
        &shared.metrics,
        &shared.health,
        cancel.clone(),
    )
    .context("cannot start the event publisher")?;
    let detections = config
        .signals
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                SignalDetection {
                    spec: config.detector_for(s),
                    direction: s.direction,
                },
            )
        })
        .chain(
            config
                .elasticsearch
                .iter()
                .flat_map(crate::logs::signals::log_signal_detections),
        )
        .collect();
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    // Log signals share the detect channel with Prometheus's.
    let log_task = log_pipeline.map(|pipeline| {
        shared
            .health
            .register_source(crate::logs::pipeline::SOURCE_NAME);
        tokio::spawn(pipeline.run(
            tx.clone(),
            Arc::clone(&shared.metrics),
            Arc::clone(&shared.health),
            cancel.clone(),
        ))
    });
    // Registered before the pipeline reports running, so /readyz never
    // says ready before Prometheus has answered.
    shared
        .health
        .register_source(crate::sources::prometheus::SOURCE_NAME);
    let source_task = tokio::spawn(source.run(
        tx,
        Arc::clone(&shared.metrics),
        Arc::clone(&shared.health),
        cancel.clone(),
    ));
    let remediator = match live_remediator(config, shared).await {
        Ok(r) => r,
        Err(error) => {
            cancel.cancel();
            let _ = source_task.await;
            if let Some(task) = log_task {
                let _ = task.await;
            }
            let _ = publisher.await;
            return Err(error);
        }
    };
    let inputs = PipelineInputs {
        detections,
        batches: rx,
        alerts,
        resume,
        remediator,
    };
    let result = run_pipeline(config, inputs, shared, cancel.clone()).await;
    cancel.cancel();
    let _ = source_task.await;
    if let Some(task) = log_task {
        let _ = task.await;
    }
    let _ = publisher.await;
    result
}

/// The remediation stage of `aiopsd run`: diagnosis always; with
/// `remediation.enabled`, the policy gate and the Kubernetes executor too.
async fn live_remediator(config: &Config, shared: &Shared) -> anyhow::Result<Remediator> {
    let mut diagnoser = diagnoser(config, shared)?;
    let dir = &config.remediation.policies;
    let (cluster, policies) = if config.remediation.enabled {
        let client = crate::remediate::kube::client(config.remediation.api_url.as_deref())
            .await
            .context("cannot set up the Kubernetes client for remediation")?;
        diagnoser = diagnoser.with_kube(client.clone());
        let policies = match PolicyReloader::new(dir) {
            Ok(p) => {
                tracing::info!(
                    dir = %dir.display(),
                    rules = p.current().rules().len(),
                    version = %p.current().version(),
                    "Policies loaded."
                );
                p
            }
            Err(errors) => {
                tracing::error!(
                    dir = %dir.display(),
                    problems = %errors,
                    "The policies do not load: every action is refused until they do."
                );
                PolicyReloader::deny_all_until_loaded(dir)
            }
        };
        (
            Cluster::Kube(crate::remediate::kube::KubeCluster::new(client)),
            policies,
        )
    } else {
        (
            Cluster::Detached,
            PolicyReloader::deny_all_until_loaded(dir),
        )
    };
    Ok(Remediator::new(
        shared.store.clone(),
        Arc::clone(&shared.metrics),
        cluster,
        diagnoser,
        policies,
        config.remediation.clone(),
        Clock::Wall,
    )
    .with_policy_view(shared.policy_view.clone()))
}

/// Rules (the built-in catalogue) and, when configured, the LLM.
fn diagnoser(config: &Config, shared: &Shared) -> anyhow::Result<Diagnoser> {
    let catalogue =
        Catalogue::builtin().context("the built-in diagnosis catalogue does not load")?;
    let mut diagnoser = Diagnoser::new(SignalKinds::from_signals(&config.signals), catalogue);
    if config.llm.enabled {
        let llm = crate::diagnose::llm::LlmDiagnoser::new(&config.llm, shared.metrics.llm.clone())
            .context("cannot set up the LLM client")?;
        diagnoser = diagnoser.with_llm(llm);
    }
    Ok(diagnoser)
}

/// The policy the demo runs under: roll back a bad rollout automatically
/// in the demo namespace, nothing else.
const DEMO_POLICY: &str = include_str!("../policies/examples/demo.yaml");

/// The demo's remediation stage: the simulated cluster, the demo policy,
/// the data clock.
fn demo_remediator(
    config: &Config,
    shared: &Shared,
    cluster: Arc<SimCluster>,
) -> anyhow::Result<Remediator> {
    let diagnoser = diagnoser(config, shared)?.with_sim(Arc::clone(&cluster));
    let set = PolicySet::from_yaml("policies/examples/demo.yaml", DEMO_POLICY)
        .map_err(|errors| anyhow::anyhow!("the demo policy does not load: {errors}"))?;
    Ok(Remediator::new(
        shared.store.clone(),
        Arc::clone(&shared.metrics),
        Cluster::Sim(cluster),
        diagnoser,
        PolicyReloader::fixed(set),
        config.remediation.clone(),
        Clock::Data,
    )
    .with_policy_view(shared.policy_view.clone()))
}

/// Why [`run`] may start the pipeline, or not.
enum Leadership {
    /// Leader election is off: this instance always runs the pipeline.
    NotElecting,
    /// This replica holds the lease (boxed: the elector is large and this
    /// value lives only for a moment).
    Leader(Box<LeaderElector>),
    /// Shutdown was requested while standing by.
    Cancelled,
}

/// The reason /readyz gives while another replica runs the pipeline.
pub const STANDBY_REASON: &str = "standby: another replica holds the lease";

/// Waits until this replica holds the lease (when election is on), showing
/// [`STANDBY_REASON`] on /readyz meanwhile.
async fn wait_for_leadership(
    config: &Config,
    shared: &Shared,
    cancel: &CancellationToken,
) -> anyhow::Result<Leadership> {
    if !config.leader_election.enabled {
        return Ok(Leadership::NotElecting);
    }
    shared.health.set_standby(Some(STANDBY_REASON.into()));
    let mut elector = LeaderElector::connect(&config.leader_election)
        .await
        .context("cannot start leader election")?;
    if let Some(label) = elector.pod_label() {
        // A restarted container in the same pod may still carry the label
        // from when it led: clear it before standing by.
        if let Err(error) = label.set(false).await {
            tracing::warn!(
                error = %error_chain(&error),
                "Could not clear this pod's leader label; the Service may route to this standby."
            );
        }
    }
    let settings = elector.settings();
    tracing::info!(
        lease = %settings.lease_name,
        namespace = %settings.namespace,
        identity = %settings.identity,
        "Standing by until this replica holds the leader lease."
    );
    if !elector.acquire(cancel).await {
        return Ok(Leadership::Cancelled);
    }
    shared.health.set_standby(None);
    if let Some(label) = elector.pod_label() {
        spawn_leader_label(label, elector.settings().retry_period, cancel.clone());
    }
    Ok(Leadership::Leader(Box::new(elector)))
}

/// Labels this pod as the leader, retrying until it works: until then the
/// Service routes no API call or webhook here (they are refused with 503
/// by the Service, and Alertmanager retries).
fn spawn_leader_label(label: PodLabel, retry: Duration, cancel: CancellationToken) {
    tokio::spawn(async move {
        loop {
            match label.set(true).await {
                Ok(()) => {
                    tracing::info!(label = LEADER_LABEL, "This pod is labelled as the leader.");
                    return;
                }
                Err(error) => tracing::error!(
                    error = %error_chain(&error),
                    "Could not label this pod as the leader; the Service does not route to it yet."
                ),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    });
}

/// Renews the lease in the background; on loss, cancels the pipeline.
/// Yields the elector back (to release the lease) and the loss reason.
fn spawn_lease_holder(
    mut elector: LeaderElector,
    shared: &Shared,
    pipeline_cancel: &CancellationToken,
) -> JoinHandle<(LeaderElector, Option<String>)> {
    let pipeline_cancel = pipeline_cancel.clone();
    let health = Arc::clone(&shared.health);
    tokio::spawn(async move {
        match elector.hold(&pipeline_cancel).await {
            HoldOutcome::Cancelled => (elector, None),
            HoldOutcome::Lost { reason } => {
                tracing::error!(
                    reason = %reason,
                    "Lost the leader lease; stopping the pipeline and exiting."
                );
                health.set_standby(Some(format!("lost the leader lease: {reason}")));
                pipeline_cancel.cancel();
                (elector, Some(reason))
            }
        }
    })
}

/// Stops renewing; gives the lease up when it is still held, so the
/// standby takes over at once. Returns the loss reason, if it was lost.
async fn end_leadership(holder: JoinHandle<(LeaderElector, Option<String>)>) -> Option<String> {
    let outcome = holder.await;
    if let Ok((elector, _)) = &outcome {
        if let Some(label) = elector.pod_label() {
            if let Err(error) = label.set(false).await {
                tracing::warn!(
                    error = %error_chain(&error),
                    "Could not clear this pod's leader label; it goes when the pod does."
                );
            }
        }
    }
    match outcome {
        Ok((_, Some(reason))) => Some(reason),
        Ok((mut elector, None)) => {
            if let Err(error) = elector.release().await {
                tracing::warn!(
                    error = %error_chain(&error),
                    "Could not release the leader lease; the standby takes over when it expires."
                );
            }
            None
        }
        Err(error) => Some(format!("the lease renewal task failed: {error}")),
    }
}

/// Options of `aiopsd demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the store and the report go.
    pub data_dir: PathBuf,
    /// Address for the API (falls back to a free port if taken).
    pub listen: SocketAddr,
    /// Exit after the scenario instead of serving until Ctrl-C.
    pub once: bool,
}

/// What the demo found, for printing and for its test.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The fault that was injected.
    pub fault: Fault,
    /// Incidents in the store after the scenario.
    pub incidents: Vec<Incident>,
    /// Where the Markdown report of the fault's incident was written.
    pub report_path: Option<PathBuf>,
    /// Where the API listened.
    pub api: SocketAddr,
}

/// `aiopsd demo`: the whole pipeline on a simulated service with an
/// injected fault; no cluster or servers needed.
pub async fn demo(options: DemoOptions, cancel: CancellationToken) -> anyhow::Result<DemoOutcome> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("cannot create {}", options.data_dir.display()))?;
    let store_path = options.data_dir.join("aiopsd-demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = store_path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let config = Config::demo(store_path, options.listen);
    let (shared, alert_rx) = Shared::open(&config)?;
    let listener = bind(options.listen, true).await?;
    let api = listener.local_addr().context("listener has no address")?;
    let server_cancel = CancellationToken::new();
    let server = spawn_server(&config, &shared, listener, server_cancel.clone());

    let scenario = Scenario::standard(now_ms());
    let fault = scenario.fault.clone();
    let second = scenario.second.clone();
    println!("aiopsd demo — a simulated service, two injected faults, a simulated cluster.");
    println!("  injected: {}", fault.description);
    println!(
        "  window:   {} .. {}",
        crate::signal::format_ts(fault.start),
        crate::signal::format_ts(fault.end)
    );
    println!("  injected: {}", second.description);
    println!(
        "  policy:   policies/examples/demo.yaml (roll back a bad rollout in `demo`, nothing else)"
    );
    println!("  api:      http://{api}/api/v1/incidents");
    println!("  ui:       http://{api}/ui/");

    let cluster = Arc::new(
        SimCluster::new(&[
            ("demo", "checkout", 3),
            ("demo", "catalog", 3),
            ("demo", crate::sources::sim::LEAKING_SERVICE, 2),
        ])
        .with_rollout("demo", "checkout", fault.start - 2 * 60_000),
    );
    let remediator = demo_remediator(&config, &shared, Arc::clone(&cluster))?;
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let source = SimSource::new(scenario).with_cluster(Arc::clone(&cluster));
    let source_task = tokio::spawn(source.run(tx, Arc::clone(&shared.health), cancel.clone()));
    let inputs = PipelineInputs {
        detections: SimSource::signal_detections(),
        batches: rx,
        alerts: alert_rx,
        resume: HashMap::new(),
        remediator,
    };
    let pipeline = run_pipeline(&config, inputs, &shared, cancel.clone()).await;
    let _ = source_task.await;
    pipeline?;

    let incidents = shared
        .store
        .list_incidents(&crate::incident::IncidentFilter {
            limit: 500,
            ..Default::default()
        })?
        .items;
    let faulty = incidents.iter().find(|i| {
        i.group_label("service") == Some(fault.service.as_str())
            && i.kind() != IncidentKind::Predictive
    });
    let mut report_path = None;
    if let Some(incident) = faulty {
        let id = incident.id.unwrap_or_default();
        let actions = shared.store.actions_for_incident(id)?;
        let path = options.data_dir.join(format!("incident-{id}.md"));
        std::fs::write(
            &path,
            report::render_markdown_with_actions(incident, &actions, now_ms()),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        println!();
        println!(
            "Detected: incident #{id} — {} — {} signal(s), severity {}, state {}.",
            incident.subject(),
            incident.signals.len(),
            incident.severity.as_str(),
            incident.state.as_str()
        );
        print_remediation(incident, &actions);
        println!("  report:   {}", path.display());
        println!("  page:     http://{api}/ui/incidents/{id}");
        println!("  api:      http://{api}/api/v1/incidents/{id}");
        println!("  markdown: http://{api}/api/v1/incidents/{id}/report.md");
        report_path = Some(path);
    } else {
        println!();
        println!("The injected fault was NOT detected; see the log above.");
    }
    let refused = incidents.iter().find(|i| {
        i.group_label("service") == Some(second.service.as_str())
            && i.kind() != IncidentKind::Predictive
    });
    if let Some(incident) = refused {
        let id = incident.id.unwrap_or_default();
        let actions = shared.store.actions_for_incident(id)?;
        println!();
        println!(
            "Detected: incident #{id} — {} — {} signal(s), severity {}, state {}.",
            incident.subject(),
            incident.signals.len(),
            incident.severity.as_str(),
            incident.state.as_str()
        );
        print_remediation(incident, &actions);
        println!("  page:     http://{api}/ui/incidents/{id}");
    } else {
        println!();
        println!(
            "The second injected fault ({}) was NOT detected.",
            second.service
        );
    }
    let predicted = incidents.iter().find(|i| {
        i.kind() == IncidentKind::Predictive
            && i.group_label("service") == Some(crate::sources::sim::LEAKING_SERVICE)
    });
    print_predicted(predicted, &shared.store, api)?;
    for event in cluster.events() {
        println!("  cluster event: {event}");
    }
    // Incidents opened by the storm's alerts are the storm's, not false
    // alarms of the detectors.
    let others = incidents
        .iter()
        .filter(|i| i.kind() == IncidentKind::Anomaly)
        .count()
        - usize::from(faulty.is_some())
        - usize::from(refused.is_some());
    println!();
    println!("  other incidents (false alarms): {others}");

    print_capacity_plan(&config, &options.data_dir)?;

    if !options.once && !cancel.is_cancelled() {
        println!();
        println!("Serving the API until Ctrl-C.");
        cancel.cancelled().await;
    }
    server_cancel.cancel();
    let _ = server.await;
    Ok(DemoOutcome {
        fault,
        incidents,
        report_path,
        api,
    })
}

/// Prints the demo's predictive incident (the slow memory leak): the
/// forecast, what was done ahead of the breach, and how it ended.
fn print_predicted(
    incident: Option<&Incident>,
    store: &Store,
    api: SocketAddr,
) -> anyhow::Result<()> {
    println!();
    let Some(incident) = incident else {
        println!(
            "The slow memory leak of {} was NOT predicted.",
            crate::sources::sim::LEAKING_SERVICE
        );
        return Ok(());
    };
    let id = incident.id.unwrap_or_default();
    println!(
        "Predicted: incident #{id} — {} — predictive, severity {}, state {}.",
        incident.subject(),
        incident.severity.as_str(),
        incident.state.as_str()
    );
    if let Some(first) = incident.timeline.iter().find(|e| e.kind == "predicted") {
        println!(
            "  forecast at {}: {}",
            crate::signal::format_ts(first.at),
            first.message.split(". ").next().unwrap_or_default()
        );
    }
    if let Some(p) = &incident.prediction {
        println!(
            "  latest:   {} forecasts; now {:.0} % for reaching {} within {} h",
            p.evaluations,
            p.probability * 100.0,
            p.limit_text,
            p.horizon_ms / 3_600_000
        );
    }
    let actions = store.actions_for_incident(id)?;
    print_remediation(incident, &actions);
    if let Some(resolved) = incident
        .timeline
        .iter()
        .rev()
        .find(|e| e.kind == "resolved")
    {
        println!("  resolved: {}", resolved.message);
    }
    println!("  page:     http://{api}/ui/incidents/{id}");
    Ok(())
}

/// Prints the capacity plan of the demo's growing service and writes its
/// Markdown next to the incident report.
fn print_capacity_plan(config: &Config, data_dir: &std::path::Path) -> anyhow::Result<()> {
    use crate::sources::sim_growth::{GrowingService, GROWING_SERVICE};
    println!();
    let service = GrowingService::new(now_ms());
    match service.plan(14, &config.forecast) {
        Ok(plan) => {
            let path = data_dir.join(format!("capacity-{GROWING_SERVICE}.md"));
            std::fs::write(&path, plan.to_markdown())
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "Capacity: {GROWING_SERVICE} (30 days of traffic growing 2.5 %/day, 4 replicas, HPA 4..6), next 14 days:"
            );
            println!("  {}", plan.recommendation.summary);
            println!("  plan:     {}", path.display());
        }
        Err(e) => println!("Capacity: no plan for {GROWING_SERVICE}: {e}"),
    }
    Ok(())
}

/// Prints the diagnosis, the gate's decision and the action's outcome of
/// one demo incident, in a few lines.
fn print_remediation(incident: &Incident, actions: &[crate::publish::approvals::PendingAction]) {
    if let Some(top) = incident.diagnosis.as_ref().and_then(|d| d.top()) {
        println!(
            "  diagnosis: {} ({:.0}% confidence, {})",
            top.title,
            top.confidence * 100.0,
            top.proposed_by.as_str()
        );
    }
    for d in &incident.decisions {
        let action = d
            .action
            .as_ref()
            .map(|a| format!(": {}", a.describe()))
            .unwrap_or_default();
        println!(
            "  decision: {} by rule {}{action}",
            d.outcome.as_str(),
            d.rule
        );
        if d.outcome == crate::remediate::record::DecisionOutcome::Refused {
            for reason in &d.reasons {
                println!("    why: {reason}");
            }
        }
    }
    for a in actions {
        if let Some(exec) = &a.execution {
            println!(
                "  action #{}: {} — {}",
                a.id,
                exec.state.as_str(),
                exec.message.as_deref().unwrap_or("")
            );
        }
    }
}

async fn bind(
    addr: SocketAddr,
    fallback_to_free_port: bool,
) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if fallback_to_free_port && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(%addr, "Address in use; serving the API on a free port instead.");
            let any = SocketAddr::new(addr.ip(), 0);
            tokio::net::TcpListener::bind(any)
                .await
                .with_context(|| format!("cannot listen on {any}"))
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

fn spawn_server(
    config: &Config,
    shared: &Shared,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let ui = crate::ui::UiSettings {
        viewer_token: config.server.viewer_token.clone(),
        policy: Some(shared.policy_view.subscribe()),
        record_verdict: Some(record_verdict),
    };
    let router = server::router_with_ui(
        shared.app_state(config),
        ui,
        config.server.request_timeout.0,
    );
    // Checked when the config was loaded; loaded again here because the
    // files may have changed since (a failure now is a race with a
    // certificate renewal, and stops aiopsd rather than serving plain HTTP).
    let tls = config
        .server
        .tls
        .as_ref()
        .map(server::tls::ServerTls::load)
        .transpose();
    tokio::spawn(async move {
        let shutdown = {
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        };
        let served = match tls {
            Ok(None) => server::serve(listener, router, shutdown).await,
            Ok(Some(tls)) => server::serve_tls(listener, tls, router, shutdown).await,
            Err(error) => {
                tracing::error!(error = %error.describe(), "Cannot serve HTTPS (server.tls); stopping aiopsd.");
                cancel.cancel();
                return;
            }
        };
        if let Err(error) = served {
            tracing::error!(error = %error_chain(&error), "HTTP server failed.");
        }
    })
}

/// What one run of the pipeline consumes: the source's batches, the
/// webhook's alerts, how each signal is scored, where a previous run
/// stopped, and the remediation stage that follows the incident stage.
struct PipelineInputs {
    detections: Vec<(String, SignalDetection)>,
    batches: mpsc::Receiver<SeriesBatch>,
    alerts: mpsc::Receiver<AlertBatch>,
    resume: HashMap<String, TimestampMs>,
    remediator: Remediator,
}

/// Stores a person's verdict from the UI (`noise`, `expected`, `real`).
fn record_verdict(
    store: &Store,
    id: crate::incident::IncidentId,
    verdict: crate::ui::Feedback,
    by: &str,
    reason: &str,
    now: TimestampMs,
) -> Result<(), crate::incident::StoreError> {
    store.record_verdict(id, verdict.as_str(), by, reason, now)
}

/// Runs the detect, incident and remediation stages until the source
/// channel closes.
async fn run_pipeline(
    config: &Config,
    inputs: PipelineInputs,
    shared: &Shared,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let PipelineInputs {
        detections,
        batches: rx,
        alerts,
        resume,
        remediator,
    } = inputs;
    // Its own token: it stops after the incident stage, with one last pass
    // over what that stage stored.
    let remediation_cancel = CancellationToken::new();
    let remediation =
        tokio::spawn(remediator.run(Arc::clone(&shared.wake), remediation_cancel.clone()));
    let open = shared.store.open_incidents()?;
    shared.metrics.set_open_incidents(open.len());
    if !open.is_empty() {
        tracing::info!(
            count = open.len(),
            "Resuming open incidents from the store."
        );
    }
    let mut predictions = OpenPredictions::new(
        &config.cluster,
        &config.incidents.group_by,
        config.predictive.as_ref().map_or(0, |p| p.evidence_samples),
    );
    predictions.restore(&open);
    let detected_open: Vec<Incident> = open
        .into_iter()
        .filter(|i| i.kind() != IncidentKind::Predictive)
        .collect();
    let mut correlator = Correlator::new(config.incidents.clone(), config.cluster.clone())
        .with_noise(&config.noise)
        .with_correlation(config.correlation.clone());
    correlator.restore(detected_open);
    let (prediction_tx, prediction_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (predicted_tx, predicted_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let predictor = match &config.predictive {
        Some(predictive) => {
            let mut scanner = PredictiveScanner::new(predictive.clone(), config.forecast.clone())
                .context("predictive")?;
            for series in predictions.series() {
                scanner.restore_open(&series);
            }
            let wanted: Vec<String> = config
                .signals
                .iter()
                .map(|s| s.name.clone())
                .chain(predictive.limits.keys().cloned())
                .chain(predictive.limits.values().filter_map(|l| l.series.clone()))
                .filter(|name| scanner.wants(name))
                .collect();
            tokio::spawn(run_scanner(scanner, prediction_rx, predicted_tx));
            Some(Prediction {
                signals: wanted.into_iter().collect(),
                tx: prediction_tx,
            })
        }
        None => {
            // Nothing will predict: close the incident stage's input now.
            drop(predicted_tx);
            None
        }
    };

    let mut engine = Engine::new(
        detections,
        config.detection.series_ttl.as_millis_i64(),
        config.detection.context_samples,
        config.detection.max_series,
    );
    let models = config.detection.models_path.clone().map(|path| ModelFile {
        path,
        every: config.detection.models_save_every.0,
    });
    if let Some(models) = &models {
        models.load_into(&mut engine);
    }
    let (detected_tx, detected_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let detect = tokio::spawn(detect_stage(
        engine,
        rx,
        detected_tx,
        resume,
        Arc::clone(&shared.metrics),
        predictor,
        models,
    ));
    shared.health.set_pipeline_running(true);
    let owners = Owners {
        correlator,
        predictions,
    };
    let result = incident_stage(owners, detected_rx, alerts, predicted_rx, shared, cancel).await;
    shared.health.set_pipeline_running(false);
    let _ = detect.await;
    remediation_cancel.cancel();
    let _ = remediation.await;
    if let Err(error) = shared.store.checkpoint() {
        tracing::warn!(error = %error_chain(&error), "Checkpointing the store at shutdown failed; the WAL will be replayed on next start.");
    }
    result
}

/// Scores batches; forwards anomalies that a previous run has not already
/// handled (a restart re-reads some history to warm detectors up, and must
/// not report it again).
async fn detect_stage(
    mut engine: Engine,
    mut rx: mpsc::Receiver<SeriesBatch>,
    tx: mpsc::Sender<Detected>,
    resume: HashMap<String, TimestampMs>,
    metrics: Arc<Metrics>,
    prediction: Option<Prediction>,
    models: Option<ModelFile>,
) {
    let mut saved_at = tokio::time::Instant::now();
    while let Some(batch) = rx.recv().await {
        if let Some(models) = &models {
            if saved_at.elapsed() >= models.every {
                models.save(&engine);
                saved_at = tokio::time::Instant::now();
            }
        }
        if let Some(p) = &prediction {
            // Failure prediction sees every sample of the signals it
            // forecasts, backfill included; it waits if it falls behind.
            if p.signals.contains(&batch.signal) && p.tx.send(batch.clone()).await.is_err() {
                tracing::warn!("The failure-prediction task has stopped; no more predictions.");
            }
        }
        let before = engine.stats().samples_scored;
        let mut anomalies = engine.observe(&batch);
        if let Some(&done) = resume.get(&batch.signal) {
            anomalies.retain(|a| a.t > done);
        }
        engine.evict_idle(&batch.signal, batch.until);
        let stats = engine.stats();
        metrics.scored(stats.samples_scored - before, stats.series);
        metrics.anomalies_found(&batch.signal, anomalies.len() as u64);
        let detected = Detected {
            signal: batch.signal,
            anomalies,
            until: batch.until,
        };
        if tx.send(detected).await.is_err() {
            break;
        }
    }
    if let Some(models) = &models {
        models.save(&engine);
    }
}

/// Groups anomalies and alerts into incidents and stores every change
/// before announcing it.
///
/// Alerts stored by the webhook but not applied yet (a crash, a full
/// channel, a pipeline that was not running) are replayed first and swept
/// up every [`ALERT_SWEEP`]; applying one twice changes nothing
/// ([`Correlator::on_alert`] is idempotent).
async fn incident_stage(
    owners: Owners,
    mut rx: mpsc::Receiver<Detected>,
    mut alerts: mpsc::Receiver<AlertBatch>,
    mut predicted: mpsc::Receiver<Vec<PredictiveEvent>>,
    shared: &Shared,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let Owners {
        mut correlator,
        mut predictions,
    } = owners;
    apply_stored_alerts(&mut correlator, shared, &cancel).await?;
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + ALERT_SWEEP, ALERT_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            detected = rx.recv() => {
                let Some(mut detected) = detected else { break };
                // Anomalies matching a person's `noise` verdict are recorded
                // as suppressed instead of reaching the correlator.
                if !detected.anomalies.is_empty() {
                    let in_force =
                        with_store_retry(shared, &cancel, |store| store.verdicts_in_force(now_ms()))
                            .await?;
                    let now = now_ms();
                    let set = noise::verdicts::VerdictSet::build(
                        &correlator.noise().verdicts,
                        in_force,
                        correlator.correlation(),
                        now,
                    );
                    let anomalies = std::mem::take(&mut detected.anomalies);
                    let (kept, suppressed) =
                        noise::verdicts::screen_anomalies(&correlator, &set, anomalies, now);
                    detected.anomalies = kept;
                    if !suppressed.is_empty() {
                        let gap = correlator.group_window_ms();
                        let count = suppressed.len();
                        let items: Arc<[noise::AnomalySuppression]> = suppressed.into();
                        with_store_retry(shared, &cancel, move |store| {
                            store.record_anomaly_suppressions(&items, gap, now_ms())
                        })
                        .await?;
                        shared.metrics.anomalies_suppressed(
                            "verdict",
                            &detected.signal,
                            count as u64,
                        );
                    }
                }
                let updates =
                    correlator.on_batch(&detected.signal, &detected.anomalies, detected.until);
                for update in updates {
                    record_update(&mut correlator, &update, &[], detected.until, shared, &cancel)
                        .await?;
                }
                // The cursor moves only after the batch's incidents are stored: a
                // crash in between re-reads the batch rather than losing it.
                persist_cursor(shared, &detected.signal, detected.until, &cancel).await?;
                shared.wake.notify_one();
            }
            Some(batch) = alerts.recv() => {
                apply_alerts(&mut correlator, &batch.alerts, shared, &cancel).await?;
            }
            Some(events) = predicted.recv() => {
                apply_predictions(&mut predictions, &events, shared, &cancel).await?;
            }
            _ = sweep.tick() => apply_stored_alerts(&mut correlator, shared, &cancel).await?,
        }
    }
    // The prediction task ends right after the detect stage (its input
    // closes with the detect stage's); store what it still found.
    while let Some(events) = predicted.recv().await {
        apply_predictions(&mut predictions, &events, shared, &cancel).await?;
    }
    // Deliveries already in the channel; anything later waits in the store
    // for the next start.
    while let Ok(batch) = alerts.try_recv() {
        apply_alerts(&mut correlator, &batch.alerts, shared, &cancel).await?;
    }
    Ok(())
}

/// Stores the incident changes a batch of failure predictions causes.
async fn apply_predictions(
    predictions: &mut OpenPredictions,
    events: &[PredictiveEvent],
    shared: &Shared,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    for event in events {
        let Some(update) = predictions.apply(event) else {
            continue;
        };
        let (id, merged) = persist(shared, &update, &[], cancel).await?;
        shared.wake.notify_one();
        let incident = merged.as_ref().unwrap_or(&update.incident);
        match update.kind {
            UpdateKind::Opened => {
                match &merged {
                    Some(stored) => predictions.adopt(stored.clone()),
                    None => predictions.assign_id(&incident.group_key(), id),
                }
                shared.metrics.incident_opened(
                    id,
                    &incident.subject(),
                    incident.severity.as_str(),
                    incident.opened_at,
                );
            }
            UpdateKind::Updated => {}
            UpdateKind::Resolved => shared.metrics.incident_resolved(
                id,
                &incident.subject(),
                incident.resolved_at.unwrap_or(incident.last_anomaly_at),
            ),
        }
    }
    Ok(())
}

/// Stores one incident update (with the alert changes it applies, in the
/// same transaction) and then logs and counts it.
async fn record_update(
    correlator: &mut Correlator,
    update: &IncidentUpdate,
    applied: &[AppliedAlert],
    fallback_at: TimestampMs,
    shared: &Shared,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let (id, merged) = persist(shared, update, applied, cancel).await?;
    shared.wake.notify_one();
    let group_key = update.incident.group_key();
    let incident = &update.incident;
    match update.kind {
        UpdateKind::Opened => {
            match merged {
                Some(merged) => correlator.adopt(merged),
                None => correlator.assign_id(&group_key, id),
            }
            shared.metrics.incident_opened(
                id,
                &incident.subject(),
                incident.severity.as_str(),
                incident.opened_at,
            );
        }
        UpdateKind::Updated => {}
        UpdateKind::Resolved => {
            shared.metrics.incident_resolved(
                id,
                &incident.subject(),
                incident.resolved_at.unwrap_or(fallback_at),
            );
        }
    }
    Ok(())
}

/// Applies stored alerts to incidents; each alert is marked processed in
/// the transaction that saves the incident it changed (or on its own when
/// it changed none: already applied before a crash).
async fn apply_alerts(
    correlator: &mut Correlator,
    alerts: &[Alert],
    shared: &Shared,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let api_silences = with_store_retry(shared, cancel, |store| store.silences(now_ms())).await?;
    let in_force =
        with_store_retry(shared, cancel, |store| store.verdicts_in_force(now_ms())).await?;
    let verdicts = noise::verdicts::VerdictSet::build(
        &correlator.noise().verdicts,
        in_force,
        correlator.correlation(),
        now_ms(),
    );
    for alert in alerts {
        let applied = [(alert.id, alert.status)];
        let note =
            match suppress(correlator, alert, &api_silences, &verdicts, shared, cancel).await? {
                noise::Screen::Suppressed => continue,
                noise::Screen::Apply => None,
                noise::Screen::ApplyLifted(why) => Some(why),
            };
        let updates = correlator.on_alert_noted(alert, note.as_deref());
        let fallback_at = alert.ends_at.unwrap_or(alert.starts_at);
        let last = updates.len().saturating_sub(1);
        for (i, update) in updates.iter().enumerate() {
            let mark: &[_] = if i == last { &applied } else { &[] };
            record_update(correlator, update, mark, fallback_at, shared, cancel).await?;
        }
        if updates.is_empty() {
            with_store_retry(shared, cancel, move |store| {
                store.mark_alerts_processed(&applied)
            })
            .await?;
        }
    }
    Ok(())
}

/// Decides whether `alert` is suppressed instead of reaching the
/// correlator, and if so records why (with the processed flag, in one
/// transaction) before logging and counting it.
///
/// An episode already in an open incident is never suppressed (its
/// `resolved` must reach the incident, even if a silence began meanwhile);
/// an episode suppressed once stays suppressed (its `resolved` is only
/// marked processed) unless its learned suppression was lifted (it kept
/// firing): then it is applied with the reason. Otherwise, in order: the
/// first silence — config silences first — active at the alert's first
/// receipt and matching its labels; a verdict in force that it matches;
/// its history (learned: a low-severity alert that always resolved on its
/// own, and whose fingerprint is in no open incident — a flapping alert's
/// next episode joins its incident).
async fn suppress(
    correlator: &Correlator,
    alert: &Alert,
    api_silences: &[Silence],
    verdicts: &noise::verdicts::VerdictSet,
    shared: &Shared,
    cancel: &CancellationToken,
) -> anyhow::Result<noise::Screen> {
    if correlator.knows_alert(alert) {
        return Ok(noise::Screen::Apply);
    }
    let applied = [(alert.id, alert.status)];
    let id = alert.id;
    if let Some(earlier) =
        with_store_retry(shared, cancel, move |store| store.suppression_of(id)).await?
    {
        if let (Some(_), Some(why)) = (earlier.lifted_at, earlier.lift_detail) {
            return Ok(noise::Screen::ApplyLifted(format!(
                "{why} (it had been suppressed: {})",
                earlier.detail
            )));
        }
        with_store_retry(shared, cancel, move |store| {
            store.mark_alerts_processed(&applied)
        })
        .await?;
        return Ok(noise::Screen::Suppressed);
    }
    let now = now_ms();
    let silences = shared.config_silences.iter().chain(api_silences);
    let by = if let Some(silence) = noise::first_match(silences, &alert.labels, alert.received_at) {
        noise::SuppressedBy::silence(silence)
    } else if let Some(hit) = verdicts.match_alert(&alert.labels, correlator.correlation(), now) {
        noise::SuppressedBy::verdict(&hit)
    } else if alert.status == crate::incident::AlertStatus::Firing
        && correlator.noise().learned.eligible(&alert.labels)
        && !correlator.knows_fingerprint(&alert.fingerprint)
    {
        let learned = correlator.noise().learned.clone();
        let mapping = Arc::new(correlator.correlation().clone());
        let labels = Arc::new(correlator.noise().verdicts.identity_labels.clone());
        let mine = noise::learned::identity(&mapping, &labels, &alert.labels);
        let (name, starts_at) = (alert.name().to_string(), alert.starts_at);
        let since = starts_at.saturating_sub(learned.lookback.as_millis_i64());
        let history = with_store_retry(shared, cancel, move |store| {
            let same = |l: &std::collections::BTreeMap<String, String>| {
                noise::learned::identity(&mapping, &labels, l) == mine
            };
            store.alert_history(&name, id, since, starts_at, &same)
        })
        .await?;
        match noise::learned::judge(&learned, &history, starts_at, now) {
            Some(why) => noise::SuppressedBy::learned(why),
            None => return Ok(noise::Screen::Apply),
        }
    } else {
        return Ok(noise::Screen::Apply);
    };
    let (stored, recorded) = (alert.clone(), by.clone());
    with_store_retry(shared, cancel, move |store| {
        store.suppress_alert_by(&stored, &recorded, now_ms())
    })
    .await?;
    shared
        .metrics
        .alert_suppressed(by.reason, alert.name(), &by.detail);
    Ok(noise::Screen::Suppressed)
}

/// Applies alerts the store holds as not yet applied, oldest first.
async fn apply_stored_alerts(
    correlator: &mut Correlator,
    shared: &Shared,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    // Learned suppressions of episodes still firing past
    // `noise.learned.within` are lifted (their alerts become unprocessed
    // again) and applied below with the reason.
    let within = correlator.noise().learned.within.as_millis_i64();
    let lifted = with_store_retry(shared, cancel, move |store| {
        store.lift_learned_suppressions(within, now_ms())
    })
    .await?;
    if !lifted.is_empty() {
        shared
            .metrics
            .alert_suppressions_lifted(lifted.len() as u64);
    }
    let pending = with_store_retry(shared, cancel, |store| {
        store.unprocessed_alerts(ALERT_SWEEP_BATCH)
    })
    .await?;
    if !pending.is_empty() {
        tracing::debug!(
            count = pending.len(),
            "Applying stored alerts not yet applied to incidents."
        );
        apply_alerts(correlator, &pending, shared, cancel).await?;
    }
    Ok(())
}

/// Saves an incident and queues its events, retrying with backoff while the store fails (the
/// pipeline waits meanwhile: losing an incident is worse than lagging).
async fn persist(
    shared: &Shared,
    update: &IncidentUpdate,
    applied: &[AppliedAlert],
    cancel: &CancellationToken,
) -> anyhow::Result<(i64, Option<Incident>)> {
    let incident = Arc::new(update.incident.clone());
    let kind = update.kind;
    let applied: Arc<[_]> = Arc::from(applied);
    // The incident, the events its change causes (the outbox, src/publish/)
    // and the alerts it applies are written in one transaction: none can
    // exist without the others, whatever crashes when.
    let saved = with_store_retry(shared, cancel, {
        let (incident, applied) = (Arc::clone(&incident), Arc::clone(&applied));
        move |store| {
            if applied.is_empty() {
                store.save_incident_with_events(&incident, kind, now_ms())
            } else {
                store.save_incident_with_alerts(&incident, kind, now_ms(), &applied)
            }
        }
    })
    .await;
    let saved = match saved {
        Ok(saved) => saved,
        Err(error) if is_already_open(&error) => {
            // The store already holds an open incident for this group that
            // the caller's copy did not know about (e.g. opened by an alert
            // out of data-time order). The store is the truth: fold the new
            // incident into that one instead of stopping the pipeline.
            let group_key = incident.group_key();
            tracing::warn!(group = %group_key, update = ?kind, id = ?incident.id, opened_at = incident.opened_at, "An incident for this group is already open in the store; merging into it.");
            with_store_retry(shared, cancel, move |store| {
                let open = store
                    .open_incidents()?
                    .into_iter()
                    .find(|i| i.group_key() == group_key);
                let Some(mut stored) = open else {
                    return Err(StoreError::AlreadyOpen {
                        group_key: group_key.clone(),
                    });
                };
                stored.merge_from(&incident);
                stored.state = crate::incident::IncidentState::Open;
                stored.resolved_at = None;
                let mut saved = if applied.is_empty() {
                    store.save_incident_with_events(&stored, UpdateKind::Updated, now_ms())?
                } else {
                    store.save_incident_with_alerts(
                        &stored,
                        UpdateKind::Updated,
                        now_ms(),
                        &applied,
                    )?
                };
                saved.merged = Some(stored);
                Ok(saved)
            })
            .await?
        }
        Err(error) => return Err(error),
    };
    saved.report.emit(&shared.metrics);
    Ok((saved.id, saved.merged))
}

/// True when `error` is the store refusing a second open incident for a group.
fn is_already_open(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        matches!(
            e.downcast_ref::<StoreError>(),
            Some(StoreError::AlreadyOpen { .. })
        )
    })
}

async fn persist_cursor(
    shared: &Shared,
    signal: &str,
    until: TimestampMs,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let signal: Arc<str> = Arc::from(signal);
    with_store_retry(shared, cancel, move |store| {
        store.set_cursor(&signal, until)
    })
    .await
}

/// Runs a store operation on the blocking pool (SQLite calls block),
/// retrying transient failures with capped backoff. Permanent failures
/// (a schema from a newer aiopsd, data that cannot be encoded) are returned
/// at once: retrying them would only stall the pipeline.
async fn with_store_retry<T: Send + 'static>(
    shared: &Shared,
    cancel: &CancellationToken,
    op: impl Fn(&Store) -> Result<T, StoreError> + Clone + Send + 'static,
) -> anyhow::Result<T> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let store = shared.store.clone();
        let attempt = op.clone();
        let result = tokio::task::spawn_blocking(move || attempt(&store))
            .await
            .context("store task panicked")?;
        match result {
            Ok(v) => {
                shared.health.set_store_ok(true);
                return Ok(v);
            }
            Err(error) => {
                shared.health.set_store_ok(false);
                shared.metrics.store_error();
                let chain = error_chain(&error);
                if matches!(error, StoreError::AlreadyOpen { .. }) {
                    // The caller decides (persist merges into the open one).
                    return Err(error).context("store write refused");
                }
                if !error.is_retryable() {
                    tracing::error!(error = %chain, "Store write failed permanently; stopping the pipeline.");
                    return Err(error).context("store write failed");
                }
                if cancel.is_cancelled() {
                    return Err(error).context("store write failed during shutdown");
                }
                tracing::warn!(error = %chain, retry_in_ms = backoff.as_millis() as u64, "Store write failed; retrying.");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::noise::Matcher;
    use crate::incident::{AlertStatus, NewAlert, NewSilence};

    fn new_alert(fp: &str, name: &str, ns: &str, status: AlertStatus) -> NewAlert {
        NewAlert {
            fingerprint: fp.into(),
            status,
            labels: BTreeMap::from([
                ("alertname".to_string(), name.to_string()),
                ("namespace".to_string(), ns.to_string()),
                ("service".to_string(), "svc".to_string()),
            ]),
            annotations: BTreeMap::new(),
            starts_at: 1_000,
            ends_at: (status == AlertStatus::Resolved).then_some(2_000),
            generator_url: String::new(),
        }
    }

    /// Issue 8: a silenced alert is stored with its reason (which silence,
    /// by whom) and opens no incident; its resolved notification stays
    /// suppressed; an alert already in an incident is never suppressed.
    #[tokio::test]
    async fn a_silenced_alert_is_recorded_with_its_reason_and_opens_no_incident() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::demo(
            dir.path().join("aiopsd.db"),
            "127.0.0.1:0".parse().expect("addr"),
        );
        config.noise = serde_saphyr::from_str(
            "silences:\n  - matchers: ['namespace=batch']\n    created_by: ops\n    comment: nightly jobs\n",
        )
        .expect("noise");
        let (shared, _rx) = Shared::open(&config).expect("shared");
        let cancel = CancellationToken::new();
        let store = &shared.store;
        let now = now_ms();
        store
            .create_silence(
                &NewSilence {
                    matchers: vec![Matcher::parse("alertname=~Disk.*").expect("m")],
                    starts_at: None,
                    ends_at: Some(now + 3_600_000),
                    created_by: "alice".into(),
                    comment: "disk swap".into(),
                },
                now,
            )
            .expect("silence");
        store
            .record_alerts(
                "aiopsd",
                "{}",
                &[
                    new_alert("a1", "JobSlow", "batch", AlertStatus::Firing),
                    new_alert("a2", "DiskFull", "shop", AlertStatus::Firing),
                    new_alert("a3", "HighErrorRate", "shop", AlertStatus::Firing),
                ],
                now_ms(),
            )
            .expect("record");
        let mut correlator = Correlator::new(config.incidents.clone(), "test");
        apply_stored_alerts(&mut correlator, &shared, &cancel)
            .await
            .expect("apply");

        let open = store.open_incidents().expect("open");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].alerts.len(), 1);
        assert_eq!(open[0].alerts[0].name, "HighErrorRate");
        let mut refs: Vec<String> = store
            .list_suppressions(0, None)
            .expect("suppressions")
            .into_iter()
            .map(|s| s.reference)
            .collect();
        refs.sort();
        assert_eq!(refs, ["api-1", "config-0"]);
        assert!(store.unprocessed_alerts(10).expect("pending").is_empty());
        assert!(shared
            .metrics
            .encode()
            .contains("aiopsd_alerts_suppressed_total{reason=\"silence\"} 2"));

        // A silence on the already-applied alert does not hide its end, and
        // the suppressed alert's end stays suppressed.
        store
            .create_silence(
                &NewSilence {
                    matchers: vec![Matcher::parse("alertname=HighErrorRate").expect("m")],
                    starts_at: None,
                    ends_at: Some(now + 3_600_000),
                    created_by: "bob".into(),
                    comment: "late".into(),
                },
                now,
            )
            .expect("silence");
        store
            .record_alerts(
                "aiopsd",
                "{}",
                &[
                    new_alert("a1", "JobSlow", "batch", AlertStatus::Resolved),
                    new_alert("a3", "HighErrorRate", "shop", AlertStatus::Resolved),
                ],
                now_ms(),
            )
            .expect("record");
        apply_stored_alerts(&mut correlator, &shared, &cancel)
            .await
            .expect("apply");
        let open = store.open_incidents().expect("open");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].alerts[0].status, AlertStatus::Resolved);
        assert_eq!(store.list_suppressions(0, None).expect("list").len(), 2);
        assert!(store.unprocessed_alerts(10).expect("pending").is_empty());
    }
}
