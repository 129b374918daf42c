//! Preflight, `license-broker check` and `runner --check`: would a runner
//! be admitted now? Exit 0 if so; if not, the refusal's own exit code (3:
//! the pool is full), after the runner's place in the queue (or in its
//! reservation's lane) and about how long it would wait. Takes no seat and writes nothing, so a CI job can
//! ask before it spends minutes building (docs/CI.md).

use anyhow::Result;
use license_broker::client::{Client, ClientError};
use license_broker::core::{MachineId, OrgName, PoolId};
use license_broker::proto::AvailabilityInfo;
use license_broker::value::time::format_rough;
use license_broker::value::Labels;

/// `check`'s flags.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The org whose licenses a runner would use.
    #[arg(long)]
    pub org: OrgName,
    /// The pool (default kre-floating-annual).
    #[arg(long)]
    pub pool: Option<PoolId>,
    /// The machine a runner would run on (default: this machine's, see `machine-id`).
    #[arg(long)]
    pub machine_id: Option<MachineId>,
    /// A job label the runner would carry, KEY=VALUE (repeatable): seats
    /// reserved for it and caps on it count as for its checkout.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One `KEY=VALUE` job label.
fn parse_label(s: &str) -> std::result::Result<(String, String), String> {
    Labels::parse_pair(s).map_err(|e| e.to_string())
}

/// Asks for a runner carrying `labels`, prints the answer, and fails with
/// the refusal if there would be one.
pub async fn run(
    c: &Client,
    (org, pool): (&OrgName, PoolId),
    (machine, labels): (Option<MachineId>, &Labels),
    json: bool,
) -> Result<()> {
    let machine = match machine {
        Some(m) => m,
        None => license_broker::machine_id::current()?,
    };
    let a = c.check((org, pool), &machine, labels).await?;
    match json {
        true => println!("{}", license_broker::operations::availability_json(&a)),
        false => println!("{}", in_words(&a, org, !labels.is_empty())),
    }
    match a.refusal {
        None => Ok(()),
        Some(refusal) => Err(ClientError::Rejected(refusal).into()),
    }
}

/// `labelled`: the runner carries labels, so its place may be in a
/// reservation's lane rather than the whole queue (whichever would serve
/// it first: `core::Availability::wait`).
fn in_words(a: &AvailabilityInfo, org: &OrgName, labelled: bool) -> String {
    let mut out = format!("{} of {org}: {} of {} seats in use, {} waiting", a.pool, a.in_use, a.quota, a.waiting);
    let mean = a.mean_ms.map_or_else(
        || "no session in the last day, or no history kept, to estimate from".to_string(),
        |m| format!("sessions lasted {} on average over the last day", format_rough(m)),
    );
    match (&a.refusal, a.worth_waiting) {
        (None, _) => out.push_str("\na runner would be admitted now"),
        (Some(e), true) => {
            let wait = a.wait_ms.map_or_else(|| "no estimate".to_string(), |w| format!("about {}", format_rough(w)));
            let line = match labelled {
                true => "in line (its reservation's lane or the whole queue, whichever serves it first)",
                false => "in the queue",
            };
            out.push_str(&format!(
                "\nno seat now ({}); waiting (`runner --wait`): place {} {line}, {wait} ({mean})",
                e.code.name(),
                a.place
            ));
        }
        (Some(e), false) => {
            out.push_str(&format!("\nwould be refused: {} ({}); waiting would not help", e.message, e.code.name()))
        }
    }
    out
}
