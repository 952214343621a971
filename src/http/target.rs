//! A webhook URL, parsed, checked and resolved once, for the engine's connections.
//!
//! [`Target::parse`] runs on the thread that adds an endpoint, never on a worker: resolving a
//! host name is blocking DNS. The addresses are resolved once; an endpoint whose addresses
//! change is re-added (or re-parsed by its owner) to pick the new ones up.
//!
//! Decisions:
//! - Only `http` and `https`, with a non-empty host and, if given, a port in 1..=65535.
//!   Anything else is `Error::Config` naming `url`.
//! - Credentials in the URL (`https://user:pass@host/`) become an `Authorization: Basic`
//!   header, as the layer-1 `HttpSink` (ureq) does, so one URL means the same request in both
//!   layers. Like ureq, the user and password are encoded as written in the URL (percent
//!   escapes are not decoded). `Debug` never prints them.
//! - A fragment is dropped; a URL with only a query (`http://h?x=1`) gets the path `/`.
//! - DNS failures are `Error::Io` (they are usually transient), not config errors.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use ureq_proto::http::Uri;

use super::tls::{TlsOptions, client_config};
use crate::Error;

/// A parsed and resolved endpoint URL: everything a connection needs to reach it and to
/// write a request line and `Host` header.
#[derive(Clone)]
pub(crate) struct Target {
    /// `https://` (TLS) rather than `http://`.
    pub https: bool,
    /// The host as written in the URL, without IPv6 brackets.
    pub host: String,
    /// The port: the URL's, else 80 or 443.
    pub port: u16,
    /// The resolved addresses, tried in order; never empty.
    pub addrs: Vec<SocketAddr>,
    /// For `https`: the name sent in TLS SNI and verified against the certificate (a DNS
    /// name or an IP address).
    pub server_name: Option<ServerName<'static>>,
    /// The request target: path and query, always starting with `/`.
    pub path_and_query: String,
    /// The `Host` header's value: the host (bracketed if IPv6), with `:port` when the URL
    /// names a port other than the scheme's default.
    pub host_header: String,
    /// `Basic ...` from credentials in the URL, sent as `Authorization`.
    pub authorization: Option<String>,
    /// The TLS client configuration, for `https` targets.
    pub tls: Option<Arc<ClientConfig>>,
    /// Whether non-public addresses may be connected to (the SSRF guard, checked on each
    /// address just before connecting: [`super::guard`]).
    pub allow_private: bool,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("https", &self.https)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("addrs", &self.addrs)
            .field("path_and_query", &self.path_and_query)
            .field("host_header", &self.host_header)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls.is_some())
            .field("allow_private", &self.allow_private)
            .finish()
    }
}

fn bad(url: &str, why: &str) -> Error {
    Error::config("url", format!("{:?} {why}", redact(url)))
}

/// `url` with anything between `://` and the authority's `@` replaced, for error messages.
fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

impl Target {
    /// Parses an `http://` or `https://` URL, resolves its host (blocking DNS: call it where
    /// blocking is fine, never on a worker), and builds the TLS configuration from `tls` for
    /// `https` (`tls` is ignored for `http`).
    ///
    /// Errors: `Error::Config` naming `url` for another scheme, a missing or empty host, a
    /// bad or zero port, or a host that cannot be a TLS server name; `Error::Config` naming
    /// `tls.ca_pem` for a bad CA; `Error::Io` when the host does not resolve.
    pub fn parse(url: &str, tls: &TlsOptions) -> Result<Target, Error> {
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(url, &format!("is not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return Err(bad(url, "must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| bad(url, "has no host"))?
            .as_str();
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let raw_host = uri.host().unwrap_or("");
        if raw_host.is_empty() {
            return Err(bad(url, "has no host"));
        }
        let default_port = if https { 443 } else { 80 };
        let port = match hostport.strip_prefix(raw_host).unwrap_or("") {
            "" => default_port,
            rest => match rest.strip_prefix(':').map(str::parse::<u16>) {
                Some(Ok(p)) if p > 0 => p,
                _ => return Err(bad(url, "has a bad port (want 1..=65535)")),
            },
        };
        let host = raw_host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(raw_host)
            .to_owned();
        let server_name =
            if https {
                Some(ServerName::try_from(host.clone()).map_err(|_| {
                    bad(url, "has a host that is not a valid DNS name or IP address")
                })?)
            } else {
                None
            };
        let host_header = if port == default_port {
            raw_host.to_owned()
        } else {
            format!("{raw_host}:{port}")
        };
        let path_and_query = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) if pq.starts_with('/') => pq.to_owned(),
            Some(pq) => format!("/{pq}"),
        };
        let authorization = userinfo.filter(|u| !u.is_empty()).map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            format!("Basic {}", BASE64.encode(format!("{user}:{pass}")))
        });
        let tls = if https {
            Some(client_config(tls)?)
        } else {
            None
        };
        let addrs = resolve(&host, port)?;
        Ok(Target {
            https,
            host,
            port,
            addrs,
            server_name,
            path_and_query,
            host_header,
            authorization,
            tls,
            allow_private: true,
        })
    }

    /// Turns the SSRF guard on (`allow_private` false) or off. On, a URL whose host is an IP
    /// literal of a non-public address is refused at once: `Error::Config` naming `url`.
    pub fn guard(mut self, allow_private: bool) -> Result<Target, Error> {
        self.allow_private = allow_private;
        if !allow_private
            && let Ok(ip) = self.host.parse::<IpAddr>()
            && let Some(class) = super::guard::non_public(ip)
        {
            return Err(Error::config(
                "url",
                format!(
                    "{ip} is a {class} address and allow_private is off (set allow_private \
                     to deliver to it)"
                ),
            ));
        }
        Ok(self)
    }
}

/// Resolves `host` (an IP literal without a lookup) to its socket addresses.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Io {
            kind: e.kind(),
            message: format!("cannot resolve {host:?}: {e}"),
            source: crate::Error::io_source(&e),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Io {
            kind: io::ErrorKind::NotFound,
            message: format!("{host:?} resolved to no address"),
            source: None,
        });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target, Error> {
        Target::parse(url, &TlsOptions::default())
    }

    #[test]
    fn good_urls() {
        let t = parse("http://127.0.0.1:8080/hooks?x=1#frag").unwrap();
        assert!(!t.https && t.tls.is_none());
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!(t.addrs, ["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(t.path_and_query, "/hooks?x=1");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.authorization, None);

        let t = parse("HTTPS://localhost").unwrap();
        assert!(t.https && t.tls.is_some());
        assert_eq!((t.port, t.path_and_query.as_str()), (443, "/"));
        assert_eq!(t.host_header, "localhost");
        assert!(!t.addrs.is_empty());
        assert!(
            t.addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 443)
        );
        assert_eq!(
            t.server_name,
            Some(ServerName::try_from("localhost").unwrap())
        );

        let t = parse("http://[::1]/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(t.host_header, "[::1]");
        assert_eq!(t.addrs, ["[::1]:80".parse().unwrap()]);

        let t = parse("http://127.0.0.1:80?q").unwrap();
        assert_eq!(
            (t.path_and_query.as_str(), t.host_header.as_str()),
            ("/?q", "127.0.0.1")
        );
    }

    #[test]
    fn credentials_become_basic_auth_and_are_never_shown() {
        let t = parse("http://alice:s3cret@127.0.0.1:9/").unwrap();
        // base64("alice:s3cret")
        assert_eq!(t.authorization.as_deref(), Some("Basic YWxpY2U6czNjcmV0"));
        assert_eq!(t.host_header, "127.0.0.1:9");
        assert!(!format!("{t:?}").contains("YWxp"));
        let t = parse("http://bob@127.0.0.1/").unwrap();
        assert_eq!(t.authorization.as_deref(), Some("Basic Ym9iOg=="));
        assert_eq!(parse("http://@127.0.0.1/").unwrap().authorization, None);
        let Err(Error::Config { reason, .. }) = parse("ftp://alice:s3cret@h/") else {
            panic!("ftp is refused");
        };
        assert!(!reason.contains("s3cret"), "{reason}");
    }

    #[test]
    fn bad_urls_are_config_errors_naming_url() {
        for url in [
            "",
            "localhost/path",
            "ftp://127.0.0.1/",
            "ws://127.0.0.1/",
            "http:///path",
            "http://:80/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:abc/",
            "http://127.0.0.1:65536/",
            "http://127.0.0.1:/",
            "http://a b/",
            "http://u@/",
            "https://-leading-hyphen.example/",
        ] {
            match parse(url) {
                Err(Error::Config { field: "url", .. }) => {}
                other => panic!("{url:?}: expected a url config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_bad_ca_fails_only_https() {
        let tls = TlsOptions {
            ca_pem: Some("junk".into()),
            ..TlsOptions::default()
        };
        assert!(Target::parse("http://127.0.0.1/", &tls).is_ok());
        assert!(matches!(
            Target::parse("https://127.0.0.1/", &tls),
            Err(Error::Config {
                field: "tls.ca_pem",
                ..
            })
        ));
    }
}
