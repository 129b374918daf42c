//! Webhooks, for an org's Owners and Admins (docs/EVENTS.md): the org's
//! webhooks with how their deliveries go, add one (its secret shown on the
//! answer to the form, this once, never again), give one a new secret
//! (shown once too), remove one, and one webhook's recent deliveries. The
//! same operations as `license-broker webhook`; who may is the core's.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::{OrgForm, OrgPage};
use super::form::Q;
use super::{at, forbidden, refused, render, words, Shell, Signed, When};
use crate::core::{Millis, OrgName};
use crate::http::Web;
use crate::proto::{WebhookInfo, WireError};

#[derive(Template)]
#[template(path = "webhooks.html")]
struct Page {
    shell: Shell,
    org: String,
    hooks: Vec<Row>,
    /// A secret just made: (webhook id, secret), shown this once.
    secret: Option<(String, String)>,
    /// The webhook whose deliveries are shown, and its attempts, newest first.
    shown: Option<(String, Vec<Attempt>)>,
}

/// One webhook as the page lists it.
struct Row {
    id: String,
    url: String,
    events: String,
    created: When,
    delivered: u64,
    backlog: u64,
    failing: bool,
    last_error: String,
}

/// One delivery attempt as the page lists it.
struct Attempt {
    event: String,
    at: When,
    status: String,
    latency_ms: u64,
    error: String,
}

/// `GET /org/ORG/webhooks[?deliveries=ID]`.
pub(super) async fn page(State(web): State<Arc<Web>>, OrgPage { s, org }: OrgPage, Q(q): Q) -> Response {
    let mut shell = s.shell("Webhooks", Some(&org), "webhooks");
    shell.note = s.note(&web, &q);
    match gather(&web, &s, &org, shell, q.one("deliveries")).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => refused(e),
    }
}

/// Everything on the page; the operations refuse it to anyone but the
/// org's Owners and Admins and the operator.
async fn gather(web: &Web, s: &Signed, org: &OrgName, shell: Shell, shown: Option<&str>) -> Result<Page, WireError> {
    let now = web.ops.clock().now();
    let hooks = web.ops.webhooks(s.caller(&web.ops), org).await?.into_iter().map(|h| row(h, now)).collect();
    let shown = match shown {
        Some(id) => {
            let mut tries = web.ops.webhook_deliveries(s.caller(&web.ops), org, id)?;
            tries.reverse();
            let tries = tries.into_iter().map(|d| attempt(d, now)).collect();
            Some((id.to_string(), tries))
        }
        None => None,
    };
    Ok(Page { shell, org: org.to_string(), hooks, secret: None, shown })
}

fn row(h: WebhookInfo, now: Millis) -> Row {
    Row {
        events: if h.events.is_empty() { "every event".to_string() } else { h.events.join(", ") },
        created: at(Millis(h.created_ms), now),
        id: h.id,
        url: h.url,
        delivered: h.delivered,
        backlog: h.backlog,
        failing: h.failing,
        last_error: h.last_error,
    }
}

fn attempt(d: crate::proto::DeliveryInfo, now: Millis) -> Attempt {
    let status = if d.status == 0 { "no answer".to_string() } else { d.status.to_string() };
    Attempt { event: d.event, at: at(Millis(d.at_ms), now), status, latency_ms: d.latency_ms, error: d.error }
}

/// Back to the page, saying what happened; a caller who may not do this
/// at all gets a 403 page instead.
fn back(s: &Signed, web: &Web, org: &OrgName, said: Result<String, WireError>) -> Response {
    let note = match said {
        Ok(done) => done,
        Err(e) if forbidden(&e) => return refused(e),
        Err(e) => format!("Refused: {}", words(&e)),
    };
    s.back_with(web, &format!("/org/{org}/webhooks"), &note)
}

/// The page with a secret just made on it, this once.
async fn with_secret(web: &Web, s: &Signed, org: &OrgName, id: String, secret: String, note: String) -> Response {
    let mut shell = s.shell("Webhooks", Some(org), "webhooks");
    shell.note = Some(note);
    match gather(web, s, org, shell, None).await {
        Ok(mut page) => {
            page.secret = Some((id, secret));
            render(StatusCode::OK, &page)
        }
        Err(e) => refused(e),
    }
}

/// `POST /org/ORG/webhooks/add` (`url`, `events`: comma-separated, empty:
/// every event): the answer shows the secret, this once.
pub(super) async fn add(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let url = f.one("url").unwrap_or("").trim().to_string();
    let events: Vec<String> =
        f.one("events").unwrap_or("").split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect();
    match web.ops.add_webhook(s.caller(&web.ops), &org, &url, events).await {
        Ok((id, secret)) => with_secret(&web, &s, &org, id.clone(), secret, format!("Webhook {id} added.")).await,
        Err(e) => back(&s, &web, &org, Err(e)),
    }
}

/// `POST /org/ORG/webhooks/rotate` (`id`): the answer shows the new secret, this once.
pub(super) async fn rotate(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let id = f.one("id").unwrap_or("").to_string();
    match web.ops.rotate_webhook_secret(s.caller(&web.ops), &org, &id).await {
        Ok(secret) => {
            let note = format!("Webhook {id} has a new secret; the old one signs no more.");
            with_secret(&web, &s, &org, id, secret, note).await
        }
        Err(e) => back(&s, &web, &org, Err(e)),
    }
}

/// `POST /org/ORG/webhooks/remove` (`id`).
pub(super) async fn remove(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let id = f.one("id").unwrap_or("").to_string();
    let said = web.ops.remove_webhook(s.caller(&web.ops), &org, &id).await;
    back(&s, &web, &org, said.map(|()| format!("Webhook {id} was removed: nothing more is sent to it.")))
}
