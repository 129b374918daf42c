//! Command-line definitions and the commands that are a single request.

mod config;
mod job;
mod labels;
mod offline;
mod output;
mod runner;
mod serve;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

pub use config::parse as parse_args;
use license_broker::client::{Client, ClientError, ClientOptions};
use license_broker::proto::{ErrorCode, ListOf};
use license_broker::value::{Kind, MachineId, OrgName, PoolId, Product, Role, SessionId, Term};

/// A floating-license session broker over QUIC.
#[derive(Parser, Debug)]
#[command(
    name = "license-broker",
    version,
    about,
    after_help = "Exit codes: 0 success; 1 other failure (or a runner's session ended by the broker); \
                  2 command-line misuse; 3 quota exceeded or grant limit (or, with --wait, no seat \
                  came in time or the queue is full); 4 machine limit or activated \
                  elsewhere; 5 not authenticated, not allowed or not licensed; 6 lease lost (a runner \
                  could not renew before its deadline)."
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    conn: ConnArgs,
}

/// How client commands reach the broker.
#[derive(clap::Args, Debug, Clone)]
struct ConnArgs {
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
enum Command {
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
enum AdminCmd {
    /// Mint a new operator API key into the data dir and print it (when the
    /// operator's key is lost). The broker must be stopped.
    NewOperatorKey {
        /// The broker's data dir.
        #[arg(long, default_value = "./broker-data")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct GrantArgs {
    /// The org.
    #[arg(long)]
    org: OrgName,
    /// The KSE pool, e.g. kse-floating-annual.
    #[arg(long)]
    pool: PoolId,
    /// The member.
    email: String,
}

#[derive(Subcommand, Debug)]
enum OrgCmd {
    /// List every org (operator).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Renew or change an org's subscription (operator).
    Set {
        /// The org's name.
        name: OrgName,
        /// New last day of the subscription, YYYY-MM-DD.
        #[arg(long)]
        subscription_end: String,
    },
    /// Create an org and print its Owner's API key.
    Create {
        /// The org's name.
        name: OrgName,
        /// Last day of the subscription, YYYY-MM-DD.
        #[arg(long)]
        subscription_end: String,
        /// Email of the org's first Owner.
        #[arg(long, default_value = "owner@localhost")]
        owner: String,
    },
}

#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Create the pool or change its quota.
    Set {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// kre or kse.
        #[arg(long, default_value = "kre")]
        product: Product,
        /// floating or node-locked.
        #[arg(long, default_value = "floating")]
        kind: Kind,
        /// annual or monthly.
        #[arg(long, default_value = "annual")]
        term: Term,
        /// The pool id PRODUCT-KIND-TERM instead of the three flags above.
        #[arg(long, conflicts_with_all = ["product", "kind", "term"])]
        pool: Option<PoolId>,
        /// Licenses bought.
        #[arg(long)]
        quota: u32,
    },
    /// Owner/Admin: cap how many sessions one member may hold at once in a
    /// pool (FlexNet's MAX). Running sessions are not cut.
    Limit {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The pool, e.g. kre-floating-annual.
        #[arg(long)]
        pool: PoolId,
        /// The member.
        #[arg(long)]
        user: String,
        /// Most sessions at once (0: none).
        #[arg(long, required_unless_present = "unlimited")]
        max: Option<u32>,
        /// Remove the member's cap.
        #[arg(long, conflicts_with = "max")]
        unlimited: bool,
    },
    /// Owner/Admin: a pool's per-user caps and each member's sessions.
    Limits {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The pool, e.g. kre-floating-annual.
        #[arg(long)]
        pool: PoolId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Add a member to the org.
    Add {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The member's email.
        email: String,
        /// owner, admin or user.
        #[arg(long, default_value = "user")]
        role: Role,
    },
    /// Remove a member: revokes their keys, frees their grants and
    /// activations, ends their sessions (audited).
    Remove {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The member's email.
        email: String,
    },
    /// List the org's members.
    List {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Create an API key for a member; it is printed once.
    Create {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The member's email.
        email: String,
    },
    /// Revoke a key, by its id (from `key list`) or the key itself.
    Revoke {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The key id (from `key list`) or the full key.
        key: String,
    },
    /// List the org's keys (ids, never the keys).
    List {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum MachineCmd {
    /// List registered machines.
    List {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a machine, freeing its slot (its live sessions are revoked).
    Remove {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The machine id.
        machine: MachineId,
        /// Only from this pool (default: every pool of the org).
        #[arg(long)]
        pool: Option<PoolId>,
    },
}

#[derive(Subcommand, Debug)]
enum SessionCmd {
    /// List live sessions.
    List {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a session now (reason: revoked).
    Kill {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The session id (from `session list`).
        session: SessionId,
    },
}

impl ConnArgs {
    fn options(&self) -> Result<ClientOptions> {
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

    pub(crate) async fn connect(&self) -> Result<Client> {
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

/// Runs one command; returns the process exit code.
pub async fn run(args: Args) -> Result<ExitCode> {
    let conn = &args.conn;
    match args.command {
        Command::Serve(a) => serve::run(*a).await,
        Command::Runner(a) => runner::run(a, conn, false).await,
        Command::Activate(a) => runner::run(a, conn, true).await,
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
        command => {
            // Every other command is one request: connect, ask, close cleanly.
            let mut c = conn.connect().await?;
            // The operator's key is welcome on every node of a cluster; a
            // command about one org goes to the node serving it (or, to
            // create it, to the node that should).
            if let (Role::Operator, Some(org)) = (c.welcome().role, org_of(&command)) {
                if let Some(server) = c.route(org).await? {
                    c.close().await;
                    c = Client::connect(&ClientOptions { server, ..conn.options()? }).await?;
                }
            }
            let result = match command {
                // The operator's view of every org, on a cluster: each node
                // answers for its own orgs, so ask every node.
                Command::Status { org: None, json } if c.welcome().role == Role::Operator => {
                    cluster_status(&c, conn, json).await
                }
                command => request(&c, command).await,
            };
            c.close().await;
            result.map(|()| ExitCode::SUCCESS)
        }
    }
}

/// `status` as the operator: every org's pools, gathered from every node of
/// a cluster (each serves its own orgs); a single broker's own answer
/// otherwise. A node that does not answer is named on stderr, and the
/// command fails after printing what the others said.
async fn cluster_status(c: &Client, conn: &ConnArgs, json: bool) -> Result<()> {
    let nodes = c.nodes().await?;
    let mut pools = c.pools(None).await?;
    let mut failed = Vec::new();
    for node in nodes.iter().filter(|n| n.org_count > 0) {
        let opts = ClientOptions { server: node.advertise.clone(), ..conn.options()? };
        match Client::connect(&opts).await {
            Ok(other) => {
                match other.pools(None).await {
                    Ok(more) => pools.extend(more),
                    Err(e) => failed.push(format!("{} ({}): {e}", node.name, node.advertise)),
                }
                other.close().await;
            }
            Err(e) => failed.push(format!("{} ({}): {e}", node.name, node.advertise)),
        }
    }
    // The node first asked is among the nodes: its pools came twice.
    pools.sort_by(|a, b| (&a.status.org, a.status.pool).cmp(&(&b.status.org, b.status.pool)));
    pools.dedup_by(|a, b| (&a.status.org, a.status.pool) == (&b.status.org, b.status.pool));
    output::status(&pools, json);
    if !json {
        output::cluster_line(&nodes);
    }
    for f in &failed {
        eprintln!("warning: no answer from node {f}: its orgs are missing above");
    }
    anyhow::ensure!(failed.is_empty(), "{} node(s) did not answer", failed.len());
    Ok(())
}

/// The org a command is about, if any.
fn org_of(command: &Command) -> Option<&OrgName> {
    match command {
        Command::Org(OrgCmd::Set { name, .. } | OrgCmd::Create { name, .. }) => Some(name),
        Command::Pool(PoolCmd::Set { org, .. } | PoolCmd::Limit { org, .. } | PoolCmd::Limits { org, .. })
        | Command::User(UserCmd::Add { org, .. } | UserCmd::Remove { org, .. } | UserCmd::List { org, .. })
        | Command::Key(KeyCmd::Create { org, .. } | KeyCmd::Revoke { org, .. } | KeyCmd::List { org, .. })
        | Command::Machine(MachineCmd::List { org, .. } | MachineCmd::Remove { org, .. })
        | Command::Session(SessionCmd::List { org, .. } | SessionCmd::Kill { org, .. })
        | Command::Licenses { org, .. }
        | Command::Audit { org, .. } => Some(org),
        Command::Status { org, .. } => org.as_ref(),
        Command::Usage(a) => a.org(),
        _ => None,
    }
}

/// The commands that are a single request on a connected client.
async fn request(c: &Client, command: Command) -> Result<()> {
    match command {
        Command::Grant(GrantArgs { org, pool, email }) => {
            c.grant(&org, pool, &email).await?;
            println!("granted {pool} to {email}");
        }
        Command::Revoke(GrantArgs { org, pool, email }) => {
            c.revoke_grant(&org, pool, &email).await?;
            println!("revoked {pool} from {email}");
        }
        Command::Licenses { org, pool, json } => output::paged(c, ListOf::Grants { org, pool }, json).await?,
        Command::Audit { org, json } => output::paged(c, ListOf::Audit { org }, json).await?,
        Command::Status { org, json } => {
            output::status(&c.pools(org.as_ref()).await?, json);
            if !json {
                // Best effort: older brokers do not know the request.
                output::cluster_line(&c.nodes().await.unwrap_or_default());
            }
        }
        Command::Nodes { json } => output::nodes(&c.nodes().await?, json),
        Command::Org(OrgCmd::List { json }) => output::paged(c, ListOf::Orgs, json).await?,
        Command::Org(OrgCmd::Set { name, subscription_end }) => {
            c.set_subscription(&name, &subscription_end).await?;
            println!("org {name}: subscription through {subscription_end}");
        }
        Command::Org(OrgCmd::Create { name, subscription_end, owner }) => {
            let key = c.create_org(&name, &subscription_end, &owner).await?;
            println!("owner api key: {key}");
        }
        Command::Pool(PoolCmd::Limit { org, pool, user, max, unlimited: _ }) => {
            c.set_user_limit(&org, pool, &user, max).await?;
            match max {
                Some(max) => println!("{user} may hold at most {max} sessions of {pool} at once"),
                None => println!("{user} has no cap on {pool}"),
            }
        }
        Command::Pool(PoolCmd::Limits { org, pool, json }) => {
            output::paged(c, ListOf::UserLimits { org, pool }, json).await?
        }
        Command::Pool(PoolCmd::Set { org, product, kind, term, pool, quota }) => {
            let pool = pool.unwrap_or(PoolId { product, kind, term });
            c.set_pool(&org, pool, quota).await?;
            println!("pool {org}/{pool}: quota {quota}");
        }
        Command::User(cmd) => user(c, cmd).await?,
        Command::Key(cmd) => key(c, cmd).await?,
        Command::Machine(cmd) => machine(c, cmd).await?,
        Command::Session(cmd) => session(c, cmd).await?,
        Command::Usage(a) => usage::run(c, a).await?,
        Command::Offline(cmd) => offline::request(c, cmd).await?,
        // `run` answers these without a connection; never routed here.
        Command::Serve(_) | Command::Runner(_) | Command::Activate(_) | Command::MachineId | Command::Admin(_) => {
            anyhow::bail!("internal: command routed to the request path")
        }
    }
    Ok(())
}

async fn user(c: &Client, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Add { org, email, role } => {
            c.add_user(&org, &email, role).await?;
            println!("added {email} to {org} as {role}");
        }
        UserCmd::Remove { org, email } => {
            c.remove_user(&org, &email).await?;
            println!("removed {email} from {org}");
        }
        UserCmd::List { org, json } => output::paged(c, ListOf::Users { org }, json).await?,
    }
    Ok(())
}

async fn key(c: &Client, cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::Create { org, email } => {
            let (key, id) = c.create_key(&org, &email).await?;
            println!("api key: {key}");
            eprintln!("key id: {id} (store the key now: it is not shown again)");
        }
        KeyCmd::Revoke { org, key } => {
            c.revoke_key(&org, &key).await?;
            println!("revoked");
        }
        KeyCmd::List { org, json } => output::paged(c, ListOf::Keys { org }, json).await?,
    }
    Ok(())
}

async fn machine(c: &Client, cmd: MachineCmd) -> Result<()> {
    match cmd {
        MachineCmd::List { org, json } => output::paged(c, ListOf::Machines { org }, json).await?,
        MachineCmd::Remove { org, machine, pool } => {
            c.remove_machine(&org, pool, &machine).await?;
            println!("removed {machine}");
        }
    }
    Ok(())
}

async fn session(c: &Client, cmd: SessionCmd) -> Result<()> {
    match cmd {
        SessionCmd::List { org, json } => output::paged(c, ListOf::Sessions { org }, json).await?,
        SessionCmd::Kill { org, session } => {
            c.kill_session(&org, session).await?;
            println!("killed {session}");
        }
    }
    Ok(())
}

/// The exit codes of `runner` and `activate`, for their `--help`.
const RUNNER_EXIT_CODES: &str = "Exit codes: 0 released (or, with a job, the job's own exit code); \
    1 failure, or the broker ended the session; 3 quota exceeded (with --wait: no seat came in \
    time, or the queue was full); 4 machine limit or activated \
    elsewhere; 5 not authenticated, not allowed or not licensed; 6 lease lost (with a job: the \
    job was stopped); 127 the job could not be started.";

/// Exit code of a runner (or floating activation) whose lease was lost: it
/// could not renew before its deadline, or re-attaching was refused.
pub const EXIT_LEASE_LOST: u8 = 6;

/// The exit code for an error code: 3 quota (or grant limit), 4 machine
/// limit (or activated elsewhere), 5 authentication/authorisation (or not
/// licensed), 1 otherwise.
pub fn exit_code_for(code: Option<ErrorCode>) -> u8 {
    match code {
        Some(
            ErrorCode::QuotaExceeded
            | ErrorCode::GrantLimit
            | ErrorCode::QueueTimeout
            | ErrorCode::QueueFull
            | ErrorCode::UserLimit,
        ) => 3,
        Some(ErrorCode::MachineLimit | ErrorCode::AlreadyActivated) => 4,
        Some(ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::NotLicensed) => 5,
        _ => 1,
    }
}

/// The exit code for a failed command.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    exit_code_for(e.downcast_ref::<ClientError>().and_then(ClientError::code))
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
