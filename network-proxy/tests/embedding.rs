//! The embedding API: any stream, a Unix listener, a function sink, the env.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use vana_sandbox_proxy::{proxy_env, DecisionSink, Proxy, Verdict};

#[tokio::test]
async fn serve_connection_takes_any_stream() {
    let origin = Origin::start().await;
    let port = origin.port();
    let count = Arc::new(AtomicUsize::new(0));
    let sink = DecisionSink::from_fn({
        let count = count.clone();
        move |d| {
            assert_eq!(d.verdict, Verdict::Allowed);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let proxy = Proxy::new(config_for(port), Arc::new(stub()), sink);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let serving = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.serve_connection(server).await }
    });
    let host = format!("allowed.test:{port}");
    let raw = format!("GET http://{host}/duplex HTTP/1.1\r\nHost: {host}\r\n\r\n");
    client.write_all(raw.as_bytes()).await.unwrap();
    let reply = read_reply(&mut client).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().starts_with("GET /duplex"));
    drop(client);
    tokio::time::timeout(WAIT, serving).await.unwrap().unwrap();
    let summary = proxy.shutdown(Duration::from_secs(1)).await;
    assert_eq!(summary.allowed, 1);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn serve_accepts_from_a_unix_listener() {
    let origin = Origin::start().await;
    let port = origin.port();
    let dir = std::env::temp_dir().join(format!("vana-proxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let proxy = Proxy::new(config_for(port), Arc::new(stub()), DecisionSink::none());
    let serving = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.serve(listener).await }
    });
    let mut stream = UnixStream::connect(&path).await.unwrap();
    let host = format!("allowed.test:{port}");
    let raw =
        format!("GET http://{host}/unix HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(raw.as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut stream).await.status, 200);
    let summary = proxy.shutdown(Duration::from_secs(1)).await;
    assert_eq!(summary.allowed, 1);
    assert!(serving.await.unwrap().is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn env_for_a_port() {
    let env = proxy_env("127.0.0.1:3128".parse().unwrap());
    assert!(env.contains(&("HTTPS_PROXY", "http://127.0.0.1:3128".to_owned())));
    assert!(env.contains(&("no_proxy", "localhost,127.0.0.1,::1".to_owned())));
}
