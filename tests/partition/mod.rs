//! The cluster under partitions, judged from the runners' side: each
//! node reaches etcd through a proxy the test cuts (`cut`), refusing or
//! silently swallowing, over a loop of cuts and heals of the node serving
//! the runners' org, while a fleet contends for its seats. Judged: never
//! more believers than the quota, no admitted runner lost, no refusal for
//! want of a seat while seats are free beyond one lease TTL and the grace
//! after the last move, every new runner served within its connect
//! timeout once a node that is not cut serves the org, and no seat held
//! beyond the runners' beliefs after a handover. It also measures
//! (printed, never asserted): cut → the org claimed elsewhere, and the
//! seats held beyond the runners' beliefs after each move (seat-seconds).

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cut::{Cut, Mode};
use super::process::fleet::{check_events, gather, reap, spawn_runner, Rng};
use super::support::http::Web;
use super::{claims, exclusive, logs, start_cluster, start_nodes_on, Node, BIN};

/// The pool's quota, and the runners kept alive at once (twice as many).
const QUOTA: i64 = 4;
const FLEET: usize = 8;
/// Each cut: how, how long, then how long healed. Long cuts outlast a
/// node's lease (the org moves); 1 s cuts do not (nothing should move).
/// The last heal outlasts the hold of the move back, so refusals are
/// judged there too.
const CUTS: [(Mode, u64, u64); 6] = [
    (Mode::Refuse, 5_000, 8_000),
    (Mode::Swallow, 5_000, 8_000),
    (Mode::Refuse, 1_000, 3_000),
    (Mode::Swallow, 5_000, 8_000),
    (Mode::Swallow, 1_000, 3_000),
    (Mode::Refuse, 5_000, 14_000),
];
/// The runners' lease TTL and the restart grace (`start_nodes_via`), and
/// the runners' connect timeout (the library's default).
const HOLD_AFTER_MOVE_MS: u64 = 6_000 + 500;
const CONNECT_MS: u64 = 5_000;
/// Room for what the judge cannot see exactly: a takeover's load after
/// its claim (polled every 50 ms), events printed after the broker decided.
const SLACK_MS: u64 = 1_000;
/// How long a new runner may still fail after a node that is not cut off
/// serves its org: the redirect it followed to the cut node given up on
/// (`HOP_PATIENCE`, 1 s) and a pause before asking again (at most 1 s).
const SERVED_MS: u64 = 2_000;

/// How late the timeline may see a move: it polls etcd every 50 ms, and
/// stamps a change once the claim read (and every fifth round a seat
/// reading) has returned, tens of ms on a loaded machine. A refusal just
/// before a move is seen came from the node that had taken the org over
/// and holds its seats for re-attaching runners: in that move, not after
/// the one before (a fresh clone's run met one 3 ms before the poll saw it).
const SEEN_LATE_MS: u64 = 250;

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `default`'s claim over time: (when seen, node, fence), a row per change.
type Timeline = Arc<Mutex<Vec<(u64, Option<String>, i64)>>>;

/// Seats in use in `default`'s pool as its serving node's `/metrics` said: (when, seats).
type InUse = Arc<Mutex<Vec<(u64, u64)>>>;

/// Polls `default`'s claim every 50 ms (straight from etcd, not through
/// a node's proxy), and every 250 ms the serving node's seats in use,
/// until `done`. `http`: each node's web door, by name.
fn watch(
    etcd: Vec<String>,
    http: HashMap<String, String>,
    ca: std::path::PathBuf,
    done: Arc<AtomicBool>,
) -> (Timeline, InUse, std::thread::JoinHandle<()>) {
    let (timeline, in_use): (Timeline, InUse) = Default::default();
    let (t, u) = (timeline.clone(), in_use.clone());
    let handle = std::thread::spawn(move || {
        for round in 0.. {
            if done.load(Ordering::Relaxed) {
                return;
            }
            let now = claims(&etcd).remove("default");
            let (node, fence) = now.map_or((None, 0), |(n, f)| (Some(n), f));
            let mut rows = t.lock().unwrap();
            if rows.last().is_none_or(|(_, n, f)| (n, *f) != (&node, fence)) {
                rows.push((unix_ms(), node.clone(), fence));
            }
            drop(rows);
            if let Some(addr) = node.and_then(|n| http.get(&n)).filter(|_| round % 5 == 0) {
                if let Some(seats) = seats_in_use(addr, &ca) {
                    u.lock().unwrap().push((unix_ms(), seats));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (timeline, in_use, handle)
}

/// `default`'s seats in use, as the node at `addr` says (`None` if its web
/// door is not there: it is between two terms; the tests' HTTP client
/// panics on a door closing under it, which is caught here and only
/// printed).
fn seats_in_use(addr: &str, ca: &std::path::Path) -> Option<u64> {
    std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(200)).ok()?;
    let web = Web::tls(addr, ca);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| web.get("/metrics", None))).ok()?;
    got.1.lines().find_map(|l| {
        let rest = l.strip_prefix("lbroker_seats_in_use{")?;
        rest.contains("org=\"default\"").then(|| rest.rsplit(' ').next()?.parse().ok())?
    })
}

/// A runner's command: the CLI against every node, with its connect timeout.
fn runner_cli(servers: &str, ca: &std::path::Path, key: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("LB_SERVER", servers).env("LB_CA", ca).env("LB_API_KEY", key).env("LB_MACHINE_ID", "ci-host-1");
    c.args(["--connect-timeout", &format!("{CONNECT_MS}ms")]);
    c
}

/// What the loop saw: each cut (node, from, to), and when each runner started.
struct Run {
    cuts: Vec<(String, u64, u64)>,
    starts: HashMap<usize, u64>,
    exits: HashMap<usize, Option<i32>>,
    spawned: usize,
}

#[test]
fn believers_never_exceed_the_quota_and_seats_and_new_runners_are_served_across_etcd_partitions() {
    let _one = exclusive();
    let etcd = start_cluster();
    let cuts: Vec<Cut> = (0..3).map(|_| Cut::start(&etcd.clients)).collect();
    let started = start_nodes_on(QUOTA, etcd, |i| cuts[i].urls.clone());
    let done = Arc::new(AtomicBool::new(false));
    let http = started.nodes.iter().map(|n| (n.name.clone(), n.http.clone())).collect();
    let (timeline, in_use, watcher) = watch(started.etcd.clients.clone(), http, started.ca.clone(), done.clone());
    let (events_tx, feed) = mpsc::channel();
    let run = drive(&started, &cuts, &timeline, &events_tx);
    drop(events_tx);
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let timeline = timeline.lock().unwrap().clone();
    eprintln!("default's claim: {timeline:?}\ncuts: {:?}", run.cuts);
    let events = gather(feed);
    let verdict = judge(&events, &run, &timeline);
    let moves = measure(&run, &timeline, &verdict.holders, &in_use.lock().unwrap());
    eprintln!("BENCH judged {} refusals past a move's hold; {} faults", verdict.refusals_judged, verdict.faults.len());
    check_events(&events, &run.exits, run.spawned, QUOTA, 1);
    assert!(verdict.faults.is_empty(), "{}\n{}", verdict.faults.join("\n"), logs(&started.nodes));
    // Enough happened to judge: the org moved at every long cut and back,
    // and refusals came with seats taken outside every move's hold.
    let failovers = moves.iter().skip(1).filter(|m| !m.handover).count();
    assert!(failovers >= 3, "the cuts moved the org only {failovers} times");
    assert!(verdict.refusals_judged >= 20, "too few refusals to judge: {}", verdict.refusals_judged);
    // A handover writes its ceilings down first: the next node holds no
    // seat beyond those its runners believe in.
    let handovers: Vec<f64> = moves.iter().filter(|m| m.handover).map(|m| m.unusable).collect();
    assert!(handovers.len() >= 2, "too few handovers to judge: {handovers:?}");
    assert!(handovers.iter().all(|u| *u <= 1.0), "seats held beyond beliefs after a handover: {handovers:?}");
}

/// Runs the fleet through every cut of the node serving `default`, then
/// lets every runner finish.
fn drive(started: &super::Started, cuts: &[Cut], timeline: &Timeline, tx: &mpsc::Sender<(usize, Value)>) -> Run {
    // LB_PARTITION_ROUNDS=N runs the schedule N times (a benchmark run;
    // the test command runs it once).
    let rounds: u64 = std::env::var("LB_PARTITION_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1).clamp(1, 20);
    let limit = Instant::now() + Duration::from_secs(150 * rounds);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut run = Run { cuts: Vec::new(), starts: HashMap::new(), exits: HashMap::new(), spawned: 0 };
    let mut fleet: Vec<(usize, Child)> = Vec::new();
    let mut run_for = |ms: u64, run: &mut Run, fleet: &mut Vec<(usize, Child)>| {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            reap(fleet, &mut run.exits);
            // One newcomer per step at most: a refused runner exits at
            // once, and two cores must not spend the run starting them.
            if fleet.len() < FLEET {
                let cmd = runner_cli(&started.servers, &started.ca, &started.owner_key);
                run.starts.insert(run.spawned, unix_ms());
                fleet.push((run.spawned, spawn_runner(cmd, run.spawned, 1_500 + rng.below(3_000), tx)));
                run.spawned += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Longer than a move's hold: the claim first seen counts as a move.
    run_for(9_000, &mut run, &mut fleet);
    for (mode, cut_ms, heal_ms) in (0..rounds).flat_map(|_| CUTS) {
        let serving = loop {
            if let Some((_, Some(n), _)) = timeline.lock().unwrap().last() {
                break n.clone();
            }
            assert!(Instant::now() < limit, "no node serves");
            std::thread::sleep(Duration::from_millis(50));
        };
        let i = started.nodes.iter().position(|n: &Node| n.name == serving).unwrap();
        let from = unix_ms();
        cuts[i].set(mode);
        run_for(cut_ms, &mut run, &mut fleet);
        cuts[i].set(Mode::Open);
        run.cuts.push((serving, from, unix_ms()));
        run_for(heal_ms, &mut run, &mut fleet);
        assert!(Instant::now() < limit, "the cut loop overran its time limit");
    }
    while !fleet.is_empty() {
        reap(&mut fleet, &mut run.exits);
        assert!(Instant::now() < limit, "runners still running at the time limit");
        std::thread::sleep(Duration::from_millis(100));
    }
    run
}

/// What the judge found: the faults, and who held a seat when (`holders`:
/// believers, and a runner whose release was not confirmed until its
/// lease runs out at the broker).
struct Verdict {
    faults: Vec<String>,
    holders: Vec<(u64, u64)>,
    /// Refusals for want of a seat judged (past a move's hold).
    refusals_judged: usize,
}

fn judge(events: &HashMap<usize, Vec<Value>>, run: &Run, timeline: &[(u64, Option<String>, i64)]) -> Verdict {
    let ms = |v: &Value, f: &str| v[f].as_u64().unwrap_or_else(|| panic!("{f} missing in {v}"));
    let mut holders = Vec::new();
    for evs in events.values() {
        let Some(start) = evs.iter().find(|v| v["event"] == "admitted") else { continue };
        let end = evs.iter().find_map(|v| match v["event"].as_str() {
            Some("released") => Some(ms(v, "believed_until_ms")),
            // Its seat stays at the broker until its lease runs out.
            Some("release_failed") => Some(ms(v, "believed_until_ms") + HOLD_AFTER_MOVE_MS),
            Some("ended" | "lost") => Some(ms(v, "at_ms")),
            _ => None,
        });
        holders.push((ms(start, "at_ms"), end.unwrap_or(u64::MAX)));
    }
    let most_held = |from: u64, to: u64| most_at_once(&holders, from, to);
    let moves: Vec<u64> = timeline.iter().filter(|(_, n, _)| n.is_some()).map(|(at, _, _)| *at).collect();
    let (mut faults, mut refusals_judged) = (Vec::new(), 0);
    for (i, evs) in events {
        for v in evs.iter().filter(|v| v["event"] == "rejected") {
            let at = ms(v, "at_ms");
            let last_move = moves.iter().filter(|m| **m <= at + SEEN_LATE_MS).max().copied().unwrap_or(0);
            let free = most_held(at.saturating_sub(500), at + 500) < QUOTA as usize;
            let judged = v["code"] == "QUOTA_EXCEEDED" && at > last_move + HOLD_AFTER_MOVE_MS + SLACK_MS;
            refusals_judged += usize::from(judged);
            if judged && free {
                faults.push(format!(
                    "runner {i} refused for want of a seat with seats free, {} ms after the last move: {v}",
                    at.saturating_sub(last_move)
                ));
            }
            // Once a node serves, a new runner reaches it within a hop's
            // patience and a pause: one that gave up though the org was
            // served for the last `SERVED_MS` of its try was failed.
            let since = run.starts[i].max(at.saturating_sub(SERVED_MS));
            if v["code"] != "QUOTA_EXCEEDED" && served_throughout(timeline, &run.cuts, since, at) {
                faults.push(format!(
                    "runner {i} (started at {}) was not served though the org was served from {since} on: {v}",
                    run.starts[i]
                ));
            }
        }
    }
    Verdict { faults, holders, refusals_judged }
}

/// Whether a node that is not cut off held `default`'s claim (for at least
/// `SLACK_MS`, its load) at every moment of `[from, to]`.
fn served_throughout(timeline: &[(u64, Option<String>, i64)], cuts: &[(String, u64, u64)], from: u64, to: u64) -> bool {
    let owner_at = |t: u64| {
        let row = timeline.iter().rev().find(|(at, _, _)| *at <= t)?;
        let node = row.1.clone()?;
        let cut = cuts.iter().any(|(n, a, b)| *n == node && *a <= t && t <= *b + SLACK_MS);
        (!cut && row.0 + SLACK_MS <= t).then_some(node)
    };
    (from..=to).step_by(50).all(|t| owner_at(t).is_some())
}

/// The most intervals of `held` (`[start, end)`) that overlap at any one
/// moment of `[from, to]`.
fn most_at_once(held: &[(u64, u64)], from: u64, to: u64) -> usize {
    let at = |t: u64| held.iter().filter(|(s, e)| *s <= t && t < *e).count();
    let starts = held.iter().map(|(s, _)| *s).filter(|s| (from..=to).contains(s));
    starts.chain([from]).map(at).max().unwrap_or(0)
}

/// What a move cost: seats counted in use beyond the runners' beliefs
/// until the next move (seat-seconds), and whether it was a handover (the
/// giving node was not cut off: it could write its ceilings down).
struct Move {
    unusable: f64,
    handover: bool,
}

/// Prints the benchmark: cut → the org claimed by another node, per long
/// cut; and after each move, the seats the serving node counted in use
/// beyond those its runners held (believers, and releases not confirmed
/// until their lease ran out; the most within half a second of each
/// reading), in seat-seconds, from its `/metrics` every 250 ms. Returns
/// each move's cost, for the handovers' to be judged.
fn measure(
    run: &Run,
    timeline: &[(u64, Option<String>, i64)],
    holders: &[(u64, u64)],
    in_use: &[(u64, u64)],
) -> Vec<Move> {
    let mut moved = Vec::new();
    for (node, from, to) in &run.cuts {
        // Moved by this cut: claimed elsewhere before the link healed (and
        // the lapse it started ran out).
        let next = timeline.iter().find(|(at, n, _)| *at >= *from && n.as_deref().is_some_and(|n| n != node));
        if let Some((at, _, _)) = next.filter(|(at, _, _)| *at < to + 3_000) {
            moved.push(at - from);
        }
    }
    moved.sort();
    let owners: Vec<(u64, &str)> = timeline.iter().filter_map(|(at, n, _)| Some((*at, n.as_deref()?))).collect();
    let mut moves: Vec<Move> = owners
        .iter()
        .enumerate()
        .map(|(i, (at, _))| {
            let giver = i.checked_sub(1).map(|p| owners[p].1);
            let cut = |n: &str| run.cuts.iter().any(|(c, a, b)| c == n && *a <= *at && *at <= b + 3_000);
            Move { unusable: 0.0, handover: giver.is_some_and(|g| !cut(g)) }
        })
        .collect();
    for w in in_use.windows(2) {
        let ((at, seats), (next, _)) = (w[0], w[1]);
        // The most that held a seat within half a second: a runner prints
        // `admitted` just after the broker counts its seat, and stops
        // believing just before its release reaches the broker.
        let believed = most_at_once(holders, at.saturating_sub(500), at + 500) as u64;
        if let Some(m) = owners.iter().rposition(|(t, _)| *t <= at) {
            moves[m].unusable += seats.saturating_sub(believed) as f64 * (next - at).min(1_000) as f64 / 1000.0;
        }
    }
    let show = |handover: bool| -> String {
        let of_kind: Vec<f64> = moves.iter().filter(|m| m.handover == handover).map(|m| m.unusable).collect();
        let each: Vec<String> = of_kind.iter().map(|u| format!("{u:.1}")).collect();
        format!("[{}] (total {:.1})", each.join(", "), of_kind.iter().sum::<f64>())
    };
    // Nearest rank.
    let pct = |q: f64| moved.get(((moved.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
    eprintln!(
        "BENCH cut -> claimed elsewhere: p50 {} ms, p99 {} ms (each cut that moved the org: {moved:?}); \
         seat-seconds in use beyond the runners' beliefs after each failover: {}, after each handover: {}",
        pct(0.5),
        pct(0.99),
        show(false),
        show(true)
    );
    moves
}
