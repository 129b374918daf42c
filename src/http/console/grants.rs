//! Licensed Users in bulk: grant several members at once, revoke several.
//! Each goes through the same operation as the CLI's `grant`/`revoke`,
//! member by member: the ones that can go through do, and the answer
//! names each one refused with the broker's reason and code; a caller who
//! may not grant at all is refused as a whole (403).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::extract::OrgForm;
use super::licenses::{back, pool_of};
use super::{refused, words};
use crate::core::Email;
use crate::http::Web;

/// `POST /org/ORG/licenses/grant` (`pool`, `emails`): one grant per member.
pub(super) async fn grant(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let pool = match pool_of(&f) {
        Ok(pool) => pool,
        Err(r) => return r,
    };
    let emails: Vec<&str> =
        f.one("emails").unwrap_or("").split([',', '\n', ';', ' ']).filter(|e| !e.trim().is_empty()).collect();
    if emails.len() > MAX_BATCH {
        return s.back_with(&web, &back(&org, pool, "licensed"), &too_many(emails.len()));
    }
    let (ops, who, org) = (&web.ops, &s, &org);
    match each(&emails, |email| async move { ops.grant(who.caller(ops), org, pool, &email).await }).await {
        Ok(outcome) => s.back_with(&web, &back(org, pool, "licensed"), &outcome.say("Granted", "not granted")),
        Err(e) => refused(e),
    }
}

/// `POST /org/ORG/licenses/revoke` (`pool`, `email` repeated).
pub(super) async fn revoke(State(web): State<Arc<Web>>, OrgForm { s, org, f }: OrgForm) -> Response {
    let pool = match pool_of(&f) {
        Ok(pool) => pool,
        Err(r) => return r,
    };
    let emails = f.all("email");
    if emails.len() > MAX_BATCH {
        return s.back_with(&web, &back(&org, pool, "licensed"), &too_many(emails.len()));
    }
    let (ops, who, org) = (&web.ops, &s, &org);
    match each(&emails, |email| async move { ops.revoke_grant(who.caller(ops), org, pool, &email).await }).await {
        Ok(outcome) => s.back_with(&web, &back(org, pool, "licensed"), &outcome.say("Revoked", "not revoked")),
        Err(e) => refused(e),
    }
}

/// Most members one form grants or revokes: each is a durable commit of
/// its own, so a form's work stays within the door's deadlines.
const MAX_BATCH: usize = 100;

fn too_many(n: usize) -> String {
    format!("Nothing was done: {n} emails at once, at most {MAX_BATCH} (INVALID_ARGUMENT).")
}

/// How a batch went, member by member.
#[derive(Default)]
struct Outcome {
    done: Vec<String>,
    refused: Vec<String>,
}

impl Outcome {
    /// "Granted: a, b.\nNot granted (the others went through): c: why (CODE)."
    fn say(&self, done: &str, not: &str) -> String {
        let mut out = String::new();
        if !self.done.is_empty() {
            out.push_str(&format!("{done}: {}.", self.done.join(", ")));
        }
        if !self.refused.is_empty() {
            let others = if self.done.is_empty() { "" } else { " (the others went through)" };
            out.push_str(&format!("\n{}{others}: {}.", capitalised(not), self.refused.join("; ")));
        }
        if out.is_empty() {
            out.push_str("No email was given.");
        }
        out.trim_start().to_string()
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Runs `act` for each email in turn; an email that does not parse is
/// refused without asking. A caller who may not do this at all gets that
/// refusal alone (nothing went through).
async fn each<F, Fut>(emails: &[&str], act: F) -> Result<Outcome, crate::proto::WireError>
where
    F: Fn(Email) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::proto::WireError>>,
{
    let mut o = Outcome::default();
    for raw in emails {
        let raw = raw.trim();
        match Email::parse_lenient(raw) {
            Err(e) => o.refused.push(format!("{raw}: {e} (INVALID_ARGUMENT)")),
            Ok(email) => match act(email).await {
                Ok(()) => o.done.push(raw.to_string()),
                Err(e) if super::forbidden(&e) => return Err(e),
                Err(e) => o.refused.push(format!("{raw}: {}", words(&e))),
            },
        }
    }
    Ok(o)
}
