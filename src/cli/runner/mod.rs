//! `license-broker runner`: behaves like a KRE runner. Registers its machine,
//! acquires a session, heartbeats every third of the TTL or a little sooner
//! (`client::Beats`: a fleet started together does not renew in step), and releases after
//! `--hold` or on SIGINT/SIGTERM.
//!
//! When the broker goes away (a heartbeat unanswered within a third of the
//! TTL, the connection closed, a drain) it reconnects with capped, jittered
//! backoff and re-attaches with the same nonce, so it never takes a second
//! seat and never spins. If it cannot renew by its lease's own deadline it
//! considers the lease lost: it says so (`lost`) and exits with code 6, so
//! nobody goes on believing in a seat the broker may have given away.

//!
//! Reading order: `run` and the first attach here → `hold` (heartbeats,
//! notices, signals, re-attaching) → `end` (give the seat back or report
//! the end, and the exit code); `events` is how each part speaks.

mod end;
mod events;
mod hold;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use license_broker::client::keeper;
use license_broker::client::{Admitted, Backoff, Checkout, Client, ClientError, Connector, Keeper};
use license_broker::proto::Notice;
use license_broker::value::{Labels, MachineId, OrgName, PoolId};
use serde_json::json;

use self::events::{events_file, Events};
use super::args::ConnArgs;
use super::exit::EXIT_NOT_STARTED;
use super::job::Job;

#[derive(clap::Args, Debug)]
pub struct RunnerArgs {
    /// The org whose licenses to use.
    #[arg(long)]
    org: OrgName,
    /// The pool (PRODUCT-KIND-TERM); a runner defaults to
    /// kre-floating-annual, `activate` needs it (a KSE pool).
    #[arg(long)]
    pool: Option<PoolId>,
    /// Machine ID to report (default: this machine's, see `machine-id`).
    #[arg(long)]
    machine_id: Option<MachineId>,
    /// Only ask whether a seat would be admitted now (exit 0), or not (the
    /// refusal's exit code, 3 when the pool is full, with the place in the
    /// queue and an estimate of the wait), as `check` does; take none.
    #[arg(long, conflicts_with_all = ["hold", "wait", "command"])]
    check: bool,
    /// Release after this long (e.g. 10s); default: hold until SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "command")]
    hold: Option<Duration>,
    /// When the pool is full, wait up to this long (e.g. 10m) in its queue:
    /// first come, first admitted; a `queued` event gives the position.
    /// Exit 3 if no seat came in time. A broker restart meanwhile is ridden
    /// out (the runner queues again, at the back).
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
    /// A job label, KEY=VALUE (repeatable; at most 8, keys of letters,
    /// digits, '_', '.', '-'). Shown with the session in `session list` and
    /// the broker's log. Labels of the CI job (GitHub Actions, GitLab CI,
    /// Jenkins) are added from its environment; these win over them.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Register the machine ephemeral: its machine slot is held only
    /// while it has a live session or waits in the queue, and is released
    /// with its last session (CI containers with a new machine ID per job).
    /// A machine already registered keeps its registration as it is.
    #[arg(long)]
    ephemeral: bool,
    /// Print one JSON object per event.
    #[arg(long)]
    json: bool,
    /// Append the runner's events to this file, one JSON object per line,
    /// instead of printing them (the job's output stays alone on the
    /// terminal or in the CI log).
    #[arg(long, value_name = "PATH")]
    events_file: Option<std::path::PathBuf>,
    /// With a command: how long the job gets between SIGTERM and SIGKILL
    /// when the lease is lost.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    kill_grace: Duration,
    /// Run this command under the lease (after `--`): its stdout and stderr
    /// are untouched, the runner's events go to stderr (or
    /// `--events-file`), SIGINT/SIGTERM are
    /// forwarded to it, the lease is released when it exits, and the runner
    /// exits with its exit code. If the lease is lost the job is stopped and
    /// the runner exits 6.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// One runner (or activation): what it asks for, as whom, and where its events go.
struct Runner {
    /// The pool it asks for seats of.
    pool: PoolId,
    /// One endpoint for every (re)connection, so reconnects resume TLS sessions.
    connector: Connector,
    /// Without `--wait`, how long the first attach may keep trying.
    connect_timeout: Duration,
    args: RunnerArgs,
    machine: MachineId,
    /// This runner instance's identity: re-attaching with it never takes a second seat.
    nonce: u128,
    /// A KSE activation rather than a KRE session.
    activation: bool,
    /// With `--wait`: when waiting for a seat gives up.
    wait_until: Option<tokio::time::Instant>,
    /// The job's labels (`--label` and the CI system's).
    labels: Labels,
    ev: Events,
}

pub async fn run(args: RunnerArgs, conn: &ConnArgs, activation: bool) -> Result<ExitCode> {
    let machine = match args.machine_id.clone() {
        Some(m) => m,
        None => license_broker::machine_id::current()?,
    };
    let pool = match (args.pool, activation) {
        (Some(pool), _) => pool,
        (None, false) => PoolId::KRE_DEFAULT,
        (None, true) => anyhow::bail!("activate needs --pool: the KSE pool, e.g. kse-floating-annual"),
    };
    let labels = super::labels::of_job(&args.labels, |name| std::env::var(name).ok())?;
    if args.check {
        // Asked with the labels its checkout would carry.
        let c = conn.connect().await?;
        let asked = super::check::run(&c, (&args.org, pool), (Some(machine), &labels), args.json).await;
        c.close().await;
        return asked.map(|()| ExitCode::SUCCESS);
    }
    let options = conn.options()?;
    let runner = Runner {
        labels,
        wait_until: args.wait.map(|w| tokio::time::Instant::now() + w),
        pool,
        connect_timeout: options.connect_timeout,
        connector: Connector::new(options).await?,
        ev: Events { json: args.json, to_stderr: !args.command.is_empty(), file: events_file(&args)? },
        args,
        machine,
        nonce: license_broker::keys::random_u128()?,
        activation,
    };
    runner.run().await
}

/// The pause before a first attach tries again after the node it reached
/// stopped serving the org under it (the org is moving: the next node
/// takes it within a placement pass or, after a lapse, a few seconds).
const PASSING_PAUSE: Duration = Duration::from_millis(250);

/// What attaching got: a leased session, or a node-locked binding.
enum Attached {
    Lease(Admitted),
    Bound { already: bool },
}

impl Runner {
    async fn run(&self) -> Result<ExitCode> {
        let (machine, pool) = (&self.machine, self.pool);
        let (client, lease) = match self.first_attach().await {
            Ok((client, Attached::Lease(lease))) => (client, lease),
            Ok((client, Attached::Bound { already })) => {
                self.ev.emit(
                    json!({"event": "activated", "machine": machine.as_str(), "pool": pool.to_string(), "already": already}),
                    format!("activated: {pool} bound to machine {machine}{}", if already { " (already)" } else { "" }),
                );
                client.close().await;
                self.connector.wait_idle().await;
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Ok(self.ev.rejected(&e)),
        };
        self.ev.emit(
            json!({"event": "admitted", "session": lease.session.to_string(), "machine": machine.as_str(),
                   "pool": pool.to_string(), "deadline_ms": lease.deadline_ms, "labels": self.labels.to_string()}),
            format!("admitted: session {} on machine {machine}", lease.session),
        );
        let job = match self.args.command.is_empty() {
            true => None,
            false => match Job::spawn(&self.args.command, &self.job_env(&lease)) {
                Ok(job) => Some(job),
                Err(e) => {
                    self.ev.emit(json!({"event": "job_failed", "message": format!("{e:#}")}), format!("{e:#}"));
                    let _ = client.release(lease.session).await;
                    client.close().await;
                    self.connector.wait_idle().await;
                    return Ok(ExitCode::from(EXIT_NOT_STARTED));
                }
            },
        };
        self.hold(client, lease, job).await
    }

    /// What a job learns about its lease from its environment.
    fn job_env(&self, lease: &Admitted) -> Vec<(&'static str, String)> {
        vec![
            ("LB_SESSION", lease.session.to_string()),
            ("LB_ORG", self.args.org.to_string()),
            ("LB_POOL", self.pool.to_string()),
            ("LB_MACHINE_ID", self.machine.to_string()),
        ]
    }

    /// Connects and acquires (a runner registers its machine first; an
    /// activation asks for a KSE activation). Re-attaches on a repeated nonce.
    async fn attach(&self) -> Result<(Client, Attached), ClientError> {
        let (org, pool, machine, nonce) = (&self.args.org, self.pool, &self.machine, self.nonce);
        let client = self.connector.connect().await?;
        if self.activation {
            let act = client.activate(org, pool, machine, nonce).await?;
            let attached = match act.session {
                Some(session) => Attached::Lease(Admitted {
                    session,
                    deadline_ms: act.deadline_ms,
                    ttl_ms: act.ttl_ms,
                    reattached: act.already,
                    token: act.token,
                }),
                None => Attached::Bound { already: act.already },
            };
            return Ok((client, attached));
        }
        match self.args.ephemeral {
            true => client.register_ephemeral(org, pool, machine).await?,
            false => client.register_machine(org, pool, machine).await?,
        };
        let lease = match (self.wait_until, self.labels.is_empty()) {
            (None, true) => client.acquire(org, pool, machine, nonce).await?,
            (None, false) => self.queue(&client, Duration::ZERO).await?,
            (Some(until), _) => {
                self.queue(&client, until.saturating_duration_since(tokio::time::Instant::now())).await?
            }
        };
        Ok((client, Attached::Lease(lease)))
    }

    /// Acquires with the job's labels, waiting up to `wait` in the pool's
    /// queue and saying where it stands.
    async fn queue(&self, client: &Client, wait: Duration) -> Result<Admitted, ClientError> {
        let (org, pool, machine, nonce) = (&self.args.org, self.pool, &self.machine, self.nonce);
        let checkout = Checkout { org, pool, machine, nonce, wait, labels: self.labels.clone() };
        let answer = client.checkout(&checkout);
        tokio::pin!(answer);
        loop {
            tokio::select! {
                a = &mut answer => return a,
                n = client.next_notice() => match n {
                    Some(Notice::Queued { position, .. }) => self.ev.emit(
                        json!({"event": "queued", "position": position, "pool": pool.to_string()}),
                        format!("queued for a seat in {pool}: position {position}"),
                    ),
                    Some(_) => {}
                    None => return answer.await,
                },
            }
        }
    }

    /// The first attach: with `--wait`, a lost connection (a broker
    /// restart) is retried with backoff, queueing again, until the wait
    /// runs out. Without it, a node that stops serving the org under the
    /// attach (a cluster moving the org: the connection closed, or
    /// `NOT_OWNER`, `DRAINING`) is ridden out while the connect timeout
    /// lasts (a try begun then has its own connect timeout, so the whole
    /// takes at most twice that); a refusal for good (the quota...) or a
    /// connection that could not be made ends it at once.
    async fn first_attach(&self) -> Result<(Client, Attached), ClientError> {
        let Some(until) = self.wait_until else {
            let until = tokio::time::Instant::now() + self.connect_timeout;
            let passing = |e: &ClientError| match e {
                ClientError::Closed(_) => true,
                ClientError::Rejected(w) => keeper::passing(w.code),
                _ => false,
            };
            loop {
                match self.attach().await {
                    Err(e) if passing(&e) && tokio::time::Instant::now() + PASSING_PAUSE < until => {
                        tokio::time::sleep(PASSING_PAUSE).await;
                    }
                    other => return other,
                }
            }
        };
        let retried = |e: &ClientError| {
            self.ev.emit(
                json!({"event": "reconnecting", "reason": e.to_string()}),
                format!("lost the broker while waiting ({e}); queueing again"),
            )
        };
        keeper::retry_until(until, Backoff::reconnect(), || self.attach(), retried).await
    }

    /// The keeper of this runner's lease.
    fn keeper(&self) -> Keeper<'_> {
        Keeper::new(&self.connector, (&self.args.org, self.pool, &self.machine), self.nonce, &self.labels)
    }
}

/// `--label KEY=VALUE`, validated as the broker will.
fn parse_label(s: &str) -> Result<(String, String), String> {
    Labels::parse_pair(s).map_err(|e| e.to_string())
}
