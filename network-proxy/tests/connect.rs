//! End-to-end tests of CONNECT tunnels, with a TLS server on 127.0.0.1 that has its own CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use vana_sandbox_proxy::{DenyReason, Limits, Method, ProxyConfig, Verdict};

/// A CA and a TLS server for `allowed.test` on 127.0.0.1 that answers every request with
/// `body_len` bytes.
struct TlsOrigin {
    port: u16,
    ca: CertificateDer<'static>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsOrigin {
    async fn start(body_len: usize) -> TlsOrigin {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "vana-sandbox proxy test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["allowed.test".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&vec![b'z'; body_len]).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsOrigin {
            port,
            ca: ca_cert.der().clone(),
        }
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(client))
    }
}

/// Opens a tunnel: CONNECT, and the proxy's reply.
async fn connect(h: &Harness, authority: &str) -> (TcpStream, Reply) {
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    let raw = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(raw.as_bytes()).await.unwrap();
    let reply = read_reply(&mut stream).await;
    (stream, reply)
}

#[tokio::test]
async fn tls_through_connect_reaches_the_allowed_server() {
    let origin = TlsOrigin::start(5).await;
    let mut h = Harness::start(config_for(origin.port), stub()).await;
    let (stream, reply) = connect(&h, &format!("allowed.test:{}", origin.port)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.rest.is_empty());
    let name = ServerName::try_from("allowed.test").unwrap();
    let mut tls = origin.connector().connect(name, stream).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("zzzzz"), "{text}");
    drop(tls);

    let d = h.decision().await;
    assert_eq!(d.verdict, Verdict::Allowed);
    assert_eq!(d.method, Method::Connect);
    assert_eq!((d.host.as_str(), d.port), ("allowed.test", origin.port));
    assert!(d.bytes_up > 0 && d.bytes_down > 0, "{d:?}");
    let summary = h.proxy.shutdown(Duration::from_secs(1)).await;
    assert_eq!(summary.allowed, 1);
    assert_eq!(summary.bytes_down, d.bytes_down);
}

#[tokio::test]
async fn sni_that_disagrees_with_the_connect_host_is_refused() {
    let origin = TlsOrigin::start(5).await;
    let mut h = Harness::start(config_for(origin.port), stub()).await;
    let (stream, reply) = connect(&h, &format!("allowed.test:{}", origin.port)).await;
    assert_eq!(reply.status, 200);
    let name = ServerName::try_from("evil.test").unwrap();
    let result = origin.connector().connect(name, stream).await;
    let error = result.expect_err("the handshake must fail");
    let text = error.to_string().to_lowercase();
    assert!(text.contains("access") || text.contains("denied"), "{text}");
    let d = h.decision().await;
    assert_eq!(d.verdict, Verdict::Denied(DenyReason::SniMismatch));
    assert_eq!(d.bytes_down, 0);
}

#[tokio::test]
async fn connect_to_a_port_not_allowed_is_refused() {
    let origin = TlsOrigin::start(5).await;
    let h = Harness::start(config_for(origin.port), stub()).await;
    for port in [origin.port.wrapping_add(1).max(1), 22, 443] {
        let (_, reply) = connect(&h, &format!("allowed.test:{port}")).await;
        assert_eq!(reply.status, 403, "{port}");
        assert_eq!(reply.reason(), Some("port_not_allowed"), "{port}");
    }
    let (_, reply) = connect(&h, &format!("other.test:{}", origin.port)).await;
    assert_eq!(reply.reason(), Some("not_allowed"));
    let (_, reply) = connect(&h, "allowed.test").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.reason(), Some("invalid_port"));
}

#[tokio::test]
async fn connect_to_a_private_answer_is_refused_without_connecting() {
    let resolver = stub().answer("internal.test", &["10.1.2.3".parse().unwrap()]);
    let config = ProxyConfig {
        rules: vana_sandbox_proxy::Rules::new(&["internal.test:443"], &[] as &[&str]).unwrap(),
        ..ProxyConfig::default()
    };
    let h = Harness::start(config, resolver).await;
    let (_, reply) = connect(&h, "internal.test:443").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.reason(), Some("private_address"));
}

#[tokio::test]
async fn plain_bytes_pass_unless_sni_is_required() {
    let origin = Origin::start().await;
    let port = origin.port();
    let mut h = Harness::start(config_for(port), stub()).await;
    let (mut stream, reply) = connect(&h, &format!("allowed.test:{port}")).await;
    assert_eq!(reply.status, 200);
    stream
        .write_all(b"GET /inside HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let inner = read_reply(&mut stream).await;
    assert_eq!(inner.status, 200);
    assert!(inner.text().starts_with("GET /inside"), "{}", inner.text());
    drop(stream);
    assert_eq!(h.decision().await.verdict, Verdict::Allowed);

    let strict = ProxyConfig {
        require_sni: true,
        ..config_for(port)
    };
    let mut h = Harness::start(strict, stub()).await;
    let (mut stream, _) = connect(&h, &format!("allowed.test:{port}")).await;
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut stream, WAIT).await);
    assert_eq!(
        h.decision().await.verdict,
        Verdict::Denied(DenyReason::SniMissing)
    );
}

#[tokio::test]
async fn a_tunnel_that_sends_nothing_is_closed_at_the_header_timeout() {
    let origin = Origin::start().await;
    let port = origin.port();
    let config = ProxyConfig {
        limits: Limits {
            header_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..config_for(port)
    };
    let mut h = Harness::start(config, stub()).await;
    let (mut stream, reply) = connect(&h, &format!("allowed.test:{port}")).await;
    assert_eq!(reply.status, 200);
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
    assert_eq!(
        h.decision().await.verdict,
        Verdict::Denied(DenyReason::HeaderTimeout)
    );
}

#[tokio::test]
async fn tunnel_byte_cap_cuts_the_tunnel() {
    let origin = TlsOrigin::start(200_000).await;
    let config = ProxyConfig {
        limits: Limits {
            max_bytes_down_per_connection: Some(20_000),
            ..Limits::default()
        },
        ..config_for(origin.port)
    };
    let mut h = Harness::start(config, stub()).await;
    let (stream, _) = connect(&h, &format!("allowed.test:{}", origin.port)).await;
    let name = ServerName::try_from("allowed.test").unwrap();
    let mut tls = origin.connector().connect(name, stream).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response)).await;
    assert!(response.len() < 200_000, "{}", response.len());
    let d = h.decision().await;
    assert_eq!(d.verdict, Verdict::Denied(DenyReason::ByteLimit));
    assert!(d.bytes_down <= 20_000, "{}", d.bytes_down);
}

#[tokio::test]
async fn shutdown_closes_open_tunnels() {
    let origin = Origin::start().await;
    let port = origin.port();
    let mut h = Harness::start(config_for(port), stub()).await;
    let (mut stream, reply) = connect(&h, &format!("allowed.test:{port}")).await;
    assert_eq!(reply.status, 200);
    // A complete first request keeps the tunnel open (keep-alive) after its answer.
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_reply(&mut stream).await.status, 200);
    let started = std::time::Instant::now();
    let summary = h.proxy.shutdown(Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    assert_eq!(summary.allowed, 1);
    assert_eq!(h.decision().await.verdict, Verdict::Allowed);
}
