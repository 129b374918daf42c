//! Who is calling the ops endpoint's reports and dashboard: an API key,
//! given as `Authorization: Bearer KEY` (scripts, the JSON/CSV API) or
//! exchanged once at sign-in for a cookie (the dashboard).
//!
//! The cookie holds the key's hash and an expiry, signed with HMAC-SHA256
//! under a secret made at start (so a restart signs everyone out), never
//! the key itself; it is `HttpOnly` (no script reads it) and
//! `SameSite=Strict` (no other site's page sends it), and under TLS
//! `Secure` and named `__Host-lb_session` (`COOKIE_TLS`). Every request looks
//! the hash up again, so a revoked key or a removed member is signed out at
//! once. Forms that change something also carry a CSRF token derived from
//! the cookie (`csrf_token`).

use axum::http::{header, HeaderMap, StatusCode};
use ring::hmac;

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

    /// The cookie value for `hash`, valid until `expires` (ms).
    pub fn cookie(&self, hash: &KeyHash, expires: u64) -> String {
        let payload = format!("{}.{expires}", crate::keys::hex(&hash.0));
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", crate::keys::hex(tag.as_ref()))
    }

    /// The key hash a cookie value stands for, if it is ours and not expired at `now`.
    pub fn open(&self, value: &str, now: u64) -> Option<KeyHash> {
        let (payload, tag) = value.rsplit_once('.')?;
        hmac::verify(&self.key, payload.as_bytes(), &unhex(tag)?).ok()?;
        let (hash, expires) = payload.split_once('.')?;
        if expires.parse::<u64>().ok()? <= now {
            return None;
        }
        Some(KeyHash(unhex(hash)?.try_into().ok()?))
    }

    /// The CSRF token of a cookie value: forms that change something must
    /// echo it, which a page of another origin cannot read.
    pub fn csrf_token(&self, cookie: &str) -> String {
        let tag = hmac::sign(&self.key, format!("csrf.{cookie}").as_bytes());
        crate::keys::hex(&tag.as_ref()[..16])
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

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
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

/// Signs `hash` in (`Operations::sign_in`, routed as a `Hello` is). A
/// refusal says why on a cluster node (which node serves the key's org);
/// `None`: the key is unknown or revoked.
pub(super) async fn sign_in(web: &Web, hash: &KeyHash) -> Result<Principal, Option<String>> {
    match web.ops.sign_in(hash).await {
        SignIn::Here(p) => Ok(p),
        SignIn::Elsewhere(node) => Err(Some(format!(
            "this node of the cluster does not serve your org: the node at {node} (its broker's address) does; use that node's ops endpoint"
        ))),
        SignIn::Moving => Err(Some("your org is moving between the cluster's nodes; try again in a few seconds".into())),
        SignIn::Unknown => Err(None),
    }
}

/// The caller: by bearer key, else by sign-in cookie.
pub(super) async fn principal(web: &Web, headers: &HeaderMap) -> Result<Principal, super::api::Refusal> {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if let Some(key) = bearer {
        let signed = sign_in(web, &crate::keys::hash(key.trim())).await;
        return signed.map_err(|why| match why {
            Some(elsewhere) => unauthorized(&elsewhere),
            None => unauthorized("unknown or revoked API key").failed_auth(),
        });
    }
    let signed_in = cookie(headers, web.cookie_name()).and_then(|c| web.signer.open(c, web.ops.clock().now().0));
    match signed_in {
        Some(hash) => {
            web.ops.core().authenticate(&hash).map_err(|_| unauthorized("the key you signed in with was revoked"))
        }
        None => Err(unauthorized("sign in, or send Authorization: Bearer API_KEY")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_opens_only_unexpired_and_untouched() {
        let s = Signer::new().unwrap();
        let hash = KeyHash([7; 32]);
        let c = s.cookie(&hash, 1_000);
        assert_eq!(s.open(&c, 999), Some(hash));
        assert_eq!(s.open(&c, 1_000), None, "expired");
        let forged = c.replacen("1000", "9999", 1);
        assert_eq!(s.open(&forged, 999), None, "the expiry is signed");
        assert_eq!(Signer::new().unwrap().open(&c, 999), None, "another run's secret");
        assert_ne!(s.csrf_token(&c), s.csrf_token(&forged));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("Bearer t0ken", "Bearer t0ken"));
        for other in ["Bearer t0kem", "Bearer t0ke", "", "bearer t0ken"] {
            assert!(!same_secret(other, "Bearer t0ken"), "{other:?}");
        }
    }
}
