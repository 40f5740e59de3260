//! aiopsd — an AIOps agent for Kubernetes.
//!
//! Start at [`daemon`], which wires the pipeline stages together:
//! [`sources`] → [`detect`] → [`incident`] → [`remediate`] (which uses
//! [`diagnose`] and the [`policy`] gate), with [`server`] and [`ui`] in
//! front and [`publish`] behind. docs/ARCHITECTURE.md draws the flow and
//! says which module owns which stage.
//!
//! Types that travel between stages live in [`signal`]; configuration in
//! [`config`]; aiopsd's own metrics and readiness in [`telemetry`].
//! With two replicas, [`leader`] decides which one runs the pipeline.
//! [`publish`] sends incident and action events over MQTT from a durable
//! outbox and takes approvals of pending actions.
//! [`logs`] mines log lines into templates (docs/LOGS.md); [`forecast`]
//! forecasts series, predicts limit breaches, trends and capacity
//! (docs/FORECAST.md).

#![warn(missing_docs, unreachable_pub)]

pub mod backtest;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod diagnose;
pub mod forecast;
pub mod incident;
pub mod leader;
pub mod logs;
pub mod policy;
pub mod publish;
pub mod remediate;
pub mod server;
pub mod signal;
pub mod sources;
pub mod telemetry;
pub mod ui;

/// Installs the process-wide rustls crypto provider.
///
/// Several of our HTTP clients pull different providers (ring via kube and
/// elasticsearch, aws-lc-rs via reqwest); with two present rustls refuses to
/// guess and panics on first use. Call once at the start of `main` and of
/// each test binary that builds clients; repeated calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
