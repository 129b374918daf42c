//! This machine's ID as a runner reports it: a stable hash of the host's
//! identity and the OS user, so two users on one host get two IDs (as the
//! vendor's rules say). `LB_MACHINE_ID` overrides it, for containers whose
//! host identity is shared or ephemeral.
//!
//! The host's identity, per OS: Linux's machine-id (or the DMI product
//! UUID, or the hostname); macOS's `IOPlatformUUID` (from `ioreg`); the
//! BSDs' host UUID (`kern.hostuuid`, OpenBSD's `hw.uuid`, NetBSD's DMI
//! system UUID, from `sysctl`). Where none can be read the runner refuses,
//! asking for `LB_MACHINE_ID`, rather than giving every host of that OS
//! whose user has the same name the same ID. Reading is per OS; the
//! parsing of each tool's output is plain text in, identity out, and
//! tested on every OS.

use ring::digest::{digest, SHA256};

use crate::value::Invalid;
use crate::value::MachineId;

/// Files tried in order for a stable host identity on Linux.
#[cfg(target_os = "linux")]
const HOST_SOURCES: [&str; 3] = ["/etc/machine-id", "/var/lib/dbus/machine-id", "/sys/class/dmi/id/product_uuid"];

/// The machine ID of this host and user (or `LB_MACHINE_ID`).
pub fn current() -> Result<MachineId, Invalid> {
    if let Ok(v) = std::env::var("LB_MACHINE_ID") {
        return MachineId::new(v.trim());
    }
    let host = host_identity().ok_or_else(|| {
        Invalid::new(
            "machine id",
            format!(
                "this host's identity could not be read on {}: set LB_MACHINE_ID to a stable name for this \
                 machine (unique per machine and user)",
                std::env::consts::OS
            ),
        )
    })?;
    Ok(derive(&host, &user_identity()))
}

/// The ID for a given host identity and user.
pub fn derive(host: &str, user: &str) -> MachineId {
    let input = format!("license-broker machine-id v1\0{host}\0{user}");
    let d = digest(&SHA256, input.as_bytes());
    let hex = crate::keys::hex(&d.as_ref()[..16]);
    // Invariant: 32 hex digits always satisfy the machine-id rules.
    MachineId::new(hex).expect("hex is a valid machine id")
}

#[cfg(target_os = "linux")]
fn host_identity() -> Option<String> {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    HOST_SOURCES.into_iter().chain(["/proc/sys/kernel/hostname"]).filter_map(read).find(|s| !s.is_empty())
}

#[cfg(target_os = "macos")]
fn host_identity() -> Option<String> {
    platform_uuid(&output("ioreg", &["-rd1", "-c", "IOPlatformExpertDevice"])?)
}

#[cfg(any(target_os = "freebsd", target_os = "dragonfly", target_os = "openbsd", target_os = "netbsd"))]
fn host_identity() -> Option<String> {
    let key = match std::env::consts::OS {
        "openbsd" => "hw.uuid",
        "netbsd" => "machdep.dmi.system-uuid",
        _ => "kern.hostuuid",
    };
    host_uuid(&output("sysctl", &["-n", key])?)
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "openbsd",
    target_os = "netbsd"
)))]
fn host_identity() -> Option<String> {
    None
}

/// A tool's standard output, if it ran and succeeded.
#[cfg(any(
    target_os = "macos",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "openbsd",
    target_os = "netbsd"
))]
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `IOPlatformUUID` from `ioreg -rd1 -c IOPlatformExpertDevice`'s output
/// (a line `"IOPlatformUUID" = "UUID"`).
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
fn platform_uuid(ioreg: &str) -> Option<String> {
    let line = ioreg.lines().find(|l| l.contains("\"IOPlatformUUID\""))?;
    let value = line.split_once('=')?.1.trim().trim_matches('"');
    uuid(value)
}

/// The host UUID `sysctl -n` printed.
#[cfg_attr(
    not(any(target_os = "freebsd", target_os = "dragonfly", target_os = "openbsd", target_os = "netbsd")),
    allow(dead_code)
)]
fn host_uuid(sysctl: &str) -> Option<String> {
    uuid(sysctl.trim())
}

/// `s` if it is a UUID that identifies something: 36 characters of hex and
/// dashes, and not all zeros (firmware without one reports zeros).
fn uuid(s: &str) -> Option<String> {
    let well_formed = s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    let meaningful = s.chars().any(|c| c.is_ascii_hexdigit() && c != '0');
    (well_formed && meaningful).then(|| s.to_ascii_lowercase())
}

fn user_identity() -> String {
    let name = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_default();
    format!("{}:{name}", uid())
}

/// The process's user id.
#[cfg(target_os = "linux")]
fn uid() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("Uid:"));
    line.and_then(|l| l.split_whitespace().nth(1)).unwrap_or("").to_string()
}

/// The process's user id.
#[cfg(all(unix, not(target_os = "linux")))]
fn uid() -> String {
    // Safety: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }.to_string()
}

#[cfg(not(unix))]
fn uid() -> String {
    String::new()
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

    /// `ioreg -rd1 -c IOPlatformExpertDevice`, as macOS prints it (abridged).
    const IOREG: &str = r#"+-o J316sAP  <class IOPlatformExpertDevice, id 0x100000202, registered, matched, active, busy 0 (1 ms), retain 38>
    {
      "IOPlatformSerialNumber" = "C02XXXXXXXXX"
      "IOPlatformUUID" = "3F2A9C1E-5B7D-4E21-9A0B-6C4D2E8F1A3B"
      "model" = <"MacBookPro18,1">
    }
"#;

    #[test]
    fn reads_the_platform_uuid_from_ioreg() {
        assert_eq!(platform_uuid(IOREG).as_deref(), Some("3f2a9c1e-5b7d-4e21-9a0b-6c4d2e8f1a3b"));
        assert_eq!(platform_uuid("+-o Root  <class IORegistryEntry>\n"), None, "no UUID line");
        assert_eq!(platform_uuid("\"IOPlatformUUID\" = \"not-a-uuid\""), None);
    }

    #[test]
    fn reads_the_host_uuid_from_sysctl_and_refuses_a_blank_one() {
        assert_eq!(
            host_uuid("1b6c2f0e-8a3d-11ee-b9d1-0242ac120002\n").as_deref(),
            Some("1b6c2f0e-8a3d-11ee-b9d1-0242ac120002")
        );
        assert_eq!(host_uuid("00000000-0000-0000-0000-000000000000\n"), None, "firmware without a UUID");
        assert_eq!(host_uuid(""), None);
    }

    /// This OS's reading gives a host identity (every OS the project runs
    /// its tests on has one).
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    #[test]
    fn this_host_has_an_identity() {
        assert!(host_identity().is_some_and(|h| !h.is_empty()));
    }
}
