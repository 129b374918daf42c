//! How a hold ends: the job stopped if the lease is gone, the seat given
//! back or the end reported, and the exit code picked (6 when the lease
//! was lost, the job's own when it exited). Apart from `hold`, which only
//! decides *why* holding stopped.

use std::process::ExitCode;

use anyhow::Result;
use license_broker::client::keeper::unix_ms;
use license_broker::client::{Admitted, Client};
use serde_json::json;

use super::hold::Stop;
use super::Runner;
use crate::cli::exit::EXIT_LEASE_LOST;
use crate::cli::job::{self, Job};

impl Runner {
    /// Releases (or reports the end), closes, and picks the exit code.
    pub(super) async fn finish(
        &self,
        stop: Stop,
        client: Option<Client>,
        lease: Admitted,
        job: Option<Job>,
    ) -> Result<ExitCode> {
        let session = lease.session.to_string();
        // A job whose lease is gone must stop: nobody may run on a seat the broker can give away.
        if let (Some(mut job), Stop::Ended(_) | Stop::Lost(_)) = (job, &stop) {
            let status = job.stop(self.args.kill_grace).await;
            self.ev.emit(
                json!({"event": "job_stopped", "session": session, "exit": status.ok().map(job::exit_code)}),
                "the lease is gone: job stopped".into(),
            );
            let _ = self.report(stop, client, lease).await;
            self.connector.wait_idle().await;
            return Ok(ExitCode::from(EXIT_LEASE_LOST));
        }
        let code = self.report(stop, client, lease).await?;
        self.connector.wait_idle().await;
        Ok(code)
    }

    /// Releases (or reports the end), closes, and picks the exit code.
    async fn report(&self, stop: Stop, client: Option<Client>, lease: Admitted) -> Result<ExitCode> {
        let session = lease.session.to_string();
        let code = match (stop, client) {
            (Stop::JobExited(status), Some(client)) => {
                let exit = job::exit_code(status);
                let extra = json!({"reason": "job_exited", "exit": exit});
                self.give_back(client, &lease, extra, format!("job exited with {exit}; ")).await;
                ExitCode::from(exit)
            }
            (Stop::JobExited(status), None) => ExitCode::from(job::exit_code(status)),
            (Stop::Release, Some(client)) => {
                match self.give_back(client, &lease, json!({"reason": "released"}), String::new()).await {
                    true => ExitCode::SUCCESS,
                    false => ExitCode::from(1),
                }
            }
            // `hold` asks for a release only while it holds a client.
            (Stop::Release, None) => ExitCode::from(1),
            (Stop::Ended(reason), client) => {
                self.ev.emit(
                    json!({"event": "ended", "session": session, "reason": reason}),
                    format!("session {session} ended: {reason}"),
                );
                if let Some(c) = client {
                    c.close().await;
                }
                ExitCode::from(1)
            }
            (Stop::Lost(message), client) => {
                self.ev.emit(
                    json!({"event": "lost", "session": session, "message": message}),
                    format!("lease lost: {message}"),
                );
                if let Some(c) = client {
                    c.close_nowait();
                }
                ExitCode::from(EXIT_LEASE_LOST)
            }
        };
        Ok(code)
    }

    /// Releases the seat through the keeper and says so, with
    /// `believed_until_ms`: the moment the runner stopped relying on the
    /// seat (before asking). Returns whether the release was confirmed.
    async fn give_back(&self, client: Client, lease: &Admitted, extra: serde_json::Value, human: String) -> bool {
        let until = unix_ms();
        let session = lease.session.to_string();
        let result = self.keeper().give_back(client, lease).await;
        let mut event = match &result {
            Ok(()) => json!({"event": "released", "session": session}),
            Err(message) => json!({"event": "release_failed", "session": session, "message": message}),
        };
        if let (Some(fields), Some(more)) = (event.as_object_mut(), extra.as_object()) {
            fields.extend(more.clone());
            fields.insert("believed_until_ms".into(), until.into());
        }
        let text = match &result {
            Ok(()) => format!("{human}released session {session}"),
            Err(message) => format!("{human}release of session {session} failed: {message}"),
        };
        self.ev.emit(event, text);
        result.is_ok()
    }
}
