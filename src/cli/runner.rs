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

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use license_broker::client::keeper::{self, unix_ms, Beat};
use license_broker::client::{Admitted, Backoff, Beats, Checkout, Client, ClientError, Connector, Keeper};
use license_broker::proto::Notice;
use license_broker::value::{Labels, MachineId, OrgName, PoolId};
use serde_json::json;

use super::args::ConnArgs;
use super::exit::{exit_code_for, EXIT_LEASE_LOST, EXIT_NOT_STARTED};
use super::job::{self, Job};

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

struct Events {
    json: bool,
    /// A job owns stdout; the runner's own events then go to stderr.
    to_stderr: bool,
    /// `--events-file`: JSON lines appended there instead.
    file: Option<parking_lot::Mutex<std::fs::File>>,
}

impl Events {
    /// Prints one event; JSON events carry `at_ms`, the Unix time in ms
    /// when it happened (so a history of many runners can be ordered).
    fn emit(&self, mut value: serde_json::Value, human: String) {
        if let Some(fields) = value.as_object_mut() {
            fields.insert("at_ms".into(), unix_ms().into());
        }
        if let Some(file) = &self.file {
            use std::io::Write;
            // An event that cannot be written is not worth stopping the job for.
            let _ = writeln!(file.lock(), "{value}");
            return;
        }
        let line = if self.json { value.to_string() } else { human };
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn rejected(&self, e: &ClientError) -> ExitCode {
        let (code, message) = match e {
            ClientError::Rejected(w) => (w.code.name().to_string(), w.message.clone()),
            other => ("CONNECTION".to_string(), other.to_string()),
        };
        self.emit(
            json!({"event": "rejected", "code": code, "message": message}),
            format!("rejected: {code}: {message}"),
        );
        ExitCode::from(exit_code_for(e.code()))
    }
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

/// Why holding a lease stopped.
enum Stop {
    /// Release it (hold elapsed, SIGINT/SIGTERM).
    Release,
    /// The broker ended it (revoked, expired, killed); the text says why.
    Ended(String),
    /// It could not be renewed by its deadline, or re-attaching was refused.
    Lost(String),
    /// The job exited on its own.
    JobExited(std::process::ExitStatus),
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

    /// Heartbeats until told to release, the session ends, or the lease is lost.
    async fn hold(&self, mut client: Client, mut lease: Admitted, mut job: Option<Job>) -> Result<ExitCode> {
        let mut beats = Beats::for_ttl(lease.ttl_ms);
        let until = self.args.hold.map(|h| tokio::time::Instant::now() + h);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // The notice stream ends with the connection; stop polling it then.
        let mut notices_open = true;
        let stop = loop {
            let release_at = until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
            let broken = tokio::select! {
                _ = tokio::time::sleep(beats.next_delay()) => match self.keeper().renew(&client, &mut lease, beats.third()).await {
                    Beat::Renewed => None,
                    Beat::Ended(why) => break Stop::Ended(why),
                    // No answer, or the node stopped serving: reconnect (another took over).
                    Beat::Broken(why) => Some(why),
                },
                n = client.next_notice(), if notices_open => match self.notice(n, &lease) {
                    Ok(None) => None,
                    Ok(Some(why)) => {
                        // The notice stream ended with the connection.
                        notices_open = false;
                        Some(why)
                    }
                    Err(stop) => break stop,
                },
                status = wait_job(&mut job) => {
                    break match status {
                        Ok(status) => Stop::JobExited(status),
                        Err(e) => Stop::Ended(format!("lost track of the job: {e}")),
                    }
                }
                _ = tokio::time::sleep_until(release_at) => break Stop::Release,
                _ = tokio::signal::ctrl_c() => match &job {
                    Some(j) => { j.signal(libc::SIGINT); None }
                    None => break Stop::Release,
                },
                _ = term.recv() => match &job {
                    Some(j) => { j.signal(libc::SIGTERM); None }
                    None => break Stop::Release,
                },
            };
            let Some(why) = broken else { continue };
            match self.reconnect(client, &lease, why, &mut term).await {
                Ok((c, l)) => (client, lease, notices_open) = (c, l, true),
                Err(stop) => return self.finish(stop, None, lease, job).await,
            }
        };
        self.finish(stop, Some(client), lease, job).await
    }

    /// A notice while holding: `Err` when it ends the lease, `Ok(Some)`
    /// when the connection closed (reconnect).
    fn notice(&self, n: Option<Notice>, lease: &Admitted) -> Result<Option<String>, Stop> {
        match n {
            Some(Notice::SessionEnded { session, reason }) if session == lease.session => {
                Err(Stop::Ended(reason.name().to_string()))
            }
            Some(Notice::Draining { grace_ms }) => {
                self.ev.emit(
                    json!({"event": "draining", "grace_ms": grace_ms}),
                    "broker is draining; will reconnect".into(),
                );
                Ok(None)
            }
            Some(_) => Ok(None),
            None => Ok(Some("the connection closed".to_string())),
        }
    }

    /// The connection broke (`why`): drops it, re-attaches, says so.
    async fn reconnect(
        &self,
        client: Client,
        lease: &Admitted,
        why: String,
        term: &mut tokio::signal::unix::Signal,
    ) -> Result<(Client, Admitted), Stop> {
        self.ev.emit(
            json!({"event": "reconnecting", "session": lease.session.to_string(), "reason": why}),
            format!("lost the connection ({why}); reconnecting"),
        );
        client.disconnect();
        let (c, l) = self.reattach(lease, term).await?;
        self.ev.emit(
            json!({"event": "reattached", "session": l.session.to_string()}),
            format!("reconnected: session {}", l.session),
        );
        Ok((c, l))
    }

    /// Releases (or reports the end), closes, and picks the exit code.
    async fn finish(&self, stop: Stop, client: Option<Client>, lease: Admitted, job: Option<Job>) -> Result<ExitCode> {
        let session = lease.session.to_string();
        // A job whose lease is gone must stop: nobody may run on a seat the broker can give away.
        if let (Some(mut job), Stop::Ended(_) | Stop::Lost(_)) = (job, &stop) {
            let status = job.stop(self.args.kill_grace).await;
            self.ev.emit(
                json!({"event": "job_stopped", "session": session, "exit": status.ok().map(job::exit_code)}),
                "the lease is gone: job stopped".into(),
            );
            let _ = self.report(stop, client, lease).await;
            self.connector.wait_idle().await;
            return Ok(ExitCode::from(EXIT_LEASE_LOST));
        }
        let code = self.report(stop, client, lease).await?;
        self.connector.wait_idle().await;
        Ok(code)
    }

    /// Releases (or reports the end), closes, and picks the exit code.
    async fn report(&self, stop: Stop, client: Option<Client>, lease: Admitted) -> Result<ExitCode> {
        let session = lease.session.to_string();
        let code = match (stop, client) {
            (Stop::JobExited(status), Some(client)) => {
                let exit = job::exit_code(status);
                let extra = json!({"reason": "job_exited", "exit": exit});
                self.give_back(client, &lease, extra, format!("job exited with {exit}; ")).await;
                ExitCode::from(exit)
            }
            (Stop::JobExited(status), None) => ExitCode::from(job::exit_code(status)),
            (Stop::Release, Some(client)) => {
                match self.give_back(client, &lease, json!({"reason": "released"}), String::new()).await {
                    true => ExitCode::SUCCESS,
                    false => ExitCode::from(1),
                }
            }
            // `hold` asks for a release only while it holds a client.
            (Stop::Release, None) => ExitCode::from(1),
            (Stop::Ended(reason), client) => {
                self.ev.emit(
                    json!({"event": "ended", "session": session, "reason": reason}),
                    format!("session {session} ended: {reason}"),
                );
                if let Some(c) = client {
                    c.close().await;
                }
                ExitCode::from(1)
            }
            (Stop::Lost(message), client) => {
                self.ev.emit(
                    json!({"event": "lost", "session": session, "message": message}),
                    format!("lease lost: {message}"),
                );
                if let Some(c) = client {
                    c.close_nowait();
                }
                ExitCode::from(EXIT_LEASE_LOST)
            }
        };
        Ok(code)
    }

    /// Releases the seat through the keeper and says so, with
    /// `believed_until_ms`: the moment the runner stopped relying on the
    /// seat (before asking). Returns whether the release was confirmed.
    async fn give_back(&self, client: Client, lease: &Admitted, extra: serde_json::Value, human: String) -> bool {
        let until = unix_ms();
        let session = lease.session.to_string();
        let result = self.keeper().give_back(client, lease).await;
        let mut event = match &result {
            Ok(()) => json!({"event": "released", "session": session}),
            Err(message) => json!({"event": "release_failed", "session": session, "message": message}),
        };
        if let (Some(fields), Some(more)) = (event.as_object_mut(), extra.as_object()) {
            fields.extend(more.clone());
            fields.insert("believed_until_ms".into(), until.into());
        }
        let text = match &result {
            Ok(()) => format!("{human}released session {session}"),
            Err(message) => format!("{human}release of session {session} failed: {message}"),
        };
        self.ev.emit(event, text);
        result.is_ok()
    }

    /// Re-attaches through the keeper until the lease's deadline. A signal
    /// meanwhile ends the runner (its seat returns when the lease expires).
    async fn reattach(
        &self,
        lease: &Admitted,
        term: &mut tokio::signal::unix::Signal,
    ) -> Result<(Client, Admitted), Stop> {
        let keeper = self.keeper();
        tokio::select! {
            kept = keeper.reattach(lease) => kept.map_err(Stop::Lost),
            _ = tokio::signal::ctrl_c() => Err(interrupted()),
            _ = term.recv() => Err(interrupted()),
        }
    }
}

/// The job's exit, or never when there is no job.
async fn wait_job(job: &mut Option<Job>) -> std::io::Result<std::process::ExitStatus> {
    match job {
        Some(j) => j.wait().await,
        None => std::future::pending().await,
    }
}

fn interrupted() -> Stop {
    Stop::Ended("interrupted while reconnecting; the seat returns when its lease expires".into())
}

/// `--label KEY=VALUE`, validated as the broker will.
fn parse_label(s: &str) -> Result<(String, String), String> {
    Labels::parse_pair(s).map_err(|e| e.to_string())
}

/// Opens `--events-file` for appending (created if missing).
fn events_file(args: &RunnerArgs) -> Result<Option<parking_lot::Mutex<std::fs::File>>> {
    let Some(path) = &args.events_file else { return Ok(None) };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the events file {}", path.display()))?;
    Ok(Some(parking_lot::Mutex::new(file)))
}
