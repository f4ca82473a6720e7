//! Network access through the egress proxy, on every backend, on this machine's rules: the only
//! servers are on the host's 127.0.0.1 (allowed explicitly by the test policy as a CIDR, since
//! loopback is refused by default), names come from a stub resolver (nothing asks a real
//! resolver), and no test opens a connection to any other address. The sandbox's namespace has
//! no route out: its only way out is the proxy's address inside it (a socket the host holds in
//! the namespace on native; init's relay over the container's attach connection on Docker, whose
//! network stays `none` — so a sandbox reaches the host's 127.0.0.1 only through the proxy).
//!
//! Needs root; the Docker variants need the Docker engine and runtime image (scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use vana_sandbox::proxy::StubResolver;
use vana_sandbox::{ExecutionRequest, ExecutionResult, PolicyConfig, ProxyEgress, Status};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A plain HTTP server on the host's 127.0.0.1: `GET /bytes/N` answers N bytes, anything else
/// `hello from <Host>`. Counts the connections it accepted.
fn http_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    return;
                }
                let mut host = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(h) = line.to_ascii_lowercase().strip_prefix("host:") {
                        host = h.trim().to_string();
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let body = match path.strip_prefix("/bytes/") {
                    Some(n) => vec![b'x'; n.parse().unwrap_or(0)],
                    None => format!("hello from {host}").into_bytes(),
                };
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            });
        }
    });
    (port, hits)
}

/// Network on, the test names allowed on the test server's `port`, and the host's 127.0.0.1
/// (only it: 127.0.0.2 stays refused as loopback).
fn policy(port: u16, f: impl FnOnce(&mut vana_sandbox::PolicyConfig)) -> PolicyConfig {
    let mut p = PolicyConfig::default();
    p.network.enabled = true;
    p.network.allow = vec![
        format!("allowed.test:{port}"),
        format!("rebind.test:{port}"),
        format!("tls.test:{port}"),
        format!("loopback.test:{port}"),
        "127.0.0.1/32".into(),
    ];
    f(&mut p);
    p
}

fn run(b: Backend, policy: PolicyConfig, resolver: StubResolver, code: &str) -> ExecutionResult {
    let rt = rt();
    let engine = rt
        .block_on(
            builder_on(b)
                .policy(policy)
                .compile_cache(None)
                .egress(Arc::new(ProxyEgress::with_resolver(Arc::new(resolver))))
                .build(),
        )
        .expect("engine");
    let mut r = ExecutionRequest::new("python", code);
    r.network_access = Some(true);
    let r = rt.block_on(engine.execute(r)).expect("engine");
    drop(engine);
    drop(rt);
    assert_clean(b);
    r
}

/// Python helpers: `get(url)` prints `status body-or-reason` through the proxy variables.
const GET: &str = r#"
import os, socket, urllib.request, urllib.error
def get(url, show=True):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
            print(r.status, body.decode()[:60] if show else len(body), flush=True)
    except urllib.error.HTTPError as e:
        print(e.code, e.headers.get("x-vana-proxy-reason"), flush=True)
    except Exception as e:
        print("failed", type(e).__name__, flush=True)
"#;

fn an_allowed_host_works_and_everything_else_is_refused_with_a_reason(b: Backend) {
    let (port, hits) = http_server();
    let resolver = StubResolver::new()
        .answer("allowed.test", &[LOCAL])
        .answer("other.test", &[LOCAL])
        .answer("loopback.test", &[IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))]);
    let code = format!(
        "{GET}\nget('http://allowed.test:{port}/')\nget('http://other.test:{port}/')\nget('http://loopback.test:{port}/')\n"
    );
    let r = run(b, policy(port, |_| {}), resolver, &code);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let lines: Vec<&str> = r.output.lines().collect();
    assert_eq!(
        lines[0],
        format!("200 hello from allowed.test:{port}"),
        "{r:#?}"
    );
    assert_eq!(lines[1], "403 not_allowed", "{r:#?}");
    assert_eq!(lines[2], "403 loopback_address", "{r:#?}");
    let net = r.network.as_ref().expect("network summary");
    assert_eq!((net.allowed, net.denied), (1, 2), "{net:#?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
all_backends!(an_allowed_host_works_and_everything_else_is_refused_with_a_reason);

fn raw_sockets_udp_and_dns_get_nothing(b: Backend) {
    let (port, hits) = http_server();
    let code = format!(
        r#"
import socket, errno
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("127.0.0.1", {port})); print("raw CONNECTED")
except OSError as e:
    print("raw refused")
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); print("udp CREATED")
except OSError as e:
    print("udp refused")
try:
    socket.getaddrinfo("allowed.test", 80); print("dns RESOLVED")
except OSError:
    print("dns refused")
"#
    );
    let resolver = StubResolver::new().answer("allowed.test", &[LOCAL]);
    let r = run(b, policy(port, |_| {}), resolver, &code);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert_eq!(
        r.output, "raw refused\nudp refused\ndns refused\n",
        "{r:#?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}
all_backends!(raw_sockets_udp_and_dns_get_nothing);

fn rebinding_fails(b: Backend) {
    let (port, hits) = http_server();
    // First answer allowed, the next a private address: each request resolves once and
    // connects to the address it checked, so the second never goes anywhere.
    let resolver = StubResolver::new()
        .answer("rebind.test", &[LOCAL])
        .answer("rebind.test", &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
    let code =
        format!("{GET}\nget('http://rebind.test:{port}/')\nget('http://rebind.test:{port}/')\n");
    let r = run(b, policy(port, |_| {}), resolver, &code);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert_eq!(
        r.output,
        format!("200 hello from rebind.test:{port}\n403 private_address\n"),
        "{r:#?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
all_backends!(rebinding_fails);

fn the_rate_limit_and_the_byte_cap_trigger(b: Backend) {
    let (port, _) = http_server();
    let resolver = StubResolver::new().answer("allowed.test", &[LOCAL]);
    let code = format!("{GET}\nfor _ in range(8):\n    get('http://allowed.test:{port}/')\n");
    let r = run(
        b,
        policy(port, |p| p.network.requests_per_second = 1),
        resolver.clone(),
        &code,
    );
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert!(r.output.contains("429 rate_limited"), "{r:#?}");
    let code = format!("{GET}\nget('http://allowed.test:{port}/bytes/3000000', show=False)\n");
    let r = run(
        b,
        policy(port, |p| p.network.max_ingress_mb = 1),
        resolver,
        &code,
    );
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert!(!r.output.starts_with("200 3000000"), "{r:#?}");
    let net = r.network.as_ref().unwrap();
    assert!(
        net.denied_by_reason
            .keys()
            .any(|k| k.name() == "byte_limit"),
        "{net:#?}"
    );
}
all_backends!(the_rate_limit_and_the_byte_cap_trigger);

fn https_through_connect_with_a_local_ca(b: Backend) {
    let dir = std::env::temp_dir().join(format!("vana-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=tls.test",
            "-addext",
            "subjectAltName=DNS:tls.test",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut server = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!(
            "import http.server, ssl\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        b = b'tls ok'\n        self.send_response(200); self.send_header('content-length', str(len(b))); self.end_headers(); self.wfile.write(b)\n    def log_message(self, *a): pass\ns = http.server.HTTPServer(('127.0.0.1', {port}), H)\nc = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('{0}/cert.pem', '{0}/key.pem')\ns.socket = c.wrap_socket(s.socket, server_side=True)\ns.serve_forever()",
            dir.display()
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ca = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    let resolver = StubResolver::new().answer("tls.test", &[LOCAL]);
    let code = format!(
        "{GET}\nimport ssl\nopen('/workspace/ca.pem', 'w').write('''{ca}''')\nctx = ssl.create_default_context(cafile='/workspace/ca.pem')\nprint(urllib.request.urlopen('https://tls.test:{port}/', context=ctx, timeout=10).read().decode())\n"
    );
    let r = run(b, policy(port, |_| {}), resolver, &code);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        (r.status, r.output.as_str()),
        (Status::Success, "tls ok\n"),
        "{r:#?}"
    );
    assert_eq!(r.network.as_ref().unwrap().allowed, 1);
}
all_backends!(https_through_connect_with_a_local_ca);

/// Hostile clients of the proxy's address inside the sandbox — one that asks for a large body
/// and never reads it, a flood of connections that send half a request and hang — cost bounded
/// memory, and once they are gone an ordinary request goes through.
fn hostile_clients_of_the_proxy_leave_it_working(b: Backend) {
    let (port, _) = http_server();
    let resolver = StubResolver::new().answer("allowed.test", &[LOCAL]);
    let code = format!(
        r#"{GET}
import socket, time
big = socket.create_connection(("127.0.0.1", 3128), timeout=5)
big.sendall(b"GET http://allowed.test:{port}/bytes/4000000 HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n")
time.sleep(1)
big.close()
held = []
for _ in range(300):
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=2)
        s.sendall(b"GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: allow")
        held.append(s)
    except OSError:
        pass
print("held", len(held) > 0, flush=True)
time.sleep(0.5)
for s in held:
    s.close()
time.sleep(0.5)
get('http://allowed.test:{port}/')
"#
    );
    let r = run(b, policy(port, |_| {}), resolver, &code);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert_eq!(
        r.output,
        format!("held True\n200 hello from allowed.test:{port}\n"),
        "{r:#?}"
    );
}
all_backends!(hostile_clients_of_the_proxy_leave_it_working);

fn without_a_policy_that_allows_it_network_is_rejected(b: Backend) {
    let r = run(b, PolicyConfig::default(), StubResolver::new(), "print(1)");
    assert_eq!(r.status, Status::Rejected, "{r:#?}");
}
all_backends!(without_a_policy_that_allows_it_network_is_rejected);

fn a_session_with_network_access_reaches_only_allowed_hosts(b: Backend) {
    let (port, hits) = http_server();
    let resolver = StubResolver::new()
        .answer("allowed.test", &[LOCAL])
        .answer("other.test", &[LOCAL]);
    let rt = rt();
    rt.block_on(async {
        let engine = builder_on(b)
            .policy(policy(port, |_| {}))
            .compile_cache(None)
            .egress(Arc::new(ProxyEgress::with_resolver(Arc::new(resolver))))
            .build()
            .await
            .expect("engine");
        let s = engine
            .session(vana_sandbox::SessionOptions {
                network_access: Some(true),
                ..Default::default()
            })
            .await
            .expect("session");
        s.run_code("python", GET).await.unwrap();
        let r = s
            .run_code(
                "python",
                &format!("get('http://allowed.test:{port}/')\nget('http://other.test:{port}/')"),
            )
            .await
            .unwrap();
        assert_eq!(
            r.output,
            format!("200 hello from allowed.test:{port}\n403 not_allowed\n"),
            "{r:#?}"
        );
        s.close().await.unwrap();
    });
    drop(rt);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_clean(b);
}
all_backends!(a_session_with_network_access_reaches_only_allowed_hosts);
