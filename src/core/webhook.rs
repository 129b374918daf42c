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

    /// Plans `org`'s webhook `id`'s cursor as delivered up to `delivered`,
    /// if the webhook is still there and its stored cursor is behind. A
    /// removed webhook gets none: its removal took its cursor with it, and
    /// a cursor written after would be left in the store for good. (The
    /// shell plans and commits under its writer lock, as a removal does.)
    pub fn plan_webhook_cursor(&self, org: &OrgName, id: &str, delivered: u64) -> Option<Change> {
        let stored = self.with_dir(|dir| Some(dir.org(org).ok()?.webhooks.get(id)?.delivered))?;
        let record = Record::WebhookCursor { org: org.clone(), id: id.to_string(), delivered };
        (delivered > stored).then_some(Change::Put(record))
    }

    /// Plans the cursors of `orgs`' webhooks that `delivered` (org, id →
    /// the cursor delivered this run) has ahead of the store: what a node
    /// writes as it hands the orgs on or stops, so nothing delivered is
    /// sent again by the next node or run.
    pub fn plan_webhook_cursors(&self, orgs: &[OrgName], delivered: impl Fn(&OrgName, &str) -> u64) -> Vec<Change> {
        let ids: Vec<(OrgName, String)> = self.with_dir(|dir| {
            let hooks = orgs.iter().filter_map(|o| dir.orgs.get(o)).flat_map(|e| e.webhooks.values());
            hooks.map(|v| (v.hook.org.clone(), v.hook.id.clone())).collect()
        });
        ids.iter().filter_map(|(org, id)| self.plan_webhook_cursor(org, id, delivered(org, id))).collect()
    }

    /// Every webhook of the orgs in memory, with its secret: for the shell
    /// that delivers (no caller: it is the broker's own task).
    pub fn webhooks_to_deliver(&self) -> Vec<WebhookView> {
        self.with_dir(|dir| dir.orgs.values().flat_map(|o| o.webhooks.values().cloned()).collect())
    }
}

#[cfg(all(test, not(broker_loom)))]
mod tests {
    use super::*;
    use crate::core::testkit::{t, Fixture};

    fn hook(w: &Fixture, id: &str) -> Webhook {
        let (url, secret) = ("https://example.com/hook".to_string(), Secret("whsec_x".into()));
        Webhook { org: w.org.clone(), id: id.into(), url, events: Vec::new(), secret, created: t(0) }
    }

    #[test]
    fn a_cursor_is_planned_only_ahead_of_the_store_and_never_for_a_removed_webhook() {
        let w = Fixture::new(2, 2, std::time::Duration::from_secs(30));
        w.broker.apply(&w.broker.plan_add_webhook(&w.owner, hook(&w, "a1"), 5).unwrap(), t(0));
        w.broker.apply(&w.broker.plan_add_webhook(&w.owner, hook(&w, "b2"), 5).unwrap(), t(0));
        assert_eq!(w.broker.plan_webhook_cursor(&w.org, "a1", 5), None, "not ahead of the store");
        let ahead = w.broker.plan_webhook_cursor(&w.org, "a1", 9).expect("ahead");
        assert_eq!(ahead, Change::Put(Record::WebhookCursor { org: w.org.clone(), id: "a1".into(), delivered: 9 }));
        let all = w.broker.plan_webhook_cursors(std::slice::from_ref(&w.org), |_, id| if id == "b2" { 7 } else { 5 });
        assert_eq!(all.len(), 1, "only b2 moved: {all:?}");
        w.broker.apply(&w.broker.plan_remove_webhook(&w.owner, &w.org, "a1").unwrap(), t(1));
        assert_eq!(w.broker.plan_webhook_cursor(&w.org, "a1", 9), None, "removed: its cursor went with it");
    }
}
