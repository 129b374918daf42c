//! The web door: the console, its API and what ops read, over HTTPS
//! (HTTP/1.1 on TLS 1.3, axum on hyper), separate from the QUIC port
//! runners use.
//!
//! - `GET /metrics`: the broker's numbers in the OpenMetrics text format
//!   (`metrics`), documented in docs/METRICS.md.
//! - `GET /healthz`: 200 while the broker admits, 503 while it drains.
//! - `GET /`: the license utilization dashboard (`dashboard`).
//! - `GET /api/v1/usage`, `/api/v1/sessions`, `/api/v1/what-if`: the
//!   utilization reports as JSON or CSV (`api`), for a caller with an API
//!   key (`auth`): the operator reads every org, members their own. On a
//!   cluster node they cover every node's history of the org.
//! - `GET /peer/v1/usage`, `/peer/v1/sessions`, `/peer/v1/demand`: this node's slice of an
//!   org's history, for the other nodes of its cluster only (`peer`).
//! - `GET /api/v1/events`: an org's events after a cursor, a long poll
//!   (`events`, docs/EVENTS.md), for its Owners and Admins.
//!
//! `serve` brings it up on loopback by default, with the broker's own
//! certificate (or `--http-cert`); plain HTTP only with `--http-plain`
//! (README Security). Its connections are bounded in number and lifetime
//! (`listener`). It decides nothing: every act and every rule is
//! `crate::operations`' (the same functions the QUIC door calls), and it
//! reads the core and the QUIC door's counters (`Door`). Its own state is
//! `Web`; it never imports the QUIC server. With `--metrics-token`,
//! `/metrics` wants `Authorization: Bearer TOKEN`.

mod api;
pub mod auth;
mod budget;
mod console;
mod csrf;
pub mod dashboard;
mod events;
mod listener;
mod metrics;
mod origin;
mod peer;
mod roster;

pub use budget::Limits;
pub use metrics::MAX_ORGS;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::latency::OpLatency;
use crate::operations::Operations;

/// What `/metrics` shows of the QUIC door (which implements it).
pub trait Door: Send + Sync {
    /// QUIC connections open now.
    fn connections(&self) -> u64;
    /// Request latencies by kind.
    fn latencies(&self) -> Vec<OpLatency>;
}

/// The web door's own state.
pub struct Web {
    ops: Arc<Operations>,
    /// Signs the sign-in cookies (a secret made at start).
    signer: auth::Signer,
    /// The sign-ins not ended yet.
    sign_ins: auth::SignIns,
    /// A bearer token `/metrics` requires, if set.
    metrics_token: Option<String>,
    /// TLS, unless the door is plain HTTP (`--http-plain`).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// What strangers may hold, per address and in all.
    budget: Arc<budget::Budget>,
    /// The `Host` names the door answers to.
    hosts: origin::Hosts,
    quic: Arc<dyn Door>,
}

/// How the web door is set up (from `serve`'s options).
pub struct Config {
    /// A bearer token `/metrics` requires, if set.
    pub metrics_token: Option<String>,
    /// TLS (`crate::tls::http_server_config`), or `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Budgets and deadlines.
    pub limits: Limits,
    /// `Host` names served besides the listen address, `localhost` and the
    /// certificate's (`--http-host`).
    pub hosts: Vec<String>,
    /// The address the door is bound to.
    pub listen: std::net::SocketAddr,
    /// The certificate it presents (`crate::tls::leaf_certificate`).
    pub cert: Option<rustls::pki_types::CertificateDer<'static>>,
}

impl Web {
    /// The web door over `ops`, showing `quic`'s counters.
    pub fn new(
        ops: Arc<Operations>,
        config: Config,
        quic: Arc<dyn Door>,
    ) -> Result<Web, crate::keys::RandomUnavailable> {
        let Config { metrics_token, tls, limits, hosts, listen, cert } = config;
        let budget = Arc::new(budget::Budget::new(limits));
        let hosts = origin::Hosts::new(&hosts, listen, cert);
        let (signer, sign_ins) = (auth::Signer::new()?, auth::SignIns::default());
        Ok(Web { ops, signer, sign_ins, metrics_token, tls, budget, hosts, quic })
    }

    /// Whether the door speaks TLS (secure cookies, HSTS).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Serves the web door on `listener` until `stop` fires: `routes()`, each
/// behind the door's guards, outermost first: the security headers on
/// every answer (`guarded`); a `Host` the door serves, and for anything
/// but GET and HEAD the browser's word that it comes from our own pages
/// (`origin`); the budgets and the count of failed authentications
/// (`budgeted`); a form POST's CSRF token (`csrf`).
pub(crate) async fn serve(web: Arc<Web>, listener: tokio::net::TcpListener, stop: watch::Receiver<bool>) {
    let tls = web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let app = routes()
        .layer(axum::middleware::from_fn(timed))
        .layer(axum::middleware::from_fn_with_state(web.clone(), csrf::checked))
        .layer(axum::middleware::from_fn_with_state(web.clone(), budgeted))
        .layer(axum::middleware::from_fn_with_state(web.clone(), origin::checked))
        .layer(axum::middleware::from_fn_with_state(web.clone(), guarded))
        .with_state(web.clone());
    listener::serve(listener, app, tls, web.budget.clone(), stop).await;
}

/// Every page and endpoint of the door. Add new ones here (or merge them
/// in here): a layer covers only the routes added before it, and `serve`
/// puts the guards over all of these.
fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(health))
        .route("/api/v1/usage", get(api::usage))
        .route("/api/v1/sessions", get(api::sessions))
        .route("/api/v1/what-if", get(api::what_if))
        .route("/api/v1/availability", get(api::availability))
        .route("/peer/v1/usage", get(peer::usage))
        .route("/peer/v1/sessions", get(peer::sessions))
        .route("/peer/v1/demand", get(peer::demand))
        .route("/api/v1/events", get(events::events))
        .route("/", get(dashboard::home))
        .route("/signin", axum::routing::post(dashboard::sign_in))
        .route("/signout", axum::routing::post(dashboard::sign_out))
        .route("/org/{org}", get(dashboard::org_page))
        .route("/org/{org}/kill", axum::routing::post(dashboard::kill))
        .merge(console::routes())
}

/// Says how long the broker took over an answer (`Server-Timing:
/// app;dur=MS`: the handler, its reads and the rendering, not the wire),
/// for a browser's developer tools and the load harness (`license-load
/// console`).
async fn timed(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let mut r = next.run(req).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        r.headers_mut().insert("server-timing", v);
    }
    r
}

/// What no page may do, said on every answer: run any script but the
/// console's own file (`/console.js`: nothing inline, no `eval`; styles
/// are inline), be framed by another page, send the
/// address on as a referrer, be sniffed as another type, or be kept by a
/// cache (member emails, machines and sessions are on them).
/// `connect-src 'self'`: the console's script fetches nothing, but a
/// browser test driving the page (DevTools) posts from it; the same
/// origin only.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// HSTS under TLS: a browser that reached the door over HTTPS never
/// tries it over plain HTTP for a year.
const HSTS: &str = "max-age=31536000";

/// Adds the security headers to every answer (`CONTENT_SECURITY_POLICY`);
/// a handler's own `Cache-Control` is kept. Under TLS, HSTS too, except to
/// a loopback name: HSTS holds for a host on every port, and would turn
/// every other plain-HTTP service on `localhost` to HTTPS in that browser
/// (browsers ignore it for IP addresses anyway).
async fn guarded(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let loopback =
        origin::host_name(req.headers()).is_some_and(|h| h == "localhost" || h.parse::<std::net::IpAddr>().is_ok());
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if web.is_tls() && !loopback {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    r
}

/// Counts failed authentications against the caller's address (logged as
/// the QUIC door logs a failed `Hello`; past the limit the connection is
/// closed and the address's attempts refused, 429, for the rest of the
/// second). Scrapes (`/metrics`, `/healthz`) pass; anything else needs its
/// connection's general slot (503 when every one is taken: the reserved
/// ones are for scrapes), and a report (the API, an org page) a turn of
/// its address's and the door's (429), held until its answer is written
/// or dropped, so the answers held at once are bounded (README Security).
async fn budgeted(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let Some(ip) = peer else { return next.run(req).await };
    let authenticates = req.headers().contains_key(header::AUTHORIZATION) || req.uri().path() == "/signin";
    if authenticates && web.budget.shut_out(ip) {
        let why = "too many failed authentications from this address; try again in a second\n";
        return (StatusCode::TOO_MANY_REQUESTS, [(header::CONNECTION, "close"), (header::RETRY_AFTER, "1")], why)
            .into_response();
    }
    let mut r = lanes(&web, ip, req, next).await;
    if r.extensions().get::<auth::Failed>().is_some() {
        let (failures, over) = web.budget.failed(ip);
        if web.budget.may_log() {
            tracing::warn!(remote = %ip, failures, door = "http", "authentication failed");
        }
        if over {
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    r
}

/// `budgeted`'s slots: a general slot for anything but a scrape, and a
/// report's turn for a report, held as long as its answer.
async fn lanes(web: &Web, ip: std::net::IpAddr, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/metrics" || path == "/healthz" {
        return next.run(req).await;
    }
    // The event stream's long polls wait rather than compute: they are
    // bounded by their own turns (`events::MAX_WAITERS`), not the reports'.
    let report = (path.starts_with("/api/") && path != "/api/v1/events")
        || (path.starts_with("/org/") && req.method() == axum::http::Method::GET);
    let lane = req.extensions().get::<listener::Lane>().cloned();
    if lane.is_some_and(|lane| !lane.general(&web.budget)) {
        let busy = "the web door is busy: every connection slot but the scrapes' is taken; try again shortly\n";
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::CONNECTION, "close"), (header::RETRY_AFTER, "1")], busy)
            .into_response();
    }
    let pass = match report {
        true => match web.budget.report(ip) {
            Ok(pass) => Some(pass),
            Err(why) => {
                let body = format!("{}: try again when your earlier reports are done\n", why.name());
                return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], body).into_response();
            }
        },
        false => None,
    };
    let r = next.run(req).await;
    match pass {
        None => r,
        // The pass lives as long as the answer's body: until it is written or dropped.
        Some(pass) => r.map(|body| {
            axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |f| {
                let _held = &pass;
                f
            }))
        }),
    }
}

async fn scrape(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let r = exposition(web.metrics_token.as_deref(), &headers, || metrics::render(&web));
    if r.extensions().get::<auth::Failed>().is_some() {
        web.ops.core().note_auth_failure();
    }
    r
}

/// `/metrics`: the token checked, then `render`'s body in OpenMetrics.
fn exposition(
    token: Option<&str>,
    headers: &HeaderMap,
    render: impl FnOnce() -> Result<String, std::fmt::Error>,
) -> Response {
    if let Some(token) = token {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !given.is_some_and(|g| auth::same_secret(g, &format!("Bearer {token}"))) {
            let mut r = (StatusCode::UNAUTHORIZED, "a bearer token is required (--metrics-token)\n").into_response();
            // A wrong token is a failed authentication; none at all is not.
            if given.is_some() {
                r.extensions_mut().insert(auth::Failed);
            }
            return r;
        }
    }
    match render() {
        Ok(body) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics failed: {e}\n")).into_response(),
    }
}

async fn health(State(web): State<Arc<Web>>) -> Response {
    match web.ops.is_draining() {
        false => (StatusCode::OK, "ok\n").into_response(),
        true => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
    }
}
