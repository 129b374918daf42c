//! What the broker tells the outside about an org's changes: the event
//! stream and the webhooks that deliver it (docs/EVENTS.md). Apart from
//! `admin` because these requests move events, not the org's records.

use super::api::unexpected;
use super::{Client, ClientError};
use crate::proto::{Req, Resp};
use crate::value::OrgName;

impl Client {
    /// Owner/Admin: `org`'s events after the cursor `after`, waiting up to
    /// `wait` for a first one (docs/EVENTS.md): each event's JSON document,
    /// and the cursor to ask after next.
    pub async fn events(
        &self,
        org: &OrgName,
        after: u64,
        wait: std::time::Duration,
    ) -> Result<(Vec<String>, u64), ClientError> {
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        match self.call(Req::Events { org: org.clone(), after, wait_ms }).await? {
            Resp::Events { events, next } => Ok((events, next)),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: adds a webhook; returns (id, secret).
    pub async fn add_webhook(
        &self,
        org: &OrgName,
        url: &str,
        events: Vec<String>,
    ) -> Result<(String, String), ClientError> {
        match self.call(Req::AddWebhook { org: org.clone(), url: url.into(), events }).await? {
            Resp::WebhookAdded { id, secret } => Ok((id, secret)),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: the org's webhooks.
    pub async fn webhooks(&self, org: &OrgName) -> Result<Vec<crate::proto::WebhookInfo>, ClientError> {
        match self.call(Req::ListWebhooks { org: org.clone() }).await? {
            Resp::Webhooks(v) => Ok(v),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: removes a webhook.
    pub async fn remove_webhook(&self, org: &OrgName, id: &str) -> Result<(), ClientError> {
        match self.call(Req::RemoveWebhook { org: org.clone(), id: id.into() }).await? {
            Resp::Done => Ok(()),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: a webhook's new secret.
    pub async fn rotate_webhook_secret(&self, org: &OrgName, id: &str) -> Result<String, ClientError> {
        match self.call(Req::RotateWebhookSecret { org: org.clone(), id: id.into() }).await? {
            Resp::WebhookAdded { secret, .. } => Ok(secret),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: a webhook's recent delivery attempts, oldest first.
    pub async fn webhook_deliveries(
        &self,
        org: &OrgName,
        id: &str,
    ) -> Result<Vec<crate::proto::DeliveryInfo>, ClientError> {
        match self.call(Req::WebhookDeliveries { org: org.clone(), id: id.into() }).await? {
            Resp::Deliveries(v) => Ok(v),
            other => unexpected(other),
        }
    }

    /// Owner/Admin/operator: sends the event at cursor `event` to a webhook
    /// once more; the attempt.
    pub async fn redeliver_webhook(
        &self,
        org: &OrgName,
        id: &str,
        event: u64,
    ) -> Result<crate::proto::DeliveryInfo, ClientError> {
        match self.call(Req::RedeliverWebhook { org: org.clone(), id: id.into(), event }).await? {
            Resp::Deliveries(mut v) if v.len() == 1 => Ok(v.remove(0)),
            other => unexpected(other),
        }
    }
}
