//! Three broker nodes on a three-member etcd, all on loopback, as users run
//! them (`license-broker serve --cluster ...` processes): orgs spread over
//! the nodes, and any node redirects a client to the node serving its org;
//! when a node is killed with SIGKILL its orgs (and only those) move to the
//! others, the acknowledged records are all there, and a runner that held a
//! seat re-attaches to the new node with its token; a node that comes back
//! takes its orgs back. Then the same judged from the runners' side over a
//! loop of kills and pauses of the node serving the runners' org (SIGSTOP:
//! the node that wakes up believing it still serves), and over a loop of
//! cuts of a node's link to etcd (`partition`). And the client's side of
//! a redirect to a node that does not answer, against stand-in nodes; and
//! an org's reports over the history of every node that served it
//! (`peer_history`); and a failover with webhook deliveries pending
//! (`cluster_webhooks`).

mod cluster_webhooks;
mod cut;
mod etcd_members;
mod partition;
mod peer_history;
mod process;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_members::start_cluster;
use license_broker::cluster::etcd::Etcd;
use process::{free_port, signal, BIN};
use support::http;

/// One cluster at a time: two of them (six etcd and broker processes,
/// plus runners) on two cores starve each other's timers.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A broker node process.
struct Node {
    child: Child,
    addr: String,
    /// Its ops endpoint (`--http`).
    http: String,
    name: String,
    /// Whether it keeps a utilization history (the others run `--no-history`).
    history: bool,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts the node again on its data dir and address (after a kill).
    fn respawn(&mut self, etcd: &[String], lines: &mpsc::Sender<String>) {
        let addrs = (self.addr.as_str(), self.http.as_str());
        self.child = spawn_process(&self.name, self._dir.path(), addrs, etcd, (lines, self.history));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts node `name` on `etcd`; its stdout lines go to `lines`.
fn spawn_node(name: &str, etcd: &[String], lines: &mpsc::Sender<String>) -> Node {
    spawn_node_with(name, etcd, lines, false)
}

/// As `spawn_node`, keeping a utilization history if `history`.
fn spawn_node_with(name: &str, etcd: &[String], lines: &mpsc::Sender<String>, history: bool) -> Node {
    // LB_KEEP_NODE_DIRS=1 keeps each node's data dir (and its node.log).
    let keep = std::env::var_os("LB_KEEP_NODE_DIRS").is_some();
    let dir = tempfile::Builder::new().prefix(&format!("lb-{name}-")).disable_cleanup(keep).tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let child = spawn_process(name, dir.path(), (&addr, &http), etcd, (lines, history));
    Node { child, addr, http, name: name.to_string(), history, _dir: dir }
}

fn spawn_process(
    name: &str,
    dir: &std::path::Path,
    (addr, http): (&str, &str),
    etcd: &[String],
    (lines, history): (&mpsc::Sender<String>, bool),
) -> Child {
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", addr, "--advertise", addr, "--node-name", name, "--http", http])
        .args(["--cluster", &etcd.join(",")])
        // A lease must outlast a failover (about 2.5 s) after its last
        // heartbeat (a third of a TTL before): 6 s does, with room.
        .args(["--lease-ttl", "6s", "--restart-grace", "500ms"])
        // Webhooks to the tests' receivers on loopback (`cluster_webhooks`).
        .args(["--webhook-allow-private"])
        .args(if history { &[][..] } else { &["--no-history"][..] })
        .stdout(Stdio::piped())
        // Each node's log, appended across restarts, for a failure's post-mortem.
        .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("node.log")).unwrap()))
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let tx = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    child
}

/// The keys the first serving node prints, if within `limit`.
fn keys(lines: &mpsc::Receiver<String>, limit: Duration) -> Option<(String, String)> {
    let deadline = Instant::now() + limit;
    let next = || lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok();
    let operator = next()?.strip_prefix("operator api key: ").expect("operator key first").to_string();
    let owner = next()?.strip_prefix("owner api key: ").expect("then the owner key").to_string();
    Some((operator, owner))
}

/// Every node's log so far, for a failure's message.
fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(n._dir.path().join("node.log")).unwrap_or_default();
            format!(
                "--- {}:\n{}",
                n.name,
                log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A client command against `servers` (comma-separated).
fn cli(servers: &str, ca: &std::path::Path, key: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("LB_SERVER", servers).env("LB_CA", ca).env("LB_API_KEY", key).env("LB_MACHINE_ID", "ci-host-1");
    c.args(["--connect-timeout", "1s"]);
    c
}

/// Every org's claim as etcd holds it: org → (node, the claim's revision).
fn claims(etcd: &[String]) -> std::collections::BTreeMap<String, (String, i64)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let Ok(client) = Etcd::new(etcd, Duration::from_secs(1)) else { return Default::default() };
        let prefix = b"/license-broker/claims/";
        let Ok((kvs, _)) = client.range(prefix, true).await else { return Default::default() };
        kvs.iter()
            .filter_map(|kv| {
                let org = String::from_utf8(kv.key[prefix.len()..].to_vec()).ok()?;
                let value = String::from_utf8(kv.value.clone()).ok()?;
                let node = value.split_once('\n')?.0.to_string();
                Some((org, (node, kv.create_revision)))
            })
            .collect()
    })
}

/// The node serving `org`, by name, as etcd says.
fn owner(etcd: &[String], org: &str) -> Option<String> {
    claims(etcd).remove(org).map(|(node, _)| node)
}

/// Waits for the runner to say it re-attached (it must not lose its lease meanwhile).
fn reattached(events: &process::Events) {
    let mut seen = Vec::new();
    loop {
        let e = events.next_within(Duration::from_secs(20)).unwrap_or_else(|| panic!("runner went quiet: {seen:?}"));
        if e["event"] == "reattached" {
            return;
        }
        assert!(e["event"] != "lost" && e["event"] != "ended", "{e} after {seen:?}");
        seen.push(e);
    }
}

fn status_json(servers: &str, ca: &std::path::Path, key: &str) -> Option<serde_json::Value> {
    let out = cli(servers, ca, key).args(["status", "--json"]).output().unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// A cluster on loopback: three etcd members and three broker nodes, the
/// default org's KRE quota set.
struct Started {
    etcd: etcd_members::Cluster,
    nodes: Vec<Node>,
    /// The nodes' stdout lines (a respawned node writes here too).
    lines: mpsc::Sender<String>,
    operator: String,
    owner_key: String,
    /// Every node's address, comma-separated.
    servers: String,
    ca: std::path::PathBuf,
}

fn start_nodes(quota: i64) -> Started {
    let etcd = start_cluster();
    let clients = etcd.clients.clone();
    start_nodes_on(quota, etcd, |_| clients.clone())
}

/// As `start_nodes`, on `etcd`, node `i` reaching it at `urls(i)` (a
/// proxy the test may cut).
fn start_nodes_on(quota: i64, etcd: etcd_members::Cluster, urls: impl Fn(usize) -> Vec<String>) -> Started {
    let (tx, lines) = mpsc::channel();
    let nodes: Vec<Node> = (0..3).map(|i| spawn_node(&format!("n{i}"), &urls(i), &tx)).collect();
    // etcd elects a leader, a node claims the empty cluster and prints its first keys.
    let (operator, owner_key) =
        keys(&lines, Duration::from_secs(60)).unwrap_or_else(|| panic!("no keys printed\n{}", logs(&nodes)));
    let servers = nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    // Every node holds the cluster's certificate once it has joined.
    let ca = nodes[0]._dir.path().join("tls/cert.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cli(&servers, &ca, &operator)
        .args(["pool", "set", "--org", "default", "--quota", &quota.to_string()])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the cluster never took a write\n{}", logs(&nodes));
        std::thread::sleep(Duration::from_millis(200));
    }
    Started { etcd, nodes, lines: tx, operator, owner_key, servers, ca }
}

/// Orgs the first test creates besides `default`: enough that every node
/// serves some (rendezvous over n0, n1, n2 gives each of them several).
const ORGS: usize = 11;

/// Waits until etcd's claims satisfy `ok`, and returns them.
fn claims_until(
    etcd: &[String],
    what: &str,
    ok: impl Fn(&std::collections::BTreeMap<String, (String, i64)>) -> bool,
) -> std::collections::BTreeMap<String, (String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = claims(etcd);
        if ok(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "claims never {what}: {c:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn orgs_spread_over_the_nodes_any_node_redirects_and_a_kill_9_moves_only_its_orgs() {
    let _one = exclusive();
    let Started { etcd, mut nodes, lines, operator, owner_key, servers, ca } = start_nodes(2);
    for i in 0..ORGS {
        let out = cli(&servers, &ca, &operator)
            .args(["org", "create", &format!("team-{i}"), "--subscription-end", "2099-12-31"])
            .output()
            .unwrap();
        assert!(out.status.success(), "org create: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Orgs move to the node rendezvous hashing prefers once it has settled:
    // every org is claimed, and every node serves some.
    let spread = claims_until(&etcd.clients, "spread over the three nodes", |c| {
        c.len() == ORGS + 1 && nodes.iter().all(|n| c.values().any(|(node, _)| node == &n.name))
    });
    // Placement settles (no more moves for two seconds).
    let mut settled = spread;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = claims(&etcd.clients);
        if now == settled {
            break;
        }
        settled = now;
    }
    let serving = settled["default"].0.clone();
    eprintln!("placement: {:?}", settled.iter().map(|(o, (n, _))| format!("{o}@{n}")).collect::<Vec<_>>());

    // Every node answers for `default`, those that do not serve it by redirecting.
    for n in &nodes {
        let v =
            status_json(&n.addr, &ca, &owner_key).unwrap_or_else(|| panic!("{} did not answer or redirect", n.name));
        assert_eq!(v["pools"][0]["quota"], 2, "{} (default served by {serving})", n.name);
    }

    // `nodes` names each node's orgs as etcd's claims do; `status` sums them up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli(&servers, &ca, &owner_key).args(["nodes", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let list = v["nodes"].as_array().unwrap();
        let listed = |name: &str| -> Vec<String> {
            let n = list.iter().find(|n| n["name"] == name);
            n.map(|n| n["orgs"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let claimed = |name: &str| -> Vec<String> {
            settled.iter().filter(|(_, (n, _))| n == name).map(|(o, _)| o.clone()).collect()
        };
        if list.len() == 3 && nodes.iter().all(|n| listed(&n.name) == claimed(&n.name)) {
            break;
        }
        assert!(Instant::now() < deadline, "nodes never listed what etcd's claims say ({settled:?}): {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cli(&servers, &ca, &owner_key).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cluster of 3 nodes: n0 ("), "{text}");
    // Every node's ops endpoint answers: healthy, serving, and how many orgs.
    let metric = |n: &Node, name: &str| {
        let (code, body) = http::Web::tls(&n.http, &ca).get("/metrics", None);
        assert_eq!(code, 200, "{}: {body}", n.name);
        body.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map(str::to_string)
    };
    for n in &nodes {
        assert_eq!(http::Web::tls(&n.http, &ca).get("/healthz", None).0, 200, "{}", n.name);
        assert_eq!(metric(n, "lbroker_cluster_serving").as_deref(), Some("1"), "{}", n.name);
        let mine = settled.values().filter(|(node, _)| node == &n.name).count();
        assert_eq!(metric(n, "lbroker_cluster_orgs"), Some(mine.to_string()), "{}", n.name);
        assert_eq!(metric(n, "lbroker_cluster_orgs_known"), Some((ORGS + 1).to_string()), "{}", n.name);
    }

    // The reports API: a node answers for the orgs it serves (here: no
    // history kept, so 404 once the caller and the org are accepted); the
    // others name the node that serves `default`, to its members (whose key
    // they do not hold) and to the operator (whose key every node takes in).
    let default_at = nodes.iter().find(|n| n.name == serving).unwrap().addr.clone();
    let default_http = nodes.iter().find(|n| n.name == serving).unwrap().http.clone();
    for n in &nodes {
        let get = |key: &str| http::Web::tls(&n.http, &ca).get("/api/v1/usage?org=default", Some(key));
        let (member, operator_view) = (get(&owner_key), get(&operator));
        if n.name == serving {
            assert_eq!((member.0, operator_view.0), (404, 404), "{}: {member:?} {operator_view:?}", n.name);
        } else {
            assert_eq!((member.0, operator_view.0), (401, 421), "{}: {member:?} {operator_view:?}", n.name);
            assert!(
                member.1.contains(&default_at) && operator_view.1.contains(&default_at),
                "{member:?} {operator_view:?}"
            );
            // A person signing in here is sent to the console of the node
            // that serves their org.
            let form = format!("key={owner_key}");
            let (code, head, _) = http::Web::tls(&n.http, &ca)
                .request("POST /signin HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded", &form);
            let location = head.lines().find_map(|l| l.strip_prefix("location: ")).unwrap_or_default();
            assert_eq!((code, location), (303, format!("https://{default_http}/").as_str()), "{}: {head}", n.name);
        }
    }

    // The operator's commands about one org go to its node; the operator's
    // `status` gathers every node's orgs, whichever node it asks first.
    let (elsewhere, _) = settled.iter().find(|(_, (node, _))| node != &serving).unwrap();
    let out =
        cli(&nodes[0].addr, &ca, &operator).args(["pool", "set", "--org", elsewhere, "--quota", "1"]).output().unwrap();
    assert!(out.status.success(), "pool set --org {elsewhere}: {}", String::from_utf8_lossy(&out.stderr));
    for n in &nodes {
        let v = status_json(&n.addr, &ca, &operator).unwrap_or_else(|| panic!("{}: operator status", n.name));
        let orgs: Vec<&str> = v["pools"].as_array().unwrap().iter().map(|p| p["org"].as_str().unwrap()).collect();
        assert_eq!(orgs, ["default", elsewhere.as_str()], "asked {}: {v}", n.name);
    }

    // A runner takes a seat and holds it across the failover.
    let mut runner = cli(&servers, &ca, &owner_key)
        .args(["runner", "--org", "default", "--json", "--hold", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let events = process::Events::of(&mut runner);
    let admitted = events.next_within(Duration::from_secs(10)).expect("the runner says something");
    assert_eq!(admitted["event"], "admitted", "{admitted}");

    // Kill -9 the node serving `default`: its orgs move to the others
    // within seconds; the others' orgs stay where they were.
    let victim = nodes.iter().position(|n| n.name == serving).unwrap();
    let killed_at = Instant::now();
    nodes[victim].child.kill().unwrap();
    nodes[victim].child.wait().unwrap();
    let moved = claims_until(&etcd.clients, "left the killed node", |c| {
        c.len() == ORGS + 1 && c.values().all(|(node, _)| node != &serving)
    });
    let taken = killed_at.elapsed();
    for (org, (node, fence)) in &settled {
        if node != &serving {
            assert_eq!(moved.get(org), Some(&(node.clone(), *fence)), "{org} moved though its node stayed");
        }
    }
    let new_owner = moved["default"].0.clone();
    let survivors: String =
        nodes.iter().filter(|n| n.name != serving).map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        if let Some(v) = status_json(&survivors, &ca, &owner_key) {
            break v;
        }
        assert!(Instant::now() < deadline, "the new owner never answered");
    };
    eprintln!("failover: {new_owner} serves default {taken:?} after the kill of {serving}");
    // What was acknowledged before the kill is there.
    assert_eq!(v["pools"][0]["quota"], 2);

    // The runner re-attaches to the new owner with its token.
    reattached(&events);
    // Seats nobody re-attached to stay held for one lease TTL and the grace
    // (6.5 s here), then only the runner's remains.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let in_use = status_json(&survivors, &ca, &owner_key).unwrap()["pools"][0]["in_use"].as_u64().unwrap();
        assert!(in_use <= 2, "{in_use} seats in use, quota 2");
        if in_use == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the held seats never came back: {in_use} in use");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The killed node comes back: once settled, the orgs that prefer it are
    // handed back to it, and only those.
    nodes[victim].respawn(&etcd.clients, &lines);
    let back = claims_until(&etcd.clients, "went back to the restarted node", |c| {
        c.len() == ORGS + 1 && c.iter().all(|(org, (node, _))| &settled[org].0 == node)
    });
    eprintln!("rejoin: {serving} serves its {} orgs again", back.values().filter(|(n, _)| n == &serving).count());
    if new_owner != serving && back["default"].0 == serving {
        // `default` moved back too: the runner follows it.
        reattached(&events);
    }

    // SIGTERM of the node serving `default`: it drains, exits cleanly, and
    // its claims are gone by the time it has exited (handed over, not left
    // to lapse); the runner re-attaches to whichever node serves next.
    let leaving_name = back["default"].0.clone();
    let leaving = nodes.iter().position(|n| n.name == leaving_name).unwrap();
    signal(&nodes[leaving].child, "-TERM");
    let status = nodes[leaving].child.wait().unwrap();
    assert!(status.success(), "{leaving_name} exited with {status}");
    let after = claims(&etcd.clients);
    assert!(after.values().all(|(n, _)| n != &leaving_name), "the claims left with the node: {after:?}");
    reattached(&events);
    signal(&runner, "-INT");
    let _ = runner.wait();
}

const QUOTA: i64 = 3;
/// Runners kept alive at once: more than the quota, so seats are contested.
const FLEET: usize = 5;
/// Faults of the node serving the runners' org: kill -9 (then started
/// again: it takes the org back once settled, a handover under the fleet),
/// and every third a SIGSTOP of 4 s (longer than its lease lasts) then SIGCONT.
const FAULTS: usize = 6;

#[test]
fn believers_never_exceed_the_quota_across_owner_kills_and_pauses() {
    let _one = exclusive();
    use process::fleet::{check, reap, spawn_runner, Rng};
    let Started { etcd, mut nodes, lines: tx, owner_key, servers, ca, .. } = start_nodes(QUOTA);
    let limit = Instant::now() + Duration::from_secs(240);

    let (events_tx, feed) = mpsc::channel();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut fleet: Vec<(usize, Child)> = Vec::new();
    let mut exits = std::collections::HashMap::new();
    let mut spawned = 0;
    // Durable writes the cluster acknowledged (a member added per step).
    let mut acknowledged = Vec::new();
    let mut step = 0;
    let mut run_for = |d: Duration, fleet: &mut Vec<(usize, Child)>, exits: &mut _, rng: &mut Rng| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            reap(fleet, exits);
            if fleet.len() < FLEET {
                let hold = 1_500 + rng.below(3_000);
                let cmd = cli(&servers, &ca, &owner_key);
                fleet.push((spawned, spawn_runner(cmd, spawned, hold, &events_tx)));
                spawned += 1;
            }
            step += 1;
            let email = format!("member{step}@default");
            if cli(&servers, &ca, &owner_key)
                .args(["user", "add", "--org", "default", &email])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success()
            {
                acknowledged.push(email);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for fault in 0..FAULTS {
        // Longer than the hold after a takeover (one TTL and the grace), so
        // newcomers get seats between faults.
        run_for(Duration::from_millis(8_000 + rng.below(2_000)), &mut fleet, &mut exits, &mut rng);
        // Fault whichever node serves the runners' org now (waiting out a
        // failover still under way).
        let serving = loop {
            if let Some(o) = owner(&etcd.clients, "default") {
                break o;
            }
            assert!(Instant::now() < limit, "no node serves");
            std::thread::sleep(Duration::from_millis(50));
        };
        let victim = nodes.iter_mut().find(|n| n.name == serving).unwrap();
        if fault % 3 == 2 {
            signal(&victim.child, "-STOP");
            run_for(Duration::from_secs(4), &mut fleet, &mut exits, &mut rng);
            signal(&victim.child, "-CONT");
        } else {
            victim.child.kill().unwrap();
            victim.child.wait().unwrap();
            victim.respawn(&etcd.clients, &tx);
        }
        assert!(Instant::now() < limit, "the fault loop overran its time limit");
    }
    // No more newcomers: every runner finishes its hold and leaves.
    while !fleet.is_empty() {
        reap(&mut fleet, &mut exits);
        assert!(Instant::now() < limit, "runners still running at the time limit");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(events_tx);
    check(feed, &exits, spawned, QUOTA, FAULTS / 2);

    // No acknowledged durable write was lost.
    let out = cli(&servers, &ca, &owner_key).args(["user", "list", "--org", "default", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&String> = acknowledged.iter().filter(|e| !listed.contains(e.as_str())).collect();
    eprintln!("{} member additions acknowledged during the faults", acknowledged.len());
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(acknowledged.len() >= 20, "too few writes to judge: {}", acknowledged.len());
}

/// A stand-in node for the client's redirect logic: answers each `Hello`
/// with the next of `answers` (a redirect to `HOST:PORT`, or `None` for a
/// welcome), the last one again once they run out. Returns its address and
/// how many `Hello`s it answered.
fn scripted_node(
    rt: &tokio::runtime::Runtime,
    tls: &license_broker::tls::TlsFiles,
    answers: Vec<Option<String>>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use license_broker::proto::{encode, ClientFrame, FrameBuf, ServerFrame, Welcome};
    let config =
        license_broker::tls::server_config(tls, Duration::from_secs(10), license_broker::tls::Limits::STRANGER, None)
            .unwrap();
    let _guard = rt.enter();
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap().to_string();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    rt.spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            let Ok((mut send, mut recv)) = conn.accept_bi().await else { continue };
            let mut frames = FrameBuf::new();
            let mut chunk = vec![0u8; 4096];
            while !matches!(frames.next_message::<ClientFrame>(), Ok(Some(ClientFrame::Hello(_)))) {
                let Ok(Some(n)) = recv.read(&mut chunk).await else { break };
                frames.extend(&chunk[..n]);
            }
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let frame = match answers[n.min(answers.len() - 1)].clone() {
                Some(server) => ServerFrame::Redirect { server },
                None => ServerFrame::Welcome(Welcome {
                    version: license_broker::proto::VERSION,
                    lease_ttl_ms: 30_000,
                    org: None,
                    email: "operator@stand-in".into(),
                    role: license_broker::value::Role::Operator,
                }),
            };
            let mut out = Vec::new();
            encode(&frame, &mut out);
            let _ = send.write_all(&out).await;
            let _ = send.finish();
            // Keep the connection open for the client's while it lives.
            tokio::spawn(async move { conn.closed().await });
        }
    });
    (addr, asked)
}

#[test]
fn a_client_sent_to_a_node_that_does_not_answer_asks_the_first_node_again() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = license_broker::tls::TlsFiles::in_data_dir(dir.path());
    license_broker::tls::ensure_self_signed(&tls).unwrap();
    // A node cut off: its address takes packets and answers none.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cut_off = silent.local_addr().unwrap().to_string();
    let (serving, welcomed) = scripted_node(&rt, &tls, vec![None]);
    // The first node still believes the cut-off one serves, then learns better.
    let (first, asked) = scripted_node(&rt, &tls, vec![Some(cut_off), Some(serving)]);
    let options = license_broker::client::ClientOptions::new(first, Some(tls.cert.clone()), "lb_any");
    let client = rt.block_on(license_broker::client::Client::connect(&options));
    let client = client.unwrap_or_else(|e| panic!("not served: {e}"));
    assert_eq!(client.welcome().email, "operator@stand-in");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2, "asked the first node again");
    assert_eq!(welcomed.load(std::sync::atomic::Ordering::SeqCst), 1);
    rt.block_on(client.close());
}
