//! The subcommands about what an org holds and who is in it: the org
//! itself, its users and API keys, KSE grants, its registered machines and
//! live sessions. Apart from `mod.rs` so the top of the tree (`Command`
//! and the connection flags) reads on one page.

use clap::Subcommand;
use license_broker::value::{MachineId, OrgName, PoolId, Role, SessionId};

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum OrgCmd {
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
pub(in crate::cli) enum UserCmd {
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
pub(in crate::cli) enum KeyCmd {
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

#[derive(clap::Args, Debug)]
pub(in crate::cli) struct GrantArgs {
    /// The org.
    #[arg(long)]
    pub(in crate::cli) org: OrgName,
    /// The KSE pool, e.g. kse-floating-annual.
    #[arg(long)]
    pub(in crate::cli) pool: PoolId,
    /// The member.
    pub(in crate::cli) email: String,
}

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum MachineCmd {
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
pub(in crate::cli) enum SessionCmd {
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
