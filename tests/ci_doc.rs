//! docs/CI.md's snippets, run as the CI systems would run them: the
//! runner command of each (GitHub Actions, GitLab CI, Jenkins) under that
//! system's environment variables, against a local broker, with a stand-in
//! `katalonc` that checks it holds a live, labelled session.

mod process;

use std::path::Path;
use std::process::Command;

use process::{serve, BIN};

const DOC: &str = include_str!("../docs/CI.md");

/// The `license-broker runner …` command in the section `heading`, as the
/// CI system's shell would receive it.
fn command_of(heading: &str) -> String {
    let section = DOC.split(&format!("## {heading}\n")).nth(1).unwrap_or_else(|| panic!("no section {heading}"));
    let line = section.lines().find(|l| l.contains("license-broker runner")).expect("a runner command");
    let from = line.find("license-broker runner").unwrap();
    let cmd = &line[from..];
    // Jenkins wraps it in sh '…'.
    cmd.strip_suffix('\'').unwrap_or(cmd).to_string()
}

/// A `katalonc` that checks its lease: a session in its environment, and
/// that session listed by the broker with the CI system's labels.
fn stand_in(dir: &Path) {
    let script = format!(
        "#!/bin/sh\n[ -n \"$LB_SESSION\" ] || exit 42\n\"{BIN}\" session list --org \"$LB_ORG\" --json > \"{}/sessions.json\" || exit 43\nexit 0\n",
        dir.display()
    );
    let path = dir.join("bin/katalonc");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, script).unwrap();
    std::os::unix::fs::symlink(BIN, dir.join("bin/license-broker")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn each_ci_snippet_runs_its_job_under_a_labelled_lease() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    let out = s.run(&s.operator, &["org", "create", "acme", "--subscription-end", "2099-12-31"]);
    assert!(out.status.success(), "{out:?}");
    let owner = String::from_utf8_lossy(&out.stdout).trim().strip_prefix("owner api key: ").unwrap().to_string();
    assert!(s.run(&s.operator, &["pool", "set", "--org", "acme", "--quota", "1"]).status.success());

    type Pairs = &'static [(&'static str, &'static str)];
    let cases: [(&str, Pairs, Pairs); 3] = [
        (
            "GitHub Actions",
            &[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_REPOSITORY", "acme/web"),
                ("GITHUB_RUN_ID", "9001"),
                ("GITHUB_JOB", "e2e"),
            ],
            &[("ci", "github"), ("repository", "acme/web"), ("run", "9001"), ("job", "e2e")],
        ),
        (
            "GitLab CI",
            &[("GITLAB_CI", "true"), ("CI_PROJECT_PATH", "acme/api"), ("CI_PIPELINE_ID", "77"), ("CI_JOB_NAME", "e2e")],
            &[("ci", "gitlab"), ("project", "acme/api"), ("pipeline", "77"), ("job", "e2e")],
        ),
        (
            "Jenkins",
            &[("JENKINS_URL", "http://jenkins.local/"), ("JOB_NAME", "acme/app"), ("BUILD_NUMBER", "12")],
            &[("ci", "jenkins"), ("job", "acme/app"), ("build", "12")],
        ),
    ];
    for (heading, env, want) in cases {
        let work = tempfile::tempdir().unwrap();
        stand_in(work.path());
        let path = format!("{}:{}", work.path().join("bin").display(), std::env::var("PATH").unwrap());
        let out = Command::new("sh")
            .arg("-c")
            .arg(command_of(heading))
            .current_dir(work.path())
            .env_clear()
            .env("PATH", path)
            .env("LB_SERVER", &s.addr)
            .env("LB_CA", &s.ca)
            .env("LB_API_KEY", &owner)
            .env("LB_MACHINE_ID", "runner-host-1")
            .env("CI_PROJECT_DIR", work.path())
            .env("WORKSPACE", work.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{heading}: {out:?}");
        let listed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(work.path().join("sessions.json")).unwrap()).unwrap();
        let labels = &listed["sessions"][0]["labels"];
        for (k, v) in want {
            assert_eq!(labels[k], *v, "{heading}: label {k} in {listed}");
        }
        assert_eq!(listed["sessions"][0]["machine"], "runner-host-1", "{heading}");
    }
}

/// The label cap of "Keeping one team's jobs from filling the pool", run as
/// written (on org `default`): listed, and a runner carrying the label
/// refused once the cap is full.
#[test]
fn the_label_cap_snippet_caps_the_jobs_carrying_the_label() {
    let section = DOC.split("## Keeping one team's jobs from filling the pool\n").nth(1).expect("the section");
    let line = section.lines().find(|l| l.contains("license-broker pool limit")).expect("a pool limit command");
    let line = line.trim().replace("--org acme", "--org default");
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "8"]).status.success());
    let out = s.run(&s.owner, &args);
    assert!(out.status.success(), "{out:?}");
    let limits = ["pool", "limits", "--org", "default", "--pool", "kre-floating-annual", "--labels", "--json"];
    let listed: serde_json::Value = serde_json::from_slice(&s.run(&s.owner, &limits).stdout).unwrap();
    assert_eq!(listed["label_limits"][0], serde_json::json!({"key": "team", "value": "web", "max": 5, "sessions": 0}));
    let capped: Vec<&str> = args.iter().map(|a| if *a == "5" { "0" } else { a }).collect();
    assert!(s.run(&s.owner, &capped).status.success());
    let web = ["runner", "--org", "default", "--label", "team=web", "--wait", "5s", "--hold", "0s"];
    let out = s.run(&s.owner, &web);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("LABEL_LIMIT"), "{out:?}");
    let other = ["runner", "--org", "default", "--label", "team=api", "--hold", "0s"];
    assert!(s.run(&s.owner, &other).status.success(), "another team is not capped");
}

/// The reservation of "Guaranteed seats for the release pipeline", run as
/// written (on org `default`): listed; with the shared seat taken, a job
/// without the label is refused while the section's release runner line
/// (its job a stand-in that holds nothing) is admitted on a reserved seat,
/// and the preflight says so for each.
#[test]
fn the_reservation_snippet_keeps_seats_for_the_release_pipeline() {
    let section = DOC.split("## Guaranteed seats for the release pipeline\n").nth(1).expect("the section");
    let reserve = section.lines().find(|l| l.contains("license-broker pool reserve")).expect("a pool reserve command");
    let reserve = reserve.trim().replace("--org acme", "--org default");
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "30s");
    assert!(s.run(&s.operator, &["pool", "set", "--org", "default", "--quota", "3"]).status.success());
    let args: Vec<&str> = reserve.split_whitespace().skip(1).collect();
    let out = s.run(&s.owner, &args);
    assert!(out.status.success(), "{out:?}");
    let limits = ["pool", "limits", "--org", "default", "--pool", "kre-floating-annual", "--reservations", "--json"];
    let listed: serde_json::Value = serde_json::from_slice(&s.run(&s.owner, &limits).stdout).unwrap();
    let want = serde_json::json!({"pool": "kre-floating-annual", "key": "pipeline", "value": "release", "seats": 2, "in_use": 0, "held": 2});
    assert_eq!(listed["reservations"][0], want);
    // The one shared seat, taken by a job without the label.
    let mut holder = s.runner("30s");
    assert_eq!(process::first_event(&mut holder)["event"], "admitted");
    let plain = s.run(&s.owner, &["runner", "--org", "default", "--hold", "0s"]);
    assert_eq!(plain.status.code(), Some(3), "no shared seat, and the reserved ones are not its: {plain:?}");
    assert_eq!(s.run(&s.owner, &["check", "--org", "default"]).status.code(), Some(3));
    let release = ["check", "--org", "default", "--label", "pipeline=release"];
    assert!(s.run(&s.owner, &release).status.success(), "a reserved seat is free for a release job");
    let line = section.lines().find(|l| l.contains("license-broker runner")).expect("a release runner line");
    let line = line.trim().replace("--org acme", "--org default");
    let before_job = line.split(" -- ").next().unwrap();
    let mut args: Vec<&str> = before_job.split_whitespace().skip(1).collect();
    args.extend(["--hold", "0s"]);
    let out = s.run(&s.owner, &args);
    assert!(out.status.success(), "the release job ran on a reserved seat: {out:?}");
    let status = String::from_utf8_lossy(&s.run(&s.owner, &["status", "--org", "default"]).stdout).to_string();
    assert!(status.contains("reserved pipeline=release in kre-floating-annual: 2 seats, 0 in use"), "{status}");
    let _ = holder.kill();
    let _ = holder.wait();
}
