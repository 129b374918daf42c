//! `abuse`'s legitimate runner: the work that must go on while the
//! attackers do their worst, on a runtime of its own, and what it saw.
//! Apart from the attack so the two sides read separately.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use license_broker::client::{Client, ClientOptions};
use license_broker::value::PoolId;
use parking_lot::Mutex;

use crate::report::{Errors, Lat};
use crate::target::LoadOrg;

/// What the legitimate runner saw.
pub(super) struct Legit {
    pub(super) pair: Lat,
    pub(super) fresh: Lat,
    pub(super) connects: u64,
    pub(super) refused: u64,
    pub(super) errors: Errors,
}

/// Acquire+release on the runner's connection every 20 ms; a fresh
/// connection's connect+acquire+release every 250 ms; until `ends`.
pub(super) async fn legit_runner(opts: ClientOptions, org: LoadOrg, ends: Instant) -> Result<Legit> {
    // Its own connection, made on this runtime: its I/O is driven here too.
    let runner = Client::connect(&opts).await?;
    let out = Arc::new(Mutex::new(Legit {
        pair: Lat::new(),
        fresh: Lat::new(),
        connects: 0,
        refused: 0,
        errors: Errors::default(),
    }));
    let fresh = tokio::spawn(fresh_connections(opts.clone(), org.clone(), out.clone(), ends));
    let mut nonce = 1u128 << 90;
    while Instant::now() < ends {
        let started = Instant::now();
        nonce += 1;
        let r = match runner.acquire(&org.org, PoolId::KRE_DEFAULT, &org.machine, nonce).await {
            Ok(lease) => runner.release(lease.session).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => out.lock().pair.record(started.elapsed()),
            Err(e) => out.lock().errors.add(&e),
        }
        tokio::time::sleep(Duration::from_millis(20).saturating_sub(started.elapsed())).await;
    }
    let _ = fresh.await;
    runner.close().await;
    let o = out.lock();
    Ok(Legit {
        pair: o.pair.clone(),
        fresh: o.fresh.clone(),
        connects: o.connects,
        refused: o.refused,
        errors: o.errors.clone(),
    })
}

/// A fresh connection's connect+acquire+release every 250 ms until `ends`.
async fn fresh_connections(opts: ClientOptions, org: LoadOrg, out: Arc<Mutex<Legit>>, ends: Instant) {
    let mut nonce = 1u128 << 100;
    while Instant::now() < ends {
        let started = Instant::now();
        nonce += 1;
        let (refused, r, elapsed) = match Client::connect(&opts).await {
            Ok(c) => {
                let r = match c.acquire(&org.org, PoolId::KRE_DEFAULT, &org.machine, nonce).await {
                    Ok(lease) => c.release(lease.session).await,
                    Err(e) => Err(e),
                };
                let elapsed = started.elapsed();
                c.close().await;
                (false, r, elapsed)
            }
            Err(e) => (true, Err(e), started.elapsed()),
        };
        {
            let mut o = out.lock();
            o.connects += 1;
            o.refused += u64::from(refused);
            match r {
                Ok(()) => o.fresh.record(elapsed),
                Err(e) => o.errors.add(&e),
            }
        }
        tokio::time::sleep(Duration::from_millis(250).saturating_sub(started.elapsed())).await;
    }
}
