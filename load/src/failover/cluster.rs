//! The cluster `failover` drives: three etcd members and three broker
//! nodes, all spawned on loopback, and what etcd says about them (which
//! node holds which org, the revision), and the waits on it (served again,
//! taken over). Apart from the scenario so `failover.rs` reads as its
//! phases and keeps the numbers; nothing here reports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use license_broker::client::{Client, ClientOptions};
use license_broker::cluster::etcd::Etcd;
use license_broker::core::OrgName;

use super::SETTLE_WAIT;
use crate::target::{broker_binary, Target};

/// Where an org's claim is in etcd (under the broker's default prefix).
fn claim_key(org: &OrgName) -> Vec<u8> {
    format!("/license-broker/claims/{org}").into_bytes()
}

/// etcd's current revision (every write moves it).
pub(super) async fn revision(etcd: &Etcd) -> Option<i64> {
    etcd.range(b"/license-broker/nodes/", true).await.ok().map(|(_, rev)| rev)
}

/// Processes killed when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Three etcd members on loopback; their client URLs.
fn start_etcd(dir: &Path) -> Result<(Procs, Vec<String>)> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| Ok((port()?, port()?))).collect::<Result<_>>()?;
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
    let mut procs = Procs(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("m{i}")))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", "lb-load"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (install Debian's etcd-server)")?;
        procs.0.push(child);
    }
    Ok((procs, ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect()))
}

/// One broker node: its name, address, data dir and process.
struct Node {
    name: String,
    addr: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Node `i`: a free loopback address and a data dir under `dir`, not started.
    fn new(dir: &Path, i: usize) -> Result<Node> {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        Ok(Node {
            name: format!("n{i}"),
            addr: udp.local_addr()?.to_string(),
            dir: dir.join(format!("node{i}")),
            child: None,
        })
    }

    fn spawn(&mut self, etcd: &[String], ttl: Duration) -> Result<()> {
        let ttl = humantime::format_duration(ttl).to_string();
        let child = Command::new(broker_binary()?)
            .args(["serve", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen", &self.addr, "--advertise", &self.addr, "--node-name", &self.name])
            .args(["--cluster", &etcd.join(","), "--lease-ttl", &ttl, "--restart-grace", "2s", "--no-history"])
            .args(["--max-handshakes-per-address", "10000000", "--max-unauthenticated-per-address", "100000"])
            .args(["--max-connections", "100000", "--drain-grace", "0s"])
            .env("RUST_LOG", std::env::var("LB_NODE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("LB_NODE_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .context("starting a broker node")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The node serving `org`, by name, and etcd's revision.
pub(super) async fn owner(etcd: &Etcd, org: &OrgName) -> Option<(String, i64)> {
    let (kvs, rev) = etcd.range(&claim_key(org), false).await.ok()?;
    let value = String::from_utf8(kvs.first()?.value.clone()).ok()?;
    value.split_once('\n').map(|(name, _)| (name.to_string(), rev))
}

/// Waits until a client of `org` given every node gets an answer; how long that took.
pub(super) async fn until_served(
    opts: &ClientOptions,
    org: &OrgName,
    since: Instant,
    limit: Duration,
) -> Result<Duration> {
    loop {
        if let Ok(c) = Client::connect(opts).await {
            let ok = c.status(Some(org)).await.is_ok();
            c.close_nowait();
            if ok {
                return Ok(since.elapsed());
            }
        }
        if since.elapsed() > limit {
            bail!("no node served within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every org's claim: org → the node holding it.
pub(super) async fn claims(etcd: &Etcd) -> Result<std::collections::HashMap<String, String>> {
    let prefix = b"/license-broker/claims/";
    let (kvs, _) = etcd.range(prefix, true).await.map_err(anyhow::Error::msg)?;
    Ok(kvs
        .iter()
        .filter_map(|kv| {
            let org = String::from_utf8(kv.key[prefix.len()..].to_vec()).ok()?;
            let node = String::from_utf8(kv.value.clone()).ok()?.split_once('\n')?.0.to_string();
            Some((org, node))
        })
        .collect())
}

/// Waits until every one of `orgs` is claimed by a node other than `gone`; how long since `since`.
pub(super) async fn until_taken(etcd: &Etcd, orgs: &[String], gone: &str, since: Instant) -> Result<Duration> {
    loop {
        let now = claims(etcd).await?;
        if orgs.iter().all(|o| now.get(o).is_some_and(|n| n != gone)) {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(60) {
            bail!("the orgs of {gone} were not all taken over within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The cluster under test: three etcd members, three broker nodes, and a
/// target that knows every node's address.
pub(super) struct Cluster {
    /// Every node, for the clients (given all three addresses).
    pub(super) target: Target,
    /// Dropped (killed) before etcd.
    nodes: Vec<Node>,
    pub(super) etcd: Etcd,
    etcd_urls: Vec<String>,
    _etcd_procs: Procs,
}

impl Cluster {
    /// Starts etcd and three nodes under `dir`; returns once every node has
    /// joined and settled, so an org created next is created where it stays.
    pub(super) async fn start(dir: &Path, ttl: Duration) -> Result<Cluster> {
        let (etcd_procs, etcd_urls) = start_etcd(dir)?;
        let etcd = Etcd::new(&etcd_urls, Duration::from_secs(1)).map_err(anyhow::Error::msg)?;
        let mut nodes: Vec<Node> = (0..3).map(|i| Node::new(dir, i)).collect::<Result<_>>()?;
        for n in &mut nodes {
            n.spawn(&etcd_urls, ttl)?;
        }
        let operator = first_operator_key(&mut nodes)?;
        let servers = nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
        let ca = nodes[0].dir.join("tls/cert.pem");
        let target = Target::remote(servers, ca, operator.clone())?;
        let cluster = Cluster { target, nodes, etcd, etcd_urls, _etcd_procs: etcd_procs };
        cluster.until_joined(&operator).await?;
        tokio::time::sleep(SETTLE_WAIT).await;
        Ok(cluster)
    }

    /// Waits (at most 30 s) until every node has joined.
    async fn until_joined(&self, operator: &str) -> Result<()> {
        let op = self.target.client(operator).await?;
        let joined = Instant::now();
        while op.nodes().await?.len() < self.nodes.len() {
            if joined.elapsed() > Duration::from_secs(30) {
                bail!("the three nodes never all joined");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        op.close().await;
        Ok(())
    }

    /// Kills the node named `name` (SIGKILL).
    pub(super) fn kill(&mut self, name: &str) -> Result<()> {
        self.node(name)?.kill()
    }

    /// Starts the node named `name` again, on its data dir and address.
    pub(super) fn respawn(&mut self, name: &str, ttl: Duration) -> Result<()> {
        let urls = self.etcd_urls.clone();
        self.node(name)?.spawn(&urls, ttl)
    }

    fn node(&mut self, name: &str) -> Result<&mut Node> {
        self.nodes.iter_mut().find(|n| n.name == name).context("the owner is not one of ours")
    }
}

/// The first node to serve prints the first keys: the operator's comes first.
fn first_operator_key(nodes: &mut [Node]) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    for n in nodes {
        let out = n.child.as_mut().and_then(|c| c.stdout.take()).context("node stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    Ok(rx
        .recv_timeout(Duration::from_secs(60))
        .context("no node printed the first keys")?
        .strip_prefix("operator api key: ")
        .context("the operator key first")?
        .to_string())
}
