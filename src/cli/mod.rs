//! The command line: what each command is and where it runs.
//!
//! Reading order: `args` (clap's tree of commands and flags) → `run` below
//! (the commands answered here or by their own module: `serve`, `runner`,
//! `offline verify`, `machine-id`, `admin`, `events`) → `request` (every command that
//! is one request to the broker) → `output` (how answers are printed) →
//! `exit` (every exit code the command line documents).

mod alerts;
mod args;
mod check;
mod config;
mod events;
mod exit;
mod job;
mod labels;
mod offline;
mod output;
mod request;
mod runner;
mod serve;
mod usage;
mod webhook;

use std::process::ExitCode;

use anyhow::Result;

pub use args::Args;
use args::{AdminCmd, Command};
pub use config::parse as parse_args;
pub use exit::exit_code_of;

/// Runs one command; returns the process exit code.
pub async fn run(args: Args) -> Result<ExitCode> {
    let conn = &args.conn;
    match args.command {
        Command::Serve(a) => serve::run(*a).await,
        Command::Runner(a) => runner::run(a, conn, false).await,
        Command::Activate(a) => runner::run(a, conn, true).await,
        Command::Events(a) => events::run(a, conn).await,
        Command::Offline(offline::OfflineCmd::Verify { file, public_key, machine_id, json }) => {
            offline::verify(&file, &public_key, machine_id.as_ref(), json)
        }
        Command::MachineId => {
            println!("{}", license_broker::machine_id::current()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(AdminCmd::NewOperatorKey { data_dir }) => {
            let key = license_broker::server::mint_operator_key(&data_dir)?;
            println!("operator api key: {key}");
            Ok(ExitCode::SUCCESS)
        }
        // Every other command is one request: connect, ask, close cleanly.
        command => request::run(conn, command).await.map(|()| ExitCode::SUCCESS),
    }
}
