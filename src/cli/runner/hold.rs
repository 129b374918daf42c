//! Holding a lease: heartbeats every third of the TTL or a little sooner
//! (`client::Beats`), the broker's
//! notices, the job's exit, signals, and riding out a broken connection by
//! re-attaching with the same nonce until the lease's own deadline. Its
//! own module because this loop is the runner's one long wait and decides
//! only *why* holding stopped (`Stop`); `end` does what follows.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use license_broker::client::keeper::Beat;
use license_broker::client::{Admitted, Beats, Client};
use license_broker::proto::Notice;
use serde_json::json;

use super::Runner;
use crate::cli::job::Job;

/// Why holding a lease stopped.
pub(super) enum Stop {
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
    /// Heartbeats until told to release, the session ends, or the lease is lost.
    pub(super) async fn hold(&self, mut client: Client, mut lease: Admitted, mut job: Option<Job>) -> Result<ExitCode> {
        let mut beats = Beats::for_ttl(lease.ttl_ms);
        let until = self.args.hold.map(|h| tokio::time::Instant::now() + h);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // The notice stream ends with the connection; stop polling it then.
        let mut notices_open = true;
        // Kept across the loop: a notice, a signal passed to the job, do not put the heartbeat off.
        let mut next_beat = tokio::time::Instant::now() + beats.next_delay();
        let stop = loop {
            let release_at = until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
            let broken = tokio::select! {
                _ = tokio::time::sleep_until(next_beat) => {
                    let beat = self.keeper().renew(&client, &mut lease, beats.third()).await;
                    next_beat = tokio::time::Instant::now() + beats.next_delay();
                    match beat {
                        Beat::Renewed => None,
                        Beat::Ended(why) => break Stop::Ended(why),
                        // No answer, or the node stopped serving: reconnect (another took over).
                        Beat::Broken(why) => Some(why),
                    }
                }
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
                Ok((c, l)) => {
                    (client, lease, notices_open) = (c, l, true);
                    next_beat = tokio::time::Instant::now() + beats.next_delay();
                }
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
