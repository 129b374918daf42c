//! Webhooks: the URLs an org's events are delivered to (docs/EVENTS.md).
//! The core keeps them as records (so a restart or a cluster failover
//! keeps them, like any org record) and decides who may manage them: an
//! org's Owners and Admins, and the operator for every org. Checking that
//! a URL is one the broker may call, delivering and signing belong to the
//! shell (`crate::events`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::broker::Broker;
use super::error::{Error, Result};
use super::id::OrgName;
use super::record::{Change, Record};
use super::time::Millis;
use super::Principal;

/// Most webhooks one org may have.
pub const MAX_PER_ORG: usize = 10;

/// Longest URL a webhook may have.
pub const MAX_URL: usize = 2048;

/// Most event filters one webhook may have.
pub const MAX_FILTERS: usize = 32;

/// A webhook's signing secret, never shown but when made (`Debug` hides it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A webhook as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// The org whose events it receives.
    pub org: OrgName,
    /// Its id, 12 hex digits (what `webhook list` shows and `remove` takes).
    pub id: String,
    /// Where events are POSTed: `http://` or `https://`.
    pub url: String,
    /// Which events: types (`audit.user_added`), families (`audit.*`) or
    /// `*`; empty: every event.
    pub events: Vec<String>,
    /// The HMAC-SHA256 key requests are signed with.
    pub secret: Secret,
    /// When it was added.
    pub created: Millis,
}

impl Webhook {
    /// Whether an event of type `kind` is delivered to it.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|f| filter_matches(f, kind))
    }
}

/// Whether `filter` (a type, `family.*` or `*`) matches the type `kind`.
pub fn filter_matches(filter: &str, kind: &str) -> bool {
    match filter.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => filter == kind,
    }
}

/// A webhook as its org's Owners and Admins see it (never the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookView {
    /// The webhook, its secret blanked.
    pub hook: Webhook,
    /// The cursor of the last event delivered (or skipped by its filter).
    pub delivered: u64,
}

impl Broker {
    /// Refuses unless `p` may manage `org`'s webhooks: the operator, or an
    /// Owner or Admin of the org; and the org exists.
    pub fn require_webhook_admin(&self, p: &Principal, org: &OrgName) -> Result<()> {
        if p.require_operator().is_err() {
            p.require_admin(org)?;
        }
        self.with_dir(|dir| dir.org(org).map(|_| ()))
    }

    /// Plans a new webhook, delivering the events after cursor `from`.
    pub fn plan_add_webhook(&self, p: &Principal, hook: Webhook, from: u64) -> Result<Vec<Change>> {
        self.require_webhook_admin(p, &hook.org)?;
        if hook.url.len() > MAX_URL {
            return Err(Error::invalid("url", format!("at most {MAX_URL} characters")));
        }
        if hook.events.len() > MAX_FILTERS || hook.events.iter().any(|f| f.is_empty() || f.len() > 64) {
            return Err(Error::invalid("events", format!("at most {MAX_FILTERS} filters of 1 to 64 characters")));
        }
        let count = self.with_dir(|dir| dir.org(&hook.org).map(|o| o.webhooks.len()))?;
        if count >= MAX_PER_ORG {
            return Err(Error::invalid("webhook", format!("an org has at most {MAX_PER_ORG} webhooks")));
        }
        let cursor = Record::WebhookCursor { org: hook.org.clone(), id: hook.id.clone(), delivered: from };
        Ok(vec![Change::Put(Record::Webhook(hook)), Change::Put(cursor)])
    }

    /// Plans a webhook's removal.
    pub fn plan_remove_webhook(&self, p: &Principal, org: &OrgName, id: &str) -> Result<Vec<Change>> {
        self.webhook(p, org, id)?;
        Ok(vec![
            Change::RemoveWebhook { org: org.clone(), id: id.to_string() },
            Change::RemoveWebhookCursor { org: org.clone(), id: id.to_string() },
        ])
    }

    /// Plans a webhook's new secret.
    pub fn plan_rotate_webhook_secret(
        &self,
        p: &Principal,
        org: &OrgName,
        id: &str,
        secret: Secret,
    ) -> Result<Vec<Change>> {
        let hook = self.webhook(p, org, id)?.hook;
        Ok(vec![Change::Put(Record::Webhook(Webhook { secret, ..hook }))])
    }

    /// Plans the audit line of a redelivery of the event at cursor `seq`
    /// to `org`'s webhook `id`: only an event it was already given (at or
    /// before its delivered cursor; later ones come in order anyway).
    /// `delivered`: the cursor as its deliveries have it, which the stored
    /// one trails by up to a couple of seconds.
    pub fn plan_redeliver(
        &self,
        p: &Principal,
        (org, id): (&OrgName, &str),
        (seq, delivered): (u64, u64),
        now: Millis,
    ) -> Result<Vec<Change>> {
        let delivered = self.webhook(p, org, id)?.delivered.max(delivered);
        if seq == 0 || seq > delivered {
            let why = format!("event {org}/{seq} is not delivered to webhook {id} yet (its cursor: {delivered})");
            return Err(Error::invalid("event", why));
        }
        let detail = format!("webhook={id} event={org}/{seq}");
        Ok(vec![self.audit(org, p, super::AuditAction::WebhookRedelivered, detail, now)])
    }

    /// `org`'s webhooks, secrets blanked, by id.
    pub fn webhooks(&self, p: &Principal, org: &OrgName) -> Result<Vec<WebhookView>> {
        self.require_webhook_admin(p, org)?;
        let mut all = self.with_dir(|dir| dir.org(org).map(|o| o.webhooks.values().cloned().collect::<Vec<_>>()))?;
        for v in &mut all {
            v.hook.secret = Secret(String::new());
        }
        Ok(all)
    }

    /// One webhook of `org`, secret blanked (`NOT_FOUND` if none has `id`).
    pub fn webhook(&self, p: &Principal, org: &OrgName, id: &str) -> Result<WebhookView> {
        let all = self.webhooks(p, org)?;
        all.into_iter().find(|v| v.hook.id == id).ok_or_else(|| Error::NotFound { what: "webhook", name: id.into() })
    }

    /// Every webhook of the orgs in memory, with its secret: for the shell
    /// that delivers (no caller: it is the broker's own task).
    pub fn webhooks_to_deliver(&self) -> Vec<WebhookView> {
        self.with_dir(|dir| dir.orgs.values().flat_map(|o| o.webhooks.values().cloned()).collect())
    }
}
