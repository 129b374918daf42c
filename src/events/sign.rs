//! How a webhook request proves it came from this broker
//! (docs/EVENTS.md, "Verifying a webhook request"): an HMAC-SHA256, keyed
//! with the webhook's secret, over the request's timestamp, a dot and its
//! body, sent hex-encoded after `v1=`. The timestamp is signed so a
//! request recorded by a third party cannot be replayed later than the
//! receiver's tolerance; the receiver compares in constant time.

use ring::hmac;

use crate::core::Secret;
use crate::keys::{self, RandomUnavailable};
use crate::value::id::hex;

/// The event's id (`ORG/CURSOR`).
pub const HEADER_ID: &str = "webhook-id";
/// The event's idempotency key: the same for every delivery of the fact.
pub const HEADER_IDEMPOTENCY: &str = "idempotency-key";
/// The event's type.
pub const HEADER_TYPE: &str = "webhook-event";
/// When the request was signed, in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// `v1=` and the signature, hex (lowercase).
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The value of `webhook-signature` for `body` sent at `timestamp`.
pub fn signature(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.0.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1={}", hex(ctx.sign().as_ref()))
}

/// A new secret: `whsec_` and 64 hex digits (256 random bits).
pub fn new_secret() -> Result<Secret, RandomUnavailable> {
    let (a, b) = (keys::random_u128()?, keys::random_u128()?);
    Ok(Secret(format!("whsec_{a:032x}{b:032x}")))
}

/// A new webhook id: 12 hex digits.
pub fn new_id() -> Result<String, RandomUnavailable> {
    Ok(format!("{:012x}", keys::random_u128()? & 0xffff_ffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature is HMAC-SHA256 over `TIMESTAMP.BODY`, hex.
    #[test]
    fn signs_timestamp_dot_body_with_hmac_sha256() {
        let secret = Secret("key".into());
        // HMAC-SHA256("key", "1.{}") computed independently (Python's hmac module).
        assert_eq!(signature(&secret, 1, b"{}"), "v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224");
    }
}
