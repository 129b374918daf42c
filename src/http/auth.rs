//! Who is calling the ops endpoint's reports and dashboard: an API key,
//! given as `Authorization: Bearer KEY` (scripts, the JSON/CSV API) or
//! exchanged once at sign-in for a cookie (the dashboard).
//!
//! The cookie holds the key's hash, an expiry and a sign-in id, signed
//! with HMAC-SHA256 under a secret made at start (so a restart signs
//! everyone out), never the key itself. The id is live on the server
//! (`SignIns`) until signing out ends it, so a copy of a cookie is worth
//! nothing after its owner signed out; it is `HttpOnly` (no script reads it) and
//! `SameSite=Strict` (no other site's page sends it), and under TLS
//! `Secure` and named `__Host-lb_session` (`COOKIE_TLS`). Every request looks
//! the hash up again, so a revoked key or a removed member is signed out at
//! once. Forms that change something also carry a CSRF token derived from
//! the cookie (`csrf_token`).

use axum::http::{header, HeaderMap, StatusCode};
use parking_lot::Mutex;
use ring::hmac;

use crate::core::hash::FastMap;
use crate::core::{KeyHash, Principal};
use crate::http::Web;
use crate::operations::SignIn;

/// The cookie's name over plain HTTP.
pub const COOKIE: &str = "lb_session";

/// The cookie's name over TLS: a browser takes a `__Host-` cookie only
/// from a secure origin, for that host alone (no `Domain`), path `/`, so
/// no other web app on the host (another port, a sibling subdomain) can
/// plant or shadow it.
pub const COOKIE_TLS: &str = "__Host-lb_session";

/// How long a sign-in lasts.
pub const SIGN_IN_FOR: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Signs and checks cookies and CSRF tokens for one run of the broker.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    /// A signer with a fresh random secret.
    pub fn new() -> Result<Signer, crate::keys::RandomUnavailable> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| crate::keys::RandomUnavailable)?;
        Ok(Signer { key })
    }

    /// The cookie value of sign-in `id` of `hash`, valid until `expires` (ms).
    pub fn cookie(&self, hash: &KeyHash, expires: u64, id: u64) -> String {
        let payload = format!("{}.{expires}.{id:016x}", crate::keys::hex(&hash.0));
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", crate::keys::hex(tag.as_ref()))
    }

    /// The key hash and sign-in id a cookie value stands for, if it is ours
    /// and not expired at `now` (whether the sign-in is still live is
    /// `SignIns::is_live`'s to say).
    pub fn open(&self, value: &str, now: u64) -> Option<(KeyHash, u64)> {
        let (payload, tag) = value.rsplit_once('.')?;
        hmac::verify(&self.key, payload.as_bytes(), &crate::value::unhex(tag)?).ok()?;
        let mut parts = payload.split('.');
        let (hash, expires, id) = (parts.next()?, parts.next()?, parts.next()?);
        if expires.parse::<u64>().ok()? <= now {
            return None;
        }
        Some((KeyHash(crate::value::unhex(hash)?.try_into().ok()?), u64::from_str_radix(id, 16).ok()?))
    }

    /// The CSRF token of a cookie value: forms that change something must
    /// echo it, which a page of another origin cannot read.
    pub fn csrf_token(&self, cookie: &str) -> String {
        let tag = hmac::sign(&self.key, format!("csrf.{cookie}").as_bytes());
        crate::keys::hex(&tag.as_ref()[..16])
    }

    /// A tag vouching that this door said `what` to the browser of
    /// `cookie` (a flash message carried in a redirect's address): a link
    /// made by anyone else, or for another browser, carries none that holds.
    pub fn flash_tag(&self, cookie: &str, what: &str) -> String {
        let tag = hmac::sign(&self.key, format!("flash.{cookie}.{what}").as_bytes());
        crate::keys::hex(&tag.as_ref()[..16])
    }
}

/// The live sign-ins: id → (expiry (ms), whose key). Signing out removes
/// one; a cookie whose id is not here signs no one in.
#[derive(Default)]
pub struct SignIns {
    live: Mutex<FastMap<u64, (u64, KeyHash)>>,
}

/// Sign-ins live at once. Past it the oldest is ended (signed out), never
/// kept: the table is bounded whoever signs in how often.
pub const MAX_SIGN_INS: usize = 65_536;

/// Sign-ins of one key live at once. Past it that key's oldest is ended,
/// so one key signing in over and over ends its own sign-ins, never
/// other people's.
pub const MAX_SIGN_INS_PER_KEY: usize = 32;

impl SignIns {
    /// A new sign-in of `key` until `expires`: its id.
    pub fn start(&self, key: &KeyHash, expires: u64, now: u64) -> Result<u64, crate::keys::RandomUnavailable> {
        let id = crate::keys::random_u128()? as u64;
        let mut live = self.live.lock();
        if live.len() >= MAX_SIGN_INS {
            live.retain(|_, (e, _)| *e > now);
        }
        let mine = live.iter().filter(|(_, (_, k))| k == key).count();
        let full = live.len() >= MAX_SIGN_INS;
        if mine >= MAX_SIGN_INS_PER_KEY || full {
            // Bounded above: the map holds an entry of this key (or is full).
            let oldest = live.iter().filter(|(_, (_, k))| full || k == key).min_by_key(|(_, (e, _))| *e);
            if let Some(oldest) = oldest.map(|(id, _)| *id) {
                live.remove(&oldest);
            }
        }
        live.insert(id, (expires, *key));
        Ok(id)
    }

    /// Whether sign-in `id` is live at `now`.
    pub fn is_live(&self, id: u64, now: u64) -> bool {
        self.live.lock().get(&id).is_some_and(|(e, _)| *e > now)
    }

    /// Ends sign-in `id` (signing out).
    pub fn end(&self, id: u64) {
        self.live.lock().remove(&id);
    }
}

/// Whether a secret someone sent equals the one expected, in time that
/// does not depend on where they differ: both are hashed first, so a
/// comparison that stops early can only reveal how much of two digests
/// agree, which says nothing about the secret.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest(given).as_ref() == digest(expected).as_ref()
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
}

impl Web {
    /// The sign-in cookie's name on this door (`COOKIE_TLS` under TLS).
    pub fn cookie_name(&self) -> &'static str {
        if self.is_tls() {
            COOKIE_TLS
        } else {
            COOKIE
        }
    }

    /// A `Set-Cookie` value for the sign-in cookie: `value` for `max_age`
    /// (zero: gone), `Secure` under TLS.
    pub fn set_cookie(&self, value: &str, max_age: std::time::Duration) -> String {
        let secure = if self.is_tls() { "; Secure" } else { "" };
        let name = self.cookie_name();
        format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", max_age.as_secs())
    }
}

/// Marks an answer to a failed authentication (an unknown or revoked key,
/// a wrong metrics token): the door counts it against the caller's
/// address (`budget`), logs it as the QUIC door logs a failed `Hello`, and
/// past the limit refuses the address's attempts for the rest of the
/// second.
#[derive(Clone, Copy, Debug)]
pub struct Failed;

/// Why a caller is not known.
fn unauthorized(why: &str) -> super::api::Refusal {
    super::api::refuse(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", why)
}

/// Why a key is not signed in on this node.
pub(super) enum NotHere {
    /// The key is unknown or revoked.
    Unknown,
    /// The key is known, but cannot be signed in now (why, in words).
    Said(String),
    /// Another node of the cluster serves the key's org: why, in words, and
    /// that node's console, if it said where it is.
    Elsewhere(String, Option<String>),
}

impl NotHere {
    /// What to tell the caller, if anything beyond "unknown".
    pub(super) fn said(&self) -> Option<&str> {
        match self {
            NotHere::Unknown => None,
            NotHere::Said(why) | NotHere::Elsewhere(why, _) => Some(why),
        }
    }
}

/// Signs `hash` in (`Operations::sign_in`, routed as a `Hello` is).
pub(super) async fn sign_in(web: &Web, hash: &KeyHash) -> Result<Principal, NotHere> {
    match web.ops.sign_in(hash).await {
        SignIn::Here(p) => Ok(p),
        SignIn::Elsewhere(node) => {
            let console = web.ops.cluster().and_then(|seat| seat.console_at(&node));
            let go = console
                .as_deref()
                .map_or_else(|| "use that node's web door".to_string(), |c| format!("its console is at {c}"));
            Err(NotHere::Elsewhere(
                format!("this node of the cluster does not serve your org: the node at {node} (its broker's address) does; {go}"),
                console,
            ))
        }
        SignIn::Moving => {
            Err(NotHere::Said("your org is moving between the cluster's nodes; try again in a few seconds".into()))
        }
        SignIn::Unknown => Err(NotHere::Unknown),
    }
}

/// The caller signed in with the request's cookie, with the cookie's value
/// (for `Signer::csrf_token`): the cookie must be ours, unexpired, its
/// sign-in not ended, and its key still valid.
pub fn signed_in(web: &Web, headers: &HeaderMap) -> Option<(Principal, String)> {
    let value = cookie(headers, web.cookie_name())?;
    let now = web.ops.clock().now().0;
    let (hash, id) = web.signer.open(value, now)?;
    if !web.sign_ins.is_live(id, now) {
        return None;
    }
    web.ops.core().authenticate(&hash).ok().map(|p| (p, value.to_string()))
}

/// The caller: by bearer key, else by sign-in cookie.
pub(super) async fn principal(web: &Web, headers: &HeaderMap) -> Result<Principal, super::api::Refusal> {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if let Some(key) = bearer {
        let signed = sign_in(web, &crate::keys::hash(key.trim())).await;
        return signed.map_err(|why| match why.said() {
            Some(said) => unauthorized(said),
            None => unauthorized("unknown or revoked API key").failed_auth(),
        });
    }
    match signed_in(web, headers) {
        Some((p, _)) => Ok(p),
        None => Err(unauthorized(
            "sign in (again: a sign-in ends when you sign out, the key is revoked or the broker restarts), \
             or send Authorization: Bearer API_KEY",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_opens_only_unexpired_and_untouched() {
        let s = Signer::new().unwrap();
        let hash = KeyHash([7; 32]);
        let c = s.cookie(&hash, 1_000, 42);
        assert_eq!(s.open(&c, 999), Some((hash, 42)));
        assert_eq!(s.open(&c, 1_000), None, "expired");
        let forged = c.replacen("1000", "9999", 1);
        assert_eq!(s.open(&forged, 999), None, "the expiry is signed");
        assert_eq!(Signer::new().unwrap().open(&c, 999), None, "another run's secret");
        assert_ne!(s.csrf_token(&c), s.csrf_token(&forged));
        assert_ne!(s.csrf_token(&c), s.csrf_token(&s.cookie(&hash, 1_000, 43)), "each sign-in its own token");
    }

    #[test]
    fn a_sign_in_lives_until_it_ends_or_expires() {
        let s = SignIns::default();
        let id = s.start(&KeyHash([1; 32]), 1_000, 0).unwrap();
        assert!(s.is_live(id, 999));
        assert!(!s.is_live(id, 1_000), "expired");
        assert!(!s.is_live(id ^ 1, 999), "an id never started");
        s.end(id);
        assert!(!s.is_live(id, 999), "signed out");
    }

    #[test]
    fn one_key_signing_in_again_and_again_ends_only_its_own_sign_ins() {
        let s = SignIns::default();
        let other = s.start(&KeyHash([2; 32]), 10_000, 0).unwrap();
        let mine: Vec<u64> =
            (0..MAX_SIGN_INS_PER_KEY as u64 + 5).map(|i| s.start(&KeyHash([1; 32]), 1_000 + i, 0).unwrap()).collect();
        assert!(s.is_live(other, 1), "another key's sign-in stays");
        let live = mine.iter().filter(|id| s.is_live(**id, 1)).count();
        assert_eq!(live, MAX_SIGN_INS_PER_KEY);
        assert!(!s.is_live(mine[0], 1) && s.is_live(*mine.last().unwrap(), 1), "the oldest went first");
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("Bearer t0ken", "Bearer t0ken"));
        for other in ["Bearer t0kem", "Bearer t0ke", "", "bearer t0ken"] {
            assert!(!same_secret(other, "Bearer t0ken"), "{other:?}");
        }
    }
}
