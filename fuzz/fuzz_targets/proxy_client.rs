//! What a sandboxed program sends the egress proxy, byte for byte: the proxy never panics and
//! never connects anywhere it should not (names resolve only through a stub that knows one
//! name, whose address — loopback — no rule allows).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vana_sandbox_proxy::{DecisionSink, Proxy, ProxyConfig, Rules, StubResolver};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let resolver =
            StubResolver::new().answer("allowed.test", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let config = ProxyConfig {
            rules: Rules::new(&["allowed.test"], &[] as &[&str]).expect("rules"),
            ..ProxyConfig::default()
        };
        let proxy = Proxy::new(config, Arc::new(resolver), DecisionSink::none());
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.serve_connection(server).await }
        });
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut sink)).await;
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(2), serving).await;
        let _ = proxy.shutdown(Duration::from_millis(10)).await;
    });
});
