//! Offline licenses in the console, as the vendor's page makes them: a
//! form (machine ID, last valid day), a confirmation that says the act
//! cannot be undone or transferred (every rule but the quota already
//! checked by the core, so the confirmation is not a promise the broker
//! then breaks), then the file: `KSE_<machine>.lic`, byte for byte what
//! `offline create` writes, downloadable again from the list.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::extract::{OrgForm, OrgPage};
use super::form::Q;
use super::{refused, render, words, Fields, Shell, Signed};
use crate::core::{format_end_date, MachineId, Millis, OfflineWindow, OrgName, PoolId, Target, OFFLINE_MAX_DAYS};
use crate::http::Web;

/// An offline license as the lists show it.
#[derive(Clone)]
pub(super) struct Row {
    pub id: String,
    pub file: String,
    pub machine: String,
    pub last_day: String,
    pub state: &'static str,
    pub created_by: String,
}

impl Row {
    pub fn of(o: crate::core::OfflineInfo) -> Row {
        Row {
            file: format!("{}_{}.lic", o.pool.product_name(), o.machine),
            id: o.id,
            machine: o.machine.to_string(),
            last_day: o.last_day,
            state: if o.active { "active (holds a seat)" } else { "expired" },
            created_by: o.created_by.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "offline_new.html")]
struct Form {
    shell: Shell,
    org: String,
    pool: String,
    title: String,
    machine: String,
    expires: String,
    /// The last day the form offers (60 days on, or the subscription's end).
    latest: String,
    today: String,
    max_days: u64,
    machine_error: Option<String>,
    expires_error: Option<String>,
}

#[derive(Template)]
#[template(path = "offline_confirm.html")]
struct Confirm {
    shell: Shell,
    org: String,
    pool: String,
    title: String,
    machine: String,
    expires: String,
    file: String,
}

/// What the form sent: the pool, and the machine and day as typed.
struct Order {
    pool: PoolId,
    machine: String,
    expires: String,
}

impl Order {
    fn of(f: &Fields) -> Option<Order> {
        let pool = f.one("pool")?.parse().ok()?;
        Some(Order {
            pool,
            machine: f.one("machine").unwrap_or("").into(),
            expires: f.one("expires").unwrap_or("").into(),
        })
    }

    /// The form for this order, offering the days of the core's window.
    fn form(&self, s: &Signed, org: &OrgName, window: OfflineWindow) -> Form {
        Form {
            shell: s.shell("Create offline license", Some(org), "licenses"),
            org: org.to_string(),
            pool: self.pool.to_string(),
            title: super::licenses::title(self.pool),
            machine: self.machine.clone(),
            expires: self.expires.clone(),
            latest: format_end_date(window.last),
            today: format_end_date(window.first),
            max_days: OFFLINE_MAX_DAYS,
            machine_error: None,
            expires_error: None,
        }
    }

    /// The target and the end of the last day, or the form with its errors.
    fn parsed(&self, form: &mut Form, org: &OrgName) -> Option<(Target, Millis)> {
        let machine = MachineId::new(self.machine.as_str())
            .map_err(|e| form.machine_error = Some(format!("{e} (INVALID_ARGUMENT)")));
        let end = crate::core::parse_end_of_date(&self.expires)
            .map_err(|e| form.expires_error = Some(format!("{e} (INVALID_ARGUMENT)")));
        let (machine, end) = (machine.ok()?, end.ok()?);
        Some((Target { org: org.clone(), pool: self.pool, machine }, end))
    }
}

/// A refusal of the core: the form again, the refusal next to the field
/// it is about (422); or 403 for a caller who may not make one at all.
fn refusal(mut form: Form, e: crate::proto::WireError) -> Response {
    use crate::proto::ErrorCode::*;
    match e.code {
        _ if super::forbidden(&e) => return refused(e),
        ExpiryTooLate | InvalidArgument => form.expires_error = Some(words(&e)),
        _ => form.machine_error = Some(words(&e)),
    }
    render(StatusCode::UNPROCESSABLE_ENTITY, &form)
}

/// The days an offline license made now may end on, or 403 for a caller
/// who may not make one.
fn window(s: &Signed, web: &Web, org: &OrgName) -> Result<OfflineWindow, Response> {
    web.ops.core().offline_window(&s.p, org, web.ops.clock().now()).map_err(refused)
}

/// The order a form or query names, or a 422 page.
fn order_of(f: &Fields) -> Result<Order, Response> {
    Order::of(f)
        .ok_or_else(|| super::status_page(StatusCode::UNPROCESSABLE_ENTITY, "No such license.", "INVALID_ARGUMENT"))
}

/// A posted order read: the form to show again, and what it asks for; or
/// the form with its fields' errors (422).
fn ordered(s: &Signed, web: &Web, org: &OrgName, f: &Fields) -> Result<(Order, Form, Target, Millis), Response> {
    let order = order_of(f)?;
    let mut form = order.form(s, org, window(s, web, org)?);
    match order.parsed(&mut form, org) {
        Some((target, end)) => Ok((order, form, target, end)),
        None => Err(render(StatusCode::UNPROCESSABLE_ENTITY, &form)),
    }
}

/// `GET /org/ORG/offline/new?pool=POOL`.
pub(super) async fn new(State(web): State<Arc<Web>>, OrgPage { s, org }: OrgPage, Q(q): Q) -> Response {
    let order = match order_of(&q) {
        Ok(order) => order,
        Err(r) => return r,
    };
    // Only an Owner or Admin of the org gets the form (the window is theirs to read).
    let mut form = match window(&s, &web, &org) {
        Ok(w) => order.form(&s, &org, w),
        Err(r) => return r,
    };
    form.expires = form.latest.clone();
    render(StatusCode::OK, &form)
}

/// `POST /org/ORG/offline/review`: the rules checked, then the confirmation.
pub(super) async fn review(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let (order, form, target, end) = match ordered(&s, &web, &org, &f) {
        Ok(read) => read,
        Err(r) => return r,
    };
    if let Err(e) = web.ops.core().check_offline(&s.p, &target, end, web.ops.clock().now()) {
        return refusal(form, e.into());
    }
    let file = format!("{}_{}.lic", order.pool.product_name(), target.machine);
    let confirm = Confirm {
        shell: s.shell("Confirm offline license", Some(&org), "licenses"),
        org: org.to_string(),
        pool: order.pool.to_string(),
        title: form.title,
        machine: target.machine.to_string(),
        expires: format_end_date(end),
        file,
    };
    render(StatusCode::OK, &confirm)
}

/// `POST /org/ORG/offline/create`: creates it, then back to the list,
/// whose page starts the download.
pub(super) async fn create(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let (_, form, target, end) = match ordered(&s, &web, &org, &f) {
        Ok(read) => read,
        Err(r) => return r,
    };
    let pool = target.pool;
    match web.ops.create_offline(s.caller(&web.ops), target, end).await {
        Ok(file) => {
            let created = s.signed(&web, "created", &file.id);
            Redirect::to(&format!("/org/{org}/licenses?pool={pool}&{created}#created")).into_response()
        }
        Err(e) => refusal(form, e),
    }
}

/// `GET /org/ORG/offline/ID/file`: the license file, as an attachment.
pub(super) async fn download(
    State(web): State<Arc<Web>>,
    OrgPage { s, org }: OrgPage,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    match web.ops.offline_file(s.caller(&web.ops), &org, &id) {
        Ok(f) => {
            let disposition = format!("attachment; filename=\"{}\"", f.file_name.replace('"', ""));
            let headers = [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_DISPOSITION, disposition),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ];
            (headers, f.content).into_response()
        }
        Err(e) => refused(e),
    }
}
