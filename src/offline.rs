//! Offline license files: their exact format, Ed25519 signing, and
//! verification that needs no broker.
//!
//! A file is UTF-8 text, one `name: value` field per line, in this order,
//! each line ending in `\n`:
//!
//! ```text
//! license-broker offline license v1
//! license-id: <32 lowercase hex digits>
//! org: <org name>
//! pool: <PRODUCT-KIND-TERM>
//! product: <KSE|KRE>
//! machine-id: <machine id>
//! issued: <YYYY-MM-DDTHH:MM:SSZ>
//! expires: <YYYY-MM-DD, the last day it is valid, UTC>
//! signature: <128 lowercase hex digits>
//! ```
//!
//! The signature is Ed25519 over every byte before `signature: `. A file is
//! accepted only if it is byte-for-byte the canonical rendering of the
//! fields it holds, so no byte can change without the file being refused
//! (as malformed, or for its signature). See docs/OFFLINE.md.

use std::fmt;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::error::SetupError;
use crate::value::{format_utc, parse_end_of_date, MachineId, Millis, OfflineId, OrgName, PoolId};

const MAGIC: &str = "license-broker offline license v1";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// How far in the future an issue time may be before the file is "not yet valid"
/// (tolerates clock skew between the broker and the licensed machine).
pub const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// What a license says: the core's reservation of its seat, as signed.
pub use crate::core::LicenseFields;

/// Why a license file is not valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// Not a license file of this format (or not its canonical form).
    Malformed(String),
    /// The signature does not match the content or the key.
    BadSignature,
    /// Its last valid day has passed.
    Expired {
        /// The license's last valid day, `YYYY-MM-DD`.
        last_day: String,
    },
    /// Its issue time is in the future.
    NotYetValid {
        /// When it was issued.
        issued: String,
    },
    /// It is bound to another machine.
    WrongMachine {
        /// The machine the license is bound to.
        licensed: MachineId,
        /// The machine it was checked on.
        this: MachineId,
    },
}

impl VerifyError {
    /// The exit code `offline verify` uses for this outcome (0 is valid).
    pub fn exit_code(&self) -> u8 {
        match self {
            VerifyError::BadSignature => 10,
            VerifyError::Expired { .. } => 11,
            VerifyError::NotYetValid { .. } => 12,
            VerifyError::WrongMachine { .. } => 13,
            VerifyError::Malformed(_) => 14,
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Malformed(why) => write!(f, "malformed license file: {why}"),
            VerifyError::BadSignature => f.write_str("bad signature: the file was changed or signed by another broker"),
            VerifyError::Expired { last_day } => write!(f, "expired: the license was valid through {last_day}"),
            VerifyError::NotYetValid { issued } => {
                write!(f, "not yet valid: issued {issued}, later than this machine's clock")
            }
            VerifyError::WrongMachine { licensed, this } => {
                write!(f, "wrong machine: licensed to {licensed}, this machine is {this}")
            }
        }
    }
}

impl std::error::Error for VerifyError {}

impl LicenseFields {
    /// `KSE_<machineID>.lic` or `KRE_<machineID>.lic`.
    pub fn file_name(&self) -> String {
        format!("{}_{}.lic", self.pool.product_name(), self.machine)
    }

    /// The signed part of the file.
    pub fn render_unsigned(&self) -> String {
        format!(
            "{MAGIC}\nlicense-id: {}\norg: {}\npool: {}\nproduct: {}\nmachine-id: {}\nissued: {}\nexpires: {}\n",
            self.id,
            self.org,
            self.pool,
            self.pool.product_name(),
            self.machine,
            format_utc(self.issued),
            crate::core::format_end_date(self.expires),
        )
    }
}

/// The broker's signing key: Ed25519, stored as PKCS#8 PEM (mode 0600).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Loads the key at `path`, generating it first if the file does not exist.
    pub fn load_or_generate(path: &Path) -> Result<SigningKey, SetupError> {
        let key_error = |why: String| SetupError::SigningKey(format!("{}: {why}", path.display()));
        if !path.exists() {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| key_error("the system's secure random source failed".into()))?;
            let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
            let pem = pem::encode_config(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()), lf);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(SetupError::io(format!("creating {}", dir.display())))?;
            }
            crate::tls::write_private(path, pem.as_bytes())?;
        }
        let text = std::fs::read(path).map_err(SetupError::io(format!("reading {}", path.display())))?;
        let parsed = pem::parse(text).map_err(|e| key_error(e.to_string()))?;
        let pair =
            Ed25519KeyPair::from_pkcs8(parsed.contents()).map_err(|_| key_error("not an Ed25519 PKCS#8 key".into()))?;
        Ok(SigningKey { pair })
    }

    /// The public key as a PEM SubjectPublicKeyInfo, with LF line endings
    /// (the one canonical form, over the wire and on the command line).
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.pair.public_key().as_ref());
        let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        pem::encode_config(&pem::Pem::new("PUBLIC KEY", der), lf)
    }

    /// The whole license file for `fields`.
    pub fn sign(&self, fields: &LicenseFields) -> String {
        let body = fields.render_unsigned();
        let sig = self.pair.sign(body.as_bytes());
        format!("{body}signature: {}\n", crate::keys::hex(sig.as_ref()))
    }
}

/// Reads an Ed25519 public key from PEM (SubjectPublicKeyInfo).
pub fn parse_public_pem(text: &str) -> Result<[u8; 32], String> {
    let parsed = pem::parse(text).map_err(|e| format!("not PEM: {e}"))?;
    let der = parsed.contents();
    if parsed.tag() != "PUBLIC KEY" || der.len() != 44 || der[..12] != SPKI_PREFIX {
        return Err("not an Ed25519 public key (expected PEM \"PUBLIC KEY\", RFC 8410)".into());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&der[12..]);
    Ok(key)
}

/// Checks a license file: canonical form, signature, validity at `now`, and
/// (if given) that it is bound to `machine`.
pub fn verify(
    file: &[u8],
    public_key: &[u8; 32],
    machine: Option<&MachineId>,
    now: Millis,
) -> Result<LicenseFields, VerifyError> {
    let text = std::str::from_utf8(file).map_err(|_| VerifyError::Malformed("not UTF-8".into()))?;
    let marker = "signature: ";
    let at = text.rfind(marker).ok_or_else(|| VerifyError::Malformed("no signature line".into()))?;
    let (body, sig_line) = text.split_at(at);
    let fields = parse_body(body)?;
    let sig_hex = sig_line[marker.len()..]
        .strip_suffix('\n')
        .ok_or_else(|| VerifyError::Malformed("signature line must end the file with a newline".into()))?;
    let signature = crate::value::unhex(sig_hex)
        .filter(|s| s.len() == 64)
        .ok_or_else(|| VerifyError::Malformed("signature is not 128 lowercase hex digits".into()))?;
    // Canonical form: the file must be exactly what the broker would write.
    let canonical = format!("{}{marker}{}\n", fields.render_unsigned(), crate::keys::hex(&signature));
    if canonical.as_bytes() != file {
        return Err(VerifyError::Malformed("not in canonical form".into()));
    }
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(body.as_bytes(), &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    if fields.issued.0 > now.0.saturating_add(CLOCK_SKEW_MS) {
        return Err(VerifyError::NotYetValid { issued: format_utc(fields.issued) });
    }
    if now >= fields.expires {
        return Err(VerifyError::Expired { last_day: crate::core::format_end_date(fields.expires) });
    }
    if let Some(m) = machine {
        if *m != fields.machine {
            return Err(VerifyError::WrongMachine { licensed: fields.machine.clone(), this: m.clone() });
        }
    }
    Ok(fields)
}

fn parse_body(body: &str) -> Result<LicenseFields, VerifyError> {
    let bad = |what: &str| VerifyError::Malformed(what.to_string());
    let mut lines = body.strip_suffix('\n').ok_or_else(|| bad("truncated"))?.split('\n');
    if lines.next() != Some(MAGIC) {
        return Err(bad("first line is not the license header"));
    }
    let mut field = |name: &str| -> Result<&str, VerifyError> {
        let line = lines.next().ok_or_else(|| bad(&format!("missing {name}")))?;
        line.strip_prefix(name).and_then(|l| l.strip_prefix(": ")).ok_or_else(|| bad(&format!("expected {name}")))
    };
    let id = u128::from_str_radix(field("license-id")?, 16).map_err(|_| bad("license-id"))?;
    let org = OrgName::new(field("org")?).map_err(|e| bad(&e.to_string()))?;
    let pool: PoolId = field("pool")?.parse().map_err(|e: crate::value::Invalid| bad(&e.to_string()))?;
    let _product = field("product")?;
    let machine = MachineId::new(field("machine-id")?).map_err(|e| bad(&e.to_string()))?;
    let issued = parse_utc(field("issued")?).ok_or_else(|| bad("issued"))?;
    let expires = parse_end_of_date(field("expires")?).map_err(|e| bad(&e.to_string()))?;
    if lines.next().is_some() {
        return Err(bad("unexpected lines before the signature"));
    }
    Ok(LicenseFields { id: OfflineId(id), org, pool, machine, issued, expires })
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_utc(s: &str) -> Option<Millis> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let day = parse_end_of_date(date).ok()?.0 - crate::core::DAY_MS;
    let mut hms = time.split(':').map(|p| if p.len() == 2 { p.parse::<u64>().ok() } else { None });
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some(Millis(day + (h * 3600 + m * 60 + sec) * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> LicenseFields {
        LicenseFields {
            id: OfflineId(0x1234),
            org: OrgName::new("acme").unwrap(),
            pool: "kse-node-locked-annual".parse().unwrap(),
            machine: MachineId::new("m-1").unwrap(),
            issued: Millis(1_795_737_600_000),
            expires: parse_end_of_date("2027-01-20").unwrap(),
        }
    }

    fn key() -> (SigningKey, [u8; 32], tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::load_or_generate(&dir.path().join("k.pem")).unwrap();
        let public = parse_public_pem(&k.public_pem()).unwrap();
        (k, public, dir)
    }

    #[test]
    fn the_public_key_pem_has_lf_line_endings() {
        let (k, _, _d) = key();
        let pem = k.public_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("-----END PUBLIC KEY-----\n"));
        assert!(!pem.contains('\r'), "{pem:?}");
    }

    #[test]
    fn a_signed_file_verifies_and_says_why_not_otherwise() {
        let (k, public, _d) = key();
        let file = k.sign(&fields());
        let now = Millis(1_795_737_600_000 + 1000);
        let m = MachineId::new("m-1").unwrap();
        assert_eq!(verify(file.as_bytes(), &public, Some(&m), now), Ok(fields()));
        let other = MachineId::new("m-2").unwrap();
        assert!(matches!(verify(file.as_bytes(), &public, Some(&other), now), Err(VerifyError::WrongMachine { .. })));
        let late = parse_end_of_date("2027-01-20").unwrap();
        assert!(matches!(verify(file.as_bytes(), &public, None, late), Err(VerifyError::Expired { .. })));
        let early = Millis(1_795_737_600_000 - CLOCK_SKEW_MS - 1);
        assert!(matches!(verify(file.as_bytes(), &public, None, early), Err(VerifyError::NotYetValid { .. })));
        let (_, stranger, _d2) = key();
        assert_eq!(verify(file.as_bytes(), &stranger, None, now), Err(VerifyError::BadSignature));
        assert_eq!(fields().file_name(), "KSE_m-1.lic");
    }

    #[test]
    fn every_single_byte_flip_is_rejected() {
        let (k, public, _d) = key();
        let file = k.sign(&fields()).into_bytes();
        let now = Millis(1_795_737_600_000 + 1000);
        for i in 0..file.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut bad = file.clone();
                bad[i] ^= flip;
                assert!(verify(&bad, &public, None, now).is_err(), "flip {flip:#x} at byte {i} accepted");
            }
        }
    }

    #[test]
    fn public_key_pem_round_trips() {
        let (k, public, _d) = key();
        assert!(k.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(parse_public_pem(&k.public_pem()).unwrap(), public);
        assert!(parse_public_pem("nope").is_err());
    }
}
