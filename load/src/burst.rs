//! `burst`: R runners ask at once for a pool of quota Q < R. Exactly Q must
//! be admitted and R − Q refused with QUOTA_EXCEEDED.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use license_broker::client::{Client, ClientError};
use license_broker::proto::ErrorCode;
use license_broker::proto::{Req, Resp};
use license_broker::value::{Nonce, PoolId, SessionId};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use crate::report::{Errors, Lat, Report};
use crate::target::{LoadOrg, Target};

/// A connection's answers, as `call_batch_timed` gives them.
type Answers = Vec<(Result<Resp, ClientError>, Duration)>;

pub async fn run(target: &Target, runners: usize, quota: u32, connections: usize) -> Result<Report> {
    let org = target.setup_orgs(1, quota).await?.remove(0);
    let connections = connections.clamp(1, runners.max(1));
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Client::connect(&target.options(&org.key)).await?);
    }
    let start = Instant::now();
    let tasks = ask_at_once(clients, &org, runners);
    let (lat, errors, held) = tally(tasks).await?;
    let elapsed = start.elapsed();
    let admitted: usize = held.iter().map(|(_, s)| s.len()).sum();
    let in_use = target.pools(std::slice::from_ref(&org)).await?[0].in_use;
    for (client, sessions) in held {
        let _ = client.call_batch(sessions.into_iter().map(|session| Req::Release { session }).collect()).await;
        client.close().await;
    }
    let after = target.pools(std::slice::from_ref(&org)).await?[0].in_use;

    let mut r = Report::new("burst", "broker");
    r.duration_s = elapsed.as_secs_f64();
    r.param("runners", runners);
    r.param("quota", quota);
    r.param("connections", connections);
    r.throughput.insert("admitted".into(), admitted as f64);
    r.latency("acquire", &lat);
    r.errors = errors.0.clone();
    let want = (quota as usize).min(runners);
    let quota_errors = errors.count(ErrorCode::QuotaExceeded.name()) as usize;
    r.check("exactly Q admitted", admitted == want, format!("{admitted} admitted, quota {quota}"));
    r.check(
        "the rest refused with QUOTA_EXCEEDED",
        quota_errors == runners - want && errors.0.len() <= 1,
        format!("{quota_errors} QUOTA_EXCEEDED of {} refused", runners - admitted),
    );
    r.check("broker agrees on seats in use", in_use as usize == admitted, format!("status in_use {in_use}"));
    r.check("no seat leaked after release", after == 0, format!("in_use {after} after releasing"));
    Ok(r)
}

/// Every connection sends its share of the `runners` acquires, all
/// connections released at once by a barrier.
fn ask_at_once(clients: Vec<Client>, org: &LoadOrg, runners: usize) -> Vec<JoinHandle<(Client, Answers)>> {
    let connections = clients.len();
    let barrier = Arc::new(Barrier::new(connections));
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let mine = (c..runners).step_by(connections).count();
        let (barrier, org) = (barrier.clone(), org.clone());
        tasks.push(tokio::spawn(async move {
            let reqs: Vec<Req> = (0..mine)
                .map(|i| Req::Acquire {
                    org: org.org.clone(),
                    pool: PoolId::KRE_DEFAULT,
                    machine: org.machine.clone(),
                    nonce: Nonce(((c as u128) << 64) | i as u128),
                })
                .collect();
            barrier.wait().await;
            let results = client.call_batch_timed(reqs).await;
            (client, results)
        }));
    }
    tasks
}

/// Every answer's latency and refusal; each connection with the sessions
/// it was admitted.
#[allow(clippy::type_complexity)]
async fn tally(tasks: Vec<JoinHandle<(Client, Answers)>>) -> Result<(Lat, Errors, Vec<(Client, Vec<SessionId>)>)> {
    let mut lat = Lat::new();
    let mut errors = Errors::default();
    let mut held = Vec::new();
    for t in tasks {
        let (client, results) = t.await?;
        let mut sessions = Vec::new();
        for (r, d) in results {
            lat.record(d);
            match r {
                Ok(Resp::Admitted { session, .. } | Resp::Leased { session, .. }) => sessions.push(session),
                Ok(_) => errors.add_named("UNEXPECTED_RESPONSE"),
                Err(e) => errors.add(&e),
            }
        }
        held.push((client, sessions));
    }
    Ok((lat, errors, held))
}
