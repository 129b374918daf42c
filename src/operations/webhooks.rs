//! The webhooks' acts (docs/EVENTS.md): add, list, remove, rotate the
//! secret, recent deliveries; an org's Owners and Admins, and the
//! operator for every org (the core's `require_webhook_admin`). A URL the
//! broker may not call is refused here, when it is added, as well as at
//! every delivery (`events::target`). Delivering is `deliver`'s, off every
//! request path: these only change records and read the health board.

use super::{random_failure, store_failure, Caller, Operations};
use crate::core::{OrgName, Secret, Webhook, WebhookView};
use crate::events::{sign, target};
use crate::proto::{DeliveryInfo, ErrorCode, WebhookInfo, WireError};

impl Operations {
    /// Adds a webhook of `org` posting to `url` the events `events` names
    /// (all when empty), from the next event on; (its id, its secret).
    pub async fn add_webhook(
        &self,
        c: Caller<'_>,
        org: &OrgName,
        url: &str,
        events: Vec<String>,
    ) -> Result<(String, String), WireError> {
        self.core.require_webhook_admin(c.p, org)?;
        let invalid = |why: String| WireError::new(ErrorCode::InvalidArgument, why);
        let t = target::parse(url).map_err(invalid)?;
        target::resolve(&t, self.delivery.allow_private).await.map_err(invalid)?;
        let (id, secret) = (sign::new_id().map_err(random_failure)?, sign::new_secret().map_err(random_failure)?);
        let from = self.events_last(org).await?;
        let hook = Webhook { org: org.clone(), id: id.clone(), url: url.to_string(), events, secret, created: c.now };
        let shown = hook.secret.0.clone();
        self.mutate(|core| core.plan_add_webhook(c.p, hook, from)).await?;
        Ok((id, shown))
    }

    /// Removes one of `org`'s webhooks: nothing more is sent to it.
    pub async fn remove_webhook(&self, c: Caller<'_>, org: &OrgName, id: &str) -> Result<(), WireError> {
        self.mutate(|core| core.plan_remove_webhook(c.p, org, id)).await
    }

    /// Gives a webhook a new secret; the new secret.
    pub async fn rotate_webhook_secret(&self, c: Caller<'_>, org: &OrgName, id: &str) -> Result<String, WireError> {
        let secret = sign::new_secret().map_err(random_failure)?;
        let shown = secret.0.clone();
        self.mutate(|core| core.plan_rotate_webhook_secret(c.p, org, id, Secret(shown.clone()))).await?;
        drop(secret);
        Ok(shown)
    }

    /// `org`'s webhooks with how their deliveries go.
    pub async fn webhooks(&self, c: Caller<'_>, org: &OrgName) -> Result<Vec<WebhookInfo>, WireError> {
        let views = self.core.webhooks(c.p, org)?;
        let last = self.events_last(org).await?;
        Ok(views.into_iter().map(|v| self.info(v, last)).collect())
    }

    /// A webhook's recent attempts, oldest first.
    pub fn webhook_deliveries(&self, c: Caller<'_>, org: &OrgName, id: &str) -> Result<Vec<DeliveryInfo>, WireError> {
        self.core.webhook(c.p, org, id)?;
        let recent = self.hooks.of(org, id).recent();
        Ok(recent
            .into_iter()
            .map(|a| DeliveryInfo {
                event: a.event,
                at_ms: a.at.0,
                status: a.status,
                latency_ms: a.latency_ms,
                error: a.error,
            })
            .collect())
    }

    /// How many webhooks are failing (for `/metrics`).
    pub fn webhooks_failing(&self) -> usize {
        self.hooks.failing()
    }

    fn info(&self, v: WebhookView, last: u64) -> WebhookInfo {
        let health = self.hooks.of(&v.hook.org, &v.hook.id);
        let last_error = health.recent().last().map(|a| a.error.clone()).unwrap_or_default();
        WebhookInfo {
            id: v.hook.id,
            url: v.hook.url,
            events: v.hook.events,
            created_ms: v.hook.created.0,
            delivered: v.delivered,
            backlog: last.saturating_sub(v.delivered),
            failing: health.failing(),
            missed: health.missed_count(),
            last_error,
        }
    }

    /// The cursor of `org`'s newest event, off the async threads.
    async fn events_last(&self, org: &OrgName) -> Result<u64, WireError> {
        let (store, org) = (self.store.clone(), org.clone());
        tokio::task::spawn_blocking(move || store.events_last(&org))
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(store_failure)
    }
}
