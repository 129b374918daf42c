//! `dashboard`: how long the dashboard takes to render a year of minute
//! data (`--days`, 365 by default), server-side, and how large that
//! history is on disk.
//!
//! A broker is started (to create its data dir, the pool, an Owner key),
//! stopped, and its history is seeded with a year of minutes for one pool
//! of 20 seats (office hours busy, nights and weekends quiet, refusals at
//! the peaks) and 30 days of ended sessions; the history file's size is
//! read. The broker is started again on the same data dir, the Owner
//! signs in, and each range of the org's page is fetched `FETCHES` times
//! over HTTP/1 on loopback: the latency is the whole request (history
//! reads, the what-if replay, rendering), as a browser sees it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use license_broker::history::{EndedRow, History, Retention, Usage};
use license_broker::proto::{Req, Resp};
use license_broker::value::{OrgName, PoolId};

use crate::report::{Lat, Report};
use crate::target::Target;
use crate::web::Web;

/// Page fetches timed per range.
const FETCHES: usize = 20;
/// The pool's seats.
const QUOTA: u32 = 20;
const MINUTE: u64 = 60_000;
const DAY_MINUTES: u64 = 1440;

/// Seats in use in minute `m` (since 1970) of the synthetic year: busy on
/// weekday office hours, a little use at night and at weekends, some noise.
fn level(m: u64) -> u32 {
    let hour = (m / 60) % 24;
    let weekday = (m / DAY_MINUTES + 3) % 7; // 0 = Monday
    let noise = (m.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as u32; // 0..32
    let base = match (weekday < 5, hour) {
        (true, 9..=17) => 14 + noise / 4,
        (true, 7..=8 | 18..=20) => 6 + noise / 6,
        (true, _) => 1 + noise / 16,
        (false, 10..=16) => 3 + noise / 10,
        (false, _) => noise / 16,
    };
    base.min(QUOTA + 2)
}

pub async fn run(target: &mut Target, days: u64, keep: Option<Duration>) -> Result<Report> {
    let http = target.web()?.context("the spawned broker serves the dashboard (--http)")?;
    let org = OrgName::new("default")?;
    let owner_key = target.owner.clone().context("the spawned broker's Owner key")?;
    let op = target.client(&target.operator).await?;
    match op.call(Req::SetPool { org: org.clone(), pool: PoolId::KRE_DEFAULT, quota: QUOTA }).await {
        Ok(Resp::Done) => {}
        other => bail!("setting up the pool: {other:?}"),
    }
    op.close().await;
    target.crash()?;

    // Seed a year of minutes ending now, and 30 days of ended sessions.
    let dir = target.data_dir().context("a spawned broker's data dir")?.to_path_buf();
    let seeding = Instant::now();
    let (rows, sessions, minutes_bytes, data_bytes) = tokio::task::spawn_blocking(move || seed(&dir, days)).await??;
    let seed_s = seeding.elapsed().as_secs_f64();
    let dir = target.data_dir().context("data dir")?;
    let bytes = std::fs::metadata(dir.join(license_broker::history::FILE))?.len();
    target.restart().await?;

    // Sign in as the Owner, then fetch each range.
    let web = http.clone();
    let cookie = tokio::task::spawn_blocking(move || sign_in(&web, &owner_key)).await??;
    let mut r = Report::new("dashboard", "broker");
    r.param("minutes", rows);
    r.param("sessions", sessions);
    r.extra("seed_s", seed_s);
    r.extra("history_file_bytes", bytes);
    r.extra("history_data_bytes", data_bytes);
    r.extra("bytes_per_minute_row", minutes_bytes / rows.max(1));
    r.extra("bytes_per_session_row", data_bytes.saturating_sub(minutes_bytes) / sessions.max(1));
    let started = Instant::now();
    let year_p50 = fetch_ranges(&mut r, &http, &cookie).await?;
    r.duration_s = started.elapsed().as_secs_f64();
    r.extra("target_year_p50_le_100ms", year_p50 <= 100_000);
    if let Some(keep) = keep {
        eprintln!(
            "dashboard: https://{}/ (Owner key {}; QUIC {}, CA {})",
            http.addr,
            target.owner.as_deref().unwrap_or(""),
            target.server,
            target.ca.display()
        );
        tokio::time::sleep(keep).await;
    }
    Ok(r)
}

/// Fetches each range of the org page `FETCHES` times into `r`: the year's p50 (µs).
async fn fetch_ranges(r: &mut Report, http: &Web, cookie: &str) -> Result<u64> {
    let mut year_p50 = u64::MAX;
    for range in ["year", "month", "week", "day"] {
        let (c, http) = (cookie.to_string(), http.clone());
        let (lat, size, body) = tokio::task::spawn_blocking(move || -> Result<(Lat, usize, String)> {
            let mut lat = Lat::new();
            let mut body = String::new();
            for _ in 0..FETCHES {
                let t = Instant::now();
                body = http.get(&format!("/org/default?range={range}"), &format!("Cookie: {c}\r\n"), PAGE_TIMEOUT)?;
                lat.record(t.elapsed());
            }
            Ok((lat, body.len(), body))
        })
        .await??;
        if !body.contains("svg class=\"chart\"") {
            bail!("the {range} page has no chart");
        }
        if range == "year" {
            year_p50 = lat.stats().p50_us;
            r.check("the year chart shows the seeded peak", body.contains("data-stat=\"peak\">20<"), "peak 20 of 20");
        }
        r.latency(&format!("page_{range}"), &lat);
        r.extra(&format!("page_{range}_bytes"), size);
    }
    Ok(year_p50)
}

/// Seeds the history of `dir` (the broker down) with `days` of minutes of
/// the default org's KRE pool ending now, and 30 days of ended sessions
/// (~25 minutes each while the office is busy): (minute rows, sessions,
/// bytes of the minutes, bytes of everything).
pub(crate) fn seed(dir: &std::path::Path, days: u64) -> Result<(u64, u64, u64, u64)> {
    let now_minute = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64 / MINUTE;
    let first = now_minute - days * DAY_MINUTES;
    let h = History::open(dir, Retention::default())?;
    let mut rows = 0u64;
    for day in 0..days {
        let batch: Vec<_> = (first + day * DAY_MINUTES..first + (day + 1) * DAY_MINUTES).map(minute).collect();
        rows += batch.len() as u64;
        h.write_rows(batch, Vec::new())?;
    }
    let minutes_bytes = h.data_bytes()?;
    let mut sessions = 0u64;
    for day in days.saturating_sub(30)..days {
        let mut batch = Vec::new();
        for m in (first + day * DAY_MINUTES..first + (day + 1) * DAY_MINUTES).step_by(5) {
            for k in 0..level(m).min(QUOTA) / 5 {
                sessions += 1;
                batch.push(("default".to_string(), sessions, ended(m, k)));
            }
        }
        h.write_rows(Vec::new(), batch)?;
    }
    Ok((rows, sessions, minutes_bytes, h.data_bytes()?))
}

/// Minute `m`'s rollup of the seeded pool.
fn minute(m: u64) -> ((String, String, u64), Usage) {
    let want = level(m);
    let held = want.min(QUOTA);
    let refused = u64::from(want.saturating_sub(QUOTA));
    let u = Usage {
        peak: held,
        trough: held.saturating_sub(2),
        quota: QUOTA,
        seat_ms: u64::from(held) * MINUTE * 9 / 10,
        admitted: u64::from(held / 3),
        denied: vec![refused, 0, 0, 0, 0, 0, 0, 0],
        ends: [u64::from(held / 3), 0, 0, 0],
        queued: 0,
        ..Usage::default()
    };
    (("default".to_string(), PoolId::KRE_DEFAULT.to_string(), m), u)
}

/// The `k`th seeded session started in minute `m`: 25 minutes long.
fn ended(m: u64, k: u32) -> EndedRow {
    let start = m * MINUTE + u64::from(k) * 1_000;
    EndedRow {
        pool: PoolId::KRE_DEFAULT.to_string(),
        user: "owner@default".into(),
        machine: format!("ci-{k}"),
        start,
        end: start + 25 * MINUTE,
        reason: "released".into(),
        labels: vec![("pipeline".into(), "web".into())],
    }
}

/// How long one page may take before the harness gives up.
pub(crate) const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Signs in with `key`: the session cookie.
pub(crate) fn sign_in(web: &Web, key: &str) -> Result<String> {
    let body = format!("key={key}");
    let head = web
        .request(
            &format!(
                "POST /signin HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            PAGE_TIMEOUT,
        )?
        .0;
    let line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).context("no cookie set")?;
    Ok(line.split_once(':').context("a header")?.1.trim().split(';').next().unwrap_or_default().to_string())
}
