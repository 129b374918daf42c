//! The command line: clap's tree of commands and flags (`Args` and every
//! subcommand), and what the connection flags mean (`ConnArgs::options`:
//! the API key from a flag, the environment or a file). Nothing here talks
//! to a broker or runs a command: `cli::run` dispatches, `request` and the
//! per-command modules act.
//!
//! Here the top of the tree (`Command`) and the connection flags; `pool`
//! the pool's settings; `org` the org, its members, keys, grants,
//! machines and sessions.

mod org;
mod pool;

pub(super) use self::org::{GrantArgs, KeyCmd, MachineCmd, OrgCmd, SessionCmd, UserCmd};
pub(super) use self::pool::PoolCmd;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use license_broker::client::{Client, ClientOptions};
use license_broker::value::{OrgName, PoolId};

use super::exit::{EXIT_CODES, RUNNER_EXIT_CODES};
use super::{offline, runner, serve, usage};

/// A floating-license session broker over QUIC.
#[derive(Parser, Debug)]
#[command(
    name = "license-broker",
    version,
    about,
    after_help = EXIT_CODES
)]
pub struct Args {
    #[command(subcommand)]
    pub(super) command: Command,
    #[command(flatten)]
    pub(super) conn: ConnArgs,
}

/// How client commands reach the broker.
#[derive(clap::Args, Debug, Clone)]
pub(super) struct ConnArgs {
    /// Broker address HOST:PORT; for a cluster, several nodes
    /// comma-separated (a,b,c): tried in turn, redirects followed.
    #[arg(long, env = "LB_SERVER", default_value = "127.0.0.1:4433", global = true)]
    server: String,
    /// PEM certificate to trust (the broker's DATA_DIR/tls/cert.pem); system roots if absent.
    #[arg(long, env = "LB_CA", global = true)]
    ca: Option<PathBuf>,
    /// API key to authenticate with. Prefer LB_API_KEY or --api-key-file:
    /// a key on the command line is visible to every user of the host (ps).
    #[arg(long, env = "LB_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Read the API key from this file (first line).
    #[arg(long, env = "LB_API_KEY_FILE", global = true, conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,
    /// TLS name to verify instead of the host part of --server.
    #[arg(long, env = "LB_SERVER_NAME", global = true)]
    server_name: Option<String>,
    /// Give up connecting after this long (e.g. 5s, 500ms).
    #[arg(long, env = "LB_CONNECT_TIMEOUT", global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: std::time::Duration,
}

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Run the broker.
    Serve(Box<serve::ServeArgs>),
    /// Operator: manage orgs.
    #[command(subcommand)]
    Org(OrgCmd),
    /// Pools: create one or set its quota (operator); per-user caps (Owner/Admin).
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Owner/Admin: manage the org's users.
    #[command(subcommand)]
    User(UserCmd),
    /// Owner/Admin: manage API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Owner/Admin: registered machines.
    #[command(subcommand)]
    Machine(MachineCmd),
    /// Owner/Admin: live sessions.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Act as a KRE runner: register this machine, hold a session (or run a
    /// job under it: `runner --org ORG -- COMMAND…`), release it.
    #[command(after_help = RUNNER_EXIT_CODES)]
    Runner(runner::RunnerArgs),
    /// Owner/Admin: grant a KSE pool's license to a member of the org.
    Grant(GrantArgs),
    /// Owner/Admin: revoke a KSE grant (ends the user's sessions, frees an activation).
    Revoke(GrantArgs),
    /// Owner/Admin: licensed users and online (node-locked) licenses.
    Licenses {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// Only this pool.
        #[arg(long)]
        pool: Option<PoolId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Activate KSE as a licensed user: bind a node-locked license to this
    /// machine, or hold a floating session (like `runner`, job included).
    #[command(after_help = RUNNER_EXIT_CODES)]
    Activate(runner::RunnerArgs),
    /// Offline licenses: create, list, public-key, verify.
    #[command(subcommand)]
    Offline(offline::OfflineCmd),
    /// Owner/Admin: the org's audit trail.
    Audit {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Owner/Admin: the org's events (docs/EVENTS.md) after a cursor, one
    /// per line; with --follow, new ones as they come, resuming after the
    /// last one printed when the broker restarts.
    Events(super::events::EventsArgs),
    /// Webhooks: POST the org's events to a URL, signed (docs/EVENTS.md):
    /// add, list, remove, rotate-secret, deliveries. Owners and Admins; the
    /// operator for any org.
    #[command(subcommand)]
    Webhook(super::webhook::WebhookCmd),
    /// Utilization history: per-step peak, average and trough of each pool
    /// (`usage`), the sessions that ended (`usage sessions`), and what
    /// other seat counts would have done (`usage what-if`). Members read
    /// their org; the operator any org.
    Usage(usage::UsageArgs),
    /// Print this machine's ID (override with LB_MACHINE_ID).
    MachineId,
    /// Broker maintenance on its data dir, offline (the broker stopped).
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Preflight: would a runner be admitted now? Exit 0 if so; if not, the
    /// refusal's exit code (3: the pool is full) after the runner's place in
    /// the queue and about how long it would wait. Takes no seat.
    #[command(after_help = EXIT_CODES)]
    Check(super::check::CheckArgs),
    /// The nodes of the cluster the broker belongs to: name, address, and
    /// which one serves (nothing for a single broker).
    Nodes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Per-pool quota, seats in use (sessions, node-locked activations,
    /// offline licenses, and seats held after a restart for runners to
    /// re-attach), machines, admissions and rejections, and runners waiting
    /// in the queue; in a cluster, which node answered and serves.
    Status {
        /// Only this org (default: your own; the operator sees all).
        #[arg(long)]
        org: Option<OrgName>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum AdminCmd {
    /// Mint a new operator API key into the data dir and print it (when the
    /// operator's key is lost). The broker must be stopped.
    NewOperatorKey {
        /// The broker's data dir.
        #[arg(long, default_value = "./broker-data")]
        data_dir: PathBuf,
    },
}

impl ConnArgs {
    pub(super) fn options(&self) -> Result<ClientOptions> {
        let api_key = match (&self.api_key, &self.api_key_file) {
            (Some(key), _) => {
                if std::env::args().any(|a| a == "--api-key" || a.starts_with("--api-key=")) {
                    eprintln!(
                        "warning: an API key on the command line is visible to other users of this host; \
                         use LB_API_KEY or --api-key-file"
                    );
                }
                key.clone()
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                text.lines().next().unwrap_or("").trim().to_string()
            }
            (None, None) => anyhow::bail!("no API key: set LB_API_KEY or pass --api-key-file"),
        };
        Ok(ClientOptions {
            server_name: self.server_name.clone(),
            connect_timeout: self.connect_timeout,
            ..ClientOptions::new(self.server.clone(), self.ca.clone(), api_key)
        })
    }

    pub(super) async fn connect(&self) -> Result<Client> {
        let opts = self.options()?;
        Ok(Client::connect(&opts).await?)
    }
}

impl Args {
    /// Worker threads asked for (`serve --workers`); `None` means one per CPU.
    pub fn workers(&self) -> Option<usize> {
        match &self.command {
            Command::Serve(a) => a.workers.filter(|n| *n > 0),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag and argument of every command says what it is for.
    #[test]
    fn every_flag_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Args::command(), "license-broker", &mut missing);
        assert!(missing.is_empty(), "flags without a description: {missing:?}");
    }
}
