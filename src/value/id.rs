//! Newtypes for everything that crosses a module boundary, each parsed once
//! ("parse, don't validate"): once you hold an `OrgName`, it is valid.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Invalid;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(Arc<str>);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Parses and validates.
            pub fn new(s: impl Into<String>) -> Result<Self, Invalid> {
                let s = s.into();
                $check(&s).map_err(|reason| Invalid::new($what, reason))?;
                Ok(Self(Arc::from(s)))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.to_string()
            }
        }

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

// Names are `Arc<str>`: a session keeps its machine and user, and cloning
// them must not allocate on the admission path.
string_id!(
    /// An organisation's name: 1–63 of `a-z 0-9 - _`, starting with a letter or digit.
    OrgName, "org name", check_org
);
string_id!(
    /// A user's email address (the user's identity inside an org), lowercased.
    Email, "email", check_email
);
string_id!(
    /// A machine ID: 1–128 of `A-Z a-z 0-9 . _ : -`.
    MachineId, "machine id", check_machine
);

fn check_org(s: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !s.chars().all(ok_char) || !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("use lowercase letters, digits, '-' and '_', starting with a letter or digit".into());
    }
    Ok(())
}

fn check_email(s: &str) -> Result<(), String> {
    if s.len() > 254 {
        return Err("longer than 254 characters".into());
    }
    let Some((local, domain)) = s.split_once('@') else {
        return Err("must look like name@domain".into());
    };
    let printable = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_graphic() && c != '@');
    if !printable(local) || !printable(domain) {
        return Err("must look like name@domain".into());
    }
    if s.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("must be lowercase".into());
    }
    Ok(())
}

fn check_machine(s: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if s.is_empty() || s.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if !s.chars().all(ok_char) {
        return Err("use letters, digits, '.', '_', ':' and '-'".into());
    }
    Ok(())
}

impl Email {
    /// Parses an email, lowercasing it first (addresses are case-insensitive in practice).
    pub fn parse_lenient(s: &str) -> Result<Email, Invalid> {
        Email::new(s.trim().to_ascii_lowercase())
    }
}

/// A live session's identifier, unique within one broker process.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl FromStr for SessionId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        u64::from_str_radix(s, 16).map(SessionId).map_err(|_| Invalid::new("session id", "expected 16 hex digits"))
    }
}

/// A runner instance's self-chosen random identity: acquires with the same
/// nonce are the same request, so retries and reconnects never take a second seat.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Nonce(pub u128);

/// An offline license's random identity; shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OfflineId(pub u128);

impl fmt::Display for OfflineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for OfflineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OfflineId({self})")
    }
}

/// The connection that acquired (or last re-attached to) a session: a clean
/// close of that connection ends the sessions it still holds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The SHA-256 of an API key; the key itself is never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The short public identifier of a key: the first 6 bytes of its hash, in hex.
    pub fn key_id(&self) -> String {
        hex(&self.0[..6])
    }

    /// The whole hash in lowercase hex (its key in the store).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.key_id())
    }
}

/// Lowercase hex of `bytes`, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        // Invariant: writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The bytes of lowercase hex `s` (what `hex` writes); `None` for anything
/// else (odd length, another character, a sign `from_str_radix` would take).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// What a principal may do. Operator is the broker's own operator, outside every org.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Role {
    /// Runs the broker: creates orgs, sets pools and quotas. Sees no org's users.
    Operator,
    /// Manages everything of one org except its quotas.
    Owner,
    /// Like Owner, but cannot create or remove Owners.
    Admin,
    /// Runs sessions.
    User,
}

impl Role {
    /// Lowercase name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    /// Whether this role administers its org.
    pub fn is_admin(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

impl FromStr for Role {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            _ => Err(Invalid::new("role", "expected owner, admin or user")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
