//! The provider's tests. Most use a fake pip (a shell script that writes one module per
//! requirement and pip's installation report) and need no network; those named `index_*` go to
//! the real package indexes (PyPI, npm), which these machines reach.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use vana_sandbox_core::{
    Ecosystem, Interpreter, PackageError, PackageList, PackageProvider, PackageRequest,
    PackageTarget,
};

use super::*;

const FAKE_PIP: &str = r#"
# fake pip: $1 = bytes of data per package, $2 = version of every package; then pip's arguments
bytes=$1; version=$2; shift 2
if [ "$1" = "--version" ]; then echo "pip 0.0 from /fake (python 3.11)"; exit 0; fi
target=; report=; reqs=
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=$2; shift 2;;
    --report) report=$2; shift 2;;
    --index-url|--timeout|--retries|--cert|--python-version|--implementation|--abi|--platform|--progress-bar) shift 2;;
    -*|install) shift;;
    *) reqs="$reqs $1"; shift;;
  esac
done
mkdir -p "$target"
printf '{"install": [' > "$report"
sep=
for r in $reqs; do
  name=${r%%[=<>!~]*}
  mkdir -p "$target/$name"
  echo "VALUE = '$name $version'" > "$target/$name/__init__.py"
  head -c "$bytes" /dev/zero > "$target/$name/data.bin"
  printf '%s{"metadata":{"name":"%s","version":"%s"},"download_info":{"url":"https://files.example/%s.whl","archive_info":{"hashes":{"sha256":"%s"}}},"is_direct":false}' "$sep" "$name" "$version" "$name" "$version" >> "$report"
  sep=,
done
echo ']}' >> "$report"
"#;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("vana-pkg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("fake-pip.sh"), FAKE_PIP).unwrap();
        Self(d)
    }

    fn provider(&self, bytes: u64, version: &str, max_bytes: u64) -> DirPackageProvider {
        let mut c = ProviderConfig::in_dir(self.0.join("cache"));
        c.max_bytes = max_bytes;
        c.pip = vec![
            "/bin/sh".into(),
            self.0.join("fake-pip.sh").display().to_string(),
            bytes.to_string(),
            version.into(),
        ];
        DirPackageProvider::new(c).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn target(version: &str) -> PackageTarget {
    PackageTarget {
        ecosystem: Ecosystem::Pypi,
        interpreter: Interpreter {
            implementation: "cp".into(),
            version: version.into(),
            abi: "cp311".into(),
            platforms: vec!["manylinux_2_36_x86_64".into(), "linux_x86_64".into()],
        },
        environment: "test".into(),
    }
}

fn list(eco: Ecosystem, specs: &[&str]) -> PackageList {
    let texts: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
    PackageList::parse(eco, &texts).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn prepare(
    p: &DirPackageProvider,
    specs: &[&str],
    t: &PackageTarget,
) -> Result<PreparedPackages, PackageError> {
    let l = list(t.ecosystem, specs);
    rt().block_on(p.prepare(&PackageRequest {
        language: "python",
        list: &l,
        target: t,
        index: "https://pypi.org/simple",
    }))
}

#[test]
fn request_keys_cover_what_changes_the_set() {
    let t = target("3.11.2");
    let l = list(Ecosystem::Pypi, &["NumPy>=1", "requests"]);
    let key = |l: &PackageList, t: &PackageTarget, index: &str| {
        store::request_key(&PackageRequest {
            language: "python",
            list: l,
            target: t,
            index,
        })
    };
    let base = key(&l, &t, "https://pypi.org/simple");
    // Spelling and order do not change it.
    let same = list(Ecosystem::Pypi, &["requests", "numpy >= 1"]);
    assert_eq!(key(&same, &t, "https://pypi.org/simple"), base);
    // Everything that changes what is installed does.
    assert_ne!(key(&l, &t, "https://mirror.example/simple"), base);
    assert_ne!(key(&l, &target("3.12.1"), "https://pypi.org/simple"), base);
    let mut abi = t.clone();
    abi.interpreter.abi = "cp312".into();
    assert_ne!(key(&l, &abi, "https://pypi.org/simple"), base);
    let mut plat = t.clone();
    plat.interpreter.platforms.pop();
    assert_ne!(key(&l, &plat, "https://pypi.org/simple"), base);
    let pinned = list(Ecosystem::Pypi, &["numpy==2.0", "requests"]);
    assert_ne!(key(&pinned, &t, "https://pypi.org/simple"), base);
    let npm = list(Ecosystem::Npm, &["requests"]);
    assert_ne!(key(&npm, &t, "https://pypi.org/simple"), base);
    // Which environment answered the probe does not (the same interpreter fits the same files).
    let mut env = t.clone();
    env.environment = "docker:other".into();
    assert_eq!(key(&l, &env, "https://pypi.org/simple"), base);
}

#[test]
fn a_second_request_is_served_from_the_cache_with_no_installer() {
    let s = Scratch::new("hit");
    let p = s.provider(100, "1.0", 1 << 30);
    let t = target("3.11.2");
    let first = prepare(&p, &["alpha", "beta==1.0"], &t).unwrap();
    assert!(!first.report.cached);
    assert_eq!(first.report.installed.len(), 2);
    assert_eq!(first.sandbox_dir, "/opt/vana-packages/python");
    assert_eq!(
        first.env,
        [(
            "PYTHONPATH".to_string(),
            "/opt/vana-packages/python".to_string()
        )]
    );
    assert!(first.host_dir.join("alpha/__init__.py").is_file());
    drop(first);
    let again = prepare(&p, &["Beta == 1.0", "ALPHA"], &t).unwrap();
    assert!(again.report.cached);
    assert_eq!(p.installs(), 1);
    // Another provider on the same cache, whose installer cannot run: still served.
    let mut c = p.config().clone();
    c.pip = vec!["/bin/false".into()];
    let offline = DirPackageProvider::new(c).unwrap();
    let r = prepare(&offline, &["alpha", "beta==1.0"], &t).unwrap();
    assert!(r.report.cached);
    assert_eq!(offline.installs(), 0);
    // Another interpreter is another set: a miss, which needs the installer.
    let other = prepare(&offline, &["alpha", "beta==1.0"], &target("3.12.0"));
    assert!(
        matches!(other, Err(PackageError::Installer { .. })),
        "{other:?}"
    );
    let status = p.status();
    assert_eq!(status.entries, 1);
    let modules = "VALUE = 'alpha 1.0'\n".len() + "VALUE = 'beta 1.0'\n".len();
    assert_eq!(status.bytes, 200 + modules as u64);
}

#[test]
fn requests_that_resolve_alike_share_one_set() {
    let s = Scratch::new("share");
    let p = s.provider(10, "1.0", 1 << 30);
    let t = target("3.11.2");
    let a = prepare(&p, &["alpha"], &t).unwrap();
    let b = prepare(&p, &["alpha==1.0"], &t).unwrap();
    assert_eq!(a.host_dir, b.host_dir);
    assert_eq!(p.installs(), 2);
    assert_eq!(p.status().entries, 1);
}

#[test]
fn a_tampered_set_is_refused_and_installed_again() {
    let s = Scratch::new("tamper");
    let p = s.provider(10, "1.0", 1 << 30);
    let t = target("3.11.2");
    let first = prepare(&p, &["alpha"], &t).unwrap();
    let file = first.host_dir.join("alpha/__init__.py");
    drop(first);
    std::fs::write(&file, "import os; os.system('evil')\n").unwrap();
    let again = prepare(&p, &["alpha"], &t).unwrap();
    assert!(!again.report.cached, "a tampered set was used");
    assert_eq!(p.installs(), 2);
    assert_eq!(
        std::fs::read_to_string(again.host_dir.join("alpha/__init__.py")).unwrap(),
        "VALUE = 'alpha 1.0'\n"
    );
    drop(again);
    // An added file, and a manifest rewritten to another set, are refused too.
    std::fs::write(file.with_file_name("extra.py"), "x = 1\n").unwrap();
    assert!(!prepare(&p, &["alpha"], &t).unwrap().report.cached);
    let sets = s.0.join("cache/sets");
    let set = std::fs::read_dir(&sets)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let manifest = set.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"1.0\"", "\"6.6.6\"")).unwrap();
    let r = prepare(&p, &["alpha"], &t).unwrap();
    assert!(!r.report.cached);
    assert_eq!(r.report.installed[0].version, "1.0");
    assert_eq!(p.installs(), 4);
}

#[test]
fn eviction_keeps_the_cache_bounded_and_spares_sets_in_use() {
    let s = Scratch::new("evict");
    // Each set is ~1000 bytes; the cache holds two.
    let p = s.provider(980, "1.0", 2100);
    let t = target("3.11.2");
    drop(prepare(&p, &["alpha"], &t).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    let held = prepare(&p, &["beta"], &t).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    drop(prepare(&p, &["alpha"], &t).unwrap()); // alpha is now the most recent
    std::thread::sleep(Duration::from_millis(20));
    let gamma = prepare(&p, &["gamma"], &t).unwrap();
    // beta is the least recently used but in use: alpha goes instead.
    assert!(held.host_dir.join("beta/__init__.py").is_file());
    assert!(p.status().bytes <= 2100, "{:?}", p.status());
    assert_eq!(p.installs(), 3);
    drop((held, gamma));
    drop(prepare(&p, &["delta"], &t).unwrap());
    assert!(p.status().bytes <= 2100);
    assert!(prepare(&p, &["beta"], &t).is_ok());
    assert_eq!(p.installs(), 5, "beta was evicted once free");
    // A set larger than the whole cache is refused, not cached.
    let big = s.provider(5000, "1.0", 2100);
    let e = prepare(&big, &["huge"], &t).err().map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("more than the whole package cache")));
}

#[test]
fn a_session_set_grows_and_refuses_another_version() {
    let s = Scratch::new("session");
    let p = s.provider(10, "1.0", 1 << 30);
    let t = target("3.11.2");
    let set = p.session("s1").unwrap();
    let mounts = set.mounts();
    assert_eq!(mounts.len(), 2);
    assert!(mounts
        .iter()
        .all(|m| m.kind == vana_sandbox_core::MountKind::Live));
    let live = PathBuf::from(&mounts[0].host);
    assert_eq!(mounts[0].sandbox, "/opt/vana-packages/python");
    set.add(&prepare(&p, &["alpha"], &t).unwrap()).unwrap();
    assert!(live.join("alpha/__init__.py").is_file());
    // The union with something new: only the new package is added.
    set.add(&prepare(&p, &["alpha", "beta"], &t).unwrap())
        .unwrap();
    assert!(live.join("beta/__init__.py").is_file());
    // alpha at another version is refused, and nothing of the set is added.
    let v2 = s.provider(10, "2.0", 1 << 30);
    let e = set
        .add(&prepare(&v2, &["alpha", "gamma"], &t).unwrap())
        .err();
    assert!(
        matches!(&e, Some(PackageError::Refused(m)) if m.contains("`alpha` 1.0 is already in this session")),
        "{e:?}"
    );
    assert!(!live.join("gamma").exists());
    let root = live.parent().unwrap().to_path_buf();
    drop(set);
    assert!(!root.exists(), "the session's set outlived it");
}

fn real(name: &str) -> (Scratch, DirPackageProvider) {
    let s = Scratch::new(name);
    let p = DirPackageProvider::new(ProviderConfig::in_dir(s.0.join("cache"))).unwrap();
    (s, p)
}

fn host_python() -> PackageTarget {
    // The host's own interpreter, as the native backend's probe reports it.
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import platform; print(platform.python_version())"])
        .output()
        .unwrap();
    target(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn index_a_source_only_package_is_refused_by_name() {
    let (_s, p) = real("sdist");
    // docopt has only ever been published as a source distribution.
    let e = prepare(&p, &["docopt"], &host_python()).err();
    let Some(PackageError::Refused(m)) = &e else {
        panic!("not refused: {e:?}")
    };
    assert!(m.contains("`docopt` has no wheel"), "{m}");
    assert!(m.contains("wheels only"), "{m}");
    assert_eq!(p.status().entries, 0);
    let e = prepare(&p, &["vana-sandbox-no-such-package-4e2a"], &host_python()).err();
    assert!(
        matches!(&e, Some(PackageError::Refused(m)) if m.contains("is not on the index")),
        "{e:?}"
    );
}

#[test]
fn index_pip_installs_wheels_for_the_target_without_compiling() {
    let (_s, p) = real("pip");
    let r = prepare(&p, &["six==1.16.0"], &host_python()).unwrap();
    assert_eq!(r.report.installed.len(), 1);
    assert_eq!(r.report.installed[0].version, "1.16.0");
    assert!(r.host_dir.join("six.py").is_file());
    // --no-compile: no byte code, nothing executable but what the wheel says.
    let pycache = std::fs::read_dir(&r.host_dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name() == "__pycache__");
    assert!(!pycache);
}

#[test]
fn index_npm_installs_without_scripts() {
    let (_s, p) = real("npm");
    let t = PackageTarget {
        ecosystem: Ecosystem::Npm,
        interpreter: Interpreter {
            implementation: "node".into(),
            version: "20.0.0".into(),
            abi: "115".into(),
            platforms: vec!["linux-x64".into()],
        },
        environment: "test".into(),
    };
    let l = list(Ecosystem::Npm, &["is-number@^7"]);
    let r = rt()
        .block_on(p.prepare(&PackageRequest {
            language: "javascript",
            list: &l,
            target: &t,
            index: "https://registry.npmjs.org/",
        }))
        .unwrap();
    assert_eq!(r.report.installed[0].name, "is-number");
    assert_eq!(r.sandbox_dir, "/node_modules");
    assert!(r.host_dir.join("is-number/package.json").is_file());
    assert!(!r.host_dir.join(".package-lock.json").exists());
    let e = rt().block_on(p.prepare(&PackageRequest {
        language: "javascript",
        list: &list(Ecosystem::Npm, &["vana-sandbox-no-such-package-4e2a"]),
        target: &t,
        index: "https://registry.npmjs.org/",
    }));
    assert!(
        matches!(&e, Err(PackageError::Refused(m)) if m.contains("not in the registry")),
        "{e:?}"
    );
}
