//! What every console handler starts from, taken from the request once:
//! the caller signed in and the org the path names (`OrgPage`), and for a
//! form also its fields with the sign-in's CSRF token checked (`OrgForm`,
//! `SignedForm`). A request that fails here gets its answer from here: the
//! sign-in page, a 404, a 403.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{org_of, status_page, Fields, Signed};
use crate::core::OrgName;
use crate::http::Web;

/// Longest form body read (the door's CSRF check reads no more either).
const FORM_MAX: usize = 64 * 1024;

/// A console page's caller and the org its path names.
pub(super) struct OrgPage {
    pub s: Signed,
    pub org: OrgName,
}

impl FromRequestParts<Arc<Web>> for OrgPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<OrgPage, Response> {
        let s = Signed::of(web, &parts.headers)?;
        let org = path_org(parts, web).await?;
        Ok(OrgPage { s, org })
    }
}

/// A console form about the org its path names: its caller (signed in,
/// the token echoed) and its fields.
pub(super) struct OrgForm {
    pub s: Signed,
    pub org: OrgName,
    pub f: Fields,
}

impl FromRequest<Arc<Web>> for OrgForm {
    type Rejection = Response;

    async fn from_request(req: Request, web: &Arc<Web>) -> Result<OrgForm, Response> {
        let (mut parts, body) = req.into_parts();
        let SignedForm { s, f } = signed_form(&parts, body, web).await?;
        let org = path_org(&mut parts, web).await?;
        Ok(OrgForm { s, org, f })
    }
}

/// A console form about no one org (the operator's): caller and fields.
pub(super) struct SignedForm {
    pub s: Signed,
    pub f: Fields,
}

impl FromRequest<Arc<Web>> for SignedForm {
    type Rejection = Response;

    async fn from_request(req: Request, web: &Arc<Web>) -> Result<SignedForm, Response> {
        let (parts, body) = req.into_parts();
        signed_form(&parts, body, web).await
    }
}

async fn signed_form(parts: &Parts, body: axum::body::Body, web: &Web) -> Result<SignedForm, Response> {
    let bytes = axum::body::to_bytes(body, FORM_MAX)
        .await
        .map_err(|_| status_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.", "INVALID_ARGUMENT"))?;
    let f = Fields::parse(&bytes);
    let s = Signed::posted(web, &parts.headers, &f)?;
    Ok(SignedForm { s, f })
}

/// The org the path names (`/org/{org}/...`), or a 404 page.
async fn path_org(parts: &mut Parts, web: &Arc<Web>) -> Result<OrgName, Response> {
    let Path(params) =
        Path::<HashMap<String, String>>::from_request_parts(parts, web).await.map_err(IntoResponse::into_response)?;
    org_of(params.get("org").cloned().unwrap_or_default())
}
