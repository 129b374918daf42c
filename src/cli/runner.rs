//! `license-broker runner`: behaves like a KRE runner. Registers its machine,
//! acquires a session, heartbeats at a third of the TTL, and releases after
//! `--hold` or on SIGINT/SIGTERM. If the connection drops it reconnects and
//! re-attaches with the same nonce, so it never takes a second seat.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use license_broker::client::{Admitted, Client, ClientError, ClientOptions};
use license_broker::core::{MachineId, OrgName, PoolId};
use license_broker::proto::Notice;
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

pub async fn run(a: RunnerArgs, conn: &ConnArgs, activation: bool) -> Result<ExitCode> {
    let ev = Events { json: a.json };
    let opts = conn.options()?;
    let machine = match a.machine_id.clone() {
        Some(m) => m,
        None => license_broker::machine_id::current()?,
    };
    let nonce = license_broker::keys::random_u128()?;
    let (client, lease) = match attach(&opts, &a, &machine, nonce, activation).await {
        Ok((client, Attached::Lease(lease))) => (client, lease),
        Ok((client, Attached::Bound { already })) => {
            ev.emit(
                json!({"event": "activated", "machine": machine.as_str(), "pool": a.pool.to_string(), "already": already}),
                format!("activated: {} bound to machine {machine}{}", a.pool, if already { " (already)" } else { "" }),
            );
            client.close().await;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Ok(ev.rejected(&e)),
    };
    ev.emit(
        json!({"event": "admitted", "session": lease.session.to_string(), "machine": machine.as_str(),
               "pool": a.pool.to_string(), "deadline_ms": lease.deadline_ms}),
        format!("admitted: session {} on machine {machine}", lease.session),
    );
    hold(client, lease, &opts, &a, &machine, nonce, activation, &ev).await
}

/// What attaching got: a leased session, or a node-locked binding.
enum Attached {
    Lease(Admitted),
    Bound { already: bool },
}

/// Connects and acquires (a runner registers its machine first; an
/// activation asks for a KSE activation). Re-attaches on a repeated nonce.
async fn attach(
    opts: &ClientOptions,
    a: &RunnerArgs,
    machine: &MachineId,
    nonce: u128,
    activation: bool,
) -> Result<(Client, Attached), ClientError> {
    let client = Client::connect(opts).await?;
    if activation {
        let act = client.activate(&a.org, a.pool, machine, nonce).await?;
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
    client.register_machine(&a.org, a.pool, machine).await?;
    let lease = client.acquire(&a.org, a.pool, machine, nonce).await?;
    Ok((client, Attached::Lease(lease)))
}

enum Stop {
    Release,
    Ended(String),
    Lost(ClientError),
}

#[allow(clippy::too_many_arguments)]
async fn hold(
    mut client: Client,
    mut lease: Admitted,
    opts: &ClientOptions,
    a: &RunnerArgs,
    machine: &MachineId,
    nonce: u128,
    activation: bool,
    ev: &Events,
) -> Result<ExitCode> {
    let beat = Duration::from_millis((lease.ttl_ms / 3).max(1));
    let until = a.hold.map(|h| tokio::time::Instant::now() + h);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = loop {
        let release_at = until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        tokio::select! {
            _ = tokio::time::sleep(beat) => match client.renew(lease.session).await {
                Ok(deadline) => lease.deadline_ms = deadline,
                Err(ClientError::Rejected(e)) => break Stop::Ended(format!("{}: {}", e.code, e.message)),
                Err(e) => match reattach(opts, a, machine, nonce, activation, lease.deadline_ms).await {
                    Ok((c, l)) => {
                        ev.emit(json!({"event": "reattached", "session": l.session.to_string()}),
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
                    ev.emit(json!({"event": "draining"}), "broker is draining; will reconnect".into());
                }
                _ => {}
            },
            _ = tokio::time::sleep_until(release_at) => break Stop::Release,
            _ = tokio::signal::ctrl_c() => break Stop::Release,
            _ = term.recv() => break Stop::Release,
        }
    };
    match stop {
        Stop::Release => {
            let result = client.release(lease.session).await;
            client.close().await;
            match result {
                Ok(()) => {
                    ev.emit(
                        json!({"event": "released", "session": lease.session.to_string(), "reason": "released"}),
                        format!("released: session {}", lease.session),
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(ev.rejected(&e)),
            }
        }
        Stop::Ended(reason) => {
            ev.emit(
                json!({"event": "ended", "session": lease.session.to_string(), "reason": reason}),
                format!("session {} ended: {reason}", lease.session),
            );
            client.close().await;
            Ok(ExitCode::from(1))
        }
        Stop::Lost(e) => {
            ev.emit(
                json!({"event": "lost", "session": lease.session.to_string(), "message": e.to_string()}),
                format!("lost the broker: {e}"),
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// Reconnects until the lease's deadline passes, re-attaching with the nonce.
async fn reattach(
    opts: &ClientOptions,
    a: &RunnerArgs,
    machine: &MachineId,
    nonce: u128,
    activation: bool,
    deadline_ms: u64,
) -> Result<(Client, Admitted), ClientError> {
    loop {
        match attach(opts, a, machine, nonce, activation).await {
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

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
