//! `license-broker webhook add|list|remove|rotate-secret|deliveries`: an
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
}

impl WebhookCmd {
    /// The org the command is about.
    pub fn org(&self) -> &OrgName {
        match self {
            WebhookCmd::Add { org, .. }
            | WebhookCmd::List { org, .. }
            | WebhookCmd::Remove { org, .. }
            | WebhookCmd::RotateSecret { org, .. }
            | WebhookCmd::Deliveries { org, .. } => org,
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
    }
    Ok(())
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
