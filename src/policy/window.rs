//! Time windows in UTC: recurring (weekdays and hours) and absolute
//! (a date/time range). Allowed windows and freeze windows share them.
//!
//! UTC only, on purpose: a freeze that silently moves with a daylight
//! saving change, or with the time zone of whichever node runs the leader,
//! is exactly the surprise a change freeze must not have.

use std::fmt;
use std::time::UNIX_EPOCH;

use crate::signal::TimestampMs;

const DAY_MS: i64 = 86_400_000;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Window {
    /// Every selected weekday, from `start` to `end` minutes after
    /// midnight (end exclusive); `start > end` wraps past midnight into
    /// the next day (the window belongs to the day it starts on).
    Weekly {
        /// Monday first.
        days: [bool; 7],
        start: u32,
        end: u32,
    },
    /// `[from, until)` in epoch milliseconds.
    Range { from: i64, until: i64 },
}

impl Window {
    /// True when `t` (wall ms, UTC) is inside the window.
    pub(crate) fn contains(&self, t: TimestampMs) -> bool {
        match self {
            Window::Range { from, until } => *from <= t && t < *until,
            Window::Weekly { days, start, end } => {
                let day = t.div_euclid(DAY_MS);
                let minute = (t.rem_euclid(DAY_MS) / 60_000) as u32;
                let weekday = weekday(day);
                let yesterday = (weekday + 6) % 7;
                if start < end {
                    days[weekday] && *start <= minute && minute < *end
                } else {
                    (days[weekday] && minute >= *start) || (days[yesterday] && minute < *end)
                }
            }
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Range { from, until } => {
                write!(f, "{} to {}", format_ms(*from), format_ms(*until))
            }
            Window::Weekly { days, start, end } => {
                let names: Vec<&str> = (0..7).filter(|&i| days[i]).map(|i| DAY_NAMES[i]).collect();
                let days = if names.len() == 7 {
                    "every day".to_string()
                } else {
                    names.join(",")
                };
                write!(
                    f,
                    "{days} {:02}:{:02}-{:02}:{:02} UTC",
                    start / 60,
                    start % 60,
                    end / 60,
                    end % 60
                )
            }
        }
    }
}

/// Monday = 0 for a day number since 1970-01-01 (a Thursday).
fn weekday(day: i64) -> usize {
    (day + 3).rem_euclid(7) as usize
}

/// Parses weekday names (`mon`..`sun`, `weekdays`, `weekend`, `daily`).
pub(crate) fn parse_days(names: &[String]) -> Result<[bool; 7], String> {
    if names.is_empty() {
        return Ok([true; 7]);
    }
    let mut days = [false; 7];
    for name in names {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "weekdays" => days[..5].iter_mut().for_each(|d| *d = true),
            "weekend" => days[5..].iter_mut().for_each(|d| *d = true),
            "daily" => days = [true; 7],
            other => {
                let short = other.get(..3).unwrap_or(other);
                let full_ok = matches!(
                    other,
                    "mon"
                        | "tue"
                        | "wed"
                        | "thu"
                        | "fri"
                        | "sat"
                        | "sun"
                        | "monday"
                        | "tuesday"
                        | "wednesday"
                        | "thursday"
                        | "friday"
                        | "saturday"
                        | "sunday"
                );
                match DAY_NAMES.iter().position(|d| *d == short) {
                    Some(i) if full_ok => days[i] = true,
                    _ => {
                        return Err(format!(
                            "unknown day `{name}`; use mon..sun, weekdays, weekend or daily"
                        ))
                    }
                }
            }
        }
    }
    Ok(days)
}

/// Parses `HH:MM-HH:MM` (UTC; end exclusive, `24:00` allowed, may wrap).
pub(crate) fn parse_hours(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("expected `HH:MM-HH:MM` (UTC), found `{text}`");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let minute = |s: &str| -> Option<u32> {
        let (h, m) = s.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let start = minute(a).ok_or_else(bad)?;
    let end = minute(b).ok_or_else(bad)?;
    if start == 24 * 60 {
        return Err(bad());
    }
    if start == end {
        return Err(format!("`{text}` is empty (start equals end)"));
    }
    Ok((start, end))
}

/// Parses a UTC date (`2026-12-24`, its midnight) or an RFC 3339 time
/// (`2026-12-24T18:00:00Z`) to epoch ms.
pub(crate) fn parse_instant(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Some(ms) = parse_date(t) {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(t).map_err(|e| {
        format!("expected a date (2026-12-24) or an RFC 3339 UTC time (2026-12-24T18:00:00Z), found `{text}`: {e}")
    })?;
    let d = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("`{text}` is before 1970"))?;
    i64::try_from(d.as_millis()).map_err(|_| format!("`{text}` is out of range"))
}

fn parse_date(t: &str) -> Option<i64> {
    let mut parts = t.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month[(m - 1) as usize] {
        return None;
    }
    Some(days_from_civil(y, m, d) * DAY_MS)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known
/// era-based conversion: 400-year eras of 146 097 days).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-24T18:00Z` for reasons and reports.
pub(crate) fn format_ms(ms: i64) -> String {
    let day = ms.div_euclid(DAY_MS);
    let rem = ms.rem_euclid(DAY_MS);
    // Inverse of days_from_civil.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}Z",
        rem / 3_600_000,
        (rem / 60_000) % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23 was a Monday.
    fn at(date: &str, hh: i64, mm: i64) -> i64 {
        parse_instant(date).expect("date") + hh * 3_600_000 + mm * 60_000
    }

    #[test]
    fn dates_round_trip_and_weekdays_are_right() {
        assert_eq!(parse_instant("1970-01-01"), Ok(0));
        assert_eq!(format_ms(at("2026-11-23", 9, 5)), "2026-11-23T09:05Z");
        assert_eq!(format_ms(at("2024-02-29", 0, 0)), "2024-02-29T00:00Z");
        assert_eq!(weekday(at("2026-11-23", 12, 0).div_euclid(DAY_MS)), 0);
        assert_eq!(
            parse_instant("2026-11-23T10:00:00Z"),
            Ok(at("2026-11-23", 10, 0))
        );
        assert!(parse_instant("2026-02-30").is_err());
        assert!(parse_instant("yesterday").is_err());
    }

    #[test]
    fn weekly_windows_respect_days_hours_and_midnight_wrap() {
        let office = Window::Weekly {
            days: parse_days(&["weekdays".into()]).expect("days"),
            start: 8 * 60,
            end: 18 * 60,
        };
        assert!(office.contains(at("2026-11-23", 8, 0)));
        assert!(!office.contains(at("2026-11-23", 18, 0)));
        assert!(!office.contains(at("2026-11-28", 12, 0)), "Saturday");
        let (start, end) = parse_hours("22:00-06:00").expect("hours");
        let night = Window::Weekly {
            days: parse_days(&["fri".into()]).expect("days"),
            start,
            end,
        };
        assert!(night.contains(at("2026-11-27", 23, 0)), "Friday night");
        assert!(night.contains(at("2026-11-28", 5, 59)), "Saturday early");
        assert!(!night.contains(at("2026-11-28", 23, 0)), "Saturday night");
        assert!(!night.contains(at("2026-11-27", 5, 0)), "Friday early");
    }

    #[test]
    fn bad_days_and_hours_are_named() {
        assert!(parse_days(&["funday".into()])
            .expect_err("bad")
            .contains("funday"));
        assert!(parse_hours("8-18").expect_err("bad").contains("HH:MM"));
        assert!(parse_hours("25:00-26:00").is_err());
        assert!(parse_hours("10:00-10:00")
            .expect_err("empty")
            .contains("empty"));
        assert_eq!(parse_hours("18:00-24:00"), Ok((18 * 60, 24 * 60)));
    }
}
