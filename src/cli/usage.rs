//! `license-broker usage`: the utilization history of an org's pools, the
//! sessions that ended, and what a different seat count would have done,
//! from the broker over QUIC, printed as a table, JSON or CSV (the JSON
//! and CSV are those of the HTTP API's `/api/v1/...`).

use anyhow::{bail, Result};
use license_broker::client::Client;
use license_broker::history::filter::SessionFilter;
use license_broker::history::report::{auto_step, parse_step, parse_when, Series};
use license_broker::history::{export, replay, EndedRow, Point, Usage, WhatIf};
use license_broker::operations::gathered::Missing;
use license_broker::proto::{EndedSession, ListOf, MissingNode, PageItems};
use license_broker::value::{Millis, OrgName, PoolId};

use super::output;

/// `usage`: per-step peak, average, trough and refusals of each pool.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UsageArgs {
    #[command(subcommand)]
    what: Option<UsageCmd>,
    #[command(flatten)]
    series: SeriesArgs,
}

impl UsageArgs {
    /// The org asked about, if given.
    pub fn org(&self) -> Option<&OrgName> {
        match &self.what {
            Some(UsageCmd::Sessions { range, .. } | UsageCmd::WhatIf { range, .. }) => range.org.as_ref(),
            None => self.series.range.org.as_ref(),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
enum UsageCmd {
    /// Sessions that ended in the range (user, machine, start, end, reason, job labels).
    Sessions {
        #[command(flatten)]
        range: Range,
        #[command(flatten)]
        only: Only,
        #[command(flatten)]
        format: Format,
    },
    /// Replay the recorded demand of a pool against other seat counts:
    /// the refusals and the share of time at capacity for each.
    WhatIf {
        /// The pool.
        #[arg(long)]
        pool: PoolId,
        /// A seat count, or a range of them: 5, 3..8.
        #[arg(long)]
        seats: String,
        #[command(flatten)]
        range: Range,
        #[command(flatten)]
        format: Format,
    },
}

#[derive(clap::Args, Debug)]
struct SeriesArgs {
    /// Only this pool (default: every pool of the org).
    #[arg(long)]
    pool: Option<PoolId>,
    /// The step: 1m, 15m, 1h, 1d (default: a few hundred points over the range).
    #[arg(long)]
    step: Option<String>,
    #[command(flatten)]
    range: Range,
    #[command(flatten)]
    format: Format,
}

#[derive(clap::Args, Debug)]
struct Range {
    /// The org.
    #[arg(long)]
    org: Option<OrgName>,
    /// Start: a duration back from now (7d), a date (2026-11-01), an RFC 3339 time, or Unix seconds.
    #[arg(long)]
    from: Option<String>,
    /// End (default: now), in the same forms.
    #[arg(long, default_value = "now")]
    to: String,
}

/// Which ended sessions to print (the API's and the console's filters).
#[derive(clap::Args, Debug)]
struct Only {
    /// Only this user's sessions.
    #[arg(long)]
    user: Option<String>,
    /// Only sessions on this machine.
    #[arg(long)]
    machine: Option<String>,
    /// Only this pool's sessions.
    #[arg(long = "pool")]
    pool: Option<PoolId>,
    /// Only sessions with this job label: KEY=VALUE, or a value under any key.
    #[arg(long)]
    label: Option<String>,
}

impl Only {
    fn filter(&self) -> SessionFilter {
        let pool = self.pool.map(|p| p.to_string());
        SessionFilter::of(|k| match k {
            "user" => self.user.clone(),
            "machine" => self.machine.clone(),
            "pool" => pool.clone(),
            "label" => self.label.clone(),
            _ => None,
        })
    }
}

#[derive(clap::Args, Debug)]
struct Format {
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV.
    #[arg(long)]
    csv: bool,
}

impl Range {
    /// The org and (from, to), `from` defaulting to `default_from` before `to`.
    fn resolve(&self, default_from: &str) -> Result<(OrgName, (Millis, Millis))> {
        let Some(org) = self.org.clone() else { bail!("--org ORG is required") };
        let now = Millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64);
        let to = parse_when(&self.to, now).map_err(anyhow::Error::msg)?;
        let from = parse_when(self.from.as_deref().unwrap_or(default_from), to).map_err(anyhow::Error::msg)?;
        Ok((org, (from, to)))
    }
}

pub async fn run(c: &Client, a: UsageArgs) -> Result<()> {
    match a.what {
        None => series(c, a.series).await,
        Some(UsageCmd::Sessions { range, only, format }) => sessions(c, range, &only.filter(), format).await,
        Some(UsageCmd::WhatIf { pool, seats, range, format }) => what_if(c, pool, &seats, range, format).await,
    }
}

async fn series(c: &Client, a: SeriesArgs) -> Result<()> {
    let (org, (from, to)) = a.range.resolve("7d")?;
    let step = match &a.step {
        Some(s) => parse_step(s).map_err(anyhow::Error::msg)?,
        None => auto_step(to.0.saturating_sub(from.0)),
    };
    let of = ListOf::Usage { org: org.clone(), pool: a.pool, from_ms: from.0, to_ms: to.0, step_ms: step };
    let mut all: Vec<Series> = Vec::new();
    let missing = c
        .each_page(of, |items| {
            if let PageItems::Usage(points) = items {
                for p in points {
                    let point = Point {
                        start: p.start_ms,
                        step_ms: p.step_ms,
                        usage: Usage {
                            peak: p.peak,
                            trough: p.trough,
                            quota: p.quota,
                            seat_ms: p.seat_ms,
                            admitted: p.admitted,
                            denied: p.denied,
                            ends: p.ends,
                            queued: p.queued,
                            // Not on the wire (protocol version 1's `UsagePoint`): the console and the API say them.
                            ..Usage::default()
                        },
                    };
                    match all.last_mut() {
                        Some(s) if s.pool == p.pool => s.points.push(point),
                        _ => all.push(Series { pool: p.pool, quota: p.quota_now, points: vec![point] }),
                    }
                }
            }
        })
        .await?;
    warn_missing(missing);
    if a.format.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&export::usage_json(
                org.as_str(),
                (from, to),
                step,
                &all,
                export::Licenses::Unknown
            ))?
        );
    } else if a.format.csv {
        print!("{}", export::usage_csv(&all));
    } else if all.is_empty() {
        println!("no usage recorded for {org} in that range (the history keeps what happened after the broker started keeping it)");
    } else {
        output::usage_table(&all);
    }
    Ok(())
}

fn row_of(s: EndedSession) -> (u64, EndedRow) {
    let row = EndedRow {
        pool: s.pool,
        user: s.user,
        machine: s.machine,
        start: s.start_ms,
        end: s.end_ms,
        reason: s.reason,
        labels: s.labels,
    };
    (s.session.0, row)
}

/// The ended sessions `filter` keeps (filtered here, as the pages come:
/// the protocol's `ListOf::Ended` carries no filter).
async fn sessions(c: &Client, range: Range, filter: &SessionFilter, format: Format) -> Result<()> {
    let (org, (from, to)) = range.resolve("1d")?;
    let of = ListOf::Ended { org: org.clone(), from_ms: from.0, to_ms: to.0 };
    if !format.csv {
        warn_missing(output::paged_ended(c, of, format.json, |s| filter.keeps(&row_of(s.clone()).1)).await?);
        return Ok(());
    }
    print!("{}", export::SESSIONS_CSV_HEADER);
    let missing = c
        .each_page(of, |items| {
            if let PageItems::Ended(rows) = items {
                for (id, r) in rows.into_iter().map(row_of).filter(|(_, r)| filter.keeps(r)) {
                    print!("{}", export::session_csv(id, &r));
                }
            }
        })
        .await?;
    warn_missing(missing);
    Ok(())
}

/// Says on stderr which nodes of a cluster a report lacks the history of,
/// in the words the API's `warning` and the broker's log use.
fn warn_missing(missing: Vec<MissingNode>) {
    let mut words = Missing::default();
    for m in missing {
        words.add(m.node, m.why);
    }
    if let Some(words) = words.warning() {
        eprintln!("warning: {words}");
    }
}

async fn what_if(c: &Client, pool: PoolId, seats: &str, range: Range, format: Format) -> Result<()> {
    let (org, (from, to)) = range.resolve("30d")?;
    let seats = license_broker::history::report::parse_seats(seats).map_err(anyhow::Error::msg)?;
    let (r, missing) = c.what_if(&org, pool, (from, to), (*seats.start(), *seats.end())).await?;
    warn_missing(missing);
    let w = WhatIf {
        outcomes: r
            .outcomes
            .iter()
            .map(|o| replay::Outcome {
                seats: o.seats,
                admitted: o.admitted,
                denied: o.denied,
                at_capacity_ms: o.at_capacity_ms,
                span_ms: o.span_ms,
            })
            .collect(),
        sessions: r.sessions,
        refusals: r.refusals,
        median_ms: r.median_ms,
        truncated: r.truncated,
    };
    if format.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&export::what_if_json(org.as_str(), &pool.to_string(), (from, to), &w))?
        );
    } else if format.csv {
        print!("{}", export::what_if_csv(&w));
    } else {
        output::what_if_table(&w);
    }
    Ok(())
}
