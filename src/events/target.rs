//! Where a webhook may send: `http://` or `https://` URLs only, and by
//! default never to an address of the broker's own network (server-side
//! request forgery): loopback, private, shared (CGNAT), unique-local,
//! link-local, multicast, unspecified or broadcast. `serve
//! --webhook-allow-private` allows those (a receiver on the broker's
//! host or LAN; the tests' receivers); the cloud metadata addresses are
//! refused even then. The name is resolved once per delivery and the
//! request goes to the address checked (a second lookup could answer
//! another), and a host whose any address is refused is refused whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A webhook URL, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `https://`.
    pub secure: bool,
    /// The host (a name, or an address without brackets).
    pub host: String,
    /// The port (80 and 443 by default).
    pub port: u16,
    /// What the `Host` header says: `host[:port]` as written.
    pub authority: String,
    /// The path and query (`/` if none).
    pub path: String,
}

/// Parses a webhook URL: `http(s)://host[:port][/path][?query]`, no user
/// name or password, no fragment.
pub fn parse(url: &str) -> Result<Target, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the URL must start with http:// or https://".into()),
    };
    let authority = uri.authority().ok_or("the URL has no host")?;
    if authority.as_str().contains('@') {
        return Err("the URL may not hold a user name or password".into());
    }
    if url.contains('#') {
        return Err("the URL may not hold a fragment (#...)".into());
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = authority.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/".to_string(), |p| p.as_str().to_string());
    Ok(Target { secure, host, port, authority: authority.as_str().to_string(), path })
}

/// Whether the broker may send to `ip` (`private`: the operator allowed
/// its own networks).
pub fn allowed(ip: IpAddr, private: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if metadata(ip) || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    private || !own_network(ip)
}

/// The cloud providers' instance metadata services.
fn metadata(ip: IpAddr) -> bool {
    const AWS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    ip == IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))
        || ip == IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200))
        || ip == IpAddr::V6(AWS_V6)
}

/// Loopback, private, shared, link-local or broadcast: the broker's own networks.
fn own_network(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The address to send to: the host's, every one of them allowed.
pub async fn resolve(t: &Target, private: bool) -> Result<SocketAddr, String> {
    let found: Vec<SocketAddr> = match t.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, t.port)],
        Err(_) => tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("resolving {}: {e}", t.host))?
            .collect(),
    };
    if let Some(refused) = found.iter().find(|a| !allowed(a.ip(), private)) {
        return Err(format!(
            "{} is {}, an address webhooks may not reach (serve --webhook-allow-private allows the broker's own networks)",
            t.host,
            refused.ip()
        ));
    }
    found.first().copied().ok_or_else(|| format!("{} has no address", t.host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_and_https_urls_only() {
        let t = parse("https://hooks.example.com/ci?team=a").unwrap();
        assert_eq!(
            (t.secure, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example.com", 443, "/ci?team=a")
        );
        let t = parse("http://[::1]:8080").unwrap();
        assert_eq!((t.secure, t.host.as_str(), t.port, t.path.as_str()), (false, "::1", 8080, "/"));
        for bad in ["ftp://x/", "file:///etc/passwd", "https://user:pw@x/", "x.example.com/", "https://x/#f"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_the_brokers_own_networks_unless_allowed_and_metadata_always() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for own in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!allowed(ip(own), false), "{own}");
            assert!(allowed(ip(own), true), "{own} with --webhook-allow-private");
        }
        for never in ["169.254.169.254", "100.100.100.200", "fd00:ec2::254", "0.0.0.0", "224.0.0.1", "::"] {
            assert!(!allowed(ip(never), true), "{never}");
        }
        for public in ["93.184.216.34", "2606:4700::1"] {
            assert!(allowed(ip(public), false), "{public}");
        }
    }
}
