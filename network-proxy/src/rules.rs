//! Domain rules: which targets a sandbox may ask for, and which special addresses it may reach.
//!
//! A rule is one of:
//! - a target: `example.com`, `*.example.org` (strict subdomains only: the apex needs its own
//!   rule), `*` (any name or address literal), an address literal (`93.184.216.34`,
//!   `[2001:db8::1]`), each optionally with `:port`;
//! - an address range in CIDR form (`127.0.0.1/32`, `10.0.0.0/8`, `fd00::/64`). In the allow
//!   list a range lifts the refusal of special addresses (loopback, private, …) for exactly that
//!   range; it names no target by itself. In the deny list a range refuses every address in it.
//!
//! An allow target without a port allows ports 80 and 443; a deny target without a port denies
//! every port. Deny wins over allow. Names are case-insensitive, one trailing dot is stripped,
//! and non-ASCII names are refused (give punycode).

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

use crate::decision::DenyReason;
use crate::host::{Host, HostError};

/// Why a rule string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// The host part is not a valid name or address.
    #[error("rule `{rule}`: invalid host")]
    Host {
        /// The rule as given.
        rule: String,
        /// What is wrong with the host.
        #[source]
        source: HostError,
    },
    /// `*` anywhere but as a whole first label (`*.example.org`), or `*.` before an address.
    #[error("rule `{rule}`: a wildcard may only be `*` or a leading `*.`")]
    Wildcard {
        /// The rule as given.
        rule: String,
    },
    /// The port is not a number in 1..=65535.
    #[error("rule `{rule}`: invalid port")]
    Port {
        /// The rule as given.
        rule: String,
        /// The parse failure, when the port was not a number at all.
        #[source]
        source: Option<std::num::ParseIntError>,
    },
    /// A malformed CIDR range (bad address, prefix too long, host bits set, or a port).
    #[error("rule `{rule}`: invalid address range ({problem})")]
    Cidr {
        /// The rule as given.
        rule: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// [`Rules::narrow`]: the requested rule asks for more than the policy allows.
    #[error("rule `{rule}` is not covered by the policy's allow rules")]
    NotCovered {
        /// The requested rule as given.
        rule: String,
    },
}

/// Which ports a target rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ports {
    /// 80 and 443: what an allow rule without a port means.
    Web,
    /// Exactly this port.
    Only(u16),
    /// Every port: what a deny rule without a port means.
    All,
}

impl Ports {
    /// Whether `port` is one of these.
    pub fn contains(self, port: u16) -> bool {
        match self {
            Ports::Web => port == 80 || port == 443,
            Ports::Only(p) => p == port,
            Ports::All => true,
        }
    }

    fn covers(self, other: Ports) -> bool {
        match (self, other) {
            (Ports::All, _) => true,
            (_, Ports::All) => false,
            (Ports::Web, Ports::Web) => true,
            (outer, Ports::Only(p)) => outer.contains(p),
            (Ports::Only(_), Ports::Web) => false,
        }
    }
}

/// Which hosts a target rule names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: every name and address literal.
    Any,
    /// One name or address literal.
    Exact(Host),
    /// `*.suffix`: every strict subdomain of `suffix` (not `suffix` itself).
    Subdomains(String),
}

impl HostPattern {
    fn matches(&self, host: &Host) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => host.name().is_some_and(|n| is_subdomain(n, suffix)),
        }
    }

    fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Any, _) => true,
            (_, HostPattern::Any) => false,
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Exact(_), HostPattern::Subdomains(_)) => false,
            (HostPattern::Subdomains(s), HostPattern::Exact(h)) => {
                h.name().is_some_and(|n| is_subdomain(n, s))
            }
            (HostPattern::Subdomains(outer), HostPattern::Subdomains(inner)) => {
                inner == outer || is_subdomain(inner, outer)
            }
        }
    }
}

fn is_subdomain(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

/// An address range, `address/prefix`, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range `addr/prefix`; `None` when the prefix is too long or host bits are set.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = addr.to_canonical();
        let cidr = Cidr { addr, prefix };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max && cidr.contains(addr) && cidr.network_is(addr)).then_some(cidr)
    }

    fn network_is(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => u32::from(a) & !mask32(self.prefix) == 0,
            IpAddr::V6(a) => u128::from(a) & !mask128(self.prefix) == 0,
        }
    }

    /// Whether the range contains `ip` (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = mask32(self.prefix);
                u32::from(ip) & m == u32::from(net) & m
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = mask128(self.prefix);
                u128::from(ip) & m == u128::from(net) & m
            }
            _ => false,
        }
    }

    fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Hosts and ports a request may name.
    Target {
        /// Which hosts.
        host: HostPattern,
        /// Which ports.
        ports: Ports,
    },
    /// An address range (see the module docs for what it means in each list).
    Addresses(Cidr),
}

impl Rule {
    /// Parses a rule; `default_ports` is what a target without `:port` means.
    pub fn parse(rule: &str, default_ports: Ports) -> Result<Rule, RuleError> {
        if rule.contains('/') {
            return parse_cidr(rule).map(Rule::Addresses);
        }
        let (host_part, port) = split_port(rule)?;
        let ports = port.map_or(default_ports, Ports::Only);
        let host = if host_part == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host_part.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(RuleError::Wildcard { rule: rule.into() });
            }
            match Host::parse(suffix) {
                Ok(Host::Name(name)) => HostPattern::Subdomains(name),
                Ok(Host::Ip(_)) => return Err(RuleError::Wildcard { rule: rule.into() }),
                Err(source) => {
                    return Err(RuleError::Host {
                        rule: rule.into(),
                        source,
                    })
                }
            }
        } else if host_part.contains('*') {
            return Err(RuleError::Wildcard { rule: rule.into() });
        } else {
            HostPattern::Exact(Host::parse(host_part).map_err(|source| RuleError::Host {
                rule: rule.into(),
                source,
            })?)
        };
        Ok(Rule::Target { host, ports })
    }

    fn covers(&self, other: &Rule) -> bool {
        match (self, other) {
            (
                Rule::Target { host, ports },
                Rule::Target {
                    host: other_host,
                    ports: other_ports,
                },
            ) => host.covers(other_host) && ports.covers(*other_ports),
            (Rule::Addresses(outer), Rule::Addresses(inner)) => outer.covers(inner),
            _ => false,
        }
    }
}

/// Splits `host:port`, `[v6]:port`, bare `v6`, `host`.
fn split_port(rule: &str) -> Result<(&str, Option<u16>), RuleError> {
    let port_text = if rule.starts_with('[') {
        rule.rfind("]:").map(|i| (&rule[..=i], &rule[i + 2..]))
    } else if rule.matches(':').count() == 1 {
        rule.split_once(':')
    } else {
        None // a name, or a bare IPv6 address
    };
    let Some((host, port)) = port_text else {
        return Ok((rule, None));
    };
    let port: u16 = port.parse().map_err(|e| RuleError::Port {
        rule: rule.into(),
        source: Some(e),
    })?;
    if port == 0 {
        return Err(RuleError::Port {
            rule: rule.into(),
            source: None,
        });
    }
    Ok((host, Some(port)))
}

fn parse_cidr(rule: &str) -> Result<Cidr, RuleError> {
    let bad = |problem| RuleError::Cidr {
        rule: rule.into(),
        problem,
    };
    let (addr, prefix) = rule.split_once('/').ok_or(bad("no prefix"))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let addr: IpAddr = addr.parse().map_err(|_| bad("not an address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
    let mapped_prefix = match addr {
        // `::ffff:a.b.c.d/104` is the IPv4 range `a.b.c.d/8`.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => prefix
            .checked_sub(96)
            .ok_or(bad("prefix too short for an IPv4-mapped range"))?,
        _ => prefix,
    };
    Cidr::new(addr, mapped_prefix).ok_or(bad("prefix too long or host bits set"))
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Addresses(cidr) => write!(f, "{cidr}"),
            Rule::Target { host, ports } => {
                let host_text = match host {
                    HostPattern::Any => "*".to_owned(),
                    HostPattern::Exact(h @ Host::Ip(IpAddr::V6(_))) => format!("[{h}]"),
                    HostPattern::Exact(h) => h.to_string(),
                    HostPattern::Subdomains(s) => format!("*.{s}"),
                };
                match ports {
                    Ports::Only(p) => write!(f, "{host_text}:{p}"),
                    Ports::Web | Ports::All => f.write_str(&host_text),
                }
            }
        }
    }
}

/// An allow list and a deny list; deny wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl Rules {
    /// Parses both lists. Allow targets without a port mean ports 80 and 443; deny targets
    /// without a port mean every port.
    pub fn new<A: AsRef<str>, D: AsRef<str>>(allow: &[A], deny: &[D]) -> Result<Rules, RuleError> {
        Ok(Rules {
            allow: parse_all(allow, Ports::Web)?,
            deny: parse_all(deny, Ports::All)?,
        })
    }

    /// Allows nothing.
    pub fn deny_all() -> Rules {
        Rules::default()
    }

    /// The allow rules.
    pub fn allow(&self) -> &[Rule] {
        &self.allow
    }

    /// The deny rules.
    pub fn deny(&self) -> &[Rule] {
        &self.deny
    }

    /// Rules for one run, narrowed from this policy by a request's list: every requested rule
    /// must be covered by one of this policy's allow rules (a request may narrow, never widen).
    /// The result allows exactly the requested targets; its address allowances are the
    /// requested ranges when the request names any, else the policy's; the policy's deny list
    /// is kept whole.
    pub fn narrow<S: AsRef<str>>(&self, requested: &[S]) -> Result<Rules, RuleError> {
        let wanted = parse_all(requested, Ports::Web)?;
        for (rule, text) in wanted.iter().zip(requested) {
            if !self.allow.iter().any(|policy| policy.covers(rule)) {
                return Err(RuleError::NotCovered {
                    rule: text.as_ref().to_owned(),
                });
            }
        }
        let mut allow = wanted;
        if !allow.iter().any(|r| matches!(r, Rule::Addresses(_))) {
            allow.extend(
                self.allow
                    .iter()
                    .filter(|r| matches!(r, Rule::Addresses(_)))
                    .cloned(),
            );
        }
        Ok(Rules {
            allow,
            deny: self.deny.clone(),
        })
    }

    /// Checks a target against the lists: `denied_by_rule` when a deny target matches,
    /// `port_not_allowed` when an allow target matches the host on other ports only,
    /// `not_allowed` when none matches the host.
    pub fn check_target(&self, host: &Host, port: u16) -> Result<(), DenyReason> {
        let hit = |rules: &[Rule]| {
            rules.iter().any(|rule| match rule {
                Rule::Target { host: h, ports } => h.matches(host) && ports.contains(port),
                Rule::Addresses(_) => false,
            })
        };
        if hit(&self.deny) {
            return Err(DenyReason::DeniedByRule);
        }
        if hit(&self.allow) {
            return Ok(());
        }
        let host_known = self.allow.iter().any(|rule| match rule {
            Rule::Target { host: h, .. } => h.matches(host),
            Rule::Addresses(_) => false,
        });
        Err(if host_known {
            DenyReason::PortNotAllowed
        } else {
            DenyReason::NotAllowed
        })
    }

    /// Whether an allow range covers `ip` (lifting the special-address refusal).
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        in_ranges(&self.allow, ip)
    }

    /// Whether a deny range covers `ip`.
    pub fn address_denied(&self, ip: IpAddr) -> bool {
        in_ranges(&self.deny, ip)
    }
}

fn in_ranges(rules: &[Rule], ip: IpAddr) -> bool {
    rules
        .iter()
        .any(|rule| matches!(rule, Rule::Addresses(c) if c.contains(ip)))
}

fn parse_all<S: AsRef<str>>(rules: &[S], default_ports: Ports) -> Result<Vec<Rule>, RuleError> {
    rules
        .iter()
        .map(|r| Rule::parse(r.as_ref().trim(), default_ports))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const NONE: &[&str] = &[];

    fn rules(allow: &[&str]) -> Rules {
        Rules::new(allow, NONE).unwrap()
    }

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    fn target(rules: &Rules, h: &str, port: u16) -> Result<(), DenyReason> {
        rules.check_target(&host(h), port)
    }

    #[test]
    fn parse_and_display_round_trip() {
        let cases = [
            ("example.com", "example.com"),
            ("Example.COM.", "example.com"),
            ("*.example.org", "*.example.org"),
            ("*.Example.org:8443", "*.example.org:8443"),
            ("api.example.com:443", "api.example.com:443"),
            ("1.2.3.4", "1.2.3.4"),
            ("1.2.3.4:8080", "1.2.3.4:8080"),
            ("[::1]:443", "[::1]:443"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
            ("2001:db8::1", "[2001:db8::1]"),
            ("[::ffff:127.0.0.1]", "127.0.0.1"),
            ("127.0.0.1/32", "127.0.0.1/32"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("fd00::/8", "fd00::/8"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("*", "*"),
            ("*:8080", "*:8080"),
        ];
        for (input, shown) in cases {
            let rule = Rule::parse(input, Ports::Web).unwrap();
            assert_eq!(rule.to_string(), shown, "{input}");
        }
    }

    #[test]
    fn bad_rules_are_refused() {
        let bad = [
            "",
            "a..b",
            "exa mple.com",
            "user@example.com",
            "example.com/path",
            "bücher.de",
            "*example.com",
            "a.*.example.com",
            "**.example.com",
            "*.*.example.com",
            "*.1.2.3.4",
            "example.com:0",
            "example.com:65536",
            "example.com:http",
            "example.com:",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "fd00::/129",
            "example.com/8",
            "127.1",
            "[::1",
            "[fe80::1%eth0]:443",
        ];
        for input in bad {
            assert!(
                Rule::parse(input, Ports::Web).is_err(),
                "{input:?} was accepted"
            );
        }
        let long = format!("{}.com", "a.".repeat(130));
        assert!(matches!(
            Rule::parse(&long, Ports::Web),
            Err(RuleError::Host {
                source: HostError::TooLong,
                ..
            })
        ));
        assert!(matches!(
            Rule::parse("bücher.de", Ports::Web),
            Err(RuleError::Host {
                source: HostError::NonAscii,
                ..
            })
        ));
    }

    #[test]
    fn exact_and_wildcard_matching() {
        let r = rules(&["example.com", "*.example.org"]);
        assert_eq!(target(&r, "example.com", 443), Ok(()));
        assert_eq!(target(&r, "EXAMPLE.com.", 80), Ok(()));
        assert_eq!(
            target(&r, "www.example.com", 443),
            Err(DenyReason::NotAllowed)
        );
        assert_eq!(target(&r, "api.example.org", 443), Ok(()));
        assert_eq!(target(&r, "a.b.example.org", 443), Ok(()));
        assert_eq!(target(&r, "example.org", 443), Err(DenyReason::NotAllowed));
        assert_eq!(
            target(&r, "badexample.org", 443),
            Err(DenyReason::NotAllowed)
        );
        assert_eq!(
            target(&r, "example.org.evil.com", 443),
            Err(DenyReason::NotAllowed)
        );
        assert_eq!(target(&r, "1.2.3.4", 443), Err(DenyReason::NotAllowed));
    }

    #[test]
    fn default_ports_are_80_and_443() {
        let r = rules(&["example.com", "api.example.com:8443"]);
        assert_eq!(target(&r, "example.com", 80), Ok(()));
        assert_eq!(target(&r, "example.com", 443), Ok(()));
        assert_eq!(
            target(&r, "example.com", 22),
            Err(DenyReason::PortNotAllowed)
        );
        assert_eq!(
            target(&r, "example.com", 8443),
            Err(DenyReason::PortNotAllowed)
        );
        assert_eq!(target(&r, "api.example.com", 8443), Ok(()));
        assert_eq!(
            target(&r, "api.example.com", 443),
            Err(DenyReason::PortNotAllowed)
        );
    }

    #[test]
    fn deny_wins() {
        let r = Rules::new(
            &["*.example.org", "*"],
            &["evil.example.org", "*.corp.example.org"],
        )
        .unwrap();
        assert_eq!(target(&r, "api.example.org", 443), Ok(()));
        assert_eq!(
            target(&r, "evil.example.org", 443),
            Err(DenyReason::DeniedByRule)
        );
        assert_eq!(
            target(&r, "evil.example.org", 8080),
            Err(DenyReason::DeniedByRule)
        );
        assert_eq!(
            target(&r, "x.corp.example.org", 443),
            Err(DenyReason::DeniedByRule)
        );
        let ported = Rules::new(&["example.com"], &["example.com:80"]).unwrap();
        assert_eq!(
            target(&ported, "example.com", 80),
            Err(DenyReason::DeniedByRule)
        );
        assert_eq!(target(&ported, "example.com", 443), Ok(()));
    }

    #[test]
    fn address_literal_rules() {
        let r = rules(&["1.2.3.4", "[2001:db8::1]:8443", "[::ffff:5.6.7.8]"]);
        assert_eq!(target(&r, "1.2.3.4", 443), Ok(()));
        assert_eq!(target(&r, "[::ffff:1.2.3.4]", 443), Ok(()));
        assert_eq!(target(&r, "5.6.7.8", 80), Ok(()));
        assert_eq!(target(&r, "[2001:db8::1]", 8443), Ok(()));
        assert_eq!(
            target(&r, "[2001:db8::1]", 443),
            Err(DenyReason::PortNotAllowed)
        );
        assert_eq!(
            target(&r, "[2001:db8::2]", 8443),
            Err(DenyReason::NotAllowed)
        );
        // A CIDR allowance names no target.
        let cidr = rules(&["10.0.0.0/8"]);
        assert_eq!(target(&cidr, "10.0.0.1", 443), Err(DenyReason::NotAllowed));
        assert!(cidr.address_allowed("10.1.2.3".parse().unwrap()));
        assert!(!cidr.address_allowed("11.1.2.3".parse().unwrap()));
        assert!(cidr.address_allowed("::ffff:10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn any_matches_everything_but_deny() {
        let r = Rules::new(&["*"], &["*.internal"]).unwrap();
        assert_eq!(target(&r, "example.com", 443), Ok(()));
        assert_eq!(target(&r, "8.8.8.8", 80), Ok(()));
        assert_eq!(
            target(&r, "example.com", 8080),
            Err(DenyReason::PortNotAllowed)
        );
        assert_eq!(
            target(&r, "db.internal", 443),
            Err(DenyReason::DeniedByRule)
        );
    }

    #[test]
    fn narrowing_only_narrows() {
        let policy = Rules::new(
            &[
                "*.example.org",
                "api.example.com",
                "files.example.net:8443",
                "10.0.0.0/8",
            ],
            &["secret.example.org"],
        )
        .unwrap();
        let ok = policy
            .narrow(&[
                "api.example.org",
                "*.cdn.example.org",
                "api.example.com:443",
            ])
            .unwrap();
        assert_eq!(target(&ok, "api.example.org", 443), Ok(()));
        assert_eq!(target(&ok, "x.cdn.example.org", 443), Ok(()));
        assert_eq!(
            target(&ok, "www.example.org", 443),
            Err(DenyReason::NotAllowed)
        );
        assert_eq!(target(&ok, "api.example.com", 443), Ok(()));
        assert_eq!(
            target(&ok, "api.example.com", 80),
            Err(DenyReason::PortNotAllowed)
        );
        // The policy's ranges and deny list come along.
        assert!(ok.address_allowed("10.9.9.9".parse().unwrap()));
        assert_eq!(ok.deny(), policy.deny());

        let not = |req: &str| {
            assert_eq!(
                policy.narrow(&[req]),
                Err(RuleError::NotCovered { rule: req.into() }),
                "{req}"
            )
        };
        not("example.org"); // the apex is not a subdomain
        not("api.example.com:8080");
        not("*.example.com");
        not("*");
        not("files.example.net"); // ports 80/443 are not within :8443
        not("other.com");
        not("11.0.0.0/8");
        not("0.0.0.0/0");
        assert!(policy.narrow(&["files.example.net:8443"]).is_ok());
        assert!(policy.narrow(&["*.example.org"]).is_ok());

        let exact = rules(&["api.example.org"]);
        assert!(matches!(
            exact.narrow(&["*.example.org"]),
            Err(RuleError::NotCovered { .. })
        ));
        assert!(matches!(
            exact.narrow(&["bad..name"]),
            Err(RuleError::Host { .. })
        ));
    }

    #[test]
    fn narrowing_ranges() {
        let policy = rules(&["*", "10.0.0.0/8", "127.0.0.1/32"]);
        let narrowed = policy.narrow(&["a.example", "10.1.0.0/16"]).unwrap();
        assert!(narrowed.address_allowed("10.1.2.3".parse().unwrap()));
        assert!(!narrowed.address_allowed("10.2.2.3".parse().unwrap()));
        assert!(!narrowed.address_allowed("127.0.0.1".parse().unwrap()));
        let empty = policy.narrow(NONE).unwrap();
        assert_eq!(
            target(&empty, "a.example", 443),
            Err(DenyReason::NotAllowed)
        );
    }

    #[test]
    fn port_sets_cover() {
        assert!(Ports::All.covers(Ports::Web));
        assert!(Ports::Web.covers(Ports::Only(443)));
        assert!(!Ports::Web.covers(Ports::Only(8443)));
        assert!(!Ports::Only(443).covers(Ports::Web));
        assert!(!Ports::Web.covers(Ports::All));
    }
}
