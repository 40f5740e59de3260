//! The hourly token budget and the per-incident answer cache: the two
//! things that keep a chatty incident from becoming a bill. Both are pure
//! state driven by the caller's clock, so they are tested without waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::answer::Discard;
use crate::diagnose::hypothesis::Hypothesis;

const HOUR: Duration = Duration::from_secs(3600);

/// Tokens used in the current hour. The hour starts with the first call
/// after the previous one ended (a fixed window, not a sliding one: simple
/// to explain in a log line, and at most twice the budget in any 60
/// minutes across a boundary).
#[derive(Debug)]
pub(crate) struct TokenBudget {
    per_hour: u64,
    window_start: Option<Instant>,
    used: u64,
    warned: bool,
}

/// A call refused by the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted {
    /// Tokens used this hour.
    pub used: u64,
    /// The budget.
    pub budget: u64,
    /// Time until the hour rolls over.
    pub resets_in: Duration,
    /// The first refusal this hour (log it).
    pub first: bool,
}

impl TokenBudget {
    pub(crate) fn new(per_hour: u64) -> Self {
        Self {
            per_hour,
            window_start: None,
            used: 0,
            warned: false,
        }
    }

    fn roll(&mut self, now: Instant) -> Instant {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < HOUR => start,
            _ => {
                self.window_start = Some(now);
                self.used = 0;
                self.warned = false;
                now
            }
        }
    }

    /// Admits a call expected to use up to `estimate` tokens, or says why
    /// not.
    pub(crate) fn admit(&mut self, now: Instant, estimate: u64) -> Result<(), Exhausted> {
        let start = self.roll(now);
        if self.used.saturating_add(estimate) <= self.per_hour {
            return Ok(());
        }
        let first = !self.warned;
        self.warned = true;
        Err(Exhausted {
            used: self.used,
            budget: self.per_hour,
            resets_in: HOUR.saturating_sub(now.saturating_duration_since(start)),
            first,
        })
    }

    /// Counts tokens a call used.
    pub(crate) fn record(&mut self, now: Instant, tokens: u64) {
        self.roll(now);
        self.used = self.used.saturating_add(tokens);
    }
}

/// What the model answered, kept for reuse.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// A valid answer.
    Used(Vec<Hypothesis>),
    /// An answer that was discarded: asking again about the same evidence
    /// would cost the same tokens for, most likely, the same mistake.
    Discarded(Discard),
}

/// The last answer per incident with the fingerprint of the prompt it
/// answered. Bounded: when full, the oldest entry goes.
#[derive(Debug)]
pub(crate) struct AnswerCache {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<i64, (String, Instant, Cached)>,
}

impl AnswerCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: HashMap::new(),
        }
    }

    /// The answer for this incident and prompt, if fresh.
    pub(crate) fn get(&self, now: Instant, incident: i64, fingerprint: &str) -> Option<Cached> {
        let (fp, at, cached) = self.entries.get(&incident)?;
        (fp == fingerprint && now.saturating_duration_since(*at) < self.ttl).then(|| cached.clone())
    }

    /// Keeps `answer` as this incident's latest.
    pub(crate) fn put(&mut self, now: Instant, incident: i64, fingerprint: String, answer: Cached) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(&incident) && self.entries.len() >= self.capacity {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (_, at, _)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, at, _))| *at)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(incident, (fingerprint, now, answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_once_used_up_warns_once_and_rolls_over() {
        let t0 = Instant::now();
        let mut b = TokenBudget::new(1000);
        assert_eq!(b.admit(t0, 400), Ok(()));
        b.record(t0, 700);
        let e = b
            .admit(t0 + Duration::from_secs(60), 400)
            .expect_err("700 + 400 > 1000");
        assert_eq!((e.used, e.budget, e.first), (700, 1000, true));
        assert_eq!(e.resets_in, Duration::from_secs(3540));
        let again = b
            .admit(t0 + Duration::from_secs(120), 400)
            .expect_err("still used up");
        assert!(!again.first);
        // A small call still fits.
        assert_eq!(b.admit(t0 + Duration::from_secs(120), 300), Ok(()));
        // The hour rolls over: a fresh budget, and a fresh warning later.
        assert_eq!(b.admit(t0 + HOUR, 400), Ok(()));
        b.record(t0 + HOUR, 1000);
        assert!(b.admit(t0 + HOUR, 1).expect_err("used up").first);
    }

    #[test]
    fn cache_matches_incident_and_fingerprint_within_ttl() {
        let t0 = Instant::now();
        let mut c = AnswerCache::new(Duration::from_secs(60), 2);
        c.put(t0, 1, "a".into(), Cached::Used(Vec::new()));
        assert!(c.get(t0, 1, "a").is_some());
        assert!(c.get(t0, 1, "b").is_none(), "the evidence changed");
        assert!(c.get(t0, 2, "a").is_none(), "another incident");
        assert!(
            c.get(t0 + Duration::from_secs(60), 1, "a").is_none(),
            "expired"
        );
        c.put(
            t0 + Duration::from_secs(1),
            2,
            "b".into(),
            Cached::Used(Vec::new()),
        );
        c.put(
            t0 + Duration::from_secs(2),
            3,
            "c".into(),
            Cached::Used(Vec::new()),
        );
        assert!(
            c.get(t0 + Duration::from_secs(2), 1, "a").is_none(),
            "oldest evicted"
        );
        assert!(c.get(t0 + Duration::from_secs(2), 3, "c").is_some());
        let mut off = AnswerCache::new(Duration::ZERO, 2);
        off.put(t0, 1, "a".into(), Cached::Used(Vec::new()));
        assert!(off.get(t0, 1, "a").is_none());
    }
}
