//! The built `license-broker` binary as users run it: a broker started with
//! `serve` on a loopback port, and client commands pointed at it. Shared by
//! the CLI tests and the restart tests.
#![allow(dead_code)] // each test crate uses its own subset

pub mod fleet;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_license-broker");

/// A broker process and what a client needs to reach it.
pub struct Serve {
    pub child: Child,
    pub addr: String,
    pub operator: String,
    pub owner: String,
    pub ca: String,
}

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts a broker on a fresh data dir and reads the two keys it prints.
pub fn serve(dir: &Path, ttl: &str) -> Serve {
    serve_with(dir, ttl, &[])
}

/// `serve`, with more `serve` flags.
pub fn serve_with(dir: &Path, ttl: &str, extra: &[&str]) -> Serve {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_serve_with(dir, &addr, ttl, extra);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = |prefix: &str| {
        let line = lines.next().unwrap().unwrap();
        line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?}")).to_string()
    };
    let operator = key("operator api key: ");
    let owner = key("owner api key: ");
    let ca = dir.join("tls/cert.pem").display().to_string();
    Serve { child, addr, operator, owner, ca }
}

/// `license-broker serve` on `dir` and `addr` (stdout piped, stderr dropped).
pub fn spawn_serve(dir: &Path, addr: &str, ttl: &str) -> Child {
    spawn_serve_with(dir, addr, ttl, &[])
}

/// `spawn_serve`, with more `serve` flags.
pub fn spawn_serve_with(dir: &Path, addr: &str, ttl: &str, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", addr, "--lease-ttl", ttl])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

impl Serve {
    pub fn cmd(&self, key: &str) -> Command {
        let mut c = Command::new(BIN);
        c.env("LB_SERVER", &self.addr).env("LB_CA", &self.ca).env("LB_API_KEY", key).env("LB_MACHINE_ID", "ci-host-1");
        c
    }

    pub fn run(&self, key: &str, args: &[&str]) -> Output {
        self.cmd(key).args(args).output().unwrap()
    }

    pub fn runner(&self, hold: &str) -> Child {
        self.cmd(&self.owner)
            .args(["runner", "--org", "default", "--json", "--hold", hold])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn in_use(&self) -> u64 {
        let out = self.run(&self.owner, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["pools"][0]["in_use"].as_u64().unwrap()
    }

    /// Waits until the broker answers `status` (after a restart), at most `limit`.
    pub fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        while !self.run(&self.owner, &["status", "--json", "--connect-timeout", "1s"]).status.success() {
            assert!(started.elapsed() < limit, "broker at {} never answered", self.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn first_event(child: &mut Child) -> serde_json::Value {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

pub fn signal(child: &Child, sig: &str) {
    Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
}

/// A child's JSON events, read on a thread so a test can wait with a limit.
pub struct Events(mpsc::Receiver<serde_json::Value>);

impl Events {
    /// Takes over the child's stdout.
    pub fn of(child: &mut Child) -> Events {
        Events::reading(child.stdout.take().unwrap())
    }

    /// Takes over the child's stderr (a runner with a job reports there).
    pub fn of_stderr(child: &mut Child) -> Events {
        Events::reading(child.stderr.take().unwrap())
    }

    fn reading(out: impl std::io::Read + Send + 'static) -> Events {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // Only the JSON event lines; anything else is not ours to read.
                let Ok(v) = serde_json::from_str(&line) else { continue };
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Events(rx)
    }

    /// The next event, if one comes within `limit`.
    pub fn next_within(&self, limit: Duration) -> Option<serde_json::Value> {
        self.0.recv_timeout(limit).ok()
    }

    /// The next event named `name`, skipping others; panics after `limit`.
    pub fn wait_for(&self, name: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(v) if v["event"] == name => return v,
                Ok(_) => continue,
                Err(e) => panic!("no {name:?} event within {limit:?}: {e}"),
            }
        }
    }
}

/// CPU time (user + system) a process has used, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
