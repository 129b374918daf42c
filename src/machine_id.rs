//! This machine's ID as a runner reports it: a stable hash of the host's
//! identity and the OS user, so two users on one host get two IDs (as the
//! vendor's rules say). `LB_MACHINE_ID` overrides it, for containers whose
//! host identity is shared or ephemeral.

use std::fs;

use ring::digest::{digest, SHA256};

use crate::value::Invalid;
use crate::value::MachineId;

/// Files tried in order for a stable host identity.
const HOST_SOURCES: [&str; 3] = ["/etc/machine-id", "/var/lib/dbus/machine-id", "/sys/class/dmi/id/product_uuid"];

/// The machine ID of this host and user (or `LB_MACHINE_ID`).
pub fn current() -> Result<MachineId, Invalid> {
    if let Ok(v) = std::env::var("LB_MACHINE_ID") {
        return MachineId::new(v.trim());
    }
    Ok(derive(&host_identity(), &user_identity()))
}

/// The ID for a given host identity and user.
pub fn derive(host: &str, user: &str) -> MachineId {
    let input = format!("license-broker machine-id v1\0{host}\0{user}");
    let d = digest(&SHA256, input.as_bytes());
    let hex = crate::keys::hex(&d.as_ref()[..16]);
    // Invariant: 32 hex digits always satisfy the machine-id rules.
    MachineId::new(hex).expect("hex is a valid machine id")
}

fn host_identity() -> String {
    for path in HOST_SOURCES {
        if let Ok(s) = fs::read_to_string(path) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn user_identity() -> String {
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        })
        .unwrap_or_default();
    let name = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_default();
    format!("{uid}:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs_per_user_and_is_stable() {
        assert_eq!(derive("host", "1000:a"), derive("host", "1000:a"));
        assert_ne!(derive("host", "1000:a"), derive("host", "1001:b"));
        assert_ne!(derive("host1", "1000:a"), derive("host2", "1000:a"));
    }
}
