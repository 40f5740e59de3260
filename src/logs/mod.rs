//! Logs: turning free-text log lines into templates (issue 10).
//!
//! Start at [`TemplateMiner`]: it mines one line at a time (online, one
//! pass, no look-ahead) and returns the [`TemplateId`] of the line's
//! template. [`mask`] decides which parts of a line are variables;
//! [`redact_secrets`] cleans lines kept as evidence; [`grouping_accuracy`]
//! is the quality metric of docs/LOGS.md. The offline side is
//! `aiopsd logs templates FILE`.
//!
//! The miner, [`window`], [`signals`] and [`changes`] are pure and
//! synchronous, like the detectors, so the maths is tested and benchmarked
//! without a runtime. The I/O is in [`elastic`] (the Elasticsearch source)
//! and [`pipeline`] (the daemon task: read, commit counts and checkpoint
//! to the store, send template-rate signals to detection, attach log
//! evidence to incidents). docs/LOGS.md describes the whole.

pub mod changes;
pub mod elastic;
pub mod mask;
pub mod metrics;
mod miner;
pub mod pipeline;
mod redact;
pub mod signals;
mod tool;
pub mod window;

use std::collections::HashMap;
use std::hash::Hash;

pub use miner::{
    MinerParams, ParamsError, Template, TemplateId, TemplateMiner, MAX_LEAF_TEMPLATES,
    MAX_PREFIX_TOKENS,
};
pub use redact::{redact, redact_secrets, RedactionKind, Redactor, REDACTED};
pub use tool::{mine_file, templates_command, MineSummary};

/// Grouping accuracy (Zhu et al., "Tools and Benchmarks for Automated Log
/// Parsing", ICSE-SEIP 2019): the share of lines whose predicted group
/// holds exactly the same lines as their true group.
///
/// `truth[i]` and `predicted[i]` are line `i`'s true and predicted group
/// labels. Returns 1.0 for no lines, and `None` when the slices differ in
/// length (a tool that lost or added lines cannot be scored).
pub fn grouping_accuracy<T: Eq + Hash, P: Eq + Hash>(truth: &[T], predicted: &[P]) -> Option<f64> {
    if truth.len() != predicted.len() {
        return None;
    }
    if truth.is_empty() {
        return Some(1.0);
    }
    let mut true_size: HashMap<&T, usize> = HashMap::new();
    for t in truth {
        *true_size.entry(t).or_default() += 1;
    }
    // Per predicted group: its size, the true label of its first line, and
    // whether every line has that label.
    let mut groups: HashMap<&P, (usize, &T, bool)> = HashMap::new();
    for (t, p) in truth.iter().zip(predicted) {
        let g = groups.entry(p).or_insert((0, t, true));
        g.0 += 1;
        g.2 &= g.1 == t;
    }
    let correct: usize = groups
        .values()
        .filter(|(size, t, pure)| *pure && true_size.get(t) == Some(size))
        .map(|(size, _, _)| size)
        .sum();
    Some(correct as f64 / truth.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_accuracy_counts_whole_groups_only() {
        // True groups {0,1,2}, {3,4}, {5}.
        let truth = ["a", "a", "a", "b", "b", "c"];
        assert_eq!(grouping_accuracy(&truth, &[1, 1, 1, 2, 2, 3]), Some(1.0));
        // Splitting a true group makes all of its lines wrong.
        assert_eq!(
            grouping_accuracy(&truth, &[1, 1, 9, 2, 2, 3]),
            Some(3.0 / 6.0)
        );
        // Merging two true groups makes both wrong.
        assert_eq!(grouping_accuracy(&truth, &[1, 1, 1, 2, 2, 2]), Some(0.5));
        assert_eq!(grouping_accuracy(&truth, &[1]), None);
        assert_eq!(grouping_accuracy::<u8, u8>(&[], &[]), Some(1.0));
    }
}
