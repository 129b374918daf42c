//! `license-broker offline …`: create, list, public-key (via the broker),
//! revoke/transfer (which the broker refuses), and verify (no broker).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Subcommand;
use license_broker::offline;
use license_broker::proto::ListOf;
use license_broker::value::{MachineId, Millis, OrgName, PoolId};

use license_broker::client::Client;

use super::output;

#[derive(Subcommand, Debug)]
pub enum OfflineCmd {
    /// Owner/Admin: create an offline license for a machine (annual node-locked pools).
    Create {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The annual node-locked pool, e.g. kse-node-locked-annual.
        #[arg(long)]
        pool: PoolId,
        /// The machine ID the license is bound to (`machine-id` on that machine prints it).
        #[arg(long)]
        machine_id: MachineId,
        /// Last valid day, YYYY-MM-DD: at most 60 days from today, not after the subscription end.
        #[arg(long)]
        expires: String,
        /// Directory to write KSE_<machineID>.lic / KRE_<machineID>.lic into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Owner/Admin: the org's offline licenses, expired ones included.
    List {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Owner/Admin: revoke an offline license (refused: they cannot be revoked).
    Revoke {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The license's id (from `offline list`).
        license: String,
    },
    /// Owner/Admin: move an offline license to another machine (refused).
    Transfer {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The license's id (from `offline list`).
        license: String,
        /// The machine it would move to.
        #[arg(long)]
        machine_id: MachineId,
    },
    /// Print the broker's public key for verifying offline licenses (PEM).
    PublicKey,
    /// Verify a license file without the broker. Exit 0 valid, 10 bad
    /// signature, 11 expired, 12 not yet valid, 13 wrong machine, 14 malformed.
    Verify {
        /// The license file (KRE_<machineID>.lic or KSE_<machineID>.lic).
        file: PathBuf,
        /// The broker's public key (PEM), from `offline public-key`.
        #[arg(long)]
        public_key: PathBuf,
        /// Also check the license is bound to this machine ID.
        #[arg(long)]
        machine_id: Option<MachineId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The offline commands that ask the broker (`verify` needs none: see `verify`).
pub async fn request(c: &Client, cmd: OfflineCmd) -> Result<()> {
    match cmd {
        OfflineCmd::Create { org, pool, machine_id, expires, out } => {
            let (name, content) = c.create_offline(&org, pool, &machine_id, &expires).await?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let path = out.join(&name);
            std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
            println!("{}", path.display());
        }
        OfflineCmd::List { org, json } => output::paged(c, ListOf::Offline { org }, json).await?,
        OfflineCmd::Revoke { org, license } => c.revoke_offline(&org, &license).await?,
        OfflineCmd::Transfer { org, license, machine_id } => c.transfer_offline(&org, &license, &machine_id).await?,
        OfflineCmd::PublicKey => print!("{}", c.offline_public_key().await?),
        // `cli::run` verifies locally, without a connection; never routed here.
        OfflineCmd::Verify { .. } => anyhow::bail!("internal: verify routed to the request path"),
    }
    Ok(())
}

/// Verifies a license file against the broker's public key, offline.
pub fn verify(file: &PathBuf, public_key: &PathBuf, machine: Option<&MachineId>, json: bool) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let pem = std::fs::read_to_string(public_key).with_context(|| format!("reading {}", public_key.display()))?;
    let key = offline::parse_public_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", public_key.display()))?;
    let now = Millis(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64));
    match offline::verify(&bytes, &key, machine, now) {
        Ok(f) => {
            let last_day = license_broker::core::format_end_date(f.expires);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "org": f.org.as_str(), "pool": f.pool.to_string(),
                        "machine": f.machine.as_str(), "last_day": last_day, "license": f.id.to_string(),
                        "machine_checked": machine.is_some()})
                );
            } else {
                let checked = if machine.is_some() { "" } else { " (machine not checked: pass --machine-id)" };
                println!(
                    "valid: {} license for {} from {}/{}, through {last_day}{checked}",
                    f.pool.product_name(),
                    f.machine,
                    f.org,
                    f.pool
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({"valid": false, "reason": e.to_string(), "exit": e.exit_code()}));
            } else {
                println!("invalid: {e}");
            }
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
