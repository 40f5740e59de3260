//! Contextual novelty: how unlike anything seen before is the recent
//! *pattern* of the series (not just its last value)?
//!
//! Why: the level-based members (median/MAD, daily profile) only ask "is
//! this value far from the expected level?". Many real faults stay inside
//! the usual range but change the shape (a flat stretch on a daily wave,
//! a new oscillation, a ramp that never happened before), and many
//! harmless bursts are far from the level yet have been seen many times
//! (the daily peak of a bursty series). Scoring the novelty of the recent
//! context against a memory of past contexts — the idea behind NAB's best
//! detectors (CAD OSE, KNN CAD, ARTime) — answers both.
//!
//! How: the series is scaled to [0, 1] by its running range (min/max seen
//! so far, so the scale is causal). At every sample the *context* is the
//! last value plus the means of the `window - 1` blocks of `block` samples
//! before it: a short, noise-averaged picture of the recent past, quantised
//! to bytes. The raw score is the distance (mean absolute difference, in
//! 1/255 of the range) from the context to its nearest neighbour in a ring
//! of `memory` past contexts, one stored every `every` samples, excluding
//! contexts that overlap the current one (they would always match). The
//! raw score is then calibrated like every member: the tail probability of
//! its short average under its long-run distribution on this series (the
//! "anomaly likelihood" that made Numenta's HTM scores), so a noisy series
//! whose contexts are never close does not alarm all the time.
//!
//! Causal (the score at `t` uses samples ≤ `t`), bounded (about
//! `memory·window + window·block` bytes), no allocation per sample.

use serde::{Deserialize, Serialize};

use super::calibrate::{CalibrationParams, Calibrator};
use super::median_mad::check_alarm;
use super::{Detector, Score};
use crate::signal::TimestampMs;

/// Tunables of [`ContextNovelty`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContextParams {
    /// Values in a context: the last sample and `window - 1` block means,
    /// 2..=32. Default: `8`.
    #[serde(default = "d_window")]
    pub window: u32,
    /// Samples averaged per block, 1..=64. Default: `1` (the context is
    /// the last `window` samples; on NAB 1 beats 2, 4 and 8).
    #[serde(default = "d_block")]
    pub block: u32,
    /// Past contexts kept to compare with, 8..=1024. Default: `224`
    /// (`window` bytes each: 1.75 KiB at the default window, which keeps
    /// the default ensemble under 4 KiB per series; NAB standard score
    /// 200 → 68.2, 224 → 68.5, 256 → 68.6, 512 → 68.0).
    #[serde(default = "d_memory")]
    pub memory: u32,
    /// One context is stored every this many samples, 1..=1024. Default: `1`.
    #[serde(default = "d_every")]
    pub every: u32,
    /// Likelihood at or past which a sample is anomalous. Default: `0.6`.
    #[serde(default = "super::median_mad::d_alarm")]
    pub alarm: f64,
    /// Calibration of the raw nearest-neighbour distance.
    #[serde(default)]
    pub calibration: CalibrationParams,
}

fn d_window() -> u32 {
    8
}
fn d_block() -> u32 {
    1
}
fn d_memory() -> u32 {
    224
}
fn d_every() -> u32 {
    1
}

impl Default for ContextParams {
    fn default() -> Self {
        Self {
            window: d_window(),
            block: d_block(),
            memory: d_memory(),
            every: d_every(),
            alarm: super::median_mad::d_alarm(),
            calibration: CalibrationParams::default(),
        }
    }
}

impl ContextParams {
    /// Checks the tunables; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=32).contains(&self.window) {
            return Err(format!("window must be 2..=32, got {}", self.window));
        }
        if !(1..=64).contains(&self.block) {
            return Err(format!("block must be 1..=64, got {}", self.block));
        }
        if !(8..=1024).contains(&self.memory) {
            return Err(format!("memory must be 8..=1024, got {}", self.memory));
        }
        if !(1..=1024).contains(&self.every) {
            return Err(format!("every must be 1..=1024, got {}", self.every));
        }
        check_alarm(self.alarm)?;
        self.calibration
            .validate()
            .map_err(|e| format!("calibration.{e}"))
    }
}

/// Contextual-novelty detector for one series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContextNovelty {
    window: u32,
    block: u32,
    every: u32,
    alarm: f64,
    /// Running range of the series (causal scale).
    lo: f64,
    hi: f64,
    /// The last `(window - 1)·block + 1` raw values, oldest overwritten.
    recent: Vec<f64>,
    /// Next slot of `recent` to write.
    recent_next: u32,
    /// Samples seen (saturating).
    seen: u64,
    /// Past contexts, `window` bytes each, ring of `memory` entries.
    contexts: Vec<u8>,
    /// Capacity of `contexts` in entries.
    memory: u32,
    /// Next entry of `contexts` to overwrite once full.
    context_next: u32,
    /// Contexts stored so far (saturating at `memory`).
    stored: u32,
    /// Contexts stored but not yet comparable: the most recent ones
    /// overlap the current context; they enter `contexts` once they do not.
    pending: Vec<u8>,
    /// Entries in `pending` (a FIFO of `pending_cap` contexts).
    pending_len: u32,
    pending_head: u32,
    cal: Calibrator,
}

impl ContextNovelty {
    /// A cold detector.
    pub fn new(p: &ContextParams) -> Self {
        let span = ((p.window - 1) * p.block + 1) as usize;
        let w = p.window as usize;
        // Contexts stored less than `span` samples ago overlap the current one.
        let pending_cap = (span as u32).div_ceil(p.every) as usize + 1;
        Self {
            window: p.window,
            block: p.block,
            every: p.every,
            alarm: p.alarm,
            // Set by the first sample (finite, so a saved state is valid JSON).
            lo: 0.0,
            hi: 0.0,
            recent: vec![0.0; span],
            recent_next: 0,
            seen: 0,
            contexts: vec![0; w * p.memory as usize],
            memory: p.memory,
            context_next: 0,
            stored: 0,
            pending: vec![0; w * pending_cap],
            pending_len: 0,
            pending_head: 0,
            cal: Calibrator::new(&p.calibration),
        }
    }

    /// Checks a loaded state against `fresh` (same spec): same sizes,
    /// indices inside their buffers.
    pub(super) fn check_state(&self, fresh: &Self) -> Result<(), String> {
        let sizes = |d: &Self| {
            (
                d.window,
                d.block,
                d.every,
                d.memory,
                d.recent.len(),
                d.contexts.len(),
                d.pending.len(),
            )
        };
        if sizes(self) != sizes(fresh) {
            return Err("context: saved with other window/block/every/memory".into());
        }
        super::check_index(
            "context.recent_next",
            self.recent_next as usize,
            self.recent.len(),
        )?;
        super::check_index(
            "context.context_next",
            self.context_next as usize,
            self.memory as usize,
        )?;
        let cap = self.pending_cap() as usize;
        super::check_index("context.pending_head", self.pending_head as usize, cap)?;
        if self.stored > self.memory || self.pending_len as usize > cap {
            return Err("context: more contexts stored than its memory holds".into());
        }
        Ok(())
    }

    fn pending_cap(&self) -> u32 {
        (self.pending.len() / self.window as usize) as u32
    }

    /// The raw value `back` samples ago (0 = the newest).
    fn back(&self, back: usize) -> f64 {
        let n = self.recent.len();
        self.recent[(self.recent_next as usize + n - 1 - back) % n]
    }

    /// The current context, quantised to the running range.
    fn context(&self, out: &mut [u8]) {
        let range = (self.hi - self.lo).max(1e-12);
        let q = |v: f64| -> u8 { (((v - self.lo) / range).clamp(0.0, 1.0) * 255.0).round() as u8 };
        out[0] = q(self.back(0));
        let b = self.block as usize;
        for (j, slot) in out.iter_mut().enumerate().skip(1) {
            let start = 1 + (j - 1) * b;
            let sum: f64 = (start..start + b).map(|k| self.back(k)).sum();
            *slot = q(sum / b as f64);
        }
    }

    /// Distance (mean absolute byte difference) to the nearest stored
    /// context, or `None` while nothing is stored.
    fn nearest(&self, ctx: &[u8]) -> Option<f64> {
        let w = self.window as usize;
        let best = self
            .contexts
            .chunks_exact(w)
            .take(self.stored as usize)
            .map(|c| {
                c.iter()
                    .zip(ctx)
                    .map(|(&a, &b)| u32::from(a.abs_diff(b)))
                    .sum::<u32>()
            })
            .min()?;
        Some(f64::from(best) / w as f64)
    }

    fn remember(&mut self, ctx: &[u8]) {
        let w = self.window as usize;
        let cap = self.pending_cap();
        if self.pending_len == cap {
            // The oldest pending context no longer overlaps: it joins the memory.
            let h = self.pending_head as usize * w;
            let slot = self.context_next as usize * w;
            self.contexts[slot..slot + w].copy_from_slice(&self.pending[h..h + w]);
            self.context_next = (self.context_next + 1) % self.memory;
            self.stored = (self.stored + 1).min(self.memory);
            self.pending_head = (self.pending_head + 1) % cap;
            self.pending_len -= 1;
        }
        let tail = ((self.pending_head + self.pending_len) % cap) as usize * w;
        self.pending[tail..tail + w].copy_from_slice(ctx);
        self.pending_len += 1;
    }
}

impl Detector for ContextNovelty {
    fn update(&mut self, t: TimestampMs, x: f64) -> Score {
        self.update_likelihood(t, x).0
    }

    fn update_likelihood(&mut self, _t: TimestampMs, x: f64) -> (Score, f64) {
        let n = self.recent.len();
        self.recent[self.recent_next as usize] = x;
        self.recent_next = ((self.recent_next as usize + 1) % n) as u32;
        self.seen = self.seen.saturating_add(1);
        if self.seen == 1 {
            (self.lo, self.hi) = (x, x);
        }
        self.lo = self.lo.min(x);
        self.hi = self.hi.max(x);
        let mut raw = 0.0;
        let mut p = 0.0;
        if self.seen >= n as u64 {
            let mut buf = [0u8; 32];
            let ctx = &mut buf[..self.window as usize];
            self.context(ctx);
            raw = self.nearest(ctx).unwrap_or(0.0);
            if self.stored > 0 {
                p = self.cal.update(raw);
            }
            if self.seen.is_multiple_of(u64::from(self.every)) {
                self.remember(ctx);
            }
        }
        let spread = ((self.hi - self.lo) / 255.0).max(1e-9);
        (
            Score {
                z: raw,
                expected: x,
                spread,
                anomalous: p >= self.alarm,
            },
            p,
        )
    }

    super::serde_state!();

    fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + 8 * self.recent.capacity()
            + self.contexts.capacity()
            + self.pending.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_noise as noise;

    fn wave(i: usize) -> f64 {
        10.0 + 5.0 * ((i % 96) as f64 / 96.0 * std::f64::consts::TAU).sin() + 0.2 * noise(i as u64)
    }

    #[test]
    fn a_flat_stretch_inside_the_usual_range_is_novel() {
        let mut d = ContextNovelty::new(&ContextParams::default());
        let mut quiet: f64 = 0.0;
        for i in 0..3000 {
            let p = d.update_likelihood(i as i64, wave(i)).1;
            if i > 1500 {
                quiet = quiet.max(p);
            }
        }
        // The wave stops at its mean: every value is within the usual range.
        let peak = (3000..3040)
            .map(|i| {
                d.update_likelihood(i as i64, 10.0 + 0.2 * noise(i as u64))
                    .1
            })
            .fold(0.0, f64::max);
        assert!(peak > quiet && peak >= 0.6, "{peak} vs quiet {quiet}");
    }

    #[test]
    fn state_is_bounded() {
        let mut d = ContextNovelty::new(&ContextParams::default());
        for i in 0..20_000 {
            d.update(i as i64, wave(i));
        }
        assert!(d.state_bytes() <= 2304, "{}", d.state_bytes());
    }
}
