//! Three broker nodes on a three-member etcd, all on loopback, as users run
//! them (`license-broker serve --cluster ...` processes): one node serves,
//! the others redirect to it; when the serving node is killed with SIGKILL
//! another takes over, the acknowledged records are all there, and a
//! runner that held a seat re-attaches to the new node with its token.

mod etcd_members;
mod process;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_members::start_cluster;
use license_broker::cluster::etcd::Etcd;
use process::{free_port, signal, BIN};

/// A broker node process.
struct Node {
    child: Child,
    addr: String,
    name: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts node `name` on `etcd`; its stdout lines go to `lines`.
fn spawn_node(name: &str, etcd: &[String], lines: &mpsc::Sender<String>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &addr, "--advertise", &addr, "--node-name", name])
        .args(["--cluster", &etcd.join(",")])
        // A lease must outlast a failover (about 2.5 s) after its last
        // heartbeat (a third of a TTL before): 6 s does, with room.
        .args(["--lease-ttl", "6s", "--restart-grace", "1s", "--no-history"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let tx = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Node { child, addr, name: name.to_string(), _dir: dir }
}

/// The keys the first serving node prints.
fn keys(lines: &mpsc::Receiver<String>, limit: Duration) -> (String, String) {
    let deadline = Instant::now() + limit;
    let next = || lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("no keys printed");
    let operator = next().strip_prefix("operator api key: ").expect("operator key first").to_string();
    let owner = next().strip_prefix("owner api key: ").expect("then the owner key").to_string();
    (operator, owner)
}

/// A client command against `servers` (comma-separated).
fn cli(servers: &str, ca: &std::path::Path, key: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("LB_SERVER", servers).env("LB_CA", ca).env("LB_API_KEY", key).env("LB_MACHINE_ID", "ci-host-1");
    c.args(["--connect-timeout", "1s"]);
    c
}

/// The node holding the claim, by name, as etcd says.
fn owner(etcd: &[String]) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = Etcd::new(etcd, Duration::from_secs(1)).ok()?;
        let (kvs, _) = client.range(b"/license-broker/owner", false).await.ok()?;
        let value = String::from_utf8(kvs.first()?.value.clone()).ok()?;
        value.split_once('\n').map(|(name, _)| name.to_string())
    })
}

fn status_json(servers: &str, ca: &std::path::Path, key: &str) -> Option<serde_json::Value> {
    let out = cli(servers, ca, key).args(["status", "--json"]).output().unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn one_node_serves_the_others_redirect_and_a_kill_9_fails_over() {
    let etcd = start_cluster();
    let (tx, lines) = mpsc::channel();
    let mut nodes: Vec<Node> = (0..3).map(|i| spawn_node(&format!("n{i}"), &etcd.clients, &tx)).collect();
    // etcd elects a leader, a node claims the empty cluster and prints its first keys.
    let (operator, owner_key) = keys(&lines, Duration::from_secs(30));
    let servers = nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    // Every node holds the cluster's certificate once it has joined.
    let ca = nodes[0]._dir.path().join("tls/cert.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cli(&servers, &ca, &operator)
        .args(["pool", "set", "--org", "default", "--quota", "2"])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the cluster never took a write");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every node answers, the standbys by redirecting to the owner.
    let serving = owner(&etcd.clients).expect("a node holds the claim");
    for n in &nodes {
        let v =
            status_json(&n.addr, &ca, &owner_key).unwrap_or_else(|| panic!("{} did not answer or redirect", n.name));
        assert_eq!(v["pools"][0]["quota"], 2, "{} (owner {serving})", n.name);
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

    // Kill -9 the owner; another node takes over within seconds.
    let victim = nodes.iter().position(|n| n.name == serving).unwrap();
    let killed_at = Instant::now();
    nodes[victim].child.kill().unwrap();
    nodes[victim].child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_owner = loop {
        match owner(&etcd.clients) {
            Some(o) if o != serving => break o,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no node took over");
        std::thread::sleep(Duration::from_millis(20));
    };
    let survivors: String =
        nodes.iter().filter(|n| n.name != serving).map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    let v = loop {
        if let Some(v) = status_json(&survivors, &ca, &owner_key) {
            break v;
        }
        assert!(Instant::now() < deadline, "the new owner never answered");
    };
    eprintln!("failover: {new_owner} serves {:?} after the kill of {serving}", killed_at.elapsed());
    // What was acknowledged before the kill is there.
    assert_eq!(v["pools"][0]["quota"], 2);

    // The runner re-attaches to the new owner with its token.
    let mut seen = Vec::new();
    loop {
        let e = events.next_within(Duration::from_secs(20)).unwrap_or_else(|| panic!("runner went quiet: {seen:?}"));
        if e["event"] == "reattached" {
            break;
        }
        assert!(e["event"] != "lost" && e["event"] != "ended", "{e} after {seen:?}");
        seen.push(e);
    }
    // Seats nobody re-attached to stay held for one lease TTL and the grace
    // (7 s here), then only the runner's remains.
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
    signal(&runner, "-INT");
    let _ = runner.wait();
}
