//! `console`: the license console's pages for a large org, server time.
//!
//! A broker is started, its default org given a KRE pool of 10,000 and a
//! KSE node-locked pool of 10,000; while it is down, its store is seeded
//! with 10,000 members (each with an API key), 1,000 registered machines
//! and 5,000 KSE grants, and its history with a year of minutes and 30
//! days of ended sessions (as `dashboard` seeds it). Back up, 10,000 real
//! leases are taken over the 1,000 machines and held. Then the Owner signs
//! in and each console page is fetched `FETCHES` times over HTTPS: the
//! page's server time is the broker's own `Server-Timing` (the handler,
//! its reads and the rendering), the whole request's time is recorded
//! beside it. Target: every page ≤ 100 ms at p99 of server time.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use license_broker::client::Client;
use license_broker::core::{Change, Email, KeyHash, MachineId, Millis, OrgName, Record, Role};
use license_broker::proto::{Req, Resp};
use license_broker::store::{RedbStore, Store};
use license_broker::value::{Nonce, PoolId};

use crate::dashboard::{sign_in, PAGE_TIMEOUT};
use crate::report::{Lat, Report};
use crate::target::Target;
use crate::web::Web;

/// Fetches timed per page.
const FETCHES: usize = 20;
const MEMBERS: usize = 10_000;
const MACHINES: usize = 1_000;
const SESSIONS: usize = 10_000;
const GRANTS: usize = 5_000;
/// Acquires sent together on one connection.
const BATCH: usize = 1_000;
/// The pause between fetches (see `time_page`).
const PACE: Duration = Duration::from_millis(50);
/// Server time a page may take at p99.
const TARGET_MS: f64 = 100.0;

fn kse() -> PoolId {
    "kse-node-locked-annual".parse().expect("a valid pool id")
}

/// The pages timed, as the Owner sees them.
const PAGES: [(&str, &str); 8] = [
    ("overview_week", "/org/default?range=week"),
    ("licenses_kre", "/org/default/licenses?pool=kre-floating-annual"),
    ("licenses_kse", "/org/default/licenses?pool=kse-node-locked-annual"),
    ("licenses_find", "/org/default/licenses?pool=kre-floating-annual&find=m-7"),
    ("members", "/org/default/members"),
    ("usage_7d", "/org/default/usage?preset=7d"),
    ("usage_year", "/org/default/usage?preset=year&view=stacked"),
    ("usage_by_user", "/org/default/usage?preset=90d&user=owner%40default"),
];

pub async fn run(target: &mut Target, days: u64) -> Result<Report> {
    let web = target.web()?.context("the spawned broker serves the console (--http)")?;
    let owner = target.owner.clone().context("the spawned broker's Owner key")?;
    let org = OrgName::new("default")?;
    let op = target.client(&target.operator).await?;
    op.set_pool(&org, PoolId::KRE_DEFAULT, SESSIONS as u32).await?;
    op.set_pool(&org, kse(), MEMBERS as u32).await?;
    op.close().await;

    target.crash()?;
    let seeding = Instant::now();
    let dir = target.data_dir().context("a spawned broker's data dir")?.to_path_buf();
    let seeded = tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
        seed_store(&dir.join("broker.redb"))?;
        let (minutes, sessions, _, _) = crate::dashboard::seed(&dir, days)?;
        Ok((minutes, sessions))
    })
    .await??;
    let seed_s = seeding.elapsed().as_secs_f64();
    target.restart().await?;
    let clients = hold_sessions(target, &org, &owner).await?;

    let mut r = Report::new("console", "broker");
    r.param("members", MEMBERS);
    r.param("machines", MACHINES);
    r.param("live_sessions", SESSIONS);
    r.param("kse_grants", GRANTS);
    r.param("history_minutes", seeded.0);
    r.param("ended_sessions", seeded.1);
    r.extra("seed_s", seed_s);
    let started = Instant::now();
    let cookie = tokio::task::spawn_blocking({
        let web = web.clone();
        move || sign_in(&web, &owner)
    })
    .await??;
    for (name, path) in PAGES {
        let (web, cookie) = (web.clone(), cookie.clone());
        let (server, whole, body) = tokio::task::spawn_blocking(move || time_page(&web, path, &cookie)).await??;
        let p99_ms = server.stats().p99_us as f64 / 1000.0;
        r.latency(&format!("{name}_server"), &server);
        r.latency(&format!("{name}_request"), &whole);
        r.extra(&format!("{name}_bytes"), body.len());
        r.check(&format!("{name}: server time p99 <= {TARGET_MS} ms"), p99_ms <= TARGET_MS, format!("{p99_ms:.1} ms"));
        if name == "licenses_kre" {
            let all = body.contains(&format!("Online licenses ({SESSIONS})"));
            r.check("the KRE page counts every live session", all, format!("{SESSIONS} sessions"));
        }
    }
    r.duration_s = started.elapsed().as_secs_f64();
    for c in clients {
        c.close().await;
    }
    Ok(r)
}

/// Fetches `path` `FETCHES` times: the server's times (`Server-Timing`),
/// the whole requests' times, and the last page.
fn time_page(web: &Web, path: &str, cookie: &str) -> Result<(Lat, Lat, String)> {
    let (mut server, mut whole, mut page) = (Lat::new(), Lat::new(), String::new());
    for _ in 0..FETCHES {
        let t = Instant::now();
        let (head, body) =
            web.request(&format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n"), PAGE_TIMEOUT)?;
        whole.record(t.elapsed());
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
        }
        server.record(server_time(&head).with_context(|| format!("GET {path}: no Server-Timing"))?);
        page = body;
        // The web door takes at most 32 new connections a second from one
        // address, and each fetch here is a connection of its own.
        std::thread::sleep(PACE);
    }
    Ok((server, whole, page))
}

/// The `app;dur=MS` of a `Server-Timing` header.
fn server_time(head: &str) -> Option<Duration> {
    let line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("server-timing:"))?;
    let ms: f64 = line.split("dur=").nth(1)?.trim().parse().ok()?;
    Some(Duration::from_secs_f64(ms / 1000.0))
}

/// Members (each with a key), machines and grants, written while the
/// broker is down (10,000 audited changes through the API would take a
/// minute of fsyncs; the pages read memory, however it got there).
fn seed_store(path: &std::path::Path) -> Result<()> {
    let store = RedbStore::open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let org = OrgName::new("default")?;
    let now = Millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64);
    let mut batch = Vec::new();
    for i in 0..MEMBERS {
        let email = Email::parse_lenient(&format!("user-{i}@load.io")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let role = if i % 100 == 0 { Role::Admin } else { Role::User };
        batch.push(Change::Put(Record::User { org: org.clone(), email: email.clone(), role, created: now }));
        let hash: KeyHash = license_broker::keys::hash(&format!("load-key-{i}"));
        batch.push(Change::Put(Record::Key {
            hash,
            org: Some(org.clone()),
            email: email.clone(),
            created: now,
            revoked: false,
        }));
        if i < GRANTS {
            batch.push(Change::Put(Record::Grant { org: org.clone(), pool: kse(), email, granted: now }));
        }
    }
    for m in 0..MACHINES {
        let machine = MachineId::new(format!("m-{m}"))?;
        batch.push(Change::Put(Record::Machine {
            org: org.clone(),
            pool: PoolId::KRE_DEFAULT,
            machine,
            registered: now,
        }));
    }
    store.commit(&batch).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Takes `SESSIONS` leases over the `MACHINES` machines (as the Owner, on
/// 8 connections), held while the pages are fetched.
async fn hold_sessions(target: &Target, org: &OrgName, key: &str) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for c in 0..8 {
        let client = Client::connect(&target.options(key)).await?;
        let reqs: Vec<Req> = (c..SESSIONS)
            .step_by(8)
            .map(|i| Req::Acquire {
                org: org.clone(),
                pool: PoolId::KRE_DEFAULT,
                machine: MachineId::new(format!("m-{}", i % MACHINES)).expect("a valid machine id"),
                nonce: Nonce(i as u128),
            })
            .collect();
        for chunk in reqs.chunks(BATCH) {
            for r in client.call_batch(chunk.to_vec()).await {
                match r {
                    Ok(Resp::Leased { .. }) => {}
                    other => bail!("an acquire answered {other:?}"),
                }
            }
        }
        clients.push(client);
    }
    Ok(clients)
}
