//! A request's target, read from what hyper parsed: the CONNECT authority, or the absolute URI
//! (whose `Host` header must agree with it).

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Uri};

use crate::decision::DenyReason;
use crate::host::Host;

/// A request's target: a normalised host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The host.
    pub host: Host,
    /// The port.
    pub port: u16,
}

impl Target {
    /// The target of a CONNECT request (`host:port`; the port is required).
    pub fn from_connect(uri: &Uri) -> Result<Target, DenyReason> {
        if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(DenyReason::MalformedRequest);
        }
        let authority = uri.authority().ok_or(DenyReason::MalformedRequest)?;
        let (host, port) = split_authority(authority)?;
        Ok(Target {
            host,
            port: port.ok_or(DenyReason::InvalidPort)?,
        })
    }

    /// The target of an absolute-form request (`http://host[:port]/…`), checked against the
    /// request's `Host` header when there is one.
    pub fn from_absolute(uri: &Uri, headers: &HeaderMap) -> Result<Target, DenyReason> {
        let scheme = uri.scheme().ok_or(DenyReason::OriginForm)?;
        if *scheme != Scheme::HTTP {
            return Err(DenyReason::UnsupportedScheme);
        }
        let authority = uri.authority().ok_or(DenyReason::MalformedRequest)?;
        let (host, port) = split_authority(authority)?;
        let target = Target {
            host,
            port: port.unwrap_or(80),
        };
        let mut host_headers = headers.get_all(HOST).iter();
        match (host_headers.next(), host_headers.next()) {
            (None, _) => {}
            (Some(_), Some(_)) => return Err(DenyReason::DuplicateHost),
            (Some(value), None) => {
                let text = value.to_str().map_err(|_| DenyReason::HostMismatch)?;
                let header_authority: Authority =
                    text.parse().map_err(|_| DenyReason::HostMismatch)?;
                let (header_host, header_port) =
                    split_authority(&header_authority).map_err(|reason| match reason {
                        DenyReason::UserinfoInUri => reason,
                        _ => DenyReason::HostMismatch,
                    })?;
                if header_host != target.host || header_port.unwrap_or(80) != target.port {
                    return Err(DenyReason::HostMismatch);
                }
            }
        }
        Ok(target)
    }

    /// `host:port` as it goes in a `Host` header or an authority (`[v6]:port`).
    pub fn authority(&self) -> String {
        self.host.authority(self.port)
    }
}

/// Splits an authority into a normalised host and its port, refusing userinfo, empty or zero
/// ports, and hosts that are not names or address literals.
fn split_authority(authority: &Authority) -> Result<(Host, Option<u16>), DenyReason> {
    let text = authority.as_str();
    if text.contains('@') {
        return Err(DenyReason::UserinfoInUri);
    }
    if text.ends_with(':') {
        return Err(DenyReason::InvalidPort);
    }
    let port = match authority.port() {
        None => None,
        Some(p) => match p.as_u16() {
            0 => return Err(DenyReason::InvalidPort),
            n => Some(n),
        },
    };
    let host = Host::parse(authority.host()).map_err(|_| DenyReason::InvalidHost)?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn headers(host: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in host {
            h.append(HOST, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn absolute(u: &str, host: &[&str]) -> Result<Target, DenyReason> {
        Target::from_absolute(&uri(u), &headers(host))
    }

    #[test]
    fn connect_targets() {
        let t = Target::from_connect(&uri("Example.com:443")).unwrap();
        assert_eq!(t.host, Host::Name("example.com".into()));
        assert_eq!(t.port, 443);
        let v6 = Target::from_connect(&uri("[::1]:8443")).unwrap();
        assert_eq!(v6.authority(), "[::1]:8443");
        assert_eq!(
            Target::from_connect(&uri("example.com")),
            Err(DenyReason::InvalidPort)
        );
        assert_eq!(
            Target::from_connect(&uri("example.com:0")),
            Err(DenyReason::InvalidPort)
        );
        assert_eq!(
            Target::from_connect(&uri("user@example.com:443")),
            Err(DenyReason::UserinfoInUri)
        );
        assert_eq!(
            Target::from_connect(&uri("http://example.com:443/")),
            Err(DenyReason::MalformedRequest)
        );
    }

    #[test]
    fn absolute_targets() {
        let t = absolute("http://Example.com/x?y", &["example.com"]).unwrap();
        assert_eq!((t.host.to_string().as_str(), t.port), ("example.com", 80));
        let t = absolute("http://example.com:8080/", &["EXAMPLE.com.:8080"]).unwrap();
        assert_eq!(t.port, 8080);
        assert!(absolute("http://example.com/", &[]).is_ok());
        assert!(absolute("http://example.com:80/", &["example.com"]).is_ok());
        assert_eq!(
            absolute("/path", &["example.com"]),
            Err(DenyReason::OriginForm)
        );
        assert_eq!(
            absolute("https://example.com/", &["example.com"]),
            Err(DenyReason::UnsupportedScheme)
        );
        assert_eq!(
            absolute("ftp://example.com/", &[]),
            Err(DenyReason::UnsupportedScheme)
        );
    }

    #[test]
    fn host_header_must_agree() {
        assert_eq!(
            absolute("http://allowed.test/", &["evil.test"]),
            Err(DenyReason::HostMismatch)
        );
        assert_eq!(
            absolute("http://allowed.test/", &["allowed.test:8080"]),
            Err(DenyReason::HostMismatch)
        );
        assert_eq!(
            absolute("http://allowed.test/", &["allowed.test", "allowed.test"]),
            Err(DenyReason::DuplicateHost)
        );
        assert_eq!(
            absolute("http://allowed.test/", &["user@allowed.test"]),
            Err(DenyReason::UserinfoInUri)
        );
        assert_eq!(
            absolute("http://allowed.test/", &["allowed.test/x"]),
            Err(DenyReason::HostMismatch)
        );
    }

    #[test]
    fn userinfo_and_tricks() {
        assert_eq!(
            absolute("http://allowed.test@evil.test/", &["evil.test"]),
            Err(DenyReason::UserinfoInUri)
        );
        assert_eq!(
            absolute("http://allowed.test:80@evil.test/", &[]),
            Err(DenyReason::UserinfoInUri)
        );
        // `http://evil#@allowed/`: whatever the URI parser makes of it, never `allowed.test`.
        let trick = absolute("http://evil.test#@allowed.test/", &[]);
        assert!(trick.is_err() || trick.unwrap().host == Host::parse("evil.test").unwrap());
        // Refused here, or already by the URI parser (hyper answers 400 then).
        let refused = |u: &str, reason| {
            if let Ok(parsed) = u.parse::<Uri>() {
                assert_eq!(
                    Target::from_absolute(&parsed, &HeaderMap::new()),
                    Err(reason),
                    "{u}"
                );
            }
        };
        refused("http://%61llowed.test/", DenyReason::InvalidHost);
        refused("http://127.1/", DenyReason::InvalidHost);
        refused("http://0x7f000001/", DenyReason::InvalidHost);
        refused("http://allowed.test:/", DenyReason::InvalidPort);
        refused("http://[::1%25lo]/", DenyReason::InvalidHost);
    }
}
