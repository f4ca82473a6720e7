//! The environment a sandboxed program needs to find the proxy.

use std::net::SocketAddr;

/// What `NO_PROXY` holds: the sandbox's own loopback. Inside the sandbox's network namespace
/// loopback is the sandbox's own (a test server the program starts itself), never the host's,
/// so it is reached directly; everything else goes through the proxy.
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// Environment variables that point the usual clients at the proxy listening (inside the
/// sandbox) at `addr`, e.g. `127.0.0.1:3128`. In order:
///
/// - `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and their lower-case twins `http_proxy`,
///   `https_proxy`, `all_proxy` = `http://ADDR` (curl, wget, Python, Go, Rust, cargo, git over
///   HTTP(S); `ALL_PROXY` covers clients that only read it: other protocols fail either way,
///   since nothing but the proxy is reachable);
/// - `NO_PROXY`, `no_proxy` = [`NO_PROXY`];
/// - `PIP_PROXY` (pip), `npm_config_proxy` and `npm_config_https_proxy` (npm, yarn 1),
///   `NODE_USE_ENV_PROXY=1` (Node 24+'s built-in `fetch`/`http` read the variables above only
///   with it);
/// - `GIT_CONFIG_COUNT=1`, `GIT_CONFIG_KEY_0=http.proxy`, `GIT_CONFIG_VALUE_0` (git's own
///   setting, which wins over a `http.proxy` in a repository's config). A caller that sets its
///   own `GIT_CONFIG_*` pairs must merge them (renumbering) rather than overwrite these.
pub fn proxy_env(addr: SocketAddr) -> Vec<(&'static str, String)> {
    let url = format!("http://{addr}");
    vec![
        ("HTTP_PROXY", url.clone()),
        ("HTTPS_PROXY", url.clone()),
        ("ALL_PROXY", url.clone()),
        ("http_proxy", url.clone()),
        ("https_proxy", url.clone()),
        ("all_proxy", url.clone()),
        ("NO_PROXY", NO_PROXY.to_owned()),
        ("no_proxy", NO_PROXY.to_owned()),
        ("PIP_PROXY", url.clone()),
        ("npm_config_proxy", url.clone()),
        ("npm_config_https_proxy", url.clone()),
        ("NODE_USE_ENV_PROXY", "1".to_owned()),
        ("GIT_CONFIG_COUNT", "1".to_owned()),
        ("GIT_CONFIG_KEY_0", "http.proxy".to_owned()),
        ("GIT_CONFIG_VALUE_0", url),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn env_points_at_the_proxy() {
        let env = proxy_env("127.0.0.1:3128".parse().unwrap());
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        for key in [
            "HTTP_PROXY",
            "https_proxy",
            "PIP_PROXY",
            "npm_config_https_proxy",
        ] {
            assert_eq!(get(key), Some("http://127.0.0.1:3128"), "{key}");
        }
        assert_eq!(get("GIT_CONFIG_KEY_0"), Some("http.proxy"));
        assert_eq!(get("NO_PROXY"), Some(NO_PROXY));
        let mut names: Vec<_> = env.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), env.len());
        let v6 = proxy_env("[::1]:8080".parse().unwrap());
        assert_eq!(v6[0].1, "http://[::1]:8080");
    }
}
