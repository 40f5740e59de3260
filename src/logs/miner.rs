//! The streaming template miner: a Drain-style parse tree over masked
//! tokens, one pass, no look-ahead, bounded memory.
//!
//! Drain (He et al., ICWS 2017) routes a line down a fixed-depth tree —
//! token count, then the first few tokens — to a leaf holding a few
//! templates, and joins the most similar one if the share of equal
//! positions reaches a threshold, generalising the positions that differ
//! to `<*>`. Here the tree is flattened: a leaf is found by hashing
//! `(token count, first tokens)` into one map, which is the same routing
//! with one lookup instead of one per level. Tokens are compared by the
//! 64-bit hash of their masked form (see [`super::mask`]), so the hot path
//! neither allocates nor compares strings.
//!
//! Memory is bounded by [`MinerParams::max_templates`]: when the cap is
//! exceeded the least recently matched templates (1/16 of the cap at a
//! time, so eviction is amortised O(1) per line) are dropped. A dropped
//! template's id is never reused; if its lines come back they get a new id.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;

use super::mask::{self, Token, WILDCARD, WILDCARD_HASH};

/// Identifier of a template: assigned in creation order by one miner and
/// never reused by it.
///
/// Why not a hash of the template text: the text changes while a template
/// generalises (`port 22` → `port <*>`), and a line's id must not change
/// with it. A store persists `(id, text)` and restores the miner with
/// [`TemplateMiner::restore`], so ids stay stable across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateId(pub u64);

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}", self.0)
    }
}

/// Why a [`MinerParams`] value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// `similarity` must be in (0, 1].
    #[error("similarity must be in (0, 1], got {0}")]
    Similarity(f64),
    /// `prefix_tokens` must be at most [`MAX_PREFIX_TOKENS`].
    #[error("prefix_tokens must be at most {MAX_PREFIX_TOKENS}, got {0}")]
    PrefixTokens(usize),
}

/// Most templates one leaf (one length and prefix) holds; the least
/// recently used goes first. Real leaves hold a handful; 128 keeps the
/// per-line cost bounded (≤ 128 comparisons) without splitting any of them.
pub const MAX_LEAF_TEMPLATES: usize = 128;

/// Upper bound for [`MinerParams::prefix_tokens`]: deeper trees split one
/// template into many as soon as an early token varies.
pub const MAX_PREFIX_TOKENS: usize = 4;

/// Tunables of the miner. [`MinerParams::default`] is the one
/// configuration measured on all eight Loghub systems (docs/LOGS.md); it
/// needs no tuning per source.
#[derive(Debug, Clone, PartialEq)]
pub struct MinerParams {
    similarity: f64,
    prefix_tokens: usize,
    max_templates: NonZeroUsize,
}

impl Default for MinerParams {
    fn default() -> Self {
        Self {
            // The middle of the range (0.65–0.8) where no Loghub system
            // loses accuracy; docs/LOGS.md has the sweep. Below it,
            // events that differ in one or two words merge (OpenSSH's
            // disconnect reasons); above it, templates split on one
            // variable word (user names).
            similarity: 0.75,
            // Drain's depth 4 (root, length, two tokens).
            prefix_tokens: 2,
            max_templates: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl MinerParams {
    /// Builds checked parameters.
    ///
    /// `similarity` is the least share of a line's tokens that must equal a
    /// template's, in (0, 1] (default 0.75); `prefix_tokens` is how many
    /// leading tokens route a line besides its length, at most
    /// [`MAX_PREFIX_TOKENS`] (default 2); `max_templates` caps memory
    /// (default 10 000, ≈ a few MB).
    pub fn new(
        similarity: f64,
        prefix_tokens: usize,
        max_templates: NonZeroUsize,
    ) -> Result<Self, ParamsError> {
        if !(similarity > 0.0 && similarity <= 1.0) {
            return Err(ParamsError::Similarity(similarity));
        }
        if prefix_tokens > MAX_PREFIX_TOKENS {
            return Err(ParamsError::PrefixTokens(prefix_tokens));
        }
        Ok(Self {
            similarity,
            prefix_tokens,
            max_templates,
        })
    }

    /// The similarity threshold in (0, 1].
    pub fn similarity(&self) -> f64 {
        self.similarity
    }

    /// The number of leading tokens used for routing.
    pub fn prefix_tokens(&self) -> usize {
        self.prefix_tokens
    }

    /// The template cap.
    pub fn max_templates(&self) -> NonZeroUsize {
        self.max_templates
    }
}

/// A template as seen from outside the miner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Stable id (see [`TemplateId`]).
    pub id: TemplateId,
    /// Template text: tokens joined by one space, variables as `<*>`.
    pub text: String,
    /// Lines matched since the template was created (or restored).
    pub count: u64,
}

/// One template inside the miner.
#[derive(Debug)]
struct Cluster {
    id: TemplateId,
    leaf: u64,
    hashes: Box<[u64]>,
    /// Positions holding an upper-case identifier (see `Token::pinned`).
    pinned: Box<[bool]>,
    tokens: Vec<Box<str>>,
    count: u64,
    last_used: u64,
}

impl Cluster {
    fn text(&self) -> String {
        self.tokens.join(" ")
    }

    fn heap_bytes(&self) -> usize {
        self.hashes.len() * 9
            + self.tokens.capacity() * std::mem::size_of::<Box<str>>()
            + self.tokens.iter().map(|t| t.len()).sum::<usize>()
    }
}

/// Online log-template miner (see the module docs).
///
/// ```
/// use aiopsd::logs::TemplateMiner;
/// let mut miner = TemplateMiner::default();
/// let a = miner.add("Accepted password for root from 10.0.0.1 port 22");
/// let b = miner.add("Accepted password for bob from 10.0.0.9 port 4022");
/// assert_eq!(a, b);
/// assert_eq!(
///     miner.template(a).map(|t| t.text),
///     Some("Accepted password for <*> from <*> port <*>".to_owned())
/// );
/// ```
#[derive(Debug)]
pub struct TemplateMiner {
    params: MinerParams,
    /// Leaf key → slots of the clusters in that leaf.
    leaves: HashMap<u64, Vec<u32>>,
    /// Slab of clusters; `None` is a free slot (listed in `free`).
    slots: Vec<Option<Cluster>>,
    free: Vec<u32>,
    by_id: HashMap<TemplateId, u32>,
    next_id: u64,
    tick: u64,
    /// Scratch buffer, reused for every line.
    tokens: Vec<Token>,
}

impl Default for TemplateMiner {
    fn default() -> Self {
        Self::new(MinerParams::default())
    }
}

impl TemplateMiner {
    /// An empty miner.
    pub fn new(params: MinerParams) -> Self {
        Self {
            params,
            leaves: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            next_id: 1,
            tick: 0,
            tokens: Vec::with_capacity(64),
        }
    }

    /// A miner that continues from persisted templates: each `(id, text)`
    /// is restored under its id (counts start at zero), and new ids
    /// continue after the largest one, so ids are stable across restarts.
    pub fn restore<I>(params: MinerParams, templates: I) -> Self
    where
        I: IntoIterator<Item = (TemplateId, String)>,
    {
        let mut miner = Self::new(params);
        for (id, text) in templates {
            miner.next_id = miner.next_id.max(id.0.saturating_add(1));
            if miner.by_id.contains_key(&id) {
                // A duplicated row keeps its first text.
                continue;
            }
            miner.tokenize(&text);
            miner.insert_cluster(id, &text, 0);
        }
        while miner.by_id.len() > miner.params.max_templates.get() {
            miner.evict();
        }
        miner
    }

    /// The parameters this miner runs with.
    pub fn params(&self) -> &MinerParams {
        &self.params
    }

    /// Mines one line (one message, without its header) and returns the id
    /// of the template it joined or created.
    pub fn add(&mut self, line: &str) -> TemplateId {
        self.tick += 1;
        self.tokenize(line);
        let leaf = self.leaf_key();
        let n = self.tokens.len();
        let mut best: Option<(u32, usize)> = None;
        if let Some(slots) = self.leaves.get(&leaf) {
            for &slot in slots {
                let Some(Some(c)) = self.slots.get(slot as usize) else {
                    continue;
                };
                if c.hashes.len() != n {
                    // Only on a 64-bit collision of two leaf keys.
                    continue;
                }
                let mut equal = 0;
                let mut compatible = true;
                for ((h, p), t) in c.hashes.iter().zip(c.pinned.iter()).zip(&self.tokens) {
                    if *h == t.hash {
                        equal += 1;
                    } else if *p && t.pinned {
                        compatible = false;
                        break;
                    }
                }
                if !compatible {
                    continue;
                }
                if best.is_none_or(|(_, b)| equal > b) {
                    best = Some((slot, equal));
                }
            }
        }
        if let Some((slot, equal)) = best {
            // The threshold is on the share of equal positions (an empty
            // line matches the empty template).
            if n == 0 || equal as f64 >= self.params.similarity * n as f64 {
                if let Some(Some(c)) = self.slots.get_mut(slot as usize) {
                    c.count += 1;
                    c.last_used = self.tick;
                    if equal < n {
                        let positions = c
                            .hashes
                            .iter_mut()
                            .zip(c.pinned.iter_mut())
                            .zip(c.tokens.iter_mut())
                            .zip(&self.tokens);
                        for (((h, p), text), t) in positions {
                            if *h != t.hash && *h != WILDCARD_HASH {
                                *h = WILDCARD_HASH;
                                // A `<*>` is no enum value any more.
                                *p = false;
                                *text = WILDCARD.into();
                            }
                        }
                    }
                    return c.id;
                }
            }
        }
        let id = TemplateId(self.next_id);
        self.next_id += 1;
        self.make_room_in_leaf(leaf);
        self.insert_cluster(id, line, 1);
        if self.by_id.len() > self.params.max_templates.get() {
            self.evict();
        }
        id
    }

    fn tokenize(&mut self, line: &str) {
        mask::tokenize(line, &mut self.tokens);
    }

    /// Routing key: token count and the first `prefix_tokens` masked
    /// tokens (Drain's fixed-depth tree, flattened into one hash).
    fn leaf_key(&self) -> u64 {
        let mut h = (self.tokens.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for t in self.tokens.iter().take(self.params.prefix_tokens) {
            h = (h.rotate_left(23) ^ t.hash).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        h
    }

    /// Adds a cluster for the line currently in `self.tokens`.
    fn insert_cluster(&mut self, id: TemplateId, line: &str, count: u64) -> u32 {
        let leaf = self.leaf_key();
        let tokens = self
            .tokens
            .iter()
            .map(|t| {
                let tok = line.get(t.start as usize..t.end as usize).unwrap_or("");
                mask::mask_token(tok).into_boxed_str()
            })
            .collect();
        let cluster = Cluster {
            id,
            leaf,
            hashes: self.tokens.iter().map(|t| t.hash).collect(),
            pinned: self.tokens.iter().map(|t| t.pinned).collect(),
            tokens,
            count,
            last_used: self.tick,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(cluster);
                s
            }
            None => {
                self.slots.push(Some(cluster));
                (self.slots.len() - 1) as u32
            }
        };
        self.leaves.entry(leaf).or_default().push(slot);
        self.by_id.insert(id, slot);
        slot
    }

    /// Keeps a leaf under [`MAX_LEAF_TEMPLATES`] by dropping its least
    /// recently used template. Every line is compared with every template
    /// of its leaf, so this bounds the work per line even on a stream that
    /// keeps creating templates with the same length and first tokens.
    fn make_room_in_leaf(&mut self, leaf: u64) {
        let Some(slots) = self.leaves.get(&leaf) else {
            return;
        };
        if slots.len() < MAX_LEAF_TEMPLATES {
            return;
        }
        let oldest = slots
            .iter()
            .filter_map(|&s| Some((self.slots.get(s as usize)?.as_ref()?.last_used, s)))
            .min();
        if let Some((_, slot)) = oldest {
            self.remove_slot(slot);
        }
    }

    fn remove_slot(&mut self, slot: u32) {
        if let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.by_id.remove(&c.id);
            if let Some(leaf) = self.leaves.get_mut(&c.leaf) {
                leaf.retain(|&s| s != slot);
                if leaf.is_empty() {
                    self.leaves.remove(&c.leaf);
                }
            }
            self.free.push(slot);
        }
    }

    /// Drops the least recently used 1/16 of the cap (at least one).
    fn evict(&mut self) {
        let drop_n = (self.params.max_templates.get() / 16).max(1);
        let mut ages: Vec<(u64, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (c.last_used, i as u32)))
            .collect();
        if ages.len() <= drop_n {
            // Only with a cap below 16: drop down to the cap.
            ages.sort_unstable();
            let excess = ages.len().saturating_sub(self.params.max_templates.get());
            for &(_, slot) in &ages[..excess] {
                self.remove_slot(slot);
            }
            return;
        }
        ages.select_nth_unstable(drop_n - 1);
        for &(_, slot) in &ages[..drop_n] {
            self.remove_slot(slot);
        }
    }

    /// The current state of one template, if it is still held.
    pub fn template(&self, id: TemplateId) -> Option<Template> {
        let slot = *self.by_id.get(&id)?;
        let c = self.slots.get(slot as usize)?.as_ref()?;
        Some(Template {
            id: c.id,
            text: c.text(),
            count: c.count,
        })
    }

    /// All templates held, most frequent first (ties by id).
    pub fn templates(&self) -> Vec<Template> {
        let mut all: Vec<Template> = self
            .slots
            .iter()
            .flatten()
            .map(|c| Template {
                id: c.id,
                text: c.text(),
                count: c.count,
            })
            .collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
        all
    }

    /// Number of templates held (at most `max_templates`).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no template is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Approximate heap bytes held by the miner: templates, their index and
    /// the routing map. For the memory figure in the bench and for a
    /// per-service budget later.
    pub fn approx_bytes(&self) -> usize {
        let clusters: usize = self.slots.iter().flatten().map(Cluster::heap_bytes).sum();
        let slab = self.slots.capacity() * std::mem::size_of::<Option<Cluster>>();
        let leaves = self.leaves.capacity() * (8 + std::mem::size_of::<Vec<u32>>())
            + self
                .leaves
                .values()
                .map(|v| v.capacity() * 4)
                .sum::<usize>();
        let ids = self.by_id.capacity() * 16;
        clusters + slab + leaves + ids + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn same_event_joins_and_generalises() {
        let mut m = TemplateMiner::default();
        let a = m.add("Invalid user webmaster from 173.234.31.186");
        let b = m.add("Invalid user test9 from 52.80.34.196");
        let c = m.add("Invalid user admin from 10.0.0.1");
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(m.template(a).unwrap().text, "Invalid user <*> from <*>");
        assert_eq!(m.template(a).unwrap().count, 3);
    }

    #[test]
    fn different_events_stay_apart() {
        let mut m = TemplateMiner::default();
        let a = m.add("Connection closed by 1.2.3.4 [preauth]");
        let b = m.add("Received disconnect from 1.2.3.4: 11: Bye Bye [preauth]");
        let c = m.add("Connection closed by 5.6.7.8 [preauth]");
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_eq!(m.len(), 2);
    }

    /// Regression: a position generalised from an upper-case word kept its
    /// "enum value" mark, so the next upper-case word there split the
    /// template.
    #[test]
    fn a_generalised_upper_case_position_accepts_any_word() {
        let mut m = TemplateMiner::default();
        let a = m.add("Invalid user FILTER from 10.0.0.1 now");
        let b = m.add("Invalid user bob from 10.0.0.2 now");
        let c = m.add("Invalid user ADMIN from 10.0.0.3 now");
        assert_eq!((a, a), (b, c));
        // Two different enum values in one position are two events.
        let d = m.add("Task moved from NEW to RUNNING state");
        let e = m.add("Task moved from NEW to SCHEDULED state");
        assert_ne!(d, e);
    }

    #[test]
    fn empty_and_blank_lines_share_one_template() {
        let mut m = TemplateMiner::default();
        assert_eq!(m.add(""), m.add("   "));
    }

    #[test]
    fn memory_is_capped_and_ids_are_not_reused() {
        let p = MinerParams::new(0.5, 1, nz(32)).unwrap();
        let mut m = TemplateMiner::new(p);
        let mut ids = std::collections::HashSet::new();
        for i in 0..1000 {
            // Distinct first words and lengths: every line is a new template.
            let line = format!("{} {}", "w".repeat(i % 50 + 1), "x ".repeat(i / 50));
            ids.insert(m.add(&line));
            assert!(m.len() <= 32);
        }
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn recently_used_templates_survive_eviction() {
        let p = MinerParams::new(0.5, 1, nz(16)).unwrap();
        let mut m = TemplateMiner::new(p);
        let hot = m.add("heartbeat ok");
        for i in 0..200 {
            m.add(&format!("{} {}", "q".repeat(i + 1), "z"));
            assert_eq!(m.add("heartbeat ok"), hot);
        }
    }

    #[test]
    fn a_crowded_leaf_stays_bounded() {
        let mut m = TemplateMiner::default();
        // Same length and first two tokens, nothing else in common.
        for i in 0..1000 {
            let w: String = (0..4)
                .map(|k| char::from(b'a' + ((i >> (k * 2)) % 26) as u8))
                .collect();
            m.add(&format!("job state {w}q {w}r {w}s {w}t"));
        }
        assert!(m.len() <= MAX_LEAF_TEMPLATES, "{}", m.len());
    }

    #[test]
    fn restore_keeps_ids_and_continues_after_them() {
        let mut m = TemplateMiner::restore(
            MinerParams::default(),
            [(TemplateId(41), "Invalid user <*> from <*>".to_owned())],
        );
        assert_eq!(m.add("Invalid user bob from 1.2.3.4"), TemplateId(41));
        assert_eq!(m.add("something else entirely"), TemplateId(42));
        // Duplicates keep the first text; a restore beyond the cap is cut.
        let p = MinerParams::new(0.75, 2, nz(2)).unwrap();
        let rows = (1..=5).map(|i| (TemplateId(i % 4), format!("t{i} x")));
        let m = TemplateMiner::restore(p, rows);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn params_are_checked() {
        assert!(MinerParams::new(0.0, 1, nz(1)).is_err());
        assert!(MinerParams::new(1.5, 1, nz(1)).is_err());
        assert!(MinerParams::new(f64::NAN, 1, nz(1)).is_err());
        assert!(MinerParams::new(0.5, 9, nz(1)).is_err());
        assert!(MinerParams::new(1.0, 0, nz(1)).is_ok());
    }
}
