//! The webhooks' requests over QUIC (protocol version 5): one short arm
//! each, to `Operations`' webhook acts; nothing decided here.

use super::handler::{Call, Reply};
use crate::proto::{ErrorCode, Req, Resp, WireError};

/// Answers one of the webhook requests.
pub(super) async fn answer(call: &Call<'_>, req: Req) -> Reply {
    let (ops, c) = (&call.shared.ops, call.c());
    match req {
        Req::AddWebhook { org, url, events } => {
            let (id, secret) = ops.add_webhook(c, &org, &url, events).await?;
            Ok(Resp::WebhookAdded { id, secret })
        }
        Req::ListWebhooks { org } => ops.webhooks(c, &org).await.map(Resp::Webhooks),
        Req::RemoveWebhook { org, id } => ops.remove_webhook(c, &org, &id).await.map(|()| Resp::Done),
        Req::RotateWebhookSecret { org, id } => {
            let secret = ops.rotate_webhook_secret(c, &org, &id).await?;
            Ok(Resp::WebhookAdded { id, secret })
        }
        Req::WebhookDeliveries { org, id } => ops.webhook_deliveries(c, &org, &id).map(Resp::Deliveries),
        Req::RedeliverWebhook { org, id, event } => {
            ops.redeliver_webhook(c, &org, &id, event).await.map(|d| Resp::Deliveries(vec![d]))
        }
        other => Err(WireError::new(ErrorCode::Internal, format!("request {other:?} routed to the webhooks"))),
    }
}
