//! Tokenising and variable masking, in one pass over the bytes of a line.
//!
//! Masking decides most of the grouping quality and most of the cost, so it
//! is a hand-written scanner rather than a list of regexes: a regex set
//! would run every pattern over every line (the miner's whole budget is
//! about a microsecond a line), while the rules below look at each byte
//! once.
//!
//! A line is split on ASCII whitespace into tokens. Each token is split
//! further into *segments*: maximal runs of `[A-Za-z0-9._:-]` (a "word" that
//! may be a number, a version, an IPv4/IPv6 address with its port, a host
//! name, a block id `blk_-123`, a time `17:41:44`, a UUID or a hex value),
//! separated by any other byte (`= / [ ] ( ) , ; ' "` …), which are kept.
//! A segment is a **variable** when
//!
//! - it contains an ASCII digit — numbers, IPs, UUIDs, hex such as `0x1f`,
//!   ids like `appattempt_1445144423722_0020_000001`; or
//! - it is at least 8 hex digits long (`deadbeefcafe`, a digest written
//!   only with letters `a`–`f`); or
//! - it is an English month or weekday abbreviation (`Jun`, `Fri`): part
//!   of a timestamp inside the message.
//!
//! A whole token is a variable when it is a path (`/a/b`, `./a/b`, `~/a`:
//! starts with `/`, `./` or `~/` and holds a second `/`) or a URL (contains
//! `://`). Paths are masked whole because their depth varies.
//!
//! Variables become [`WILDCARD`] in the masked text: `rhost=218.188.2.4`
//! becomes `rhost=<*>`, `[173.234.31.186]` becomes `[<*>]` and `1234`
//! becomes `<*>`. The punctuation around a variable stays, because it
//! usually belongs to the template.
//!
//! Words with digits that are really constants (`jk2_init()`, `x86_64`)
//! are masked too; they are the same in every line of their template, so
//! this costs nothing unless two templates differ only there.

/// The text that stands for a variable in a template.
pub const WILDCARD: &str = "<*>";

/// Byte mixed into a token hash for a masked segment. 0xFF never occurs in
/// UTF-8 text, so a masked segment cannot hash like any literal text.
const MASK_BYTE: u8 = 0xFF;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hash of a token that is one variable and nothing else (`1234`, or a
/// template position generalised to `<*>`).
pub(crate) const WILDCARD_HASH: u64 = (FNV_OFFSET ^ MASK_BYTE as u64).wrapping_mul(FNV_PRIME);

/// One token of a line after masking: where it is in the line, and the
/// hash of its masked form (what the miner compares; equal masked text
/// gives equal hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    /// FNV-1a of the masked token (variables hashed as one marker byte).
    pub(crate) hash: u64,
    /// Byte offset of the token in the line.
    pub(crate) start: u32,
    /// Byte offset just past the token.
    pub(crate) end: u32,
    /// An upper-case identifier (`SCHEDULED`, `JOB_SETUP`, `ERROR`): an
    /// enum value, which names the event rather than a parameter of it,
    /// so the miner never generalises a position where the template and
    /// the line hold two different ones (`from NEW to SCHEDULED` and `from
    /// NEW to RUNNING` are two events). Against a lower-case word or a
    /// `<*>` it generalises as usual: a user named `FILTER` is still a
    /// user name.
    pub(crate) pinned: bool,
}

/// Whether a token is an upper-case identifier: at least two upper-case
/// letters, otherwise only upper-case letters and `_`, with one optional
/// trailing `.`, `,`, `;` or `:`.
#[inline]
fn is_upper_ident(tok: &[u8]) -> bool {
    let core = match tok {
        [rest @ .., b'.' | b',' | b';' | b':'] => rest,
        _ => tok,
    };
    core.len() >= 2
        && core.iter().all(|b| b.is_ascii_uppercase() || *b == b'_')
        && core.iter().filter(|b| b.is_ascii_uppercase()).count() >= 2
}

/// Whether `tok[i]` belongs to a word segment: letters, digits and `_`
/// always; `.`, `:` and `-` only when a letter, digit or `_` follows, so
/// `10.0.0.1:80` and `blk_-42` are one word but the dot that ends a
/// sentence and a run of dots (`depth.......0`) separate words.
#[inline]
fn is_word_at(tok: &[u8], i: usize) -> bool {
    let b = tok[i];
    b.is_ascii_alphanumeric()
        || b == b'_'
        || (matches!(b, b'.' | b':' | b'-')
            && tok
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_'))
}

#[inline]
fn fnv(h: u64, b: u8) -> u64 {
    (h ^ b as u64).wrapping_mul(FNV_PRIME)
}

/// Whether a whole token is a path or a URL (masked as one variable).
#[inline]
fn is_path_or_url(tok: &[u8]) -> bool {
    let rest = match tok {
        [b'/', rest @ ..] => rest,
        [b'.' | b'~', b'/', rest @ ..] => rest,
        _ => return tok.windows(3).any(|w| w == b"://"),
    };
    rest.contains(&b'/')
}

/// Whether a word segment is a variable (see the module docs).
#[inline]
fn is_variable(seg: &[u8], has_digit: bool) -> bool {
    has_digit
        || (seg.len() >= 8 && seg.iter().all(|b| matches!(b, b'a'..=b'f' | b'A'..=b'F')))
        || is_date_word(seg)
}

/// English month and weekday abbreviations (`Jun`, `Fri`): the words of a
/// timestamp written inside a message (`at Fri Jun 17 07:07:00 2005`),
/// which vary like its numbers do.
#[inline]
fn is_date_word(seg: &[u8]) -> bool {
    const WORDS: [&[u8; 3]; 19] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun",
    ];
    seg.len() == 3 && WORDS.iter().any(|w| w[..] == *seg)
}

/// Splits `line` into tokens and hashes their masked forms into `out`
/// (cleared first; reused across lines so the hot path does not allocate).
///
/// Lines longer than `u32::MAX` bytes are cut there; no log line is.
pub(crate) fn tokenize(line: &str, out: &mut Vec<Token>) {
    out.clear();
    let bytes = line.as_bytes();
    let n = bytes.len().min(u32::MAX as usize);
    let mut i = 0;
    while i < n {
        while i < n && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            break;
        }
        let start = i;
        while i < n && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let tok = &bytes[start..i];
        out.push(Token {
            hash: hash_masked(tok),
            start: start as u32,
            end: i as u32,
            pinned: is_upper_ident(tok),
        });
    }
}

/// FNV-1a of the masked form of one token.
fn hash_masked(tok: &[u8]) -> u64 {
    if is_path_or_url(tok) {
        return WILDCARD_HASH;
    }
    let mut h = FNV_OFFSET;
    let mut i = 0;
    let n = tok.len();
    while i < n {
        if tok[i..].starts_with(WILDCARD.as_bytes()) {
            // Text that is already a template (restored from a store).
            h = fnv(h, MASK_BYTE);
            i += WILDCARD.len();
            continue;
        }
        if !is_word_at(tok, i) {
            h = fnv(h, tok[i]);
            i += 1;
            continue;
        }
        let s = i;
        let mut digit = false;
        while i < n && is_word_at(tok, i) {
            digit |= tok[i].is_ascii_digit();
            i += 1;
        }
        let seg = &tok[s..i];
        if is_variable(seg, digit) {
            h = fnv(h, MASK_BYTE);
        } else {
            for &c in seg {
                h = fnv(h, c);
            }
        }
    }
    h
}

/// The masked text of one token, e.g. `rhost=<*>` for `rhost=218.188.2.4`.
///
/// Only called when a template is created (rarely), so it may allocate.
pub fn mask_token(tok: &str) -> String {
    let bytes = tok.as_bytes();
    if is_path_or_url(bytes) {
        return WILDCARD.to_owned();
    }
    let mut out = String::with_capacity(tok.len());
    let mut i = 0;
    let n = bytes.len();
    while i < n {
        if bytes[i..].starts_with(WILDCARD.as_bytes()) {
            out.push_str(WILDCARD);
            i += WILDCARD.len();
            continue;
        }
        if !is_word_at(bytes, i) {
            // Copy the whole run of non-word bytes; they may be multi-byte
            // UTF-8, and word bytes are ASCII, so the cut is on a boundary.
            let s = i;
            while i < n && !is_word_at(bytes, i) && !bytes[i..].starts_with(WILDCARD.as_bytes()) {
                i += 1;
            }
            out.push_str(&tok[s..i]);
            continue;
        }
        let s = i;
        let mut digit = false;
        while i < n && is_word_at(bytes, i) {
            digit |= bytes[i].is_ascii_digit();
            i += 1;
        }
        if is_variable(&bytes[s..i], digit) {
            out.push_str(WILDCARD);
        } else {
            out.push_str(&tok[s..i]);
        }
    }
    out
}

/// The masked text of a whole line, tokens joined by one space.
///
/// For display and tests; the miner works on hashes.
pub fn mask_line(line: &str) -> String {
    line.split_ascii_whitespace()
        .map(mask_token)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_numbers_ips_ids_and_keeps_punctuation() {
        assert_eq!(
            mask_line("rhost=218.188.2.4 uid=0 [173.234.31.186] blk_-6952295868487656571"),
            "rhost=<*> uid=<*> [<*>] <*>"
        );
        assert_eq!(
            mask_line("Received connection request /10.10.34.11:45307"),
            "Received connection request /<*>"
        );
        assert_eq!(
            mask_line("took 12ms, id 3f2a9c1e-0b1d-4c2e-9f00-1234567890ab"),
            "took <*>, id <*>"
        );
        assert_eq!(mask_line("digest deadbeefcafe face"), "digest <*> face");
        // Dot runs and sentence ends separate words (BGL's `depth....0`);
        // the last dot joins the number (`.0`) and is masked with it.
        assert_eq!(
            mask_line("depth.......0 done. -1"),
            "depth......<*> done. <*>"
        );
        assert_eq!(
            mask_line("at Fri Jun 17 07:07:00 2005"),
            "at <*> <*> <*> <*> <*>"
        );
    }

    #[test]
    fn masks_paths_and_urls_whole() {
        assert_eq!(mask_line("ok /etc/httpd/conf/workers.properties"), "ok <*>");
        assert_eq!(mask_line("GET https://example.com/a?b=c"), "GET <*>");
        assert_eq!(mask_line("a/b stays, /x stays"), "a/b stays, /x stays");
    }

    #[test]
    fn hashes_agree_with_masked_text() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        tokenize("user=7 from 10.0.0.1 port 22", &mut a);
        tokenize("  user=12   from 192.168.1.1 port 2222 ", &mut b);
        assert_eq!(a.len(), 5);
        assert_eq!(
            a.iter().map(|t| t.hash).collect::<Vec<_>>(),
            b.iter().map(|t| t.hash).collect::<Vec<_>>()
        );
        assert_eq!(a[2].hash, WILDCARD_HASH);
        // A template's own text hashes like the lines it came from.
        let mut t = Vec::new();
        tokenize("user=<*> from <*> port <*>", &mut t);
        assert_eq!(
            t,
            a.iter()
                .zip(&t)
                .map(|(x, y)| Token { hash: x.hash, ..*y })
                .collect::<Vec<_>>()
        );
        assert_ne!(a[0].hash, WILDCARD_HASH);
        let mut e = Vec::new();
        tokenize("from NEW to JOB_SETUP, Task A", &mut e);
        let pinned: Vec<bool> = e.iter().map(|t| t.pinned).collect();
        assert_eq!(pinned, [false, true, false, true, false, false]);
    }

    #[test]
    fn non_ascii_text_is_kept_intact() {
        assert_eq!(mask_line("größe=12 «ok»"), "größe=<*> «ok»");
    }
}
