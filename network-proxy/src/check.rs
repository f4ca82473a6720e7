//! The decision function: may this target be reached, and at which checked addresses?
//!
//! Order: deny rules, allow rules (host, then port), resolution (once, bounded by the resolve
//! timeout, a timeout being `resolution_failed`; address literals are not resolved), then every answer's address check (deny
//! ranges, special ranges unless an allow range covers them). The answer is the list of checked
//! addresses to connect to: the caller never resolves again.

use std::net::{IpAddr, SocketAddr};

use tokio::time::timeout;

use crate::addr;
use crate::config::{MixedAnswers, ProxyConfig};
use crate::decision::DenyReason;
use crate::host::Host;
use crate::resolve::Resolver;
use crate::target::Target;

/// Decides whether `target` may be reached; on success, the checked addresses to connect to (in
/// the resolver's order, at least one).
pub async fn authorize(
    config: &ProxyConfig,
    resolver: &dyn Resolver,
    target: &Target,
) -> Result<Vec<SocketAddr>, DenyReason> {
    config.rules.check_target(&target.host, target.port)?;
    let answers: Vec<IpAddr> = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => {
            match timeout(config.limits.resolve_timeout, resolver.resolve(name)).await {
                Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
                Ok(Ok(_)) | Ok(Err(_)) => return Err(DenyReason::ResolutionFailed),
                Err(_elapsed) => return Err(DenyReason::ResolutionFailed),
            }
        }
    };
    let mut checked = Vec::with_capacity(answers.len());
    let mut first_refusal = None;
    for ip in answers {
        match addr::check(ip, &config.rules) {
            Ok(()) => {
                let addr = SocketAddr::new(ip.to_canonical(), target.port);
                if !checked.contains(&addr) {
                    checked.push(addr);
                }
            }
            Err(reason) => {
                first_refusal.get_or_insert(reason);
            }
        }
    }
    match (first_refusal, config.mixed_answers) {
        (Some(reason), MixedAnswers::RefuseAll) => Err(reason),
        (Some(reason), MixedAnswers::UseAllowed) if checked.is_empty() => Err(reason),
        _ => Ok(checked),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::addr::AddressClass;
    use crate::resolve::StubResolver;
    use crate::rules::Rules;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn config(allow: &[&str]) -> ProxyConfig {
        ProxyConfig {
            rules: Rules::new(allow, &[] as &[&str]).unwrap(),
            ..ProxyConfig::default()
        }
    }

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: Host::parse(host).unwrap(),
            port,
        }
    }

    #[tokio::test]
    async fn public_answer_is_allowed() {
        let stub = StubResolver::new().answer("example.com", &[ip("93.184.216.34")]);
        let got = authorize(
            &config(&["example.com"]),
            &stub,
            &target("example.com", 443),
        )
        .await;
        assert_eq!(got, Ok(vec!["93.184.216.34:443".parse().unwrap()]));
    }

    #[tokio::test]
    async fn rules_come_before_resolution() {
        let stub = StubResolver::new().answer("other.com", &[ip("8.8.8.8")]);
        let cfg = config(&["example.com"]);
        assert_eq!(
            authorize(&cfg, &stub, &target("other.com", 443)).await,
            Err(DenyReason::NotAllowed)
        );
        assert_eq!(
            authorize(&cfg, &stub, &target("example.com", 22)).await,
            Err(DenyReason::PortNotAllowed)
        );
        assert_eq!(stub.lookups("other.com"), 0);
        assert_eq!(stub.lookups("example.com"), 0);
    }

    #[tokio::test]
    async fn every_special_answer_is_refused() {
        let cases = [
            ("127.0.0.1", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.20.0.1", AddressClass::Private),
            ("192.168.0.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::Metadata),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("100.64.0.1", AddressClass::Cgnat),
            ("0.0.0.0", AddressClass::Unspecified),
            ("::1", AddressClass::Loopback),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("fe80::1", AddressClass::LinkLocal),
            ("fc00::1", AddressClass::Private),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::Metadata),
            ("64:ff9b::a9fe:a9fe", AddressClass::Metadata),
            ("64:ff9b::10.0.0.1", AddressClass::Private),
            ("2002:a00:1::", AddressClass::Tunnel),
            ("2001:0:a00:1::", AddressClass::Tunnel),
            ("224.0.0.1", AddressClass::Multicast),
        ];
        for (answer, class) in cases {
            let stub = StubResolver::new().answer("evil.test", &[ip(answer)]);
            let got = authorize(&config(&["evil.test"]), &stub, &target("evil.test", 80)).await;
            assert_eq!(got, Err(DenyReason::Address(class)), "{answer}");
        }
    }

    #[tokio::test]
    async fn literal_targets_are_checked_without_resolution() {
        let stub = StubResolver::new();
        let cfg = config(&["127.0.0.1:8080", "[::1]:8080", "[::ffff:127.0.0.1]:8081"]);
        for (host, port) in [
            ("127.0.0.1", 8080),
            ("[::1]", 8080),
            ("[::ffff:127.0.0.1]", 8081),
        ] {
            assert_eq!(
                authorize(&cfg, &stub, &target(host, port)).await,
                Err(DenyReason::Address(AddressClass::Loopback)),
                "{host}"
            );
        }
        let lifted = config(&["127.0.0.1:8080", "127.0.0.1/32"]);
        assert_eq!(
            authorize(&lifted, &stub, &target("[::ffff:127.0.0.1]", 8080)).await,
            Ok(vec!["127.0.0.1:8080".parse().unwrap()])
        );
    }

    #[tokio::test]
    async fn mixed_answers_refuse_the_name_by_default() {
        let stub = StubResolver::new().answer("mixed.test", &[ip("8.8.8.8"), ip("10.0.0.1")]);
        let mut cfg = config(&["mixed.test"]);
        assert_eq!(
            authorize(&cfg, &stub, &target("mixed.test", 443)).await,
            Err(DenyReason::Address(AddressClass::Private))
        );
        cfg.mixed_answers = MixedAnswers::UseAllowed;
        assert_eq!(
            authorize(&cfg, &stub, &target("mixed.test", 443)).await,
            Ok(vec!["8.8.8.8:443".parse().unwrap()])
        );
        let all_bad = StubResolver::new().answer("bad.test", &[ip("10.0.0.1"), ip("::1")]);
        let cfg = ProxyConfig {
            mixed_answers: MixedAnswers::UseAllowed,
            ..config(&["bad.test"])
        };
        assert_eq!(
            authorize(&cfg, &all_bad, &target("bad.test", 443)).await,
            Err(DenyReason::Address(AddressClass::Private))
        );
    }

    #[tokio::test]
    async fn rebinding_never_yields_the_second_answer() {
        // First answer allowed (loopback lifted by a /32), later answers private.
        let stub = StubResolver::new()
            .answer("rebind.test", &[ip("127.0.0.1")])
            .answer("rebind.test", &[ip("10.0.0.1")]);
        let cfg = config(&["rebind.test", "127.0.0.1/32"]);
        let first = authorize(&cfg, &stub, &target("rebind.test", 80)).await;
        assert_eq!(first, Ok(vec!["127.0.0.1:80".parse().unwrap()]));
        assert_eq!(stub.lookups("rebind.test"), 1, "resolved exactly once");
        let second = authorize(&cfg, &stub, &target("rebind.test", 80)).await;
        assert_eq!(second, Err(DenyReason::Address(AddressClass::Private)));
        assert_eq!(stub.lookups("rebind.test"), 2);
    }

    #[tokio::test]
    async fn deny_rules_win_over_everything() {
        let stub = StubResolver::new().answer("x.example.org", &[ip("8.8.8.8")]);
        let cfg = ProxyConfig {
            rules: Rules::new(&["*.example.org"], &["x.example.org"]).unwrap(),
            ..ProxyConfig::default()
        };
        assert_eq!(
            authorize(&cfg, &stub, &target("x.example.org", 443)).await,
            Err(DenyReason::DeniedByRule)
        );
        let cfg = ProxyConfig {
            rules: Rules::new(&["*.example.org"], &["8.8.8.0/24"]).unwrap(),
            ..ProxyConfig::default()
        };
        assert_eq!(
            authorize(&cfg, &stub, &target("x.example.org", 443)).await,
            Err(DenyReason::DeniedByRule)
        );
    }

    #[tokio::test]
    async fn unknown_names_fail_resolution() {
        let stub = StubResolver::new();
        assert_eq!(
            authorize(&config(&["*"]), &stub, &target("nowhere.test", 443)).await,
            Err(DenyReason::ResolutionFailed)
        );
    }
}
