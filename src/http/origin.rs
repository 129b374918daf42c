//! Which requests the web door takes at all. Every request must name a
//! `Host` the door serves (`Hosts`: the listen address, `localhost`, the
//! certificate's names and `--http-host`), so a page of another name that
//! resolves to this address (DNS rebinding) reads nothing, not even
//! `/metrics`. Every request that may change something (any method but
//! GET and HEAD: sign-in, sign-out, every form) must come from the door's
//! own pages as far as the browser says (`Sec-Fetch-Site`, else `Origin`), so
//! no other site can sign a browser in or out or post a form with its
//! cookie. A client that sends neither header (a script, not a browser)
//! carries no one's cookie but its own and passes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::{CertificateDer, ServerName};

use super::Web;

/// The names the door answers to.
pub struct Hosts {
    /// Given with `--http-host` (lower case), and `localhost`.
    names: Vec<String>,
    /// The address the door is bound to.
    listen: SocketAddr,
    /// The certificate it presents, whose names it answers to as well.
    cert: Option<CertificateDer<'static>>,
}

impl Hosts {
    pub fn new(configured: &[String], listen: SocketAddr, cert: Option<CertificateDer<'static>>) -> Hosts {
        let mut names: Vec<String> = configured.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
        names.push("localhost".into());
        Hosts { names, listen, cert }
    }

    /// Whether the door serves `name` (a `Host` without its port).
    pub fn allows(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if self.names.contains(&name) {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            // An address literal is never a rebinding (that needs a name):
            // the listen address, loopback, or any when bound to all.
            return ip == self.listen.ip() || ip.is_loopback() || self.listen.ip().is_unspecified();
        }
        self.certificate_names(&name)
    }

    fn certificate_names(&self, name: &str) -> bool {
        let (Some(der), Ok(server)) = (&self.cert, ServerName::try_from(name)) else { return false };
        webpki::EndEntityCert::try_from(der).is_ok_and(|c| c.verify_is_valid_for_subject_name(&server).is_ok())
    }
}

/// The request's `Host` without its port (an IPv6 literal without brackets).
pub fn host_name(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split_once(']').map(|(ip, _)| ip);
    }
    Some(host.rsplit_once(':').map_or(host, |(name, _)| name))
}

/// Refuses a request to a name the door does not serve (421), and a
/// request that may change something from another site (403).
pub(super) async fn checked(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let host = host_name(req.headers());
    if !host.is_some_and(|h| web.hosts.allows(h)) {
        let why = format!(
            "this door does not serve the name {:?} (serve --http-host NAME adds one)\n",
            host.unwrap_or_default()
        );
        return (StatusCode::MISDIRECTED_REQUEST, why).into_response();
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        if let Err(why) = same_origin(req.headers(), web.is_tls()) {
            return (StatusCode::FORBIDDEN, format!("refused: {why}\n")).into_response();
        }
    }
    next.run(req).await
}

/// Whether the browser says a request comes from the door's own pages.
fn same_origin(headers: &HeaderMap, tls: bool) -> Result<(), &'static str> {
    let value = |name| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    // A browser that says where a request comes from is believed; under
    // `Referrer-Policy: no-referrer` its `Origin` is `null` even from our
    // own page. One that does not (older browsers) must send our `Origin`.
    if let Some(site) = value("sec-fetch-site") {
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => Err("the request came from another site (Sec-Fetch-Site)"),
        };
    }
    let Some(origin) = value(header::ORIGIN.as_str()) else { return Ok(()) };
    let host = value(header::HOST.as_str()).unwrap_or_default();
    // Behind a proxy that terminates TLS (a plain door) the browser's origin is https.
    let ours = |scheme: &str| origin.strip_prefix(scheme).is_some_and(|h| h.eq_ignore_ascii_case(host));
    match ours("https://") || (!tls && ours("http://")) {
        true => Ok(()),
        false => Err("the request came from another origin (Origin)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn names_the_door_answers_to() {
        let cert = rcgen::generate_simple_self_signed(vec!["broker.example".into()]).unwrap().cert.der().clone();
        let hosts = Hosts::new(&["Ops.Internal".into()], "127.0.0.1:4433".parse().unwrap(), Some(cert));
        for yes in ["localhost", "127.0.0.1", "::1", "ops.internal", "broker.example", "BROKER.example"] {
            assert!(hosts.allows(yes), "{yes}");
        }
        for no in ["evil.example", "10.0.0.1", "example", ""] {
            assert!(!hosts.allows(no), "{no}");
        }
        let all = Hosts::new(&[], "0.0.0.0:4433".parse().unwrap(), None);
        assert!(all.allows("10.0.0.1") && !all.allows("evil.example"));
    }

    #[test]
    fn a_change_must_come_from_the_doors_own_pages() {
        let host = ("host", "127.0.0.1:4433");
        assert!(same_origin(&headers(&[host]), true).is_ok(), "a script sends neither");
        assert!(same_origin(&headers(&[host, ("origin", "https://127.0.0.1:4433")]), true).is_ok());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")]), true).is_ok());
        let own_page = headers(&[host, ("sec-fetch-site", "same-origin"), ("origin", "null")]);
        assert!(same_origin(&own_page, true).is_ok(), "no-referrer makes a browser's own Origin null");
        for bad in [
            vec![("origin", "https://evil.example")],
            vec![("origin", "null")],
            vec![("origin", "http://127.0.0.1:4433")],
            vec![("origin", "https://127.0.0.1:4434")],
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site"), ("origin", "https://127.0.0.1:4433")],
        ] {
            let mut h = bad.clone();
            h.push(host);
            assert!(same_origin(&headers(&h), true).is_err(), "{bad:?}");
        }
        let proxied = headers(&[host, ("origin", "http://127.0.0.1:4433")]);
        assert!(same_origin(&proxied, false).is_ok(), "a plain door takes either scheme");
    }
}
