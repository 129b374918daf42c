//! `scrape`: how long `/metrics` takes with many orgs (`--orgs`, 10,000 by
//! default), each with a KRE pool, some seats in use in the first ones.
//!
//! The orgs are created through the API before the clock starts (pipelined
//! `CreateOrg` and `SetPool` requests: two durable writes each). Then the
//! endpoint is scraped `SCRAPES` times, one after another, over HTTPS
//! (HTTP/1 on TLS, a new connection each) on loopback; the report gives the latency percentiles, the body's
//! size, and checks the org cap folded all but 100 orgs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use license_broker::proto::{Req, Resp};
use license_broker::value::{OrgName, PoolId};

use crate::report::{Lat, Report};
use crate::scenarios::Params;
use crate::target::Target;

/// Scrapes timed.
const SCRAPES: usize = 100;
/// Orgs created per pipelined batch.
const BATCH: usize = 500;

pub async fn run(target: &Target, p: &Params) -> Result<Report> {
    let http = target.web()?.context("the spawned broker serves /metrics (--http)")?;
    let n = p.orgs;
    let op = target.client(&target.operator).await?;
    let setup = Instant::now();
    let tag = std::process::id();
    for start in (0..n).step_by(BATCH) {
        let names: Vec<OrgName> = (start..(start + BATCH).min(n))
            .map(|i| OrgName::new(format!("scrape-{tag}-{i:05}")))
            .collect::<Result<_, _>>()?;
        let mut reqs = Vec::with_capacity(names.len() * 2);
        for name in &names {
            reqs.push(Req::CreateOrg {
                name: name.clone(),
                subscription_end: "2099-12-31".into(),
                owner: format!("o@{name}"),
            });
            reqs.push(Req::SetPool { org: name.clone(), pool: PoolId::KRE_DEFAULT, quota: 10 });
        }
        for r in op.call_batch(reqs).await {
            match r {
                Ok(Resp::OrgCreated { .. } | Resp::Done) => {}
                other => bail!("setting up the orgs: {other:?}"),
            }
        }
    }
    let setup_s = setup.elapsed().as_secs_f64();
    op.close().await;

    let (lat, bytes, body) = tokio::task::spawn_blocking(move || -> Result<(Lat, usize, String)> {
        let mut lat = Lat::new();
        let mut last = String::new();
        for _ in 0..SCRAPES {
            let started = Instant::now();
            last = http.get("/metrics", "", Duration::from_secs(30))?;
            lat.record(started.elapsed());
        }
        Ok((lat, last.len(), last))
    })
    .await??;

    let folded =
        body.lines().find_map(|l| l.strip_prefix("lbroker_orgs_folded ")?.trim().parse::<usize>().ok()).unwrap_or(0);
    let mut r = Report::new("scrape", "broker");
    r.duration_s = setup.elapsed().as_secs_f64();
    r.param("orgs", n);
    r.latency("scrape", &lat);
    r.extra("setup_s", setup_s);
    r.extra("body_bytes", bytes);
    r.extra("orgs_folded", folded);
    // At least the harness's orgs beyond the cap are folded (the spawned
    // broker's own default org is one more).
    let expected = n.saturating_sub(license_broker::http::MAX_ORGS);
    r.check("all but 100 orgs folded", folded >= expected, format!("{folded} folded of {} orgs", n + 1));
    let p99 = lat.stats().p99_us;
    r.extra("target_scrape_p99_le_50ms", p99 <= 50_000);
    Ok(r)
}
