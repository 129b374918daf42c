//! The runner's events: the lines (or JSON objects) it prints as its
//! lease comes and goes, on stdout, on stderr beside a job, or appended to
//! `--events-file`. Apart from the runner's logic because every part of it
//! (attaching, holding, ending) speaks through this one voice, and scripts
//! and CI logs read it.

use std::process::ExitCode;

use anyhow::{Context, Result};
use license_broker::client::keeper::unix_ms;
use license_broker::client::ClientError;
use serde_json::json;

use super::RunnerArgs;
use crate::cli::exit::exit_code_for;

/// Where and how the runner says what happened.
pub(super) struct Events {
    /// `--json`: one JSON object a line.
    pub(super) json: bool,
    /// A job owns stdout; the runner's own events then go to stderr.
    pub(super) to_stderr: bool,
    /// `--events-file`: JSON lines appended there instead.
    pub(super) file: Option<parking_lot::Mutex<std::fs::File>>,
}

impl Events {
    /// Prints one event; JSON events carry `at_ms`, the Unix time in ms
    /// when it happened (so a history of many runners can be ordered).
    pub(super) fn emit(&self, mut value: serde_json::Value, human: String) {
        if let Some(fields) = value.as_object_mut() {
            fields.insert("at_ms".into(), unix_ms().into());
        }
        if let Some(file) = &self.file {
            use std::io::Write;
            // An event that cannot be written is not worth stopping the job for.
            let _ = writeln!(file.lock(), "{value}");
            return;
        }
        let line = if self.json { value.to_string() } else { human };
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    /// Says why the broker refused (or could not be reached); the exit code for it.
    pub(super) fn rejected(&self, e: &ClientError) -> ExitCode {
        let (code, message) = match e {
            ClientError::Rejected(w) => (w.code.name().to_string(), w.message.clone()),
            other => ("CONNECTION".to_string(), other.to_string()),
        };
        self.emit(
            json!({"event": "rejected", "code": code, "message": message}),
            format!("rejected: {code}: {message}"),
        );
        ExitCode::from(exit_code_for(e.code()))
    }
}

/// Opens `--events-file` for appending (created if missing).
pub(super) fn events_file(args: &RunnerArgs) -> Result<Option<parking_lot::Mutex<std::fs::File>>> {
    let Some(path) = &args.events_file else { return Ok(None) };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the events file {}", path.display()))?;
    Ok(Some(parking_lot::Mutex::new(file)))
}
