//! The CSRF check every form gets: a POST to any route but `/signin` and
//! `/signout` must come from a signed-in browser and carry, as its form
//! field `csrf`, the token of that browser's sign-in
//! (`Signer::csrf_token`, which a page of another origin cannot read).
//! Checked here, before routing, so a new form cannot forget it; with the
//! origin check (`origin`) a forged form fails twice. A request with a
//! bearer key instead of a cookie (a script) carries no browser's
//! authority and is left to its handler.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{auth, Web};

/// The largest form body the check reads (forms are a few fields).
pub const MAX_FORM: usize = 64 * 1024;

/// The one field the check reads of a form.
#[derive(serde::Deserialize)]
struct Token {
    csrf: String,
}

/// Refuses a form POST without its sign-in's CSRF token (403); passes the
/// request on, body intact, otherwise.
pub(super) async fn checked(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let exempt = path == "/signin" || path == "/signout" || req.headers().contains_key(header::AUTHORIZATION);
    if req.method() != Method::POST || exempt {
        return next.run(req).await;
    }
    let Some((_, cookie)) = auth::signed_in(&web, req.headers()) else {
        return refuse(StatusCode::UNAUTHORIZED, "sign in first");
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
    };
    let copy = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
    match Form::<Token>::from_request(copy, &()).await {
        Ok(Form(t)) if auth::same_secret(&t.csrf, &web.signer.csrf_token(&cookie)) => {
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
        _ => refuse(StatusCode::FORBIDDEN, "the form is stale or forged (CSRF token mismatch)"),
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("refused: {why}\n")).into_response()
}
