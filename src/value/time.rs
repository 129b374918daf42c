//! The core's notion of time: a caller-supplied instant, never read from a clock.
//!
//! Instants are milliseconds since the Unix epoch so that lease deadlines and
//! subscription ends share one scale, and so a later restart can compare a
//! persisted deadline with a fresh `now`. The shell guarantees they never go
//! backwards.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Millis(pub u64);

/// One day in milliseconds (UTC days have no leap seconds in Unix time).
pub const DAY_MS: u64 = 86_400_000;

impl Millis {
    /// The latest representable instant; used as "no deadline".
    pub const MAX: Millis = Millis(u64::MAX);

    /// `self + d`, saturating instead of overflowing on absurd durations.
    pub fn after(self, d: Duration) -> Millis {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(ms))
    }

    /// How long from `self` until `later` (zero if `later` has passed).
    pub fn until(self, later: Millis) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }

    /// Midnight UTC starting the given civil date (proleptic Gregorian).
    pub fn from_civil_date(year: i32, month: u32, day: u32) -> Option<Millis> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let days = days_from_civil(year, month, day);
        u64::try_from(days).ok().map(|d| Millis(d * DAY_MS))
    }

    /// The civil date (UTC) containing this instant.
    pub fn civil_date(self) -> (i32, u32, u32) {
        civil_from_days((self.0 / DAY_MS) as i64)
    }
}

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days-from-civil algorithm (public domain description).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

/// Parses `YYYY-MM-DD` into the instant that date *ends* (midnight UTC
/// after it): a subscription ending on a date is valid throughout that date.
pub fn parse_end_of_date(s: &str) -> Result<Millis, Invalid> {
    let bad = || Invalid::new("date", format!("{s:?}: expected YYYY-MM-DD"));
    let mut parts = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    let start = Millis::from_civil_date(y, m, d).ok_or_else(bad)?;
    Ok(Millis(start.0 + DAY_MS))
}

/// Formats the last date covered by an exclusive end instant as `YYYY-MM-DD`.
pub fn format_end_date(end: Millis) -> String {
    let (y, m, d) = Millis(end.0.saturating_sub(1)).civil_date();
    format!("{y:04}-{m:02}-{d:02}")
}

/// A duration of `ms` as people read an estimate: seconds under two
/// minutes, else whole minutes.
pub fn format_rough(ms: u64) -> String {
    match ms / 1000 {
        s if s < 120 => format!("{s} s"),
        s => format!("{} min", (s + 30) / 60),
    }
}

/// Formats an instant as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(t: Millis) -> String {
    let (y, m, d) = t.civil_date();
    let secs = (t.0 / 1000) % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, (secs / 60) % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(Millis::from_civil_date(1970, 1, 1), Some(Millis(0)));
        let m = Millis::from_civil_date(2026, 11, 27).unwrap();
        assert_eq!(m.0, 1_795_737_600_000);
        assert_eq!(m.civil_date(), (2026, 11, 27));
        assert_eq!(Millis::from_civil_date(2024, 2, 30), None);
        assert_eq!(Millis::from_civil_date(2024, 2, 29).unwrap().civil_date(), (2024, 2, 29));
    }
}
