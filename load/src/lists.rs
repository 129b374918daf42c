//! `lists`: the CLI lists a million live sessions and a million audit
//! entries, page by page, in constant memory.
//!
//! The audit trail is written straight into the spawned broker's store
//! while it is down (a million audited changes through the API would take
//! a quarter of an hour of fsyncs); the sessions are real leases, held on
//! open connections. Then `license-broker session list` and `audit` run as
//! an operator would run them, their output counted line by line; the
//! report gives each one's time and the CLI's peak memory, and checks that
//! every session and every entry was printed exactly once.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use license_broker::client::Client;
use license_broker::core::{AuditAction, AuditEntry, Change, Email, Millis, Record};
use license_broker::proto::{Req, Resp};
use license_broker::store::{RedbStore, Store};
use license_broker::value::{Nonce, PoolId};

use crate::report::Report;
use crate::scenarios::Params;
use crate::target::{broker_binary, LoadOrg, Target};

/// Acquires sent together on one connection.
const BATCH: usize = 1024;
/// Audit records written per store transaction.
const AUDIT_BATCH: usize = 50_000;

pub async fn run(target: &mut Target, p: &Params) -> Result<Report> {
    let n = p.runners.max(1);
    let org = target.setup_orgs(1, n as u32).await?.remove(0);

    // The audit trail: written while the broker is down, then the broker
    // comes back on the same data dir.
    let written = Instant::now();
    target.crash()?;
    let store_path = target.data_dir().context("a spawned broker")?.join("broker.redb");
    write_audit(&store_path, &org, n)?;
    let write_s = written.elapsed().as_secs_f64();
    target.restart().await?;

    // Both forms print an entry per line (JSON between its opening and
    // closing lines, the table after its header).
    let audit = run_cli(target, &org, &["audit", "--org", org.org.as_str(), "--json"])?;
    let audit_table = run_cli(target, &org, &["audit", "--org", org.org.as_str()])?;

    // A million live leases, held on open connections.
    let acquired = Instant::now();
    let clients = acquire_all(target, &org, n, p.connections.max(1)).await?;
    let acquire_s = acquired.elapsed().as_secs_f64();
    let rss = target.rss_bytes();
    let sessions = run_cli(target, &org, &["session", "list", "--org", org.org.as_str()])?;
    for c in clients {
        c.close().await;
    }

    let runs = Runs { sessions, audit, audit_table };
    Ok(report(p, n, runs, (write_s, acquire_s, written.elapsed().as_secs_f64()), rss))
}

/// The three CLI runs: `session list`, `audit --json`, `audit` as a table.
struct Runs {
    sessions: CliRun,
    audit: CliRun,
    audit_table: CliRun,
}

/// The report; `times` are (the audit's write, the acquires, the whole run) in seconds.
fn report(
    p: &Params,
    n: usize,
    runs: Runs,
    (write_s, acquire_s, total_s): (f64, f64, f64),
    rss: Option<u64>,
) -> Report {
    let Runs { sessions, audit, audit_table } = runs;
    let audit_lines = audit_table.lines.saturating_sub(1);
    let session_rows = sessions.lines.saturating_sub(1);
    let mut r = Report::new("lists", "broker");
    r.duration_s = total_s;
    r.param("sessions", n);
    r.param("audit_entries_written", n);
    r.param("connections", p.connections);
    r.extra("audit_write_s", write_s);
    r.extra("acquire_s", acquire_s);
    if let Some(b) = rss {
        r.extra("broker_rss_with_sessions_mib", b / (1 << 20));
    }
    r.extra("session_list_s", sessions.seconds);
    r.extra("session_list_cli_peak_rss_mib", sessions.peak_rss_kib / 1024);
    r.extra("audit_table_s", audit_table.seconds);
    r.extra("audit_table_cli_peak_rss_mib", audit_table.peak_rss_kib / 1024);
    r.extra("audit_json_s", audit.seconds);
    r.extra("audit_json_cli_peak_rss_mib", audit.peak_rss_kib / 1024);
    r.check("session list ran", sessions.ok, sessions.stderr.clone());
    r.check("audit ran", audit.ok && audit_table.ok, format!("{}{}", audit.stderr, audit_table.stderr));
    r.check(
        "session list printed every live session once",
        session_rows == n && sessions.distinct_first_cells == n,
        format!("{session_rows} rows, {} distinct ids, {n} live", sessions.distinct_first_cells),
    );
    r.check(
        "audit printed every entry once, as a table and as JSON",
        audit_table.matching == n && audit.matching == n && audit_table.distinct_matching == n,
        format!(
            "table: {} of the {n} written entries ({} distinct) among {audit_lines} rows; JSON: {}",
            audit_table.matching, audit_table.distinct_matching, audit.matching
        ),
    );
    r
}

/// `n` audit entries for `org`, dated a year back, in batches.
fn write_audit(path: &std::path::Path, org: &LoadOrg, n: usize) -> Result<()> {
    let store = RedbStore::open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let actor = Email::parse_lenient("load@localhost").map_err(|e| anyhow::anyhow!("{e}"))?;
    let start =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64 - 365 * 86_400_000;
    let mut done = 0;
    while done < n {
        let batch: Vec<Change> = (done..(done + AUDIT_BATCH).min(n))
            .map(|i| {
                Change::Put(Record::Audit(AuditEntry {
                    org: org.org.clone(),
                    at: Millis(start + i as u64 * 10),
                    seq: i as u64,
                    actor: actor.clone(),
                    action: AuditAction::QuotaChanged,
                    detail: format!("load-entry={i}"),
                }))
            })
            .collect();
        done += batch.len();
        store.commit(&batch).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Takes `n` seats over `connections` connections, left open.
async fn acquire_all(target: &Target, org: &LoadOrg, n: usize, connections: usize) -> Result<Vec<Client>> {
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = Client::connect(&target.options(&org.key)).await?;
        let org = org.clone();
        let nonces: Vec<u128> = (c..n).step_by(connections).map(|i| i as u128).collect();
        tasks.push(tokio::spawn(async move {
            for chunk in nonces.chunks(BATCH) {
                let reqs = chunk
                    .iter()
                    .map(|&nonce| Req::Acquire {
                        org: org.org.clone(),
                        pool: PoolId::KRE_DEFAULT,
                        machine: org.machine.clone(),
                        nonce: Nonce(nonce),
                    })
                    .collect();
                for r in client.call_batch(reqs).await {
                    match r {
                        Ok(Resp::Leased { .. }) => {}
                        other => bail!("an acquire answered {other:?}"),
                    }
                }
            }
            Ok(client)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// What one CLI run printed and cost.
struct CliRun {
    ok: bool,
    stderr: String,
    lines: usize,
    /// Lines containing `load-entry=` (the entries this scenario wrote),
    /// and how many different entries they name.
    matching: usize,
    distinct_matching: usize,
    /// Distinct first cells of the rows after the header (session ids).
    distinct_first_cells: usize,
    seconds: f64,
    peak_rss_kib: u64,
}

/// Runs the CLI against the target as the org's Owner, reading its output
/// as it comes and sampling its peak memory (VmHWM) until it exits.
fn run_cli(target: &Target, org: &LoadOrg, args: &[&str]) -> Result<CliRun> {
    let started = Instant::now();
    let mut child = Command::new(broker_binary()?)
        .args(args)
        .env("LB_SERVER", &target.server)
        .env("LB_CA", &target.ca)
        .env("LB_API_KEY", &org.key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the CLI")?;
    let (peak, sampler) = sample_peak(child.id());
    let counted = count(child.stdout.take().context("CLI stdout")?)?;
    let output = child.wait_with_output()?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = sampler.join();
    Ok(CliRun {
        ok: output.status.success(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        lines: counted.lines,
        matching: counted.matching,
        distinct_matching: counted.entries.len(),
        distinct_first_cells: counted.firsts.len(),
        seconds,
        peak_rss_kib: peak.load(Ordering::Relaxed),
    })
}

/// Samples process `pid`'s peak memory (VmHWM, KiB) into the returned
/// counter until it is gone, for at most 10 minutes.
fn sample_peak(pid: u32) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            // Bounded: stops when the process is gone or after 10 minutes.
            let until = Instant::now() + Duration::from_secs(600);
            while Instant::now() < until {
                match std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    Ok(s) => {
                        let hwm = s
                            .lines()
                            .find(|l| l.starts_with("VmHWM:"))
                            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()));
                        if let Some(kib) = hwm {
                            peak.fetch_max(kib, Ordering::Relaxed);
                        }
                    }
                    Err(_) => return,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    (peak, sampler)
}

/// What the CLI printed, counted as it came.
struct Counted {
    lines: usize,
    /// Lines naming an entry this scenario wrote, and the entries named.
    matching: usize,
    entries: HashSet<String>,
    /// The first cells of the rows after the header.
    firsts: HashSet<String>,
}

/// Reads the CLI's output line by line to its end, counting.
fn count(stdout: std::process::ChildStdout) -> Result<Counted> {
    let (mut lines, mut matching) = (0usize, 0usize);
    let (mut firsts, mut entries) = (HashSet::new(), HashSet::new());
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if lines > 0 {
            if let Some(first) = line.split_whitespace().next() {
                firsts.insert(first.to_string());
            }
        }
        lines += 1;
        if let Some(at) = line.find("load-entry=") {
            matching += 1;
            let digits: String = line[at + 11..].chars().take_while(char::is_ascii_digit).collect();
            entries.insert(digits);
        }
    }
    Ok(Counted { lines, matching, entries, firsts })
}
