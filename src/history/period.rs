//! The granularities the history keeps (minute, hour, day) and how long
//! each is kept. Apart from the history's store because the options, the
//! CLI and the reports name them without touching a row.

use std::time::Duration;

use crate::core::usage::MINUTE_MS;

/// A granularity of the rollups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Period {
    /// Minutes in the period.
    pub fn minutes(self) -> u64 {
        match self {
            Period::Minute => 1,
            Period::Hour => 60,
            Period::Day => 1440,
        }
    }

    /// Milliseconds in the period.
    pub fn ms(self) -> u64 {
        self.minutes() * MINUTE_MS
    }

    /// The coarsest period that divides `step_ms` (a step of 5 minutes
    /// reads minutes, of 6 hours reads hours).
    pub fn for_step(step_ms: u64) -> Period {
        [Period::Day, Period::Hour, Period::Minute]
            .into_iter()
            .find(|p| step_ms >= p.ms() && step_ms.is_multiple_of(p.ms()))
            .unwrap_or(Period::Minute)
    }
}

/// How long each granularity is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Minutes (and ended sessions): 35 days by default.
    pub minutes: Duration,
    /// Hours: 400 days by default.
    pub hours: Duration,
    /// Days: forever (`None`) by default.
    pub days: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Retention {
        const DAY: u64 = 86_400;
        Retention { minutes: Duration::from_secs(35 * DAY), hours: Duration::from_secs(400 * DAY), days: None }
    }
}
