//! `license-broker events --org ORG [--after CURSOR] [--follow] [--json]`:
//! an org's events (docs/EVENTS.md) after a cursor, over QUIC (protocol
//! version 5's `Events`), printed one per line as they come. Without
//! `--follow` it prints what is there and exits; with it, it waits for
//! more (long polls of `WAIT`, each given up `GRACE` past its wait), and
//! when the broker goes away (a restart, a failover) reconnects with the house's capped, jittered backoff and
//! resumes after the last cursor printed, so nothing is skipped or printed
//! twice. It gives up when no broker answered for `--give-up-after`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use license_broker::client::keeper::retryable;
use license_broker::client::{Backoff, Client, ClientError};
use license_broker::value::OrgName;

use super::args::ConnArgs;

/// How long one read waits for a new event when following.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long past its wait a read may take before the broker is taken for
/// gone: a broker killed outright says nothing, and QUIC would notice only
/// at its idle timeout (30 s).
pub const GRACE: Duration = Duration::from_secs(5);

/// `events`' flags.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// The org (its Owners and Admins may read its events).
    #[arg(long)]
    org: OrgName,
    /// Print the events after this cursor (default 0: from the oldest kept).
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Keep printing new events as they come; reconnect when the broker goes away.
    #[arg(long)]
    follow: bool,
    /// With --follow: give up when no broker answered for this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    give_up_after: Duration,
    /// Print each event's JSON document (one per line) instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// Prints the events; with `--follow`, forever (or until the broker stays away).
pub async fn run(a: EventsArgs, conn: &ConnArgs) -> Result<ExitCode> {
    let mut after = a.after;
    let mut backoff = Backoff::reconnect();
    let mut answered = Instant::now();
    loop {
        let e = match read(&a, conn, &mut after, &mut answered).await {
            Ok(()) => return Ok(ExitCode::SUCCESS),
            Err(e) => e,
        };
        let pause = backoff.next_delay();
        let given_up = answered.elapsed() + pause > a.give_up_after;
        if !a.follow || !retryable(&e) || given_up {
            return Err(e.into());
        }
        eprintln!("events: {e}; reconnecting in {} ms (after cursor {after})", pause.as_millis());
        tokio::time::sleep(pause).await;
    }
}

/// One connection's reads: prints each page and moves `after` past it;
/// returns when a read without `--follow` finds nothing more.
async fn read(a: &EventsArgs, conn: &ConnArgs, after: &mut u64, answered: &mut Instant) -> Result<(), ClientError> {
    let opts = conn.options().map_err(|e| ClientError::Config(e.to_string()))?;
    let c = Client::connect(&opts).await?;
    let wait = if a.follow { WAIT } else { Duration::ZERO };
    let done = loop {
        let (events, next) = match tokio::time::timeout(wait + GRACE, c.events(&a.org, *after, wait)).await {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => break Err(e),
            Err(_) => break Err(ClientError::Closed(format!("no answer within {} s", (wait + GRACE).as_secs()))),
        };
        *answered = Instant::now();
        for e in &events {
            print(e, a.json);
        }
        *after = next;
        if events.is_empty() && !a.follow {
            break Ok(());
        }
    };
    c.close().await;
    done
}

/// One event: its JSON, or a line of text (cursor, time, type, actor, detail).
fn print(doc: &str, json: bool) {
    if json {
        println!("{doc}");
        return;
    }
    let v: serde_json::Value = serde_json::from_str(doc).unwrap_or_default();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let data = &v["data"];
    println!("{}  {}  {}  {}  {}", v["cursor"], s(&v["time"]), s(&v["type"]), s(&data["actor"]), s(&data["detail"]));
}
