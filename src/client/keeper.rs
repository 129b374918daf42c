//! Keeping one lease from the client's side: the runner's heartbeat, its
//! re-attach through whichever broker serves now, and giving the seat
//! back even when the broker went away under the release.
//!
//! Every loop here is bounded twice: by a deadline (the lease's own for a
//! re-attach, so a client never believes in a seat past it; the wait's for
//! `retry_until`; the release's for giving back) and by capped, jittered
//! backoff between attempts (it never spins). A refusal that only says the
//! broker is going away (`DRAINING`, `NOT_OWNER`: see `passing`) is
//! retried; any other ends the loop, with the last error saying what was
//! tried.
//!
//! The load harness keeps thousands of leases per connection in batches
//! (`load/src/fleet.rs`, `restart.rs`) and does not use this per-lease keeper.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::{Admitted, Backoff, Client, ClientError, Connector};
use crate::proto::ErrorCode;
use crate::value::{Labels, MachineId, OrgName, PoolId};

/// Time kept for a last re-attach attempt before the lease's deadline.
const LAST_TRY_MS: u64 = 50;

/// Whether a refusal only says this broker (or node) is going away, so a
/// client reconnects rather than giving up its lease.
pub fn passing(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Draining | ErrorCode::NotOwner)
}

/// Whether a failed attempt is worth another: the broker was unreachable,
/// closed or redirected us, or refused only because it is going away.
pub fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. }
        | ClientError::Closed(_)
        | ClientError::Unreachable(_)
        | ClientError::Redirected { .. } => true,
        ClientError::Rejected(w) => passing(w.code),
        _ => false,
    }
}

/// The lease a keeper keeps: which seat, asked for with which nonce.
pub struct Keeper<'a> {
    connector: &'a Connector,
    org: &'a OrgName,
    pool: PoolId,
    machine: &'a MachineId,
    /// The runner instance's identity: re-attaching with it never takes a second seat.
    nonce: u128,
    /// Labels a re-attach carries to a new session (a restarted broker's).
    labels: &'a Labels,
}

/// What one heartbeat came to.
#[derive(Debug)]
pub enum Beat {
    /// Renewed: the lease's deadline moved.
    Renewed,
    /// The broker refused for good (revoked, expired, killed): the lease is over.
    Ended(String),
    /// No answer, or the broker is going away: reconnect and re-attach.
    Broken(String),
}

impl<'a> Keeper<'a> {
    /// A keeper of the seat `(org, pool, machine)` asked for with `nonce`.
    pub fn new(
        connector: &'a Connector,
        (org, pool, machine): (&'a OrgName, PoolId, &'a MachineId),
        nonce: u128,
        labels: &'a Labels,
    ) -> Keeper<'a> {
        Keeper { connector, org, pool, machine, nonce, labels }
    }

    /// One heartbeat, answered within `beat`. The lease's deadline becomes
    /// the earlier of the broker's and this client's own (send time +
    /// TTL), so a clock that differs from the broker's never makes it
    /// believe longer than the broker holds its seat.
    pub async fn renew(&self, client: &Client, lease: &mut Admitted, beat: Duration) -> Beat {
        let sent = unix_ms();
        match tokio::time::timeout(beat, client.renew_lease(lease.session)).await {
            Ok(Ok((deadline, token))) => {
                lease.deadline_ms = deadline.min(sent + lease.ttl_ms);
                lease.token = token.or(lease.token);
                Beat::Renewed
            }
            Ok(Err(ClientError::Rejected(e))) if !passing(e.code) => Beat::Ended(format!("{}: {}", e.code, e.message)),
            Ok(Err(e)) => Beat::Broken(e.to_string()),
            Err(_) => Beat::Broken(format!("no answer to a heartbeat within {beat:?}")),
        }
    }

    /// Connects and re-attaches once: with the lease's token (this survives
    /// a broker restart and a cluster's failover) and the job's labels (a
    /// restarted broker's new session carries them: `reattach_labelled`).
    /// A lease without one
    /// (only a protocol version 1 broker issues those; this client speaks
    /// the current version) is looked for by acquiring with the same nonce,
    /// which finds the session only if the broker still has it.
    pub async fn attach_again(&self, lease: &Admitted) -> Result<(Client, Admitted), ClientError> {
        let (org, pool, machine, nonce) = (self.org, self.pool, self.machine, self.nonce);
        let client = self.connector.connect().await?;
        let Some(token) = lease.token else {
            let again = client.acquire(org, pool, machine, nonce).await?;
            return Ok((client, again));
        };
        let again = client.reattach_labelled((org, pool, machine), nonce, token, self.labels).await?;
        Ok((client, again))
    }

    /// Reconnects with backoff until the lease's deadline, re-attaching
    /// (`attach_again`); the error says why the lease is lost. Dropping
    /// the future (a signal, say) abandons the attempt under way.
    pub async fn reattach(&self, lease: &Admitted) -> Result<(Client, Admitted), String> {
        let deadline_ms = lease.deadline_ms;
        // Several attempts fit in one lease, whatever the TTL.
        let cap = Duration::from_millis(lease.ttl_ms / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
        let mut backoff = Backoff::new(Duration::from_millis(100), cap);
        loop {
            let left = Duration::from_millis(deadline_ms.saturating_sub(unix_ms()));
            if left.is_zero() {
                return Err("the lease's deadline passed before the broker could be reached".into());
            }
            // One attempt may not use up the lease: a connect whose first
            // packets went nowhere is abandoned and started afresh.
            let limit = left.min(cap.max(Duration::from_millis(500)));
            let last = match tokio::time::timeout(limit, self.attach_again(lease)).await {
                Ok(Ok(kept)) => return Ok(kept),
                // Refused outright (its seat was taken, the key revoked...): the lease is gone.
                Ok(Err(e @ ClientError::Rejected(_))) if !retryable(&e) => return Err(e.to_string()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {limit:?}"),
            };
            // The last wait is cut short to leave one more attempt before the deadline.
            let left = deadline_ms.saturating_sub(unix_ms());
            if left <= LAST_TRY_MS {
                return Err(format!("could not renew before the lease's deadline: {last}"));
            }
            tokio::time::sleep(backoff.next_delay().min(Duration::from_millis(left - LAST_TRY_MS))).await;
        }
    }

    /// Releases the seat and closes. The release waits at most a third of
    /// the TTL (at least a second); if the broker went away under it (a
    /// restart, a failover), the seat is given back through whoever serves
    /// now, retrying with backoff for at most twice that and never past the
    /// lease. The error says why the release was not confirmed (the seat
    /// then returns when its lease expires).
    pub async fn give_back(&self, client: Client, lease: &Admitted) -> Result<(), String> {
        let wait = Duration::from_millis((lease.ttl_ms / 3).max(1000));
        let result = match tokio::time::timeout(wait, client.release(lease.session)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {wait:?}; the seat returns when its lease expires")),
        };
        if result.is_ok() {
            client.close().await;
            return result;
        }
        client.disconnect();
        if lease.token.is_none() {
            return result;
        }
        let left = Duration::from_millis(lease.deadline_ms.saturating_sub(unix_ms()));
        match tokio::time::timeout(left.min(wait * 2), self.release_again(lease)).await {
            Ok(true) => Ok(()),
            _ => result,
        }
    }

    /// Re-attaches and releases until one succeeds or the broker refuses
    /// for good (the session is gone: nothing to give back); any other
    /// failure is retried. Unbounded by itself: `give_back` bounds it by
    /// the lease's deadline.
    async fn release_again(&self, lease: &Admitted) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            let e = match self.attach_again(lease).await {
                Ok((c, l)) => match c.release(l.session).await {
                    Ok(()) => {
                        c.close().await;
                        return true;
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if matches!(&e, ClientError::Rejected(w) if !passing(w.code)) {
                return false;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// Retries `attempt` while its failure is `retryable`, waiting with
/// `backoff` between attempts, until the next wait would pass `until`;
/// `on_retry` hears each failure retried. The last failure if none succeeded.
pub async fn retry_until<T, F>(
    until: Instant,
    mut backoff: Backoff,
    mut attempt: impl FnMut() -> F,
    mut on_retry: impl FnMut(&ClientError),
) -> Result<T, ClientError>
where
    F: std::future::Future<Output = Result<T, ClientError>>,
{
    loop {
        let e = match attempt().await {
            Err(e) if retryable(&e) => e,
            other => return other,
        };
        let pause = backoff.next_delay();
        if Instant::now() + pause >= until {
            return Err(e);
        }
        on_retry(&e);
        tokio::time::sleep(pause).await;
    }
}

/// Now, in Unix ms: the clock a client's lease deadlines are kept in.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
