//! The commands that are one request to the broker: orgs, pools, users,
//! keys, machines, sessions, grants, the audit trail, status and nodes
//! (usage and offline licenses through their own modules).
//!
//! Every one has the same shape: connect (and, for the operator, move to
//! the node serving the org), make the call, print, close. A listing pages
//! through `output::paged`; a change is one typed `Client` call and then
//! the line saying what it did (`change`). Nothing here decides what the
//! broker decides: a refusal is the broker's, printed and mapped to an
//! exit code by `cli::exit`.

use std::future::Future;

use anyhow::Result;
use license_broker::client::{Client, ClientError, ClientOptions};
use license_broker::proto::ListOf;
use license_broker::value::{OrgName, PoolId, Role};

use super::args::{Command, ConnArgs, GrantArgs, KeyCmd, MachineCmd, OrgCmd, PoolCmd, SessionCmd, UserCmd};
use super::{offline, output, usage, webhook};

/// Runs a command that is one request: connect, call, print, close.
pub async fn run(conn: &ConnArgs, command: Command) -> Result<()> {
    let c = connect(conn, &command).await?;
    let result = match command {
        // The operator's view of every org, on a cluster: each node
        // answers for its own orgs, so ask every node.
        Command::Status { org: None, json } if c.welcome().role == Role::Operator => {
            cluster_status(&c, conn, json).await
        }
        command => call(&c, command).await,
    };
    c.close().await;
    result
}

/// Connects for `command`. The operator's key is welcome on every node of
/// a cluster; a command about one org goes to the node serving it (or, to
/// create it, to the node that should).
async fn connect(conn: &ConnArgs, command: &Command) -> Result<Client> {
    let mut c = conn.connect().await?;
    if let (Role::Operator, Some(org)) = (c.welcome().role, org_of(command)) {
        if let Some(server) = c.route(org).await? {
            c.close().await;
            c = Client::connect(&ClientOptions { server, ..conn.options()? }).await?;
        }
    }
    Ok(c)
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
        | Command::Audit { org, .. }
        | Command::Check(super::check::CheckArgs { org, .. }) => Some(org),
        Command::Status { org, .. } => org.as_ref(),
        Command::Usage(a) => a.org(),
        Command::Webhook(cmd) => Some(cmd.org()),
        _ => None,
    }
}

/// The command's one request, on a connected client.
async fn call(c: &Client, command: Command) -> Result<()> {
    match command {
        Command::Grant(GrantArgs { org, pool, email }) => {
            change(c.grant(&org, pool, &email), |()| format!("granted {pool} to {email}")).await
        }
        Command::Revoke(GrantArgs { org, pool, email }) => {
            change(c.revoke_grant(&org, pool, &email), |()| format!("revoked {pool} from {email}")).await
        }
        Command::Licenses { org, pool, json } => list(c, ListOf::Grants { org, pool }, json).await,
        Command::Audit { org, json } => list(c, ListOf::Audit { org }, json).await,
        Command::Status { org, json } => status(c, org.as_ref(), json).await,
        Command::Check(a) => {
            let labels = license_broker::value::Labels::new(a.labels)?;
            let pool = a.pool.unwrap_or(PoolId::KRE_DEFAULT);
            super::check::run(c, (&a.org, pool), (a.machine_id, &labels), a.json).await
        }
        Command::Nodes { json } => {
            output::nodes(&c.nodes().await?, json);
            Ok(())
        }
        Command::Org(cmd) => org(c, cmd).await,
        Command::Pool(cmd) => pool(c, cmd).await,
        Command::User(cmd) => user(c, cmd).await,
        Command::Key(cmd) => key(c, cmd).await,
        Command::Machine(cmd) => machine(c, cmd).await,
        Command::Session(cmd) => session(c, cmd).await,
        Command::Usage(a) => usage::run(c, a).await,
        Command::Offline(cmd) => offline::request(c, cmd).await,
        Command::Webhook(cmd) => webhook::request(c, cmd).await,
        // `cli::run` answers these without a connection; never routed here.
        Command::Serve(_)
        | Command::Runner(_)
        | Command::Activate(_)
        | Command::MachineId
        | Command::Admin(_)
        | Command::Events(_) => {
            anyhow::bail!("internal: command routed to the request path")
        }
    }
}

/// The one shape of a change: make the call, then print what it did.
async fn change<T>(call: impl Future<Output = Result<T, ClientError>>, said: impl FnOnce(T) -> String) -> Result<()> {
    let answer = call.await?;
    println!("{}", said(answer));
    Ok(())
}

/// The one shape of a listing: page through it, printing each page.
async fn list(c: &Client, of: ListOf, json: bool) -> Result<()> {
    Ok(output::paged(c, of, json).await?)
}

/// `status` for one org (or, for anyone but the operator, their own).
async fn status(c: &Client, org: Option<&OrgName>, json: bool) -> Result<()> {
    let pools = c.pools(org).await?;
    output::status(&pools, json);
    if !json {
        // Best effort, as below: reservations are version 5.
        let mut orgs: Vec<&OrgName> = pools.iter().map(|p| &p.status.org).collect();
        orgs.dedup();
        for org in orgs {
            output::reserved_lines(&c.reservations(org).await.unwrap_or_default());
        }
        // Best effort: older brokers do not know the request.
        output::cluster_line(&c.nodes().await.unwrap_or_default());
    }
    Ok(())
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

async fn org(c: &Client, cmd: OrgCmd) -> Result<()> {
    match cmd {
        OrgCmd::List { json } => list(c, ListOf::Orgs, json).await,
        OrgCmd::Set { name, subscription_end } => {
            let said = |()| format!("org {name}: subscription through {subscription_end}");
            change(c.set_subscription(&name, &subscription_end), said).await
        }
        OrgCmd::Create { name, subscription_end, owner } => {
            change(c.create_org(&name, &subscription_end, &owner), |key| format!("owner api key: {key}")).await
        }
    }
}

async fn pool(c: &Client, cmd: PoolCmd) -> Result<()> {
    match cmd {
        PoolCmd::Set { org, product, kind, term, pool, quota, machine_idle, ephemeral, queue_alert, busy_alert } => {
            let pool = pool.unwrap_or(PoolId { product, kind, term });
            if let Some(quota) = quota {
                change(c.set_pool(&org, pool, quota), |()| format!("pool {org}/{pool}: quota {quota}")).await?;
            }
            if queue_alert.is_some() || busy_alert.is_some() {
                super::alerts::set(c, &org, pool, queue_alert.and_then(|a| a.0), busy_alert.and_then(|a| a.0)).await?;
            }
            if machine_idle.is_none() && !ephemeral {
                return Ok(());
            }
            let idle = machine_idle.and_then(|i| i.0);
            let said = |()| {
                let kept = idle.map_or("forever".to_string(), |d| humantime::format_duration(d).to_string());
                format!("pool {org}/{pool}: unused machines kept {kept}, ephemeral registrations: {ephemeral}")
            };
            change(c.set_machine_policy(&org, pool, idle, ephemeral), said).await
        }
        PoolCmd::Limit { org, pool, user: Some(user), max, .. } => {
            let said = |()| match max {
                Some(max) => format!("{user} may hold at most {max} sessions of {pool} at once"),
                None => format!("{user} has no cap on {pool}"),
            };
            change(c.set_user_limit(&org, pool, &user, max), said).await
        }
        PoolCmd::Limit { org, pool, label, max, .. } => {
            // Invariant: clap requires --user or --label.
            let (key, value) = label.expect("--user or --label");
            let said = |()| match max {
                Some(max) => format!("sessions labelled {key}={value} may hold at most {max} seats of {pool} at once"),
                None => format!("sessions labelled {key}={value} have no cap on {pool}"),
            };
            change(c.set_label_limit((&org, pool), (&key, &value), max), said).await
        }
        PoolCmd::Reserve { org, pool, label: (key, value), seats } => {
            let said = |()| match seats {
                0 => format!("no seats of {pool} are reserved for {key}={value}"),
                n => format!("{n} seats of {pool} are reserved for sessions labelled {key}={value}"),
            };
            change(c.set_reservation((&org, pool), (&key, &value), seats), said).await
        }
        PoolCmd::Limits { org, pool, reservations: true, json, .. } => {
            let all = c.reservations(&org).await?;
            output::reservations(&all.into_iter().filter(|r| r.pool == pool).collect::<Vec<_>>(), json);
            Ok(())
        }
        PoolCmd::Limits { org, pool, labels: false, json, .. } => list(c, ListOf::UserLimits { org, pool }, json).await,
        PoolCmd::Limits { org, pool, labels: true, json, .. } => list(c, ListOf::LabelLimits { org, pool }, json).await,
    }
}

async fn user(c: &Client, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Add { org, email, role } => {
            change(c.add_user(&org, &email, role), |()| format!("added {email} to {org} as {role}")).await
        }
        UserCmd::Remove { org, email } => {
            change(c.remove_user(&org, &email), |()| format!("removed {email} from {org}")).await
        }
        UserCmd::List { org, json } => list(c, ListOf::Users { org }, json).await,
    }
}

async fn key(c: &Client, cmd: KeyCmd) -> Result<()> {
    match cmd {
        // The one change that prints twice: the key on stdout, once, and
        // its id on stderr, for the person who must store the key now.
        KeyCmd::Create { org, email } => {
            let (key, id) = c.create_key(&org, &email).await?;
            println!("api key: {key}");
            eprintln!("key id: {id} (store the key now: it is not shown again)");
            Ok(())
        }
        KeyCmd::Revoke { org, key } => change(c.revoke_key(&org, &key), |()| "revoked".to_string()).await,
        KeyCmd::List { org, json } => list(c, ListOf::Keys { org }, json).await,
    }
}

async fn machine(c: &Client, cmd: MachineCmd) -> Result<()> {
    match cmd {
        MachineCmd::List { org, json } => list(c, ListOf::MachineUses { org }, json).await,
        MachineCmd::Remove { org, machine, pool } => {
            change(c.remove_machine(&org, pool, &machine), |()| format!("removed {machine}")).await
        }
    }
}

async fn session(c: &Client, cmd: SessionCmd) -> Result<()> {
    match cmd {
        SessionCmd::List { org, json } => list(c, ListOf::Sessions { org }, json).await,
        SessionCmd::Kill { org, session } => {
            change(c.kill_session(&org, session), |()| format!("killed {session}")).await
        }
    }
}
