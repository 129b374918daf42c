//! The webhooks' acts (docs/EVENTS.md): add, list, remove, rotate the
//! secret, recent deliveries, redeliver one event; an org's Owners and Admins, and the
//! operator for every org (the core's `require_webhook_admin`). A URL the
//! broker may not call is refused here, when it is added, as well as at
//! every delivery (`events::target`). Delivering is `deliver`'s, off every
//! request path: these only change records and read the health board.

use super::{random_failure, store_failure, Caller, Operations};
use crate::core::{Event, OrgName, Secret, Webhook, WebhookView};
use crate::events::hooks::Attempt;
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
        Ok(self.hooks.of(org, id).recent().into_iter().map(delivery_info).collect())
    }

    /// Sends the event at cursor `seq` to `org`'s webhook `id` once more
    /// (one attempt, bounded by the delivery timeout, out of the webhook's
    /// order), after auditing it; the attempt, also among its recent ones.
    /// Only an event it was given already and the outbox still keeps, of a
    /// type its filters take.
    pub async fn redeliver_webhook(
        &self,
        c: Caller<'_>,
        org: &OrgName,
        id: &str,
        seq: u64,
    ) -> Result<DeliveryInfo, WireError> {
        self.core.webhook(c.p, org, id)?;
        let event = self.event_at(org, seq).await?;
        let hook = self.core.webhooks_to_deliver().into_iter().find(|v| v.hook.org == *org && v.hook.id == id);
        let hook = hook.ok_or_else(|| WireError::new(ErrorCode::NotFound, format!("no webhook {id}")))?;
        if !hook.hook.wants(&event.kind()) {
            let why = format!(
                "webhook {id} does not take {} events (its filters: {})",
                event.kind(),
                hook.hook.events.join(",")
            );
            return Err(WireError::new(ErrorCode::InvalidArgument, why));
        }
        let delivered = self.hooks.of(org, id).delivered();
        self.mutate(|core| core.plan_redeliver(c.p, (org, id), (seq, delivered), c.now)).await?;
        let body = hyper::body::Bytes::from(crate::events::json::event_json(&event).to_string());
        let a = super::deliver::once(self, &hook, &self.hooks.of(org, id), &event, body).await;
        Ok(delivery_info(a))
    }

    /// How many webhooks are failing (for `/metrics`).
    pub fn webhooks_failing(&self) -> usize {
        self.hooks.failing()
    }

    fn info(&self, v: WebhookView, last: u64) -> WebhookInfo {
        let health = self.hooks.of(&v.hook.org, &v.hook.id);
        let last_error = health.recent().last().map(|a| a.error.clone()).unwrap_or_default();
        // Delivered this run, ahead of the cursor the store has.
        let delivered = v.delivered.max(health.delivered());
        WebhookInfo {
            id: v.hook.id,
            url: v.hook.url,
            events: v.hook.events,
            created_ms: v.hook.created.0,
            delivered,
            backlog: last.saturating_sub(delivered),
            failing: health.failing(),
            missed: health.missed_count(),
            last_error,
        }
    }

    /// `org`'s event at cursor `seq`, off the async threads (`NOT_FOUND`
    /// if the outbox does not keep it).
    async fn event_at(&self, org: &OrgName, seq: u64) -> Result<Event, WireError> {
        let (store, o) = (self.store.clone(), org.clone());
        let read = tokio::task::spawn_blocking(move || store.events_after(&o, seq.saturating_sub(1), 1))
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
        let found = read.map_err(store_failure)?.0.into_iter().find(|e| e.seq == seq && seq > 0);
        found.ok_or_else(|| WireError::new(ErrorCode::NotFound, format!("the outbox keeps no event {org}/{seq}")))
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

/// An attempt as the wire carries it.
fn delivery_info(a: Attempt) -> DeliveryInfo {
    DeliveryInfo { event: a.event, at_ms: a.at.0, status: a.status, latency_ms: a.latency_ms, error: a.error }
}
