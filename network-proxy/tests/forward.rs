//! End-to-end tests of plain HTTP forwarding, on 127.0.0.1 only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use vana_sandbox_proxy::{
    AddressClass, DenyReason, Limits, Method, MethodPolicy, ProxyConfig, Rules, StubResolver,
    Verdict,
};

fn get(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn allowed_get_is_forwarded() {
    let origin = Origin::start().await;
    let port = origin.port();
    let mut h = Harness::start(config_for(port), stub()).await;
    let raw = format!(
        "GET http://allowed.test:{port}/hello?x=1 HTTP/1.1\r\nHost: allowed.test:{port}\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nX-Keep: 2\r\n\r\n"
    );
    let reply = h.request(raw.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        format!("GET /hello?x=1 host=allowed.test:{port} body=0")
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    let names: Vec<&str> = seen[0].headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"x-keep"));
    assert!(!names.contains(&"x-drop"), "{names:?}");
    assert!(!names.contains(&"proxy-authorization"), "{names:?}");

    let d = h.decision().await;
    assert_eq!(d.verdict, Verdict::Allowed);
    assert_eq!(
        (d.host.as_str(), d.port, d.method),
        ("allowed.test", port, Method::Get)
    );
    assert_eq!(d.address, Some(origin.addr));
    assert_eq!(d.bytes_down, reply.body.len() as u64);
    let summary = h.proxy.shutdown(Duration::from_secs(1)).await;
    assert_eq!((summary.allowed, summary.denied), (1, 0));
    assert_eq!(summary.hosts["allowed.test"].bytes_down, d.bytes_down);
    assert!(h.serving.await.unwrap().is_ok());
}

#[tokio::test]
async fn post_body_is_forwarded_and_counted() {
    let origin = Origin::start().await;
    let port = origin.port();
    let mut h = Harness::start(config_for(port), stub()).await;
    let raw = format!(
        "POST http://allowed.test:{port}/up HTTP/1.1\r\nHost: allowed.test:{port}\r\n\
         Content-Length: 11\r\nConnection: close\r\n\r\nhello world"
    );
    let reply = h.request(raw.as_bytes()).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().ends_with("body=11"), "{}", reply.text());
    let d = h.decision().await;
    assert_eq!(d.bytes_up, 11);
    assert_eq!(d.method, Method::Post);
}

#[tokio::test]
async fn other_hosts_and_ports_get_403_with_reason() {
    let origin = Origin::start().await;
    let port = origin.port();
    let resolver = stub().answer("other.test", &[loopback()]);
    let mut h = Harness::start(config_for(port), resolver).await;

    let reply = h
        .request(&get(
            &format!("http://other.test:{port}/"),
            &format!("other.test:{port}"),
        ))
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.reason(), Some("not_allowed"));
    assert!(reply.text().contains("not_allowed"));
    assert_eq!(reply.header("connection"), Some("close"));

    let reply = h
        .request(&get("http://allowed.test/", "allowed.test"))
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.reason(), Some("port_not_allowed"));

    assert!(origin.seen().is_empty());
    assert_eq!(
        h.decision().await.verdict,
        Verdict::Denied(DenyReason::NotAllowed)
    );
    assert_eq!(
        h.decision().await.verdict,
        Verdict::Denied(DenyReason::PortNotAllowed)
    );
}

#[tokio::test]
async fn loopback_is_refused_without_a_cidr_allowance() {
    let origin = Origin::start().await;
    let port = origin.port();
    let config = ProxyConfig {
        rules: Rules::new(
            &[
                format!("allowed.test:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
                format!("[::ffff:127.0.0.1]:{port}"),
            ],
            &[] as &[&str],
        )
        .unwrap(),
        ..ProxyConfig::default()
    };
    let h = Harness::start(config, stub()).await;
    for host in [
        "allowed.test".to_owned(),
        "127.0.0.1".to_owned(),
        "[::1]".to_owned(),
        "[::ffff:127.0.0.1]".to_owned(),
        "[::FFFF:7f00:1]".to_owned(),
    ] {
        let authority = format!("{host}:{port}");
        let reply = h
            .request(&get(&format!("http://{authority}/"), &authority))
            .await;
        assert_eq!(reply.status, 403, "{host}");
        assert_eq!(reply.reason(), Some("loopback_address"), "{host}");
        let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        let reply = h.request(connect.as_bytes()).await;
        assert_eq!(reply.reason(), Some("loopback_address"), "CONNECT {host}");
    }
    assert!(origin.seen().is_empty());
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn special_answers_are_refused_before_any_connection() {
    // The stub maps names to private, link-local and metadata addresses: the proxy must refuse
    // them without opening a connection (there is nothing there, and nothing may be tried).
    let resolver = StubResolver::new()
        .answer("private.test", &["10.0.0.1".parse().unwrap()])
        .answer("metadata.test", &["169.254.169.254".parse().unwrap()])
        .answer("linklocal.test", &["fe80::1".parse().unwrap()])
        .answer("nat64.test", &["64:ff9b::a9fe:a9fe".parse().unwrap()])
        .answer(
            "mixed.test",
            &["127.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
        );
    let config = ProxyConfig {
        rules: Rules::new(&["*.test", "127.0.0.1/32"], &[] as &[&str]).unwrap(),
        ..ProxyConfig::default()
    };
    let h = Harness::start(config, resolver).await;
    for (host, reason) in [
        ("private.test", "private_address"),
        ("metadata.test", "metadata_address"),
        ("linklocal.test", "link_local_address"),
        ("nat64.test", "metadata_address"),
        ("mixed.test", "private_address"),
        ("unknown.test", "resolution_failed"),
    ] {
        let reply = h.request(&get(&format!("http://{host}/"), host)).await;
        assert_eq!(reply.reason(), Some(reason), "{host}");
        let expected = if reason == "resolution_failed" {
            502
        } else {
            403
        };
        assert_eq!(reply.status, expected, "{host}");
    }
}

#[tokio::test]
async fn dns_rebinding_never_reaches_the_second_answer() {
    let origin = Origin::start().await;
    let port = origin.port();
    let resolver = StubResolver::new()
        .answer("allowed.test", &[loopback()])
        .answer("allowed.test", &["10.0.0.1".parse().unwrap()]);
    let h = Harness::start(config_for(port), resolver.clone()).await;
    let authority = format!("allowed.test:{port}");
    let first = h
        .request(&get(&format!("http://{authority}/1"), &authority))
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(resolver.lookups("allowed.test"), 1);
    let second = h
        .request(&get(&format!("http://{authority}/2"), &authority))
        .await;
    assert_eq!(second.status, 403);
    assert_eq!(second.reason(), Some("private_address"));
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn host_header_must_agree_with_the_uri() {
    let origin = Origin::start().await;
    let port = origin.port();
    let h = Harness::start(config_for(port), stub()).await;
    let uri = format!("http://allowed.test:{port}/");
    for host in ["evil.test", "allowed.test", "allowed.test:1", "127.0.0.1"] {
        let host = if host == "127.0.0.1" {
            format!("127.0.0.1:{port}")
        } else {
            host.to_owned()
        };
        let reply = h.request(&get(&uri, &host)).await;
        assert_eq!(reply.status, 403, "Host: {host}");
        assert_eq!(reply.reason(), Some("host_mismatch"), "Host: {host}");
    }
    let twice =
        format!("GET {uri} HTTP/1.1\r\nHost: allowed.test:{port}\r\nHost: evil.test\r\n\r\n");
    let reply = h.request(twice.as_bytes()).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.reason(), Some("duplicate_host"));
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn origin_form_and_other_schemes_are_refused() {
    let origin = Origin::start().await;
    let port = origin.port();
    let mut h = Harness::start(config_for(port), stub()).await;
    let host = format!("allowed.test:{port}");
    let reply = h.request(&get("/", &host)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.reason(), Some("origin_form"));
    let reply = h.request(&get(&format!("https://{host}/"), &host)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.reason(), Some("unsupported_scheme"));
    assert_eq!(
        h.decision().await.verdict,
        Verdict::Denied(DenyReason::OriginForm)
    );
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn userinfo_and_fragment_tricks_are_refused() {
    let origin = Origin::start().await;
    let port = origin.port();
    let resolver = stub().answer("evil.test", &[loopback()]);
    let h = Harness::start(config_for(port), resolver).await;
    let allowed = format!("allowed.test:{port}");

    let reply = h
        .request(&get(
            &format!("http://{allowed}@evil.test:{port}/"),
            &format!("evil.test:{port}"),
        ))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.reason(), Some("userinfo_in_uri"));

    let reply = h
        .request(&get(&format!("http://user@{allowed}/"), &allowed))
        .await;
    assert_eq!(reply.reason(), Some("userinfo_in_uri"));

    // `http://evil#@allowed/`: the authority is `evil.test` (or the URI is unreadable).
    let reply = h
        .request(&get(
            &format!("http://evil.test:{port}#@{allowed}/"),
            &allowed,
        ))
        .await;
    assert!(matches!(reply.status, 400 | 403), "{}", reply.status);
    assert_ne!(reply.status, 200);

    let reply = h
        .request(&get(
            &format!("http://evil.test:{port}\\@{allowed}/"),
            &allowed,
        ))
        .await;
    assert!(matches!(reply.status, 400 | 403), "{}", reply.status);

    let reply = h
        .request(&get(&format!("http://%61llowed.test:{port}/"), &allowed))
        .await;
    assert_eq!(reply.status, 400);
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn content_length_and_transfer_encoding_cannot_smuggle() {
    let origin = Origin::start().await;
    let port = origin.port();
    let h = Harness::start(config_for(port), stub()).await;
    let host = format!("allowed.test:{port}");

    // CL and TE together: chunked wins, the length is dropped, the connection closes after
    // the response, and the bytes after the chunked body never become a request.
    let raw = format!(
        "POST http://{host}/first HTTP/1.1\r\nHost: {host}\r\nContent-Length: 60\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET http://{host}/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 200);
    let after = read_to_end(&mut stream).await;
    assert!(reply.rest.is_empty() && after.is_empty(), "{after:?}");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/first");
    assert_eq!(seen[0].body_len, 0);

    // Transfer-Encoding that does not end in chunked, and conflicting lengths: 400.
    for bad in [
        format!(
            "POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip\r\n\r\nabc"
        ),
        format!(
            "POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\
             Content-Length: 4\r\n\r\nabcd"
        ),
        format!(
            "POST http://{host}/ HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n"),
    ] {
        let reply = h.request(bad.as_bytes()).await;
        assert_eq!(reply.status, 400, "{bad}");
    }
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn malformed_requests_get_400_and_a_decision() {
    let mut h = Harness::start(config_for(1), stub()).await;
    let reply = h.request(b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(reply.status, 400);
    let d = h.decision().await;
    assert_eq!(d.verdict, Verdict::Denied(DenyReason::MalformedRequest));
    assert_eq!(d.method, Method::Unknown);
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_connection_closes() {
    let config = ProxyConfig {
        limits: Limits {
            max_header_bytes: 8192,
            ..Limits::default()
        },
        ..config_for(1)
    };
    let mut h = Harness::start(config, stub()).await;
    let raw = format!(
        "GET http://allowed.test:1/ HTTP/1.1\r\nHost: allowed.test:1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    let _ = stream.write_all(raw.as_bytes()).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 431);
    assert!(closed_within(&mut stream, WAIT).await);
    let d = h.decision().await;
    assert_eq!(d.verdict, Verdict::Denied(DenyReason::HeaderTooLarge));
}

#[tokio::test]
async fn slowloris_is_cut_off_at_the_header_timeout() {
    let config = ProxyConfig {
        limits: Limits {
            header_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..config_for(1)
    };
    let mut h = Harness::start(config, stub()).await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    let started = Instant::now();
    let request = b"GET http://allowed.test:1/ HTTP/1.1\r\nHost: allowed.test:1\r\n\r\n";
    let mut cut = false;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        if closed_within(&mut stream, Duration::from_secs(1)).await {
            cut = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(cut, "the connection was not cut");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let d = h.decision().await;
    assert_eq!(d.verdict, Verdict::Denied(DenyReason::HeaderTimeout));
}

#[tokio::test]
async fn idle_keep_alive_is_closed_at_the_header_timeout() {
    let origin = Origin::start().await;
    let port = origin.port();
    let config = ProxyConfig {
        limits: Limits {
            header_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..config_for(port)
    };
    let h = Harness::start(config, stub()).await;
    let host = format!("allowed.test:{port}");
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    let raw = format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(raw.as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut stream).await.status, 200);
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn rate_limit_gives_429() {
    let origin = Origin::start().await;
    let port = origin.port();
    let config = ProxyConfig {
        limits: Limits {
            requests_per_second: Some(1),
            burst: 2,
            ..Limits::default()
        },
        ..config_for(port)
    };
    let h = Harness::start(config, stub()).await;
    let host = format!("allowed.test:{port}");
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(
                h.request(&get(&format!("http://{host}/"), &host))
                    .await
                    .status,
            );
        }
        out
    };
    assert_eq!(statuses, [200, 200, 429]);
    let reply = h.request(&get(&format!("http://{host}/"), &host)).await;
    assert_eq!(reply.reason(), Some("rate_limited"));
    let summary = h.proxy.summary();
    assert_eq!(summary.denied_by_reason[&DenyReason::RateLimited], 2);
}

#[tokio::test]
async fn byte_caps_cut_responses_and_refuse_once_spent() {
    let origin = Origin::start().await;
    let port = origin.port();
    let config = ProxyConfig {
        limits: Limits {
            max_bytes_down_per_connection: Some(1000),
            max_total_bytes_up: Some(10),
            requests_per_second: None,
            ..Limits::default()
        },
        ..config_for(port)
    };
    let mut h = Harness::start(config, stub()).await;
    let host = format!("allowed.test:{port}");

    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream
        .write_all(get(&format!("http://{host}/big/100000"), &host).as_slice())
        .await
        .unwrap();
    // The body is cut (hyper may not even have sent the head when the first chunk is over).
    let got = read_to_end(&mut stream).await;
    assert!(got.len() < 100_000, "{}", got.len());
    let d = h.decision().await;
    assert_eq!(d.verdict, Verdict::Denied(DenyReason::ByteLimit));
    assert!(d.bytes_down <= 100_000);

    // The small response fits.
    let reply = h
        .request(&get(&format!("http://{host}/big/500"), &host))
        .await;
    assert_eq!(reply.body.len(), 500);
    assert_eq!(h.decision().await.verdict, Verdict::Allowed);

    // 20 bytes up against a total cap of 10: cut, and later requests are refused.
    let post = format!(
        "POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{}",
        "y".repeat(20)
    );
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(post.as_bytes()).await.unwrap();
    let _ = read_to_end(&mut stream).await;
    assert_eq!(
        h.decision().await.verdict,
        Verdict::Denied(DenyReason::ByteLimit)
    );
    let reply = h.request(&get(&format!("http://{host}/"), &host)).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.reason(), Some("byte_limit"));
}

#[tokio::test]
async fn methods_only_mode_allows_get_and_head_only() {
    let origin = Origin::start().await;
    let port = origin.port();
    let config = ProxyConfig {
        methods: MethodPolicy::ReadOnly,
        ..config_for(port)
    };
    let h = Harness::start(config, stub()).await;
    let host = format!("allowed.test:{port}");
    let reply = h.request(&get(&format!("http://{host}/"), &host)).await;
    assert_eq!(reply.status, 200);
    let head = format!("HEAD http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 200);
    for raw in [
        format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\n\r\nx"),
        format!("DELETE http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    ] {
        let reply = h.request(raw.as_bytes()).await;
        assert_eq!(reply.status, 403, "{raw}");
        assert_eq!(reply.reason(), Some("method_not_allowed"), "{raw}");
    }
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn connection_limit_gives_429() {
    let origin = Origin::start().await;
    let port = origin.port();
    let config = ProxyConfig {
        limits: Limits {
            max_connections: 1,
            ..Limits::default()
        },
        ..config_for(port)
    };
    let h = Harness::start(config, stub()).await;
    let host = format!("allowed.test:{port}");
    let mut held = TcpStream::connect(h.addr).await.unwrap();
    held.write_all(b"G").await.unwrap(); // the proxy has accepted and is serving it
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = h.request(&get(&format!("http://{host}/"), &host)).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.reason(), Some("too_many_connections"));
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = h.request(&get(&format!("http://{host}/"), &host)).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn deny_rules_win_end_to_end() {
    let origin = Origin::start().await;
    let port = origin.port();
    let config = ProxyConfig {
        rules: Rules::new(
            &[format!("*.test:{port}"), "127.0.0.0/8".to_owned()],
            &["blocked.test".to_owned()],
        )
        .unwrap(),
        ..ProxyConfig::default()
    };
    let resolver = StubResolver::new()
        .answer("ok.test", &[loopback()])
        .answer("blocked.test", &[loopback()]);
    let h = Harness::start(config, resolver).await;
    let ok = format!("ok.test:{port}");
    assert_eq!(
        h.request(&get(&format!("http://{ok}/"), &ok)).await.status,
        200
    );
    let blocked = format!("blocked.test:{port}");
    let reply = h
        .request(&get(&format!("http://{blocked}/"), &blocked))
        .await;
    assert_eq!(reply.reason(), Some("denied_by_rule"));
    let _ = AddressClass::Loopback;
}

#[tokio::test]
async fn shutdown_refuses_new_connections_and_stops_serving() {
    let origin = Origin::start().await;
    let port = origin.port();
    let h = Harness::start(config_for(port), stub()).await;
    let host = format!("allowed.test:{port}");
    assert_eq!(
        h.request(&get(&format!("http://{host}/"), &host))
            .await
            .status,
        200
    );
    let summary = h.proxy.shutdown(Duration::from_secs(1)).await;
    assert_eq!(summary.allowed, 1);
    assert!(h.proxy.is_shut_down());
    assert!(h.serving.await.unwrap().is_ok());
    assert!(TcpStream::connect(h.addr).await.is_err());
}
