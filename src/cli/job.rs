//! The job a `runner -- COMMAND` runs under its lease: a child process with
//! the session in its environment, its stdin/stdout/stderr untouched,
//! signals forwarded, and a stop that asks first (SIGTERM) and insists
//! (SIGKILL) after a grace period.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

/// A running job.
pub struct Job {
    child: Child,
}

impl Job {
    /// Starts `argv` with `env` added to the runner's environment.
    pub fn spawn(argv: &[String], env: &[(&str, String)]) -> Result<Job> {
        let (program, args) = argv.split_first().context("no command given after --")?;
        let mut cmd = Command::new(program);
        cmd.args(args).envs(env.iter().map(|(k, v)| (*k, v)));
        let child = cmd.spawn().with_context(|| format!("starting {program}"))?;
        Ok(Job { child })
    }

    /// Waits for the job to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Sends `signal` (SIGTERM, SIGINT) to the job, if it still runs.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // Safety: kill(2) with a pid of our own child and a valid signal
            // number has no memory effects; a failure (it just exited) is harmless.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Stops the job: SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                let _ = self.child.start_kill();
                self.child.wait().await
            }
        }
    }
}

/// The exit code a shell would report for `status`: the job's own code,
/// or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => (128 + signal) as u8,
        (None, None) => 1,
    }
}
