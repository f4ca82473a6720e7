//! Packages on real sandboxes: the plan's request (`requests` and `numpy`) installed through the
//! real index and then served from the cache with no installer able to run; npm likewise; the
//! policy's deny list; names that are paths, URLs or installer options refused at validation; a
//! source-only package refused before anything runs; the sandbox still without network
//! (packages arrive as files, and `pip install` inside fails by itself, quickly); a session that
//! installs packages for its next cell. On every backend (the set is bound read-only into the
//! container, and the Docker backend probes its image's interpreter).
//!
//! Needs root and the package indexes (PyPI, the npm registry), which these machines reach; no
//! other address is contacted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vana_sandbox::{
    DirPackageProvider, DockerConfig, Engine, ExecutionRequest, ExecutionResult, PackageProvider,
    PolicyConfig, ProviderConfig, Sandbox, SessionOptions, Status,
};

/// A package cache of the test's own (removed at the end).
struct Cache(PathBuf);

impl Cache {
    fn new(name: &str) -> Self {
        let d = PathBuf::from(format!(
            "/var/tmp/vana-pkg-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        Self(d)
    }

    /// A provider on this cache; `offline` makes every installer a program that only fails,
    /// so anything not already cached cannot be fetched.
    fn provider(&self, offline: bool) -> Arc<DirPackageProvider> {
        let mut c = ProviderConfig::in_dir(&self.0);
        if offline {
            c.pip = vec!["/bin/false".into()];
            c.npm = vec!["/bin/false".into()];
        }
        Arc::new(DirPackageProvider::new(c).expect("provider"))
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn engine(
    b: Backend,
    policy: PolicyConfig,
    provider: Arc<DirPackageProvider>,
) -> (tokio::runtime::Runtime, Engine) {
    require_root();
    let rt = rt();
    let builder = Sandbox::builder()
        .policy(policy)
        .compile_cache(None)
        .packages(Some(provider as Arc<dyn PackageProvider>))
        .max_concurrency(2);
    let builder = match b {
        Backend::Native => builder,
        Backend::Docker(runtime) => {
            require_docker(runtime);
            builder.docker(DockerConfig {
                runtime: vana_sandbox::Runtime::parse(runtime).expect("runtime"),
                ..DockerConfig::default()
            })
        }
    };
    let e = rt.block_on(builder.build()).expect("engine");
    (rt, e)
}

fn timed(
    rt: &tokio::runtime::Runtime,
    e: &Engine,
    r: ExecutionRequest,
) -> (ExecutionResult, Duration) {
    let begun = Instant::now();
    let result = rt.block_on(e.execute(r)).expect("engine");
    (result, begun.elapsed())
}

/// The issue's request.
const PLAN: &str = r#"{"language":"python","code":"import requests, numpy; print(numpy.arange(3).sum())","packages":["requests","numpy"]}"#;

fn plans_request_installs_then_comes_from_the_cache_with_no_network(b: Backend) {
    let cache = Cache::new("plan");
    let (rt, e) = engine(b, PolicyConfig::default(), cache.provider(false));
    let (r, first) = timed(&rt, &e, ExecutionRequest::from_json(PLAN).unwrap());
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert_eq!(r.output, "3\n");
    let p = r.packages.as_ref().expect("packages reported");
    assert!(!p.cached);
    let names: Vec<&str> = p.installed.iter().map(|i| i.name.as_str()).collect();
    for want in ["numpy", "requests", "urllib3", "idna", "certifi"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(p.size_bytes > 10 << 20, "{p:?}");
    let first_prepare = p.prepare_time;
    drop(e);

    // A new engine whose installers cannot run (so nothing can be fetched): the same request
    // is served from the cache.
    let offline = cache.provider(true);
    let (rt, e) = engine(b, PolicyConfig::default(), offline.clone());
    let (r, cached) = timed(&rt, &e, ExecutionRequest::from_json(PLAN).unwrap());
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert_eq!(r.output, "3\n");
    let p = r.packages.as_ref().expect("packages reported");
    assert!(p.cached, "{r:#?}");
    let cached_prepare = p.prepare_time;
    assert_eq!(offline.installs(), 0, "an installer ran");
    // The modules come from the mounted set, not from the host's Python.
    let mut where_from = ExecutionRequest::from_json(PLAN).unwrap();
    where_from.code =
        "import numpy, requests; print(numpy.__file__); print(requests.__file__)".into();
    let (r, _) = timed(&rt, &e, where_from);
    assert_eq!(
        r.output,
        "/opt/vana-packages/python/numpy/__init__.py\n/opt/vana-packages/python/requests/__init__.py\n",
        "{r:#?}"
    );
    // Timings are for the record (scripts/bench-packages.sh measures them properly).
    eprintln!(
        "numpy request on {b:?}: first {:.2} s (preparing packages {first_prepare:.2} s), \
         cached {:.2} s (preparing packages {cached_prepare:.2} s)",
        first.as_secs_f64(),
        cached.as_secs_f64()
    );
    drop(e);
    assert_clean(b);
}

all_backends!(plans_request_installs_then_comes_from_the_cache_with_no_network);

fn npm_packages_for_require_and_import(b: Backend) {
    let cache = Cache::new("npm");
    let (rt, e) = engine(b, PolicyConfig::default(), cache.provider(false));
    let mut r = ExecutionRequest::new(
        "javascript",
        "const isNumber = require('is-number');\n\
         console.log(isNumber(5), isNumber('x'), process.env.NODE_PATH);\n\
         import('is-number').then(m => console.log('esm', m.default(7)));",
    );
    r.packages = vec!["is-number@7.0.0".into()];
    let (res, _) = timed(&rt, &e, r.clone());
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "true false /node_modules\nesm true\n");
    let p = res.packages.as_ref().unwrap();
    assert_eq!((p.installed.len(), p.cached), (1, false), "{p:?}");
    drop(e);
    let offline = cache.provider(true);
    let (rt, e) = engine(b, PolicyConfig::default(), offline.clone());
    let (res, _) = timed(&rt, &e, r);
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert!(res.packages.as_ref().is_some_and(|p| p.cached));
    assert_eq!(offline.installs(), 0);
    drop(e);
    assert_clean(b);
}

all_backends!(npm_packages_for_require_and_import);

fn policy_refuses_denied_and_disabled_packages(b: Backend) {
    let cache = Cache::new("policy");
    let provider = cache.provider(false);
    let policy = PolicyConfig::from_toml(
        "[packages]\nmax_count = 20\n[packages.pypi]\nindex = 'https://pypi.org/simple'\ndeny = ['NumPy', 'urllib3']\n",
    )
    .unwrap();
    let (rt, e) = engine(b, policy, provider.clone());
    // Asked for: refused before anything is fetched.
    let (r, _) = timed(&rt, &e, ExecutionRequest::from_json(PLAN).unwrap());
    assert_eq!(r.status, Status::Rejected, "{r:#?}");
    assert!(
        r.error
            .as_deref()
            .unwrap_or_default()
            .contains("`numpy` is denied"),
        "{r:#?}"
    );
    assert_eq!(r.backend, None, "nothing may run");
    assert_eq!(provider.installs(), 0);
    // Pulled in as a dependency (requests needs urllib3): refused before the program runs.
    let mut r = ExecutionRequest::new("python", "print('ran')");
    r.packages = vec!["requests".into()];
    let (res, _) = timed(&rt, &e, r.clone());
    assert_eq!(res.status, Status::Rejected, "{res:#?}");
    let msg = res.error.unwrap_or_default();
    assert!(
        msg.contains("`urllib3` (a dependency") && msg.contains("denied"),
        "{msg}"
    );
    assert!(res.output.is_empty());
    // A path, a URL or an installer option is not a package name; Bash has no packages;
    // strict has them off. All refused at validation: nothing fetched, nothing run.
    let installs = provider.installs();
    for (lang, pkg, why) in [
        ("python", "../../etc/passwd", "path or URL"),
        ("python", "/tmp/evil.whl", "path or URL"),
        ("python", "https://evil.example/x.whl", "path or URL"),
        ("python", "git+https://github.com/x/y", "path or URL"),
        ("python", "file:///etc/passwd", "path or URL"),
        ("python", "evil @ https://evil.example/x.whl", "path or URL"),
        ("python", "-e .", "installer option"),
        (
            "python",
            "--index-url=https://evil.example/simple",
            "installer option",
        ),
        (
            "python",
            "requests --extra-index-url https://evil.example",
            "installer option",
        ),
        ("javascript", "file:../x", "path or URL"),
        ("javascript", "github:user/repo", "path or URL"),
        ("javascript", "user/repo", "path or URL"),
        ("javascript", "x@https://evil.example/x.tgz", "path or URL"),
        ("javascript", "x@evil.example/x.tgz", "not a semver range"),
        (
            "javascript",
            "is-number@7 --registry=https://evil.example",
            "installer option",
        ),
        ("bash", "requests", "packages are not supported for bash"),
    ] {
        let mut r = ExecutionRequest::new(lang, "echo 1");
        r.packages = vec![pkg.into()];
        let (res, _) = timed(&rt, &e, r);
        assert_eq!(res.status, Status::Rejected, "{res:#?}");
        assert_eq!(res.backend, None, "nothing may run");
        let msg = res.error.unwrap_or_default();
        assert!(msg.contains(why), "{pkg}: {msg}");
    }
    assert_eq!(provider.installs(), installs, "nothing may be fetched");
    drop(e);
    let (rt, e) = engine(b, PolicyConfig::preset("strict").unwrap(), provider);
    let (res, _) = timed(&rt, &e, r);
    assert!(res
        .error
        .unwrap_or_default()
        .contains("packages are disabled by policy `strict`"));
    drop(e);
    assert_clean(b);
}

all_backends!(policy_refuses_denied_and_disabled_packages);

fn a_source_only_package_is_refused_before_anything_runs(b: Backend) {
    let cache = Cache::new("sdist");
    let (rt, e) = engine(b, PolicyConfig::default(), cache.provider(false));
    let mut r = ExecutionRequest::new("python", "import docopt; print('ran')");
    r.packages = vec!["docopt".into()];
    let (res, _) = timed(&rt, &e, r);
    assert_eq!(res.status, Status::Rejected, "{res:#?}");
    let msg = res.error.unwrap_or_default();
    assert!(
        msg.contains("`docopt` has no wheel") && msg.contains("wheels only"),
        "{msg}"
    );
    assert_eq!(res.backend, None);
    drop(e);
    assert_clean(b);
}

all_backends!(a_source_only_package_is_refused_before_anything_runs);

const NO_NETWORK: &str = r#"
import socket, time
import requests
t = time.monotonic()
try:
    requests.get("https://pypi.org/simple/", timeout=5)
    print("fetched")
except requests.exceptions.ConnectionError:
    print("requests: no connection")
try:
    socket.getaddrinfo("pypi.org", 443)
    print("resolved")
except OSError:
    print("dns: no resolution")
try:
    open("/opt/vana-packages/python/requests/evil.py", "w")
    print("wrote")
except OSError as e:
    print("packages: read-only" if e.errno in (13, 30) else "packages: %s" % e)
print("quick" if time.monotonic() - t < 5 else "slow")
"#;

/// The packages arrive as files: the program still has no network (no connection, no
/// resolution, quickly), and cannot change the set it was given.
fn the_sandbox_still_has_no_network(b: Backend) {
    let cache = Cache::new("nonet");
    let mut policy = PolicyConfig::default();
    // The namespace is what is checked here, not the language guard.
    policy.guards.python_audit = false;
    let (rt, e) = engine(b, policy, cache.provider(false));
    let mut r = ExecutionRequest::new("python", NO_NETWORK);
    r.packages = vec!["requests".into()];
    let (res, _) = timed(&rt, &e, r);
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(
        res.output, "requests: no connection\ndns: no resolution\npackages: read-only\nquick\n",
        "{res:#?}"
    );
    drop(e);
    assert_clean(b);
}

all_backends!(the_sandbox_still_has_no_network);

fn a_session_installs_for_its_next_cell(b: Backend) {
    let cache = Cache::new("session");
    let (rt, e) = engine(b, PolicyConfig::default(), cache.provider(false));
    rt.block_on(async {
        let s = e.session(SessionOptions::default()).await.expect("session");
        let r = s.run_code("python", "import tabulate").await.unwrap();
        assert_eq!(r.status, Status::Error, "{r:#?}");
        assert_eq!(
            r.exception.as_ref().map(|x| x.name.as_str()),
            Some("ModuleNotFoundError")
        );

        let report = s
            .install("python", &["tabulate==0.9.0".into()])
            .await
            .unwrap();
        assert_eq!(report.installed.len(), 1, "{report:?}");
        // The same kernel (state kept) imports it now; so does a Python a Bash cell starts.
        let r = s
            .run_code(
                "python",
                "x = 41\nimport tabulate\nprint(tabulate.__version__, tabulate.__file__)",
            )
            .await
            .unwrap();
        assert_eq!(r.status, Status::Success, "{r:#?}");
        assert_eq!(
            r.output,
            "0.9.0 /opt/vana-packages/python/tabulate/__init__.py\n"
        );
        let r = s.run_code("python", "print(x + 1)").await.unwrap();
        assert_eq!(r.output, "42\n", "state was lost: {r:#?}");
        let r = s
            .command("python3 -c 'import tabulate; print(tabulate.__version__)'")
            .await
            .unwrap();
        assert_eq!(r.output, "0.9.0\n", "{r:#?}");

        // More packages join the set; JavaScript has its own.
        s.install("python", &["humanize".into()]).await.unwrap();
        let r = s
            .run_code(
                "python",
                "import humanize, tabulate; print(humanize.intcomma(1234567))",
            )
            .await
            .unwrap();
        assert_eq!(r.output, "1,234,567\n", "{r:#?}");
        s.install("javascript", &["is-number@7.0.0".into()])
            .await
            .unwrap();
        let r = s
            .run_code("javascript", "console.log(require('is-number')(3))")
            .await
            .unwrap();
        assert_eq!(r.output, "true\n", "{r:#?}");

        // Another version of a package the kernel may have imported is refused.
        let e = s.install("python", &["tabulate==0.8.10".into()]).await;
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("`tabulate` 0.9.0 is already in this session"),
            "{msg}"
        );
        let e = s.install("bash", &["x".into()]).await;
        assert!(e.is_err());
        // The set is read-only to the session.
        let r = s
            .command("touch /opt/vana-packages/python/evil.py")
            .await
            .unwrap();
        assert_eq!(r.status, Status::Error, "{r:#?}");
        s.close().await.unwrap();
    });
    let sessions = cache.0.join("sessions");
    let left: Vec<_> = std::fs::read_dir(&sessions).unwrap().flatten().collect();
    assert!(left.is_empty(), "session package sets left: {left:?}");
    drop(e);
    assert_clean(b);
}

all_backends!(a_session_installs_for_its_next_cell);

/// `pip install` by the program itself: the sandbox has no network (packages come only through
/// `packages`), and pip fails on its own, clearly, well within the run's timeout.
fn pip_install_inside_the_sandbox_fails_fast(b: Backend) {
    let cache = Cache::new("pipinside");
    let (rt, e) = engine(b, PolicyConfig::default(), cache.provider(true));
    let mut r = ExecutionRequest::new(
        "bash",
        "exec python3 -m pip install --no-cache-dir --target /tmp/site tabulate",
    );
    r.timeout = Some(30.0);
    let (res, took) = timed(&rt, &e, r);
    // Not a timeout: pip gave up by itself, with a non-zero exit and a message saying why.
    assert_eq!(res.status, Status::Error, "{res:#?}");
    assert!(res.exit_code.is_some_and(|c| c != 0), "{res:#?}");
    let err = res.error.clone().unwrap_or_default();
    let clear = [
        "No matching distribution found for tabulate",
        "No module named pip",
    ];
    assert!(clear.iter().any(|c| err.contains(c)), "{err}");
    assert!(
        res.execution_time < 25.0 && took < Duration::from_secs(40),
        "pip took {:.1} s in the sandbox",
        res.execution_time
    );
    eprintln!(
        "pip install in the sandbox failed after {:.1} s: {}",
        res.execution_time,
        err.lines().last().unwrap_or_default()
    );
    drop(e);
    assert_clean(b);
}

all_backends!(pip_install_inside_the_sandbox_fails_fast);
