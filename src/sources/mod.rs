//! Sources: tasks that read signals from the outside world and send
//! [`crate::signal::SeriesBatch`]es down the pipeline.
//!
//! Each source is a struct built from its config whose `run` method is the
//! task; it stops when the shared cancellation token fires and closes its
//! channel, which is how the rest of the pipeline learns to drain.

pub mod alert_storm;
pub mod prometheus;
pub mod promql;
pub mod sim;
pub mod sim_growth;
