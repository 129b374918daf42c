//! `license-broker runner`: behaves like a KRE runner. Registers its machine,
//! acquires a session, heartbeats at a third of the TTL, and releases after
//! `--hold` or on SIGINT/SIGTERM. If the connection drops it reconnects and
//! re-attaches with the same nonce, so it never takes a second seat.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use license_broker::client::{Admitted, Client, ClientError, ClientOptions};
use license_broker::proto::Notice;
use license_broker::value::{MachineId, OrgName, PoolId};
use serde_json::json;

use super::{exit_code_for, ConnArgs};

#[derive(clap::Args, Debug)]
pub struct RunnerArgs {
    /// The org whose licenses to use.
    #[arg(long)]
    org: OrgName,
    /// The pool (PRODUCT-KIND-TERM).
    #[arg(long, default_value = "kre-floating-annual")]
    pool: PoolId,
    /// Machine ID to report (default: this machine's, see `machine-id`).
    #[arg(long)]
    machine_id: Option<MachineId>,
    /// Release after this long (e.g. 10s); default: hold until SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    hold: Option<Duration>,
    /// Print one JSON object per event.
    #[arg(long)]
    json: bool,
}

struct Events {
    json: bool,
}

impl Events {
    fn emit(&self, value: serde_json::Value, human: String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{human}");
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
    opts: ClientOptions,
    args: RunnerArgs,
    machine: MachineId,
    /// This runner instance's identity: re-attaching with it never takes a second seat.
    nonce: u128,
    /// A KSE activation rather than a KRE session.
    activation: bool,
    ev: Events,
}

pub async fn run(args: RunnerArgs, conn: &ConnArgs, activation: bool) -> Result<ExitCode> {
    let machine = match args.machine_id.clone() {
        Some(m) => m,
        None => license_broker::machine_id::current()?,
    };
    let runner = Runner {
        opts: conn.options()?,
        ev: Events { json: args.json },
        args,
        machine,
        nonce: license_broker::keys::random_u128()?,
        activation,
    };
    runner.run().await
}

/// What attaching got: a leased session, or a node-locked binding.
enum Attached {
    Lease(Admitted),
    Bound { already: bool },
}

/// Why holding a lease stopped.
enum Stop {
    Release,
    Ended(String),
    Lost(ClientError),
}

impl Runner {
    async fn run(&self) -> Result<ExitCode> {
        let (machine, pool) = (&self.machine, self.args.pool);
        let (client, lease) = match self.attach().await {
            Ok((client, Attached::Lease(lease))) => (client, lease),
            Ok((client, Attached::Bound { already })) => {
                self.ev.emit(
                    json!({"event": "activated", "machine": machine.as_str(), "pool": pool.to_string(), "already": already}),
                    format!("activated: {pool} bound to machine {machine}{}", if already { " (already)" } else { "" }),
                );
                client.close().await;
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Ok(self.ev.rejected(&e)),
        };
        self.ev.emit(
            json!({"event": "admitted", "session": lease.session.to_string(), "machine": machine.as_str(),
                   "pool": pool.to_string(), "deadline_ms": lease.deadline_ms}),
            format!("admitted: session {} on machine {machine}", lease.session),
        );
        self.hold(client, lease).await
    }

    /// Connects and acquires (a runner registers its machine first; an
    /// activation asks for a KSE activation). Re-attaches on a repeated nonce.
    async fn attach(&self) -> Result<(Client, Attached), ClientError> {
        let (org, pool, machine, nonce) = (&self.args.org, self.args.pool, &self.machine, self.nonce);
        let client = Client::connect(&self.opts).await?;
        if self.activation {
            let act = client.activate(org, pool, machine, nonce).await?;
            let attached = match act.session {
                Some(session) => Attached::Lease(Admitted {
                    session,
                    deadline_ms: act.deadline_ms,
                    ttl_ms: act.ttl_ms,
                    reattached: act.already,
                }),
                None => Attached::Bound { already: act.already },
            };
            return Ok((client, attached));
        }
        client.register_machine(org, pool, machine).await?;
        let lease = client.acquire(org, pool, machine, nonce).await?;
        Ok((client, Attached::Lease(lease)))
    }

    /// Heartbeats until told to release, the session ends, or the broker is lost.
    async fn hold(&self, mut client: Client, mut lease: Admitted) -> Result<ExitCode> {
        let beat = Duration::from_millis((lease.ttl_ms / 3).max(1));
        let until = self.args.hold.map(|h| tokio::time::Instant::now() + h);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = loop {
            let release_at = until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
            tokio::select! {
                _ = tokio::time::sleep(beat) => match client.renew(lease.session).await {
                    Ok(deadline) => lease.deadline_ms = deadline,
                    Err(ClientError::Rejected(e)) => break Stop::Ended(format!("{}: {}", e.code, e.message)),
                    Err(e) => match self.reattach(lease.deadline_ms).await {
                        Ok((c, l)) => {
                            self.ev.emit(json!({"event": "reattached", "session": l.session.to_string()}),
                                    format!("reconnected: session {}", l.session));
                            client = c;
                            lease = l;
                        }
                        Err(_) => break Stop::Lost(e),
                    },
                },
                n = client.next_notice() => match n {
                    Some(Notice::SessionEnded { session, reason }) if session == lease.session => {
                        break Stop::Ended(reason.name().to_string())
                    }
                    Some(Notice::Draining { .. }) => {
                        self.ev.emit(json!({"event": "draining"}), "broker is draining; will reconnect".into());
                    }
                    _ => {}
                },
                _ = tokio::time::sleep_until(release_at) => break Stop::Release,
                _ = tokio::signal::ctrl_c() => break Stop::Release,
                _ = term.recv() => break Stop::Release,
            }
        };
        self.finish(stop, client, lease).await
    }

    /// Releases (or reports the end), closes, and picks the exit code.
    async fn finish(&self, stop: Stop, client: Client, lease: Admitted) -> Result<ExitCode> {
        let session = lease.session.to_string();
        match stop {
            Stop::Release => {
                let result = client.release(lease.session).await;
                client.close().await;
                match result {
                    Ok(()) => {
                        self.ev.emit(
                            json!({"event": "released", "session": session, "reason": "released"}),
                            format!("released: session {session}"),
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => Ok(self.ev.rejected(&e)),
                }
            }
            Stop::Ended(reason) => {
                self.ev.emit(
                    json!({"event": "ended", "session": session, "reason": reason}),
                    format!("session {session} ended: {reason}"),
                );
                client.close().await;
                Ok(ExitCode::from(1))
            }
            Stop::Lost(e) => {
                self.ev.emit(
                    json!({"event": "lost", "session": session, "message": e.to_string()}),
                    format!("lost the broker: {e}"),
                );
                Ok(ExitCode::from(1))
            }
        }
    }

    /// Reconnects until the lease's deadline passes, re-attaching with the nonce.
    async fn reattach(&self, deadline_ms: u64) -> Result<(Client, Admitted), ClientError> {
        loop {
            match self.attach().await {
                Ok((c, Attached::Lease(l))) => return Ok((c, l)),
                Ok((_, Attached::Bound { .. })) => {
                    return Err(ClientError::Protocol("a leased session became a binding".into()))
                }
                Err(e @ ClientError::Rejected(_)) => return Err(e),
                Err(e) => {
                    if unix_ms() + 1000 >= deadline_ms {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
