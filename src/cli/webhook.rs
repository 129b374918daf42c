//! `license-broker webhook add|list|remove|rotate-secret|deliveries|redeliver`: an
//! org's webhooks (docs/EVENTS.md), one request each over QUIC (protocol
//! version 5). The secret is printed once, by `add` and `rotate-secret`.

use anyhow::Result;
use license_broker::client::Client;
use license_broker::value::time::format_utc;
use license_broker::value::{Millis, OrgName};

/// `webhook`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum WebhookCmd {
    /// Owner/Admin (the operator: any org): POST the org's events to URL,
    /// signed; prints the webhook's id and its secret (shown once).
    Add {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// `https://...` (or `http://...`).
        #[arg(long)]
        url: String,
        /// Only these events: types (audit.user_added), families (audit.*);
        /// comma-separated or repeated (default: every event).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// The org's webhooks: id, URL, filters, delivered cursor, backlog, failing.
    List {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Removes a webhook: nothing more is sent to it.
    Remove {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The webhook's id (from `webhook list`).
        id: String,
    },
    /// Gives a webhook a new secret (printed once); the old one signs no more.
    RotateSecret {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The webhook's id.
        id: String,
    },
    /// A webhook's recent delivery attempts: event, time, status, latency, error.
    Deliveries {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The webhook's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sends one event the webhook was given already once more (audited);
    /// prints the attempt: status, latency, error.
    Redeliver {
        /// The org.
        #[arg(long)]
        org: OrgName,
        /// The webhook's id.
        #[arg(long)]
        id: String,
        /// The delivery's event, as `webhook deliveries` shows it
        /// (`ORG/CURSOR`), or its cursor.
        #[arg(long, alias = "event")]
        delivery: String,
    },
}

impl WebhookCmd {
    /// The org the command is about.
    pub fn org(&self) -> &OrgName {
        match self {
            WebhookCmd::Add { org, .. }
            | WebhookCmd::List { org, .. }
            | WebhookCmd::Remove { org, .. }
            | WebhookCmd::RotateSecret { org, .. }
            | WebhookCmd::Deliveries { org, .. }
            | WebhookCmd::Redeliver { org, .. } => org,
        }
    }
}

/// Runs one webhook command on a connected client.
pub async fn request(c: &Client, cmd: WebhookCmd) -> Result<()> {
    match cmd {
        WebhookCmd::Add { org, url, events } => {
            let (id, secret) = c.add_webhook(&org, &url, events).await?;
            println!(
                "webhook {id} added\nsecret: {secret}\n(shown once: keep it where the receiver verifies signatures)"
            );
        }
        WebhookCmd::List { org, json } => list(c, &org, json).await?,
        WebhookCmd::Remove { org, id } => {
            c.remove_webhook(&org, &id).await?;
            println!("webhook {id} removed");
        }
        WebhookCmd::RotateSecret { org, id } => {
            let secret = c.rotate_webhook_secret(&org, &id).await?;
            println!("webhook {id}: new secret: {secret}\n(shown once; the old secret signs no more)");
        }
        WebhookCmd::Deliveries { org, id, json } => deliveries(c, &org, &id, json).await?,
        WebhookCmd::Redeliver { org, id, delivery } => {
            let d = c.redeliver_webhook(&org, &id, event_cursor(&org, &delivery)?).await?;
            match d.error.is_empty() {
                true => println!("{} redelivered to webhook {id}: {} in {} ms", d.event, d.status, d.latency_ms),
                false => anyhow::bail!("{} not redelivered to webhook {id}: {}", d.event, d.error),
            }
        }
    }
    Ok(())
}

/// The cursor `delivery` names: `ORG/CURSOR` (of this org) or `CURSOR`.
fn event_cursor(org: &OrgName, delivery: &str) -> Result<u64> {
    let cursor = match delivery.rsplit_once('/') {
        Some((o, c)) if o == org.as_str() => c,
        Some((o, _)) => anyhow::bail!("event {delivery} is org {o}'s, not {org}'s"),
        None => delivery,
    };
    cursor.parse().map_err(|_| anyhow::anyhow!("--delivery takes ORG/CURSOR or CURSOR, not {delivery:?}"))
}

async fn list(c: &Client, org: &OrgName, json: bool) -> Result<()> {
    let hooks = c.webhooks(org).await?;
    for h in &hooks {
        match json {
            true => println!(
                "{}",
                serde_json::json!({
                    "id": h.id, "url": h.url, "events": h.events, "created": format_utc(Millis(h.created_ms)),
                    "delivered": h.delivered, "backlog": h.backlog, "failing": h.failing,
                    "missed": h.missed, "last_error": h.last_error,
                })
            ),
            false => println!(
                "{}  {}  events={}  delivered={}  backlog={}  {}{}",
                h.id,
                h.url,
                if h.events.is_empty() { "*".to_string() } else { h.events.join(",") },
                h.delivered,
                h.backlog,
                if h.failing { "FAILING" } else { "ok" },
                if h.last_error.is_empty() { String::new() } else { format!("  last error: {}", h.last_error) },
            ),
        }
    }
    Ok(())
}

async fn deliveries(c: &Client, org: &OrgName, id: &str, json: bool) -> Result<()> {
    for d in c.webhook_deliveries(org, id).await? {
        let at = format_utc(Millis(d.at_ms));
        match json {
            true => println!(
                "{}",
                serde_json::json!({ "event": d.event, "at": at, "status": d.status,
                                    "latency_ms": d.latency_ms, "error": d.error })
            ),
            false => println!("{}  {at}  {}  {} ms  {}", d.event, d.status, d.latency_ms, d.error),
        }
    }
    Ok(())
}
