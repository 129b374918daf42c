//! `pool`'s subcommands and their flags: a pool's quota and term, its
//! per-user and per-label limits, reserved seats, machine policy and
//! alerts, with the parsers of the values only they take (an idle limit,
//! an alert's threshold, a job label). Apart because a pool is the one
//! thing with that many settings; the other commands fit on a page.

use std::time::Duration;

use clap::Subcommand;
use license_broker::value::{Kind, OrgName, PoolId, Product, Term};

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum PoolCmd {
    /// Create the pool or change its quota.
    Set {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// kre or kse.
        #[arg(long, default_value = "kre")]
        product: Product,
        /// floating or node-locked.
        #[arg(long, default_value = "floating")]
        kind: Kind,
        /// annual or monthly.
        #[arg(long, default_value = "annual")]
        term: Term,
        /// The pool id PRODUCT-KIND-TERM instead of the three flags above.
        #[arg(long, conflicts_with_all = ["product", "kind", "term"])]
        pool: Option<PoolId>,
        /// Licenses bought.
        #[arg(long, required_unless_present_any = ["machine_idle", "ephemeral", "queue_alert", "busy_alert"])]
        quota: Option<u32>,
        /// Release a machine after this long with no session, activation,
        /// offline license or queued runner (e.g. 7d), or `forever` (the
        /// default). Sets the machine policy whole, with `--ephemeral`.
        #[arg(long, value_parser = parse_idle)]
        machine_idle: Option<Idle>,
        /// Mark every registration in the pool ephemeral: released with its
        /// last session. Sets the machine policy whole, with `--machine-idle`.
        #[arg(long)]
        ephemeral: bool,
        /// Owner/Admin too: tell of a runner queued this long (e.g. 5m; an
        /// event, `queue.wait_exceeded`), or `off`. Sets the pool's alerts
        /// whole, with `--busy-alert`.
        #[arg(long, value_parser = parse_alert)]
        queue_alert: Option<Alert>,
        /// Owner/Admin too: tell when the pool is at 90 % or more for this
        /// long (whole minutes, e.g. 10m; `pool.busy`, and `pool.busy_ended`
        /// once back under 80 %), or `off`. Sets the alerts whole.
        #[arg(long, value_parser = parse_alert)]
        busy_alert: Option<Alert>,
    },
    /// Owner/Admin: cap how many sessions one member (`--user`), or the
    /// sessions carrying a job label (`--label`), may hold at once in a
    /// pool (FlexNet's MAX). Running sessions are not cut.
    Limit {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The pool, e.g. kre-floating-annual.
        #[arg(long)]
        pool: PoolId,
        /// The member.
        #[arg(long, required_unless_present = "label", conflicts_with = "label")]
        user: Option<String>,
        /// The job label, KEY=VALUE (e.g. team=web).
        #[arg(long, value_parser = parse_label)]
        label: Option<(String, String)>,
        /// Most sessions at once (0: none).
        #[arg(long, required_unless_present = "unlimited")]
        max: Option<u32>,
        /// Remove the cap.
        #[arg(long, conflicts_with = "max")]
        unlimited: bool,
    },
    /// Owner/Admin: reserve seats of a pool that only sessions carrying a
    /// job label may take (FlexNet's RESERVE); the rest stays shared.
    Reserve {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The pool, e.g. kre-floating-annual.
        #[arg(long)]
        pool: PoolId,
        /// The job label, KEY=VALUE (e.g. pipeline=release).
        #[arg(long, value_parser = parse_label)]
        label: (String, String),
        /// Seats reserved (0: remove the reservation).
        #[arg(long)]
        seats: u32,
    },
    /// Owner/Admin: a pool's per-user caps and each member's sessions
    /// (with `--labels`: its label caps and the sessions carrying each;
    /// with `--reservations`: its reserved seats and the sessions on them).
    Limits {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The pool, e.g. kre-floating-annual.
        #[arg(long)]
        pool: PoolId,
        /// List the label caps instead.
        #[arg(long, conflicts_with = "reservations")]
        labels: bool,
        /// List the reservations instead.
        #[arg(long)]
        reservations: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A machine idle limit: a duration, or none (`forever`).
#[derive(Clone, Copy, Debug)]
pub(in crate::cli) struct Idle(pub Option<Duration>);

fn parse_idle(s: &str) -> Result<Idle, String> {
    match s {
        "forever" => Ok(Idle(None)),
        _ => humantime::parse_duration(s).map(|d| Idle(Some(d))).map_err(|e| e.to_string()),
    }
}

/// A pool alert's threshold; `off`: none.
#[derive(Clone, Copy, Debug)]
pub(in crate::cli) struct Alert(pub Option<Duration>);

fn parse_alert(s: &str) -> Result<Alert, String> {
    match s {
        "off" => Ok(Alert(None)),
        _ => humantime::parse_duration(s).map(|d| Alert(Some(d))).map_err(|e| e.to_string()),
    }
}

/// One `KEY=VALUE` job label.
fn parse_label(s: &str) -> Result<(String, String), String> {
    license_broker::value::Labels::parse_pair(s).map_err(|e| e.to_string())
}
