//! Address checks after resolution: which addresses are special (loopback, private, link-local,
//! metadata, …) and so refused unless a CIDR allowance names them.
//!
//! IPv6 forms that embed an IPv4 address are judged by the embedded address: IPv4-mapped
//! (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated: refused as `reserved` even when
//! the embedded address is public) and the well-known NAT64 prefix (`64:ff9b::/96`, allowed when
//! the embedded address is public). The local-use NAT64 prefix `64:ff9b:1::/48` embeds its IPv4
//! address at a site-chosen position, so it is refused as a whole (`reserved`). 6to4
//! (`2002::/16`) and Teredo (`2001::/32`) are tunnels whose far end is chosen by the address
//! itself: both are refused as a whole (`tunnel`). Outside these, IPv6 is public only within
//! global unicast `2000::/3`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::decision::DenyReason;
use crate::rules::Rules;

pub use vana_sandbox_core::network::AddressClass;

/// The special class of an address, or `None` for a public unicast address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Checks one resolved (or literal) address against the rules: a deny CIDR refuses it
/// (`denied_by_rule`); otherwise a special address is refused unless an allow CIDR covers it.
pub fn check(ip: IpAddr, rules: &Rules) -> Result<(), DenyReason> {
    let ip = ip.to_canonical();
    if rules.address_denied(ip) {
        return Err(DenyReason::DeniedByRule);
    }
    match classify(ip) {
        Some(class) if !rules.address_allowed(ip) => Err(DenyReason::Address(class)),
        _ => Ok(()),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    const METADATA: [[u8; 4]; 3] = [
        [169, 254, 169, 254],
        [168, 63, 129, 16],
        [100, 100, 100, 200],
    ];
    if METADATA.iter().any(|m| ip.octets() == *m) {
        return Some(Metadata);
    }
    // Broadcast comes before 240/4 so that it keeps its own name.
    let table: [([u8; 4], u32, AddressClass); 16] = [
        ([0, 0, 0, 0], 8, Unspecified),
        ([127, 0, 0, 0], 8, Loopback),
        ([10, 0, 0, 0], 8, Private),
        ([172, 16, 0, 0], 12, Private),
        ([192, 168, 0, 0], 16, Private),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([100, 64, 0, 0], 10, Cgnat),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([192, 0, 2, 0], 24, Documentation),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([240, 0, 0, 0], 4, Reserved),
        ([192, 0, 0, 0], 24, Reserved),
        ([198, 18, 0, 0], 15, Reserved),
        ([192, 88, 99, 0], 24, Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap_or(Ipv6Addr::UNSPECIFIED)
}

fn embedded_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if ip == Ipv6Addr::UNSPECIFIED {
        return Some(Unspecified);
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Some(Loopback);
    }
    if ip == v6("fd00:ec2::254") {
        return Some(Metadata);
    }
    // IPv4-mapped: judged as the IPv4 address it is.
    if in_v6(ip, v6("::ffff:0:0"), 96) {
        return classify_v4(embedded_v4(ip));
    }
    // IPv4-compatible (deprecated): the embedded address's class, else reserved.
    if in_v6(ip, Ipv6Addr::UNSPECIFIED, 96) {
        return Some(classify_v4(embedded_v4(ip)).unwrap_or(Reserved));
    }
    // Well-known NAT64 prefix: the translator reaches the embedded IPv4 address.
    if in_v6(ip, v6("64:ff9b::"), 96) {
        return classify_v4(embedded_v4(ip));
    }
    let table: [(&str, u32, AddressClass); 12] = [
        ("64:ff9b:1::", 48, Reserved),
        ("100::", 64, Reserved),
        ("2001::", 32, Tunnel),
        ("2002::", 16, Tunnel),
        ("2001:db8::", 32, Documentation),
        ("3fff::", 20, Documentation),
        ("2001::", 23, Reserved),
        ("fc00::", 7, Private),
        ("fec0::", 10, Private),
        ("fe80::", 10, LinkLocal),
        ("ff00::", 8, Multicast),
        ("5f00::", 16, Reserved),
    ];
    if let Some((_, _, class)) = table
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, v6(net), *prefix))
    {
        return Some(*class);
    }
    if !in_v6(ip, v6("2000::"), 3) {
        return Some(Reserved);
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use AddressClass::*;

    fn class(s: &str) -> Option<AddressClass> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_classes() {
        let cases: &[(&str, Option<AddressClass>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.168.1.1", Some(Private)),
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("168.63.129.16", Some(Metadata)),
            ("100.100.100.200", Some(Metadata)),
            ("100.64.0.1", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("100.128.0.0", None),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("192.0.0.8", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("198.19.255.255", Some(Reserved)),
            ("192.88.99.1", Some(Reserved)),
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("11.0.0.1", None),
            ("223.255.255.255", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), *want, "{ip}");
        }
    }

    #[test]
    fn ipv6_classes() {
        let cases: &[(&str, Option<AddressClass>)] = &[
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fd00:ec2::254", Some(Metadata)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fec0::1", Some(Private)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2002:7f00:1::1", Some(Tunnel)),
            ("2002:0808:0808::1", Some(Tunnel)),
            ("2001:0:4136:e378::1", Some(Tunnel)),
            ("2001:2::1", Some(Reserved)),
            ("2001:10::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("64:ff9b:1::a00:1", Some(Reserved)),
            ("64:ff9b:1::808:808", Some(Reserved)),
            ("5f00::1", Some(Reserved)),
            ("4000::1", Some(Reserved)),
            ("::2:0:0:1", Some(Reserved)),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::1", None),
            ("2001:4860:4860::8888", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), *want, "{ip}");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_as_ipv4() {
        let cases: &[(&str, Option<AddressClass>)] = &[
            // IPv4-mapped
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:8.8.8.8", None),
            // IPv4-compatible
            ("::127.0.0.1", Some(Loopback)),
            ("::10.0.0.1", Some(Private)),
            ("::169.254.169.254", Some(Metadata)),
            ("::8.8.8.8", Some(Reserved)),
            // NAT64 well-known prefix
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("64:ff9b::10.0.0.1", Some(Private)),
            ("64:ff9b::169.254.169.254", Some(Metadata)),
            ("64:ff9b::192.168.0.1", Some(Private)),
            ("64:ff9b::100.64.0.1", Some(Cgnat)),
            ("64:ff9b::8.8.8.8", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), *want, "{ip}");
        }
    }

    #[test]
    fn every_class_has_a_distinct_name() {
        let mut names: Vec<_> = AddressClass::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AddressClass::ALL.len());
        for class in AddressClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.name()));
        }
    }

    #[test]
    fn cidr_allowances_lift_only_their_range() {
        let rules = Rules::new(
            &["allowed.test", "127.0.0.1/32", "fd00::/64"],
            &[] as &[&str],
        )
        .unwrap();
        let ok = |s: &str| check(s.parse().unwrap(), &rules);
        assert_eq!(ok("127.0.0.1"), Ok(()));
        assert_eq!(ok("::ffff:127.0.0.1"), Ok(()));
        assert_eq!(ok("127.0.0.2"), Err(DenyReason::Address(Loopback)));
        assert_eq!(ok("::1"), Err(DenyReason::Address(Loopback)));
        assert_eq!(ok("fd00::5"), Ok(()));
        assert_eq!(ok("fd00:0:0:1::5"), Err(DenyReason::Address(Private)));
        assert_eq!(ok("10.0.0.1"), Err(DenyReason::Address(Private)));
        assert_eq!(ok("8.8.8.8"), Ok(()));
    }

    #[test]
    fn deny_cidr_wins_over_allow_cidr_and_public() {
        let rules = Rules::new(&["10.0.0.0/8"], &["10.1.0.0/16", "8.8.8.0/24"]).unwrap();
        let ok = |s: &str| check(s.parse().unwrap(), &rules);
        assert_eq!(ok("10.2.0.1"), Ok(()));
        assert_eq!(ok("10.1.0.1"), Err(DenyReason::DeniedByRule));
        assert_eq!(ok("8.8.8.8"), Err(DenyReason::DeniedByRule));
        assert_eq!(ok("::ffff:8.8.8.8"), Err(DenyReason::DeniedByRule));
        assert_eq!(ok("8.8.4.4"), Ok(()));
    }
}
