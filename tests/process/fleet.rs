//! A fleet of runner processes and the runner-side judge of the quota
//! invariant: each runner prints when it starts and stops believing it
//! holds a seat; from those events the checker rebuilds who believed what
//! when. Shared by the crash-loop tests of one broker and of a cluster.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;

/// One runner's events as (process index, event).
pub type Feed = mpsc::Receiver<(usize, Value)>;

/// Starts a runner (`cmd`: the CLI with server, CA and key set) holding a
/// seat for `hold_ms`; its JSON events go to `tx` tagged with `index`.
pub fn spawn_runner(mut cmd: Command, index: usize, hold_ms: u64, tx: &mpsc::Sender<(usize, Value)>) -> Child {
    let mut child = cmd
        .args(["runner", "--org", "default", "--json", "--hold", &format!("{hold_ms}ms")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let tx = tx.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send((index, v));
            }
        }
    });
    child
}

/// A tiny deterministic generator, so a failure replays the same schedule.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Collects the exit codes of runners that have finished.
pub fn reap(fleet: &mut Vec<(usize, Child)>, exits: &mut HashMap<usize, Option<i32>>) {
    fleet.retain_mut(|(i, c)| match c.try_wait().unwrap() {
        Some(status) => {
            exits.insert(*i, status.code());
            false
        }
        None => true,
    });
}

/// Every runner's events, by runner, once the feed has ended.
pub fn gather(feed: Feed) -> HashMap<usize, Vec<Value>> {
    let mut events: HashMap<usize, Vec<Value>> = HashMap::new();
    for (i, v) in feed.iter() {
        events.entry(i).or_default().push(v);
    }
    events
}

/// Rebuilds belief intervals from the events and checks the invariant.
pub fn check(feed: Feed, exits: &HashMap<usize, Option<i32>>, spawned: usize, quota: i64, min_cut_off: usize) {
    check_events(&gather(feed), exits, spawned, quota, min_cut_off);
}

/// `check`, on events gathered already.
pub fn check_events(
    events: &HashMap<usize, Vec<Value>>,
    exits: &HashMap<usize, Option<i32>>,
    spawned: usize,
    quota: i64,
    min_cut_off: usize,
) {
    let ms = |v: &Value, field: &str| v[field].as_u64().unwrap_or_else(|| panic!("{field} missing in {v}"));
    let mut edges: Vec<(u64, i64)> = Vec::new();
    let (mut admitted, mut reattached, mut cut_off) = (0, 0, 0);
    let mut lost = Vec::new();
    for i in 0..spawned {
        let evs = events.get(&i).map(Vec::as_slice).unwrap_or(&[]);
        let names: Vec<&str> = evs.iter().map(|v| v["event"].as_str().unwrap()).collect();
        if names.contains(&"lost") || exits[&i] == Some(6) {
            lost.push(format!("runner {i}: {evs:?}"));
        }
        let Some(start) = evs.iter().find(|v| v["event"] == "admitted") else {
            // Refused (quota, or the broker was down as it started): never believed.
            assert!(matches!(exits[&i], Some(3) | Some(5) | Some(1)), "runner {i}: {:?} {evs:?}", exits[&i]);
            continue;
        };
        admitted += 1;
        if exits[&i] != Some(0) {
            eprintln!("runner {i} was admitted and exited {:?}: {evs:?}", exits[&i]);
        }
        if names.contains(&"reconnecting") {
            cut_off += 1;
            if !names.contains(&"reattached") && !names.contains(&"lost") {
                lost.push(format!("runner {i} was cut off and never re-attached: {evs:?}"));
            }
        }
        reattached += names.iter().filter(|n| **n == "reattached").count();
        let end = evs
            .iter()
            .find_map(|v| match v["event"].as_str() {
                Some("released" | "release_failed") => Some(ms(v, "believed_until_ms")),
                Some("ended" | "lost") => Some(ms(v, "at_ms")),
                _ => None,
            })
            .unwrap_or_else(|| panic!("runner {i} never said its belief ended: {evs:?}"));
        edges.push((ms(start, "at_ms"), 1));
        edges.push((end, -1));
    }
    // Ends sort before starts at the same millisecond: a seat given back and
    // taken in the same millisecond was not held twice.
    edges.sort();
    let (mut believers, mut peak) = (0, 0);
    for (at, delta) in &edges {
        believers += delta;
        peak = peak.max(believers);
        assert!(believers <= quota, "{believers} runners believed they held a seat at {at} ms (quota {quota})");
    }
    let mut codes: HashMap<Option<i32>, usize> = HashMap::new();
    for code in exits.values() {
        *codes.entry(*code).or_default() += 1;
    }
    let refusals: HashMap<String, usize> =
        events.values().flatten().filter(|v| v["event"] == "rejected").fold(HashMap::new(), |mut m, v| {
            *m.entry(v["code"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            m
        });
    eprintln!(
        "{spawned} runners, {admitted} admitted, {cut_off} cut off mid-lease, {reattached} re-attaches, \
         peak {peak} believers; exit codes {codes:?}; refusals {refusals:?}"
    );
    assert!(lost.is_empty(), "{} runners lost their lease:\n{}", lost.len(), lost.join("\n"));
    assert!(admitted >= 20, "too little traffic to judge: {admitted} admitted");
    assert!(cut_off >= min_cut_off, "too few runners were cut off by the crashes: {cut_off}");
}
