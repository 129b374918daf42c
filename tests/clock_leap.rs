//! A clock that leaps forward frees nothing early (issue 25: a broker
//! restarted 30 days ahead freed a live offline license's seat and gave it
//! to a new activation: two machines on one seat). The broker runs under
//! libfaketime (Debian's `faketime`, which the test command installs),
//! its wall clock read from a file the test rewrites, its monotonic clock
//! untouched, as after a wrong date typed in or a bad NTP step.

mod process;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use process::{free_port, signal, BIN};

/// libfaketime's preload library.
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .ok()
        .and_then(|dirs| dirs.flatten().map(|d| d.path().join("faketime/libfaketime.so.1")).find(|p| p.exists()));
    found.expect("libfaketime is not installed: the test command installs Debian's faketime")
}

/// A broker's data dir, address and wall clock (libfaketime's offset, `+30d`).
struct Host {
    dir: tempfile::TempDir,
    addr: String,
    clock: PathBuf,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let clock = dir.path().join("faketime");
        let host = Host { addr: format!("127.0.0.1:{}", free_port()), clock, dir };
        host.set_clock("+0d");
        host
    }

    fn set_clock(&self, offset: &str) {
        std::fs::write(&self.clock, offset).unwrap();
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `serve` under this host's clock.
    fn serve(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["serve", "--data-dir"]).arg(self.data()).args(["--listen", &self.addr]).args(extra);
        c.env("LD_PRELOAD", libfaketime())
            .env("FAKETIME_TIMESTAMP_FILE", &self.clock)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        c
    }

    /// A broker started under this host's clock, up and answering.
    fn start(&self, extra: &[&str]) -> Child {
        let child = self.serve(extra).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        self.wait_ready();
        child
    }

    fn wait_ready(&self) {
        for _ in 0..100 {
            if self.cli(&self.keys().0, &["status", "--json"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the broker did not come up");
    }

    /// (operator key, owner key), from the first start's output.
    fn keys(&self) -> (String, String) {
        let text = std::fs::read_to_string(self.dir.path().join("keys")).unwrap();
        let mut lines = text.lines().map(|l| l.split(": ").nth(1).unwrap().to_string());
        (lines.next().unwrap(), lines.next().unwrap())
    }

    /// The first start: keeps the keys it prints once.
    fn first_start(&self) -> Child {
        let mut child = self.serve(&[]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let keys: Vec<String> = (0..2).map(|_| lines.next().unwrap().unwrap()).collect();
        std::fs::write(self.dir.path().join("keys"), keys.join("\n")).unwrap();
        std::thread::spawn(move || lines.for_each(drop));
        self.wait_ready();
        child
    }

    fn cli(&self, key: &str, args: &[&str]) -> Output {
        let ca = self.data().join("tls/cert.pem");
        let mut c = Command::new(BIN);
        c.env("LB_SERVER", &self.addr).env("LB_CA", ca).env("LB_API_KEY", key).env("LB_MACHINE_ID", "ci-host-1");
        c.args(args).output().unwrap()
    }

    fn ok(&self, key: &str, args: &[&str]) -> String {
        let out = self.cli(key, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Offline licenses holding a seat of the node-locked pool, per `status`.
    fn offline_seats(&self) -> u64 {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&self.keys().1, &["status", "--json"])).unwrap();
        let pools = v["pools"].as_array().unwrap();
        let pool = pools.iter().find(|p| p["pool"] == POOL).unwrap_or_else(|| panic!("{v}"));
        pool["offline"].as_u64().unwrap()
    }
}

const POOL: &str = "kse-node-locked-annual";

/// A start that must be refused: its error, or a failure (and the broker
/// killed) if it is still running after 10 s.
fn refused_start(h: &Host) -> String {
    let mut child = h.serve(&[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert_eq!(status.code(), Some(1), "{err}");
            return err;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("the broker started on a clock that leapt ahead");
}

fn stop(child: &mut Child) {
    signal(child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// A quota of one, taken by an offline license for 10 days; a licensed
/// member whose activation would need that seat. Returns the member's key.
fn offline_on_the_only_seat(h: &Host) -> String {
    let (operator, owner) = h.keys();
    h.ok(&operator, &["pool", "set", "--org", "default", "--product", "kse", "--kind", "node-locked", "--quota", "1"]);
    let expires = license_broker::value::format_end_date(license_broker::value::Millis(
        (now_ms() / license_broker::value::DAY_MS + 11) * license_broker::value::DAY_MS,
    ));
    let out = h.dir.path().join("lic");
    let args =
        ["offline", "create", "--org", "default", "--pool", POOL, "--machine-id", "air-1", "--expires", &expires];
    h.ok(&owner, &[&args[..], &["--out", out.to_str().unwrap()]].concat());
    h.ok(&owner, &["user", "add", "--org", "default", "u@default", "--role", "user"]);
    let key = h.ok(&owner, &["key", "create", "--org", "default", "u@default"]);
    h.ok(&owner, &["grant", "--org", "default", "--pool", POOL, "u@default"]);
    key.trim().strip_prefix("api key: ").unwrap().to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The member's activation on another machine: refused while the offline
/// license holds the only seat (exit 3, quota).
fn activation_refused(h: &Host, user: &str) {
    let out = h.cli(user, &["activate", "--org", "default", "--pool", POOL, "--machine-id", "desk-2"]);
    assert_eq!(out.status.code(), Some(3), "the offline license's seat was given away: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("QUOTA_EXCEEDED"), "{out:?}");
}

/// A start whose clock reads 30 days after the last run is refused, naming
/// the flag; one within `--max-clock-leap` starts with the seat still
/// held; the operator's `--allow-clock-leap` starts it on the new time.
#[test]
fn a_start_thirty_days_ahead_is_refused_until_the_operator_confirms() {
    let h = Host::new();
    let mut first = h.first_start();
    let user = offline_on_the_only_seat(&h);
    stop(&mut first);

    h.set_clock("+30d");
    let err = refused_start(&h);
    assert!(err.contains("--max-clock-leap") && err.contains("--allow-clock-leap"), "{err}");

    // A day ahead is within the bound: a broker down for a day.
    h.set_clock("+1d");
    let mut b = h.start(&[]);
    assert_eq!(h.offline_seats(), 1, "the offline license still holds its seat");
    activation_refused(&h, &user);
    stop(&mut b);

    // The operator confirms the time: 30 days on, the license has expired.
    h.set_clock("+30d");
    let mut b = h.start(&["--allow-clock-leap"]);
    assert_eq!(h.offline_seats(), 0, "expired on the confirmed time");
    stop(&mut b);
}

/// The wall clock leaps 30 days while the broker runs: logged, not
/// followed (the seat stays held), and the next start on that clock is
/// refused as any start that far ahead.
#[test]
fn a_leap_while_running_is_logged_not_followed_and_judged_at_the_next_start() {
    let h = Host::new();
    let mut b = h.first_start();
    let user = offline_on_the_only_seat(&h);
    stop(&mut b);
    let mut b = h.start(&[]);
    let log = b.stderr.take().unwrap();
    let (seen, leapt) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            if line.contains("wall clock leapt") {
                let _ = seen.send(line);
            }
        }
    });
    h.set_clock("+30d");
    // Seen at the next checkpoint (every 5 s), once libfaketime re-reads its file.
    let line = leapt.recv_timeout(Duration::from_secs(15)).expect("the leap is logged");
    assert!(line.contains("leap_s=259"), "{line}");
    assert_eq!(h.offline_seats(), 1, "the running broker keeps its own time");
    activation_refused(&h, &user);
    stop(&mut b);
    let err = refused_start(&h);
    assert!(err.contains("--allow-clock-leap"), "the next start on the leapt clock is refused: {err}");
}
