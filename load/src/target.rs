//! The broker under test: one spawned from the built binary with a
//! temporary data dir, or one already running on loopback.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use license_broker::client::{Client, ClientOptions};
use license_broker::proto::PoolStatus;
use license_broker::value::{MachineId, OrgName, PoolId};

/// A broker to drive.
pub struct Target {
    /// `HOST:PORT`, always on loopback.
    pub server: String,
    /// The certificate to trust.
    pub ca: PathBuf,
    /// The operator's key (creates the orgs the scenario uses).
    pub operator: String,
    /// The `default` org's Owner key (a spawned broker's).
    pub owner: Option<String>,
    /// Where a spawned broker serves `/metrics`, if asked to.
    pub http: Option<std::net::SocketAddr>,
    child: Option<Child>,
    /// How the spawned broker was started (binary, arguments), to start it
    /// again on the same data dir and address (`restart`).
    command: Option<(PathBuf, Vec<std::ffi::OsString>)>,
    _dir: Option<tempfile::TempDir>,
}

/// One org set up for a scenario: its owner key and a registered machine.
#[derive(Clone, Debug)]
pub struct LoadOrg {
    pub org: OrgName,
    pub key: String,
    pub machine: MachineId,
}

/// The `license-broker` binary: `LB_BROKER_BIN`, or next to this one.
pub fn broker_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("LB_BROKER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    let path = me.with_file_name("license-broker");
    if !path.exists() {
        bail!(
            "{} not found: build the whole workspace first (cargo build --release --workspace) or set LB_BROKER_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// Refuses anything but loopback: load goes nowhere else.
pub fn require_loopback(server: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = server.to_socket_addrs().with_context(|| format!("resolving {server}"))?.collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("{server} is not a loopback address; the load harness only sends traffic to 127.0.0.0/8 or ::1");
    }
    Ok(())
}

impl Target {
    /// Starts a broker on a free loopback port with a fresh data dir.
    pub fn spawn(lease_ttl: Duration, workers: Option<usize>) -> Result<Target> {
        Target::spawn_with(lease_ttl, workers, true, false)
    }

    /// As `spawn`; `lift` false keeps the broker's per-address limits on
    /// their defaults (`abuse` measures them; every other scenario comes
    /// from one address and would only measure the limits).
    /// `http`: also serve `/metrics` on a free loopback port.
    pub fn spawn_with(lease_ttl: Duration, workers: Option<usize>, lift: bool, http: bool) -> Result<Target> {
        Target::spawn_from(&broker_binary()?, lease_ttl, workers, lift, http, &[])
    }

    /// As `spawn`, with `extra` arguments to `serve` (`webhooks`:
    /// `--webhook-allow-private`, for receivers on loopback).
    pub fn spawn_extra(lease_ttl: Duration, workers: Option<usize>, extra: &[&str]) -> Result<Target> {
        Target::spawn_from(&broker_binary()?, lease_ttl, workers, true, false, extra)
    }

    /// As `spawn_with`, from the broker binary `bin` (`compare --baseline`
    /// runs an older one beside this build's).
    pub fn spawn_from(
        bin: &Path,
        lease_ttl: Duration,
        workers: Option<usize>,
        lift: bool,
        http: bool,
        extra: &[&str],
    ) -> Result<Target> {
        let dir = tempfile::tempdir()?;
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let server = format!("127.0.0.1:{port}");
        let http = match http {
            true => Some(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?),
            false => None,
        };
        let mut args = serve_args(&server, dir.path(), lease_ttl, workers, http);
        args.extend(lifted(lift, http.is_some()).into_iter().chain(extra.iter().copied()).map(OsString::from));
        let mut child = start(bin, &args)?;
        let (operator, owner) = read_keys(&mut child)?;
        Ok(Target {
            ca: dir.path().join("tls/cert.pem"),
            server,
            operator,
            owner,
            http,
            child: Some(child),
            command: Some((bin.to_path_buf(), args)),
            _dir: Some(dir),
        })
    }

    /// The web door of a broker spawned with `http`, over HTTPS with its CA.
    pub fn web(&self) -> Result<Option<crate::web::Web>> {
        self.http.map(|addr| crate::web::Web::new(addr, &self.ca)).transpose()
    }

    /// Kills a spawned broker with SIGKILL, as a crash would.
    pub fn crash(&mut self) -> Result<()> {
        let mut child = self.child.take().context("only a spawned broker can be crashed")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the crashed broker again on the same data dir and address;
    /// returns once it answers (at most 30 s), with the time that took.
    pub async fn restart(&mut self) -> Result<Duration> {
        let (bin, args) = self.command.clone().context("only a spawned broker can be restarted")?;
        let started = std::time::Instant::now();
        self.child = Some(start(&bin, &args)?);
        let mut opts = self.options(&self.operator);
        opts.connect_timeout = Duration::from_millis(200);
        loop {
            if let Ok(c) = Client::connect(&opts).await {
                c.close().await;
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the restarted broker did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A broker already running on loopback, or the nodes of a cluster
    /// (`a,b,c`, every one on loopback); `key` must be the operator's.
    pub fn remote(server: String, ca: PathBuf, key: String) -> Result<Target> {
        for s in license_broker::client::server_list(&server) {
            require_loopback(s)?;
        }
        Ok(Target { server, ca, operator: key, owner: None, http: None, child: None, command: None, _dir: None })
    }

    pub fn options(&self, key: &str) -> ClientOptions {
        ClientOptions::new(self.server.clone(), Some(self.ca.clone()), key)
    }

    pub async fn client(&self, key: &str) -> Result<Client> {
        Ok(Client::connect(&self.options(key)).await?)
    }

    /// The operator, connected to the node serving `org` (on a cluster,
    /// the node that should serve it, to create it there: it is not moved
    /// afterwards); `op` itself when that is the node it is on.
    async fn operator_for(&self, op: &Client, org: &OrgName) -> Result<Option<Client>> {
        match op.route(org).await? {
            Some(server) => {
                let opts = ClientOptions { server, ..self.options(&self.operator) };
                Ok(Some(Client::connect(&opts).await?))
            }
            None => Ok(None),
        }
    }

    /// A spawned broker's data dir.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    /// Resident memory of a spawned broker, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.child.as_ref()?.id())
    }

    /// CPU ticks (user + system, 1/100 s) a spawned broker has used so far.
    pub fn cpu_ticks(&self) -> Option<u64> {
        crate::machine::process_ticks(&self.child.as_ref()?.id().to_string(), false)
    }

    /// Reads a spawned broker's resident memory, from any task.
    pub fn rss_probe(&self) -> impl Fn() -> Option<u64> + Send + 'static {
        let pid = self.child.as_ref().map(|c| c.id());
        move || rss_of(pid?)
    }

    /// Creates `n` orgs named for this run, each with a KRE pool of `quota`
    /// and one registered machine.
    pub async fn setup_orgs(&self, n: usize, quota: u32) -> Result<Vec<LoadOrg>> {
        let op = self.client(&self.operator).await.context("connecting as the operator")?;
        let tag = std::process::id();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let mut orgs = Vec::with_capacity(n);
        for i in 0..n {
            let org = OrgName::new(format!("load-{tag}-{nanos}-{i}"))?;
            let there = self.operator_for(&op, &org).await?;
            let at = there.as_ref().unwrap_or(&op);
            let key = at.create_org(&org, "2099-12-31", "load@localhost").await?;
            at.set_pool(&org, PoolId::KRE_DEFAULT, quota).await?;
            if let Some(c) = there {
                c.close().await;
            }
            let machine = MachineId::new("load-machine")?;
            let owner = self.client(&key).await?;
            owner.register_machine(&org, PoolId::KRE_DEFAULT, &machine).await?;
            owner.close().await;
            orgs.push(LoadOrg { org, key, machine });
        }
        op.close().await;
        Ok(orgs)
    }

    /// Runners waiting in `org`'s KRE pool queue.
    pub async fn queue(&self, org: &LoadOrg) -> Result<u32> {
        let op = self.client(&self.operator).await?;
        let there = self.operator_for(&op, &org.org).await?;
        let pools = there.as_ref().unwrap_or(&op).pools(Some(&org.org)).await?;
        if let Some(c) = there {
            c.close().await;
        }
        op.close().await;
        Ok(pools.iter().find(|p| p.status.pool == PoolId::KRE_DEFAULT).map_or(0, |p| p.waiting))
    }

    /// The pools of the given orgs, as the broker reports them.
    pub async fn pools(&self, orgs: &[LoadOrg]) -> Result<Vec<PoolStatus>> {
        let op = self.client(&self.operator).await?;
        let mut out = Vec::new();
        for o in orgs {
            let there = self.operator_for(&op, &o.org).await?;
            out.extend(there.as_ref().unwrap_or(&op).status(Some(&o.org)).await?);
            if let Some(c) = there {
                c.close().await;
            }
        }
        op.close().await;
        Ok(out)
    }
}

/// Resident memory of process `pid`, from /proc.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `serve`'s own arguments for a spawned broker: its data dir, address,
/// lease TTL and workers, and its web door's address when it has one.
fn serve_args(
    server: &str,
    dir: &Path,
    lease_ttl: Duration,
    workers: Option<usize>,
    http: Option<std::net::SocketAddr>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["serve".into()];
    if let Some(n) = workers {
        args.extend(["--workers".into(), n.to_string().into()]);
    }
    args.extend(["--data-dir".into(), dir.as_os_str().to_owned()]);
    if let Some(addr) = http {
        args.extend(["--http".into(), addr.to_string().into()]);
    }
    let ttl = humantime::format_duration(lease_ttl).to_string();
    let base = ["--listen", server, "--lease-ttl", &ttl, "--max-connections", "100000", "--drain-grace", "0s"];
    args.extend(base.map(OsString::from));
    args
}

/// The per-address limits lifted (`lift`), the web door's too when it
/// serves (`http`). All load comes from one loopback address: the limits
/// meant for strangers would cap the measurement.
fn lifted(lift: bool, http: bool) -> Vec<&'static str> {
    let quic_lifted = ["--max-handshakes-per-address", "10000000", "--max-unauthenticated-per-address", "100000"];
    // The web door's only where a scenario uses it: a baseline binary
    // from before these flags (`compare --baseline`) runs without them.
    let web_lifted =
        ["--http-max-connections-per-address", "100000", "--http-max-new-connections-per-address", "10000000"];
    match (lift, http) {
        (false, _) => Vec::new(),
        (true, false) => quic_lifted.to_vec(),
        (true, true) => quic_lifted.iter().chain(&web_lifted).copied().collect(),
    }
}

/// The operator's and the `default` org's Owner keys, the first two lines
/// a starting broker prints.
fn read_keys(child: &mut Child) -> Result<(String, Option<String>)> {
    let stdout = child.stdout.take().context("broker stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut operator, mut owner) = (None, None);
    for _ in 0..2 {
        let line = lines.next().context("broker exited before printing its keys")??;
        if let Some(k) = line.strip_prefix("operator api key: ") {
            operator = Some(k.to_string());
        }
        if let Some(k) = line.strip_prefix("owner api key: ") {
            owner = Some(k.to_string());
        }
    }
    Ok((operator.context("no operator key printed")?, owner))
}

/// Starts the broker binary `bin` with `args`, stdout piped (it prints keys once).
fn start(bin: &Path, args: &[std::ffi::OsString]) -> Result<Child> {
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            for _ in 0..50 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
