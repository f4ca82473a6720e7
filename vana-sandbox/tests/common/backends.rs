//! One test, every backend: native, Docker with runc, Docker with runsc (gVisor). The Docker
//! variants need a running engine with both runtimes and the runtime image (scripts/test.sh
//! installs and starts everything) and fail loudly without it.

use std::process::Command;
use std::sync::Arc;

use vana_sandbox::{
    CompileCache, DockerConfig, Engine, ExecutionRequest, ExecutionResult, PolicyConfig, Sandbox,
    SandboxBuilder,
};

use super::{assert_no_leftovers, require_root, rt};

/// A backend under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The native backend, as root.
    Native,
    /// Docker with the named OCI runtime (`runc` or `runsc`).
    Docker(&'static str),
}

impl Backend {
    /// gVisor: its own kernel, so host-side measurements of kernel objects do not apply.
    pub fn is_gvisor(self) -> bool {
        self == Backend::Docker("runsc")
    }
}

/// Fails loudly unless Docker runs with `runtime` and the runtime image is present.
pub fn require_docker(runtime: &str) {
    let info = Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output();
    let ok = info.as_ref().is_ok_and(|o| o.status.success());
    assert!(ok, "the Docker tests need a running Docker engine: run scripts/test.sh (it installs docker.io and starts dockerd)");
    let runtimes = String::from_utf8_lossy(&info.expect("docker info").stdout).to_string();
    assert!(
        runtimes.contains(&format!("\"{runtime}\"")),
        "the Docker engine has no runtime `{runtime}` (scripts/test.sh registers runsc): {runtimes}"
    );
    let image = Command::new("docker")
        .args(["image", "inspect", vana_sandbox::image::DEFAULT_IMAGE])
        .output();
    assert!(
        image.is_ok_and(|o| o.status.success()),
        "the runtime image {} is missing: run `vana-sandbox image build` (scripts/test.sh does)",
        vana_sandbox::image::DEFAULT_IMAGE
    );
}

/// An engine on `backend` with `policy` and no compile cache, and the runtime it needs.
pub fn engine_on(backend: Backend, policy: PolicyConfig) -> (tokio::runtime::Runtime, Engine) {
    engine_with(backend, policy, None)
}

/// An engine on `backend` with `policy` and `cache`, and the runtime it needs.
pub fn engine_with(
    backend: Backend,
    policy: PolicyConfig,
    cache: Option<Arc<dyn CompileCache>>,
) -> (tokio::runtime::Runtime, Engine) {
    let rt = rt();
    let builder = builder_on(backend)
        .policy(policy)
        .compile_cache(cache)
        .max_concurrency(2);
    let engine = rt.block_on(builder.build()).expect("engine");
    (rt, engine)
}

/// A builder on `backend` (root, and for Docker the engine with its runtime, checked first).
pub fn builder_on(backend: Backend) -> SandboxBuilder {
    require_root();
    let builder = Sandbox::builder();
    match backend {
        Backend::Native => builder,
        Backend::Docker(runtime) => {
            require_docker(runtime);
            builder.docker(DockerConfig {
                runtime: vana_sandbox::Runtime::parse(runtime).expect("runtime"),
                ..DockerConfig::default()
            })
        }
    }
}

/// Runs one request on a fresh engine on `backend` with the default policy.
pub fn run_on(backend: Backend, r: ExecutionRequest) -> ExecutionResult {
    let (rt, e) = engine_on(backend, PolicyConfig::default());
    rt.block_on(e.execute(r)).expect("engine")
}

/// Our containers (labelled `vana-sandbox`), running or not.
pub fn docker_leftovers() -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=vana-sandbox"])
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// All Docker volumes.
pub fn volumes() -> Vec<String> {
    let out = Command::new("docker").args(["volume", "ls", "-q"]).output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Nothing of ours is left on the host after work on `backend`.
pub fn assert_clean(backend: Backend) {
    match backend {
        Backend::Native => assert_no_leftovers(),
        Backend::Docker(_) => {
            let left = super::settled(docker_leftovers);
            assert!(left.is_empty(), "containers of ours left behind: {left:?}");
        }
    }
}

/// Declares `#[test]`s `native`, `docker_runc` and `docker_runsc` in a module named after a
/// function taking a [`Backend`]; each runs serialised with the other tests of its binary.
/// `all_backends!(f)` covers the three, `all_backends!(f: native, docker_runc)` a subset.
#[macro_export]
macro_rules! all_backends {
    ($f:ident) => {
        $crate::all_backends!($f: native, docker_runc, docker_runsc);
    };
    ($f:ident: $($b:ident),+) => {
        mod $f {
            $(
                #[test]
                fn $b() {
                    let _g = $crate::common::serial();
                    super::$f($crate::all_backends!(@backend $b));
                }
            )+
        }
    };
    (@backend native) => { $crate::common::Backend::Native };
    (@backend docker_runc) => { $crate::common::Backend::Docker("runc") };
    (@backend docker_runsc) => { $crate::common::Backend::Docker("runsc") };
}
