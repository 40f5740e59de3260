//! Command-line interface: argument parsing and the top-level commands.
//!
//! `main.rs` only calls [`run`]; everything here returns errors instead of
//! exiting so the exit code policy lives in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat, LoggingConfig};
use crate::daemon::{self, DemoOptions};

const EXAMPLES: &str = "\
Examples:
  aiopsd demo                          # simulated service, faults, remediation; API and UI on 127.0.0.1:9464
  aiopsd demo --once                   # same, exit when the scenario is done (for scripts)
  aiopsd config check config/aiopsd.yaml
  aiopsd backtest --data nab/data --labels nab/labels.json --preset latency
  aiopsd logs templates app.log --assign app.ids
  aiopsd capacity -c config/aiopsd.yaml --service cart --replicas 3 --cpu-request 0.5 --memory-request 512Mi
  aiopsd policy check policies/
  aiopsd policy explain --incident incident-7.json
  aiopsd action revert 12 --by alice --reason \"made it worse\"
  AIOPSD_SERVER__API_TOKEN=... aiopsd run --config /etc/aiopsd/aiopsd.yaml

Environment:
  AIOPSD_<SECTION>__<FIELD>   overrides a config field, e.g. AIOPSD_PROMETHEUS__URL
  RUST_LOG                    overrides logging.level";

/// aiopsd — finds what is wrong in a Kubernetes service, groups it into
/// incidents and explains it.
#[derive(Debug, Parser)]
#[command(name = "aiopsd", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: poll Prometheus, detect, open incidents, serve the API.
    Run {
        /// Config file (YAML); see config/aiopsd.yaml.
        #[arg(long, short, env = "AIOPSD_CONFIG")]
        config: PathBuf,
    },
    /// Run the whole pipeline on a built-in simulated service with an
    /// injected fault. Needs no cluster and no servers.
    Demo {
        /// Exit when the scenario is done instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Where the API listens (a free port is used if this one is taken).
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: SocketAddr,
        /// Where the demo's store and report go.
        #[arg(long, default_value = "aiopsd-demo")]
        data_dir: PathBuf,
    },
    /// Score a detector on a labelled corpus in NAB's layout with the NAB
    /// algorithm (three profiles, one threshold for the corpus).
    Backtest {
        /// Data directory laid out like NAB's data/: <category>/<file>.csv.
        #[arg(long)]
        data: PathBuf,
        /// Labels file like NAB's combined_windows.json.
        #[arg(long)]
        labels: PathBuf,
        /// Write NAB results (OUT/aiopsd/<category>/aiopsd_<file>.csv) here.
        #[arg(long)]
        results: Option<PathBuf>,
        /// Profiles file like NAB's profiles.json (default: NAB's three).
        #[arg(long)]
        profiles: Option<PathBuf>,
        /// Detector kind with default tunables (robust_ewma, median_mad,
        /// seasonal, cusum, kmeans, context, ensemble). Default: the
        /// `ensemble` preset.
        #[arg(long, conflicts_with = "preset")]
        detector: Option<String>,
        /// Preset name in models/presets/ or a path to a preset .yaml.
        #[arg(long)]
        preset: Option<String>,
    },
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with plain log files (one message per line).
    Logs {
        #[command(subcommand)]
        command: LogsCommand,
    },
    /// Check remediation policies, or see what an incident would get.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Plan a service's capacity from 30 days of CPU, memory and request
    /// rate in Prometheus: the forecast daily peak, the replicas and
    /// requests needed to stay under the target utilisation (with the
    /// arithmetic), and when today's capacity runs out.
    Capacity {
        /// Config file (its `prometheus`, `capacity` and `forecast` sections).
        #[arg(long, short, env = "AIOPSD_CONFIG")]
        config: PathBuf,
        /// The service (the `capacity.service_label` value).
        #[arg(long)]
        service: String,
        /// Its namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Days to plan for (1 to 30).
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Replicas running now.
        #[arg(long)]
        replicas: u32,
        /// CPU request per pod, in cores (e.g. 0.5).
        #[arg(long)]
        cpu_request: f64,
        /// Memory request per pod (bytes, or with Ki/Mi/Gi).
        #[arg(long)]
        memory_request: String,
        /// HPA minReplicas, when an HPA scales the service.
        #[arg(long, requires = "hpa_max")]
        hpa_min: Option<u32>,
        /// HPA maxReplicas.
        #[arg(long, requires = "hpa_min")]
        hpa_max: Option<u32>,
        /// Utilisation of requests to stay under at the peak.
        #[arg(long, default_value_t = 0.7)]
        target: f64,
        /// Print the Markdown section for a capacity review instead of the table.
        #[arg(long, conflicts_with = "json")]
        markdown: bool,
        /// Print JSON (as the API returns it).
        #[arg(long)]
        json: bool,
    },
    /// Act on a remediation action through a running daemon's API.
    Action {
        #[command(subcommand)]
        command: ActionCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate every policy file of a directory; prints each problem with
    /// its file, line and field and exits 2 if there is one.
    Check {
        /// The policy directory (e.g. policies/).
        dir: PathBuf,
    },
    /// Print the decision (and why) the policies in DIR would give an
    /// incident, as saved by `GET /api/v1/incidents/{id}`.
    Explain {
        /// The policy directory.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// The incident, as JSON.
        #[arg(long)]
        incident: PathBuf,
        /// The target workload's state as JSON (replicas, labels, HPA);
        /// default: derived from the incident's labels, and said so.
        #[arg(long)]
        workload: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ActionCommand {
    /// Undo an executed action: restores the pre-state recorded before it
    /// ran (the leader carries it out within a second).
    Revert {
        /// The action id.
        id: i64,
        /// Who asks (recorded).
        #[arg(long)]
        by: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// The daemon's API.
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
        /// The API token (operator).
        #[arg(long, env = "AIOPSD_SERVER__API_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum LogsCommand {
    /// Mine the templates of a log file; prints `count<TAB>id<TAB>template`,
    /// most frequent first.
    Templates {
        /// The log file, one message per line (invalid UTF-8 is decoded lossily).
        file: PathBuf,
        /// Also write each line's template id to this file, one per input line.
        #[arg(long)]
        assign: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file (with AIOPSD_* overrides applied); prints
    /// every problem with its field path and exits 2 if there is one.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

/// Exit code for an invalid config, distinct from run-time failure (1).
const EXIT_INVALID_CONFIG: u8 = 2;

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    crate::install_crypto_provider();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(config_check(&file)),
        Command::Logs {
            command: LogsCommand::Templates { file, assign },
        } => crate::logs::templates_command(&file, assign.as_deref()),
        Command::Backtest {
            data,
            labels,
            results,
            profiles,
            detector,
            preset,
        } => backtest(
            &data,
            &labels,
            results.as_deref(),
            profiles.as_deref(),
            detector.as_deref(),
            preset.as_deref(),
        ),
        Command::Policy {
            command: PolicyCommand::Check { dir },
        } => Ok(match crate::policy::check_dir(&dir) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{}: invalid policies", dir.display());
                eprintln!("{errors}");
                ExitCode::from(EXIT_INVALID_CONFIG)
            }
        }),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    policies,
                    incident,
                    workload,
                },
        } => {
            let set = match crate::policy::PolicySet::load_dir(&policies) {
                Ok(set) => set,
                Err(errors) => {
                    eprintln!("{}: invalid policies", policies.display());
                    eprintln!("{errors}");
                    return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
                }
            };
            match crate::policy::explain(&set, &incident, workload.as_deref(), None) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(EXIT_INVALID_CONFIG))
                }
            }
        }
        Command::Action {
            command:
                ActionCommand::Revert {
                    id,
                    by,
                    reason,
                    url,
                    token,
                },
        } => runtime()?.block_on(revert_action(id, &by, &reason, &url, token.as_deref())),
        Command::Capacity {
            config,
            service,
            namespace,
            days,
            replicas,
            cpu_request,
            memory_request,
            hpa_min,
            hpa_max,
            target,
            markdown,
            json,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    print_config_problems(&config, &e);
                    return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
                }
            };
            let memory_request_bytes = parse_bytes(&memory_request)
                .ok_or_else(|| anyhow::anyhow!("--memory-request {memory_request:?}: expected bytes or a number with Ki, Mi or Gi"))?;
            let input = crate::forecast::CapacityInput {
                service,
                days,
                replicas,
                pod: crate::forecast::PodResources {
                    cpu_request_cores: cpu_request,
                    cpu_limit_cores: None,
                    memory_request_bytes,
                    memory_limit_bytes: None,
                },
                hpa: hpa_min.zip(hpa_max).map(|(min_replicas, max_replicas)| {
                    crate::forecast::Hpa {
                        min_replicas,
                        max_replicas,
                    }
                }),
                target_utilisation: target,
            };
            let planned = runtime()?.block_on(crate::forecast::service::plan_service(
                &config,
                namespace.as_deref(),
                &input,
            ));
            match planned {
                Ok(p) if json => println!("{}", serde_json::to_string_pretty(&p)?),
                Ok(p) if markdown => print!("{}", p.plan.to_markdown()),
                Ok(p) => print!("{}", p.plan.to_table()),
                Err(e) => {
                    eprintln!("aiopsd capacity: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    print_config_problems(&config, &e);
                    return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
                }
            };
            init_logging(&config.logging);
            runtime()?.block_on(async {
                let cancel = shutdown_on_signal();
                daemon::run(config, cancel).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            once,
            listen,
            data_dir,
        } => {
            init_logging(&LoggingConfig {
                format: LogFormat::Text,
                level: "warn,aiopsd=info".into(),
            });
            let outcome = runtime()?.block_on(async {
                let cancel = shutdown_on_signal();
                daemon::demo(
                    DemoOptions {
                        data_dir,
                        listen,
                        once,
                    },
                    cancel,
                )
                .await
            })?;
            Ok(if outcome.report_path.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn backtest(
    data: &std::path::Path,
    labels: &std::path::Path,
    results: Option<&std::path::Path>,
    profiles: Option<&std::path::Path>,
    detector: Option<&str>,
    preset: Option<&str>,
) -> anyhow::Result<ExitCode> {
    use crate::backtest;
    use crate::detect::{preset as presets, DetectorSpec};
    let spec: DetectorSpec = match (detector, preset) {
        (Some(kind), _) => {
            let tree = serde_json::json!({ "kind": kind });
            serde_json::from_value(tree).map_err(|e| anyhow::anyhow!("--detector {kind}: {e}"))?
        }
        (None, name) => {
            let name = name.unwrap_or("ensemble");
            let path = presets::preset_path(std::path::Path::new("models/presets"), name);
            if path.is_file() {
                presets::load_preset(&path)?.detector
            } else {
                // No models/ here: the presets built into the binary.
                presets::resolve_preset(name)?.detector
            }
        }
    };
    let profiles = match profiles {
        Some(p) => backtest::corpus::read_profiles(p)?,
        None => backtest::nab::standard_profiles(),
    };
    let started = std::time::Instant::now();
    let report = backtest::run(data, labels, &profiles, &spec, results)?;
    println!("detector: {spec:?}");
    print!("{}", report.table());
    println!(
        "{} series scored in {:.2} s",
        report.series.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(out) = results {
        println!("NAB results written under {}", out.join("aiopsd").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `512Mi`, `2Gi`, `1048576` → bytes.
fn parse_bytes(s: &str) -> Option<f64> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let factor = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let n: f64 = number.trim().parse().ok()?;
    (n.is_finite() && n > 0.0).then_some(n * factor)
}

/// `aiopsd action revert`: asks the daemon's API, which records the
/// request; the leader's remediation stage restores the pre-state.
async fn revert_action(
    id: i64,
    by: &str,
    reason: &str,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let endpoint = format!("{}/api/v1/actions/{id}/revert", url.trim_end_matches('/'));
    let body = serde_json::json!({ "by": by, "reason": reason }).to_string();
    let mut request = reqwest::Client::new()
        .post(&endpoint)
        .timeout(std::time::Duration::from_secs(10))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {endpoint}: {e}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        println!("Revert of action {id} requested; the daemon carries it out and records it.");
        println!("{text}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("The daemon refused the revert of action {id} ({status}): {text}");
        Ok(ExitCode::FAILURE)
    }
}

fn config_check(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            println!(
                "{}: ok ({} signal(s), cluster {:?})",
                file.display(),
                config.signals.len(),
                config.cluster
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_config_problems(file, &e);
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

fn print_config_problems(file: &std::path::Path, error: &crate::config::ConfigError) {
    eprintln!("{}: invalid config", file.display());
    for problem in error.problems() {
        eprintln!("  {problem}");
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging(logging: &LoggingConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&logging.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match logging.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A token cancelled on SIGTERM or Ctrl-C (SIGINT).
fn shutdown_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops aiopsd.");
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("Shutdown requested; finishing in-flight work.");
        trigger.cancel();
    });
    cancel
}
