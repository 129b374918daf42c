//! The command line as users run it: the built binary against a broker
//! started by `license-broker serve`, following the README's quickstart.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod process;
mod support;

use process::{first_event, free_port, serve, signal, BIN};

#[test]
fn quickstart_three_admitted_two_rejected_and_a_killed_runner_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "3s");
    let out = s.run(&s.operator, &["pool", "set", "--org", "default", "--product", "kre", "--quota", "3"]);
    assert!(out.status.success(), "{out:?}");

    let mut runners: Vec<Child> = (0..5).map(|_| s.runner("60s")).collect();
    let mut admitted = Vec::new();
    let mut rejected = 0;
    for mut r in runners.drain(..) {
        let ev = first_event(&mut r);
        match ev["event"].as_str().unwrap() {
            "admitted" => admitted.push(r),
            "rejected" => {
                assert_eq!(ev["code"], "QUOTA_EXCEEDED", "{ev}");
                assert_eq!(r.wait().unwrap().code(), Some(3));
                rejected += 1;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!((admitted.len(), rejected), (3, 2));
    assert_eq!(s.in_use(), 3);

    // SIGKILL one runner: its seat comes back after the TTL, not before.
    let mut dead = admitted.pop().unwrap();
    dead.kill().unwrap();
    dead.wait().unwrap();
    assert_eq!(s.in_use(), 3, "a vanished runner keeps its seat until its lease expires");
    let started = Instant::now();
    while s.in_use() != 2 {
        assert!(started.elapsed() < Duration::from_secs(15), "seat never reclaimed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut newcomer = s.runner("1s");
    assert_eq!(first_event(&mut newcomer)["event"], "admitted");

    // SIGTERM releases gracefully and exits 0.
    for r in admitted.iter_mut().chain(std::iter::once(&mut newcomer)) {
        signal(r, "-TERM");
        let out = std::mem::replace(r, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(r#""event":"released""#));
    }
    assert_eq!(s.in_use(), 0);
}

#[test]
fn exit_codes_name_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    // Machine limit: a second machine ID on a pool of one.
    let out =
        s.cmd(&s.owner).args(["runner", "--org", "default", "--machine-id", "a", "--hold", "0s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = s.cmd(&s.owner).args(["runner", "--org", "default", "--machine-id", "b", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("MACHINE_LIMIT"));
    // Authentication and authorisation.
    let out = s.run("lbk_bogus", &["runner", "--org", "default", "--json"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNAUTHORIZED"));
    let out = s.run(&s.owner, &["pool", "set", "--org", "default", "--quota", "50"]);
    assert_eq!(out.status.code(), Some(5), "an Owner cannot raise their own quota: {out:?}");
    // Misuse: clear message, non-zero exit, no backtrace.
    for args in
        [&["pool", "set", "--org", "default", "--quota", "many"][..], &["runner", "--org", "Bad Org!"], &["frobnicate"]]
    {
        let out = s.run(&s.owner, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error") && !err.contains("backtrace"), "{err}");
    }
    let out = Command::new(BIN).args(["status"]).env_remove("LB_API_KEY").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API key"));
}

#[test]
fn admin_commands_and_org_creation() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    let out = s.run(&s.operator, &["org", "create", "acme", "--subscription-end", "2099-12-31"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let acme_owner = stdout.trim().strip_prefix("owner api key: ").unwrap().to_string();
    assert!(s.run(&s.operator, &["pool", "set", "--org", "acme", "--quota", "2"]).status.success());
    assert!(s.run(&acme_owner, &["user", "add", "--org", "acme", "ci@acme.test", "--role", "user"]).status.success());
    let out = s.run(&acme_owner, &["key", "create", "--org", "acme", "ci@acme.test"]);
    let ci_key = String::from_utf8_lossy(&out.stdout).trim().strip_prefix("api key: ").unwrap().to_string();
    let out = s.cmd(&ci_key).args(["runner", "--org", "acme", "--hold", "0s", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = s.run(&acme_owner, &["machine", "list", "--org", "acme", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["machines"][0]["machine"], "ci-host-1");
    // The default org's owner sees nothing of acme.
    let out = s.run(&s.owner, &["session", "list", "--org", "acme"]);
    assert_eq!(out.status.code(), Some(5));
    // Revoke by id, then the key is refused.
    let out = s.run(&acme_owner, &["key", "list", "--org", "acme", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["keys"].as_array().unwrap().iter().find(|k| k["email"] == "ci@acme.test").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.run(&acme_owner, &["key", "revoke", "--org", "acme", &id]).status.success());
    let out = s.cmd(&ci_key).args(["runner", "--org", "acme", "--hold", "0s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn serve_drains_on_sigterm_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "4"]).status.success());
    signal(&s.child, "-TERM");
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
    // A second start reuses the dir and prints no keys.
    let addr = format!("127.0.0.1:{}", free_port());
    let again = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ok = false;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let out = Command::new(BIN)
            .args(["status", "--json", "--server", &addr, "--ca", &s.ca, "--api-key", &s.owner])
            .output()
            .unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["pools"][0]["quota"], 4);
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "restarted broker never answered");
    signal(&again, "-INT");
    let out = again.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("api key"), "keys are printed only once: {stdout:?}");
    assert!(stdout.starts_with("console: https://127.0.0.1:"), "the console's address, on every start: {stdout:?}");
}

#[test]
fn kse_grant_activate_and_offline_license_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    let ok = |out: Output| {
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(s.run(
        &s.operator,
        &["pool", "set", "--org", "default", "--product", "kse", "--kind", "node-locked", "--quota", "2"],
    ));
    ok(s.run(&s.owner, &["user", "add", "--org", "default", "u@default", "--role", "user"]));
    let key = ok(s.run(&s.owner, &["key", "create", "--org", "default", "u@default"]));
    let user_key = key.trim().strip_prefix("api key: ").unwrap().to_string();
    // Not licensed yet: exit 5.
    let out = s.run(&user_key, &["activate", "--org", "default", "--pool", "kse-node-locked-annual", "--json"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    ok(s.run(&s.owner, &["grant", "--org", "default", "--pool", "kse-node-locked-annual", "u@default"]));
    let out = ok(s.run(&user_key, &["activate", "--org", "default", "--pool", "kse-node-locked-annual", "--json"]));
    assert!(out.contains(r#""event":"activated""#), "{out}");
    let out = s
        .run(&user_key, &["activate", "--org", "default", "--pool", "kse-node-locked-annual", "--machine-id", "other"]);
    assert_eq!(out.status.code(), Some(4), "activated elsewhere: {out:?}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(s.run(&s.owner, &["licenses", "--org", "default", "--json"]))).unwrap();
    assert_eq!(v["licenses"][0]["machine"], "ci-host-1");

    // Offline: create, fetch the public key as the user, verify without the broker.
    let out_dir = dir.path().join("lic");
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let expires = license_broker::value::format_end_date(license_broker::value::Millis(
        (today / license_broker::value::DAY_MS + 11) * license_broker::value::DAY_MS,
    ));
    let args = [
        "offline",
        "create",
        "--org",
        "default",
        "--pool",
        "kse-node-locked-annual",
        "--machine-id",
        "m-9",
        "--expires",
        &expires,
        "--out",
    ];
    let path = ok(s.cmd(&s.owner).args(args).arg(&out_dir).output().unwrap());
    let file = out_dir.join("KSE_m-9.lic");
    assert_eq!(path.trim(), file.display().to_string());
    let pem = ok(s.run(&user_key, &["offline", "public-key"]));
    let pem_path = dir.path().join("broker.pub.pem");
    std::fs::write(&pem_path, pem).unwrap();
    let verify = |file: &Path, machine: &str| {
        Command::new(BIN)
            .args(["offline", "verify"])
            .arg(file)
            .arg("--public-key")
            .arg(&pem_path)
            .args(["--machine-id", machine])
            .output()
            .unwrap()
    };
    assert_eq!(verify(&file, "m-9").status.code(), Some(0));
    assert_eq!(verify(&file, "m-10").status.code(), Some(13), "wrong machine");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    let tampered = dir.path().join("tampered.lic");
    std::fs::write(&tampered, &bytes).unwrap();
    assert!(matches!(verify(&tampered, "m-9").status.code(), Some(10) | Some(14)), "tampered file rejected");
    std::fs::write(&tampered, b"hello").unwrap();
    assert_eq!(verify(&tampered, "m-9").status.code(), Some(14), "malformed");
    // Revoking it is refused with a clear message.
    let list: serde_json::Value =
        serde_json::from_str(&ok(s.run(&s.owner, &["offline", "list", "--org", "default", "--json"]))).unwrap();
    let id = list["offline"][0]["id"].as_str().unwrap().to_string();
    let out = s.run(&s.owner, &["offline", "revoke", "--org", "default", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be revoked or transferred"), "{out:?}");
    // The audit trail has it all; a User may not read it.
    let audit = ok(s.run(&s.owner, &["audit", "--org", "default", "--json"]));
    for action in ["quota_changed", "user_added", "key_created", "granted", "activated", "offline_created"] {
        assert!(audit.contains(action), "{action} missing from {audit}");
    }
    assert_eq!(s.run(&user_key, &["audit", "--org", "default"]).status.code(), Some(5));
}

#[test]
fn data_dir_is_owner_only_and_keys_come_from_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    // Started under umask 022, as a default shell would.
    let mut child = Command::new("sh")
        .args(["-c", "umask 022 && exec \"$0\" \"$@\"", BIN, "serve", "--data-dir"])
        .arg(&data)
        .args(["--listen", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let operator = first_line(&mut child).strip_prefix("operator api key: ").unwrap().to_string();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for file in ["broker.redb", "tls/key.pem", "tls/cert.pem", "offline/signing-key.pem"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("tls")), 0o700);
    // A key from a file, nothing on the command line.
    let key_file = dir.path().join("operator.key");
    std::fs::write(&key_file, format!("{operator}\n")).unwrap();
    let ca = data.join("tls/cert.pem");
    let status = |extra: &[&str]| {
        Command::new(BIN)
            .args(["status", "--server", &addr, "--ca"])
            .arg(&ca)
            .args(extra)
            .env_remove("LB_API_KEY")
            .output()
            .unwrap()
    };
    let out = status(&["--api-key-file", key_file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{out:?}");
    let out = status(&["--api-key", &operator]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("visible to other users"), "{out:?}");
    let _ = child.kill();
    let _ = child.wait();
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn logs_are_plain_or_json_with_a_line_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("broker.log");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--listen", &addr, "--log-format", "json"])
        .env("RUST_LOG", "license_broker=debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let operator = first_line(&mut child).strip_prefix("operator api key: ").unwrap().to_string();
    let ca = data.join("tls/cert.pem");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--server", &addr, "--ca"])
            .arg(&ca)
            .env("LB_API_KEY", &operator)
            .env("LB_MACHINE_ID", "log-host")
            .output()
            .unwrap()
    };
    assert!(run(&["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    let owner = String::from_utf8(run(&["org", "create", "logs", "--subscription-end", "2099-12-31"]).stdout).unwrap();
    let owner = owner.trim().strip_prefix("owner api key: ").unwrap().to_string();
    assert!(run(&["pool", "set", "--org", "logs", "--quota", "1"]).status.success());
    let out = Command::new(BIN)
        .args(["runner", "--org", "logs", "--hold", "0s", "--server", &addr, "--ca"])
        .arg(&ca)
        .env("LB_API_KEY", &owner)
        .env("LB_MACHINE_ID", "log-host")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    signal(&child, "-TERM");
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "no terminal colours in a file");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let message = |m: &str| lines.iter().find(|l| l["fields"]["message"] == m).cloned();
    let started = message("session started").expect("a line when a session starts");
    assert_eq!(started["fields"]["machine"], "log-host");
    let ended = message("session ended").expect("a line when it ends");
    assert_eq!(ended["fields"]["reason"], "released");
}

#[test]
fn serve_takes_its_options_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-env");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("LB_DATA_DIR", &data)
        .env("LB_LISTEN", &addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let operator = first_line(&mut child).strip_prefix("operator api key: ").unwrap().to_string();
    assert!(data.join("broker.redb").exists(), "LB_DATA_DIR was used");
    let out = Command::new(BIN)
        .args(["status", "--json", "--server", &addr, "--ca"])
        .arg(data.join("tls/cert.pem"))
        .env("LB_API_KEY", &operator)
        .output()
        .unwrap();
    assert!(out.status.success(), "LB_LISTEN was used: {out:?}");
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `serve --config FILE.toml`: the file sets serve options; an `LB_*`
/// variable wins over it (and a flag over both); an unknown key is a
/// command-line error naming it.
#[test]
fn serve_reads_a_config_file_below_env_and_flags() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", process::free_port());
    let config = dir.path().join("broker.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "data-dir = {:?}\nlisten = {addr:?}\nlease-ttl = \"7s\"\nmax-connections = 50\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    // A lease's TTL as a runner sees it: its deadline minus when it was admitted.
    let ttl_seen = |env_ttl: Option<&str>, flag_ttl: Option<&str>| -> u64 {
        let mut cmd = std::process::Command::new(process::BIN);
        cmd.args(["serve", "--config"]).arg(&config);
        if let Some(t) = env_ttl {
            cmd.env("LB_LEASE_TTL", t);
        }
        if let Some(t) = flag_ttl {
            cmd.args(["--lease-ttl", t]);
        }
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut s = process::Serve {
            child,
            addr: addr.clone(),
            operator: String::new(),
            owner: String::new(),
            ca: data.join("tls/cert.pem").display().to_string(),
        };
        if env_ttl.is_none() && flag_ttl.is_none() {
            s.operator = lines.next().unwrap().unwrap().trim_start_matches("operator api key: ").to_string();
            s.owner = lines.next().unwrap().unwrap().trim_start_matches("owner api key: ").to_string();
            std::fs::write(dir.path().join("keys"), format!("{}\n{}\n", s.operator, s.owner)).unwrap();
        } else {
            let keys = std::fs::read_to_string(dir.path().join("keys")).unwrap();
            let mut k = keys.lines();
            (s.operator, s.owner) = (k.next().unwrap().to_string(), k.next().unwrap().to_string());
        }
        s.wait_ready(Duration::from_secs(10));
        assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
        let out = s.run(&s.owner, &["runner", "--org", "default", "--json", "--hold", "10ms"]);
        let admitted: serde_json::Value = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "admitted")
            .unwrap_or_else(|| panic!("no admitted event: {out:?}"));
        process::signal(&s.child, "-TERM");
        s.child.wait().unwrap();
        admitted["deadline_ms"].as_u64().unwrap() - admitted["at_ms"].as_u64().unwrap()
    };
    let from_file = ttl_seen(None, None);
    assert!((6_000..=7_000).contains(&from_file), "the file's 7s lease TTL: {from_file} ms");
    let from_env = ttl_seen(Some("9s"), None);
    assert!((8_000..=9_000).contains(&from_env), "LB_LEASE_TTL=9s wins over the file: {from_env} ms");
    let from_flag = ttl_seen(Some("9s"), Some("5s"));
    assert!((4_000..=5_000).contains(&from_flag), "--lease-ttl 5s wins over both: {from_flag} ms");

    std::fs::write(&config, "listen = \"127.0.0.1:1\"\nlease_ttl = \"7s\"\n").unwrap();
    let out = std::process::Command::new(process::BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown key `lease_ttl`"), "{stderr}");
}

/// `serve --help` (and the other commands that never connect) shows only
/// its own flags; client commands still show how to reach the broker.
#[test]
fn server_side_help_lists_no_client_flags() {
    let help = |args: &[&str]| String::from_utf8(Command::new(BIN).args(args).output().unwrap().stdout).unwrap();
    for args in [&["serve", "--help"][..], &["admin", "new-operator-key", "--help"], &["machine-id", "--help"]] {
        let text = help(args);
        for flag in ["--server", "--ca", "--api-key", "--connect-timeout"] {
            assert!(!text.contains(flag), "{args:?} help lists {flag}:\n{text}");
        }
    }
    let status = help(&["status", "--help"]);
    assert!(status.contains("--server") && status.contains("--api-key-file"), "{status}");
    assert!(help(&["serve", "--help"]).contains("--config"));
}

#[test]
fn an_admin_caps_one_users_sessions_and_the_cap_is_listed_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "5"]).status.success());
    let limit = ["pool", "limit", "--org", "default", "--pool", "kre-floating-annual", "--user", "owner@default"];
    let out = s.run(&s.owner, &[&limit[..], &["--max", "1"]].concat());
    assert!(out.status.success(), "{out:?}");
    let mut holder = s.runner("60s");
    assert_eq!(first_event(&mut holder)["event"], "admitted");
    let out = s.cmd(&s.owner).args(["runner", "--org", "default", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("USER_LIMIT"), "{out:?}");
    let out = s.run(&s.owner, &["pool", "limits", "--org", "default", "--pool", "kre-floating-annual", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["limits"][0], serde_json::json!({"user": "owner@default", "max": 1, "sessions": 1}));
    let audit = s.run(&s.owner, &["audit", "--org", "default"]);
    assert!(String::from_utf8_lossy(&audit.stdout).contains("user_limit_set"), "{audit:?}");
    // Lifted: a second session is admitted.
    assert!(s.run(&s.owner, &[&limit[..], &["--unlimited"]].concat()).status.success());
    let out = s.cmd(&s.owner).args(["runner", "--org", "default", "--hold", "0s"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    signal(&holder, "-TERM");
    holder.wait().unwrap();
}

/// `usage`, `usage sessions` and `usage what-if` print what the broker
/// recorded: two runners one after the other, one seat's worth of demand.
#[test]
fn usage_reports_from_the_command_line() {
    // The broker's clock starts 5 s before a minute boundary, so the
    // minute closes and is harvested within seconds.
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ahead = format!("{}ms", (60_000 - wall % 60_000 + 60_000 - 5_000) % 60_000);
    // The broker's clock runs ahead of this one: ask about wide ranges.
    let (from, to) = ((wall / 1000 - 600).to_string(), (wall / 1000 + 600).to_string());
    let dir = tempfile::tempdir().unwrap();
    let s = process::serve_with(dir.path(), "30s", &["--clock-ahead", &ahead]);
    let out = s.run(&s.operator, &["pool", "set", "--org", "default", "--product", "kre", "--quota", "2"]);
    assert!(out.status.success(), "{out:?}");
    for _ in 0..2 {
        let out = s.run(&s.owner, &["runner", "--org", "default", "--json", "--hold", "200ms"]);
        assert!(out.status.success(), "{out:?}");
    }
    let started = Instant::now();
    let csv = loop {
        let out =
            s.run(&s.owner, &["usage", "--org", "default", "--from", &from, "--to", &to, "--step", "1m", "--csv"]);
        assert!(out.status.success(), "{out:?}");
        let csv = String::from_utf8(out.stdout).unwrap();
        if csv.lines().count() > 1 {
            break csv;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no minute harvested");
        std::thread::sleep(Duration::from_millis(300));
    };
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("{name} in {csv}"));
    let sum = |name: &str| -> u64 {
        csv.lines().skip(1).map(|l| l.split(',').nth(col(name)).unwrap().parse::<u64>().unwrap()).sum()
    };
    assert_eq!(sum("admitted"), 2, "{csv}");
    assert_eq!(sum("ended_released"), 2, "{csv}");
    let peak = csv.lines().skip(1).map(|l| l.split(',').nth(col("peak")).unwrap().parse::<u32>().unwrap()).max();
    assert_eq!(peak, Some(1), "one after the other: {csv}");
    let out = s.run(&s.owner, &["usage", "sessions", "--org", "default", "--from", &from, "--to", &to, "--csv"]);
    let sessions = String::from_utf8(out.stdout).unwrap();
    assert_eq!(sessions.lines().filter(|l| l.contains(",released,")).count(), 2, "{sessions}");
    let out = s.run(
        &s.owner,
        &[
            "usage",
            "what-if",
            "--org",
            "default",
            "--pool",
            "kre-floating-annual",
            "--seats",
            "0..2",
            "--from",
            &from,
            "--to",
            &to,
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let denied: Vec<u64> = w["outcomes"].as_array().unwrap().iter().map(|o| o["denied"].as_u64().unwrap()).collect();
    assert_eq!(denied, vec![2, 0, 0], "no seat refuses both, one is enough: {w}");
    let out = s.run(&s.owner, &["usage", "--org", "nobody"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FORBIDDEN")
            || String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"),
        "{out:?}"
    );
}

#[test]
fn serve_reads_the_metrics_token_from_a_file_and_warns_when_it_is_on_the_command_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (data, token) = (dir.path().join("data"), dir.path().join("token"));
    std::fs::write(&token, "t0ken\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--listen", &addr, "--metrics-token-file"])
        .arg(&token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let console = lines.map(Result::unwrap).find_map(|l| l.strip_prefix("console: https://").map(str::to_string));
    let at = console.expect("the console's address").trim_end_matches('/').to_string();
    assert_eq!(at, addr, "the web door at the QUIC port's number");
    let web = support::http::Web::tls(at.as_str(), &data.join("tls/cert.pem"));
    assert_eq!(web.get("/metrics", None).0, 401);
    assert_eq!(web.get("/metrics", Some("t0ken")).0, 200, "the file's first line is the token");
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // On the command line it works, with a warning.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data2"))
        .args(["--listen", &addr, "--metrics-token", "t0ken"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut warned = false;
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
        warned |= line.contains("visible to other users of this host");
        if line.contains("broker listening") {
            break;
        }
    }
    signal(&child, "-TERM");
    let _ = child.wait();
    assert!(warned, "no warning about a token on the command line");
}

/// `check` and `runner --check` say whether a runner would get a seat,
/// with the exit code a refused runner would have, and take nothing.
#[test]
fn a_preflight_says_whether_a_runner_would_get_a_seat_and_takes_none() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "1"]).status.success());
    let check = |machine: &str| s.run(&s.owner, &["check", "--org", "default", "--machine-id", machine, "--json"]);
    let out = check("ci-1");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let free: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((free["admitted"].as_bool(), free["wait_seconds"].as_f64()), (Some(true), Some(0.0)), "{free}");

    let mut holder = s
        .cmd(&s.owner)
        .args(["runner", "--org", "default", "--machine-id", "ci-1", "--json", "--hold", "60s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_event(&mut holder)["event"], "admitted");
    let out = check("ci-1");
    assert_eq!(out.status.code(), Some(3), "the pool is full: a refused runner's code: {out:?}");
    let full: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(full["refusal"]["code"], "QUOTA_EXCEEDED", "{full}");
    assert_eq!(
        (full["worth_waiting"].as_bool(), full["place"].as_u64(), full["in_use"].as_u64()),
        (Some(true), Some(1), Some(1))
    );
    let out = s.run(&s.owner, &["runner", "--org", "default", "--machine-id", "ci-1", "--check"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("place 1 in the queue"), "{out:?}");
    // A machine past the machine quota: waiting would not help.
    let out = check("ci-2");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["refusal"]["code"].as_str(), v["worth_waiting"].as_bool()), (Some("MACHINE_LIMIT"), Some(false)));
    // Nothing was taken, registered or counted as refused.
    let status = s.run(&s.owner, &["status", "--json"]);
    let pool = &serde_json::from_slice::<serde_json::Value>(&status.stdout).unwrap()["pools"][0];
    assert_eq!(
        (pool["in_use"].as_u64(), pool["machines"].as_u64(), pool["rejected"].as_u64()),
        (Some(1), Some(1), Some(0)),
        "{pool}"
    );
    holder.kill().unwrap();
}
