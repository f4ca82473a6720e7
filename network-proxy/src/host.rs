//! Host names and address literals, normalised once: the same parser reads rules, request
//! targets, `Host` headers and TLS SNI, so the three always compare like with like.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// The longest host name DNS can carry (without the trailing dot).
pub const MAX_NAME_LEN: usize = 253;
/// The longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;

/// A normalised host: a lower-case ASCII DNS name without trailing dot, or an address literal in
/// canonical form (an IPv4-mapped IPv6 literal such as `::ffff:127.0.0.1` becomes `127.0.0.1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A DNS name: lower case, ASCII (punycode for international names), no trailing dot.
    Name(String),
    /// An address literal.
    Ip(IpAddr),
}

/// Why a string is not a host.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HostError {
    /// Nothing was given.
    #[error("empty host name")]
    Empty,
    /// A non-ASCII name: international names must be given in punycode (`xn--…`); the proxy
    /// never guesses a mapping.
    #[error("non-ASCII host name (give international names in punycode, xn--…)")]
    NonAscii,
    /// A character DNS names do not have (space, `@`, `/`, `%`, `:` …).
    #[error("invalid character {0:?} in host name")]
    InvalidCharacter(char),
    /// Longer than 253 characters.
    #[error("host name longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// An empty label (`a..b`, a leading dot, or a lone `.`).
    #[error("empty label in host name")]
    EmptyLabel,
    /// A label longer than 63 characters.
    #[error("label longer than {MAX_LABEL_LEN} characters in host name")]
    LabelTooLong,
    /// A name that looks numeric (`127.1`, `0x7f.1`, `2130706433`): C resolvers read such names
    /// as addresses, so they are refused rather than resolved.
    #[error("numeric host name that is not a dotted-quad IPv4 address")]
    NumericName,
    /// A bracketed literal that is not an IPv6 address (zone ids are refused too).
    #[error("invalid IPv6 literal")]
    BadIpLiteral,
}

impl Host {
    /// Parses and normalises a host: `[v6]` or a bare IPv6 address, a dotted-quad IPv4 address,
    /// or a DNS name (case folded, one trailing dot stripped).
    pub fn parse(input: &str) -> Result<Host, HostError> {
        if input.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(inner) = input.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(HostError::BadIpLiteral)?;
            let ip: Ipv6Addr = inner.parse().map_err(|_| HostError::BadIpLiteral)?;
            return Ok(Host::from_ip(IpAddr::V6(ip)));
        }
        if let Ok(ip) = input.parse::<Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        if input.contains(':') {
            let ip: Ipv6Addr = input
                .parse()
                .map_err(|_| HostError::InvalidCharacter(':'))?;
            return Ok(Host::from_ip(IpAddr::V6(ip)));
        }
        parse_name(input).map(Host::Name)
    }

    /// A host for an address, in canonical form.
    pub fn from_ip(ip: IpAddr) -> Host {
        Host::Ip(ip.to_canonical())
    }

    /// The name, when this is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }

    /// The host as it goes in an authority (`example.com`, `1.2.3.4`, `[::1]`).
    pub fn authority(&self, port: u16) -> String {
        match self {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            other => format!("{other}:{port}"),
        }
    }
}

/// Names print as they are, addresses without brackets (`::1`).
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Validates and normalises a DNS name (not an address).
pub(crate) fn parse_name(input: &str) -> Result<String, HostError> {
    if !input.is_ascii() {
        return Err(HostError::NonAscii);
    }
    let lower = input.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err(HostError::EmptyLabel);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(HostError::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(HostError::LabelTooLong);
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(HostError::InvalidCharacter(bad));
        }
    }
    if looks_numeric(name) {
        return Err(HostError::NumericName);
    }
    Ok(name.to_owned())
}

/// Top-level domains are never numeric, and names whose labels are all numbers (decimal, octal
/// or `0x` hex) are what `inet_aton` accepts as addresses.
fn looks_numeric(name: &str) -> bool {
    let is_number = |label: &str| {
        let hex = label.strip_prefix("0x");
        match hex {
            Some(digits) => digits.chars().all(|c| c.is_ascii_hexdigit()),
            None => label.chars().all(|c| c.is_ascii_digit()),
        }
    };
    let last_is_digits = name
        .rsplit('.')
        .next()
        .is_some_and(|label| label.chars().all(|c| c.is_ascii_digit()));
    last_is_digits || name.split('.').all(is_number)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn name(s: &str) -> Host {
        Host::Name(s.to_owned())
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(Host::parse("Example.COM").unwrap(), name("example.com"));
        assert_eq!(Host::parse("example.com.").unwrap(), name("example.com"));
        assert_eq!(
            Host::parse("xn--bcher-kva.example").unwrap(),
            name("xn--bcher-kva.example")
        );
        assert_eq!(
            Host::parse("_srv.a-b.example").unwrap(),
            name("_srv.a-b.example")
        );
        assert_eq!(Host::parse("localhost").unwrap(), name("localhost"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(Host::parse(""), Err(HostError::Empty));
        assert_eq!(Host::parse("."), Err(HostError::EmptyLabel));
        assert_eq!(Host::parse("a..b"), Err(HostError::EmptyLabel));
        assert_eq!(Host::parse(".a.b"), Err(HostError::EmptyLabel));
        assert_eq!(Host::parse("a.b.."), Err(HostError::EmptyLabel));
        assert_eq!(Host::parse("bücher.example"), Err(HostError::NonAscii));
        assert_eq!(
            Host::parse("a b.example"),
            Err(HostError::InvalidCharacter(' '))
        );
        assert_eq!(
            Host::parse("user@example.com"),
            Err(HostError::InvalidCharacter('@'))
        );
        assert_eq!(
            Host::parse("example.com/x"),
            Err(HostError::InvalidCharacter('/'))
        );
        assert_eq!(
            Host::parse("%65xample.com"),
            Err(HostError::InvalidCharacter('%'))
        );
        assert_eq!(
            Host::parse("example.com:80"),
            Err(HostError::InvalidCharacter(':'))
        );
        let long = format!("{}.com", "a.".repeat(125));
        assert!(long.len() > MAX_NAME_LEN);
        assert_eq!(Host::parse(&long), Err(HostError::TooLong));
        let label = format!("{}.com", "a".repeat(64));
        assert_eq!(Host::parse(&label), Err(HostError::LabelTooLong));
        let exactly = format!("{}.{}", "a".repeat(63), "b".repeat(63));
        assert!(Host::parse(&exactly).is_ok());
    }

    #[test]
    fn numeric_names_are_refused() {
        for n in [
            "127.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "1.2.3.4.5",
            "example.123",
        ] {
            assert_eq!(Host::parse(n), Err(HostError::NumericName), "{n}");
        }
        assert!(Host::parse("0x.example").is_ok());
        assert!(Host::parse("123.example").is_ok());
        // Octal-looking quads are not addresses for the std parser, and are numeric names.
        assert_eq!(Host::parse("0177.0.0.1"), Err(HostError::NumericName));
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            Host::parse("127.0.0.1").unwrap(),
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("[::1]").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("::1").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("[::FFFF:127.0.0.1]").unwrap(),
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("[2001:DB8::1]").unwrap().to_string(),
            "2001:db8::1"
        );
        assert_eq!(Host::parse("[::1"), Err(HostError::BadIpLiteral));
        assert_eq!(Host::parse("[fe80::1%eth0]"), Err(HostError::BadIpLiteral));
        assert_eq!(Host::parse("[1.2.3.4]"), Err(HostError::BadIpLiteral));
        assert_eq!(Host::parse("[::1]").unwrap().authority(443), "[::1]:443");
        assert_eq!(Host::parse("a.b").unwrap().authority(80), "a.b:80");
    }
}
