//! The Python guard's bytecode, compiled once per interpreter on the host.
//!
//! Compiling the guard's source costs a Python run ~3 ms; its bytecode loads in a tenth of that.
//! The host compiles our own source with the toolchain's interpreter (trusted code, trusted
//! interpreter, no request involved) and keeps the result in a cache directory only this user can
//! write, so later processes (every CLI run is one) read it instead of compiling again. In the
//! sandbox, the loader uses the bytecode only when its magic number is the running interpreter's
//! (a Docker image's Python may differ from the host's) and falls back to the source otherwise:
//! the guard always runs, the bytecode only makes it cheaper.
//!
//! The cache is shared between runs, so it is a trust boundary: an entry is keyed on the guard's
//! source and the interpreter binary's identity, carries its key, and is used only when the file
//! and its directory belong to this user and nobody else can write them.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vana_sandbox_core::FileEntry;

/// The guard's files in the workspace: the loader, the guard's source and bytecode, the events
/// it writes, and the run's virtual environment (see [`files`]).
const LOADER_FILE: &str = ".vana/guard.py";
const SOURCE_FILE: &str = ".vana/guard_main.py";
const BYTECODE_FILE: &str = ".vana/guard_main.py.bin";
pub(crate) const EVENTS_FILE: &str = ".vana/events.jsonl";
const VENV: &str = ".vana/venv";
/// The minor versions of Python 3 whose `site-packages` get the loader's line when the
/// interpreter's own version is not known (no bytecode could be made).
const MINOR_VERSIONS: std::ops::RangeInclusive<u32> = 8..=14;

/// The name the interpreter at `python` (a path inside the sandbox) is started under: its name
/// in the run's virtual environment, where `pyvenv.cfg` is found beside `bin`.
pub(crate) fn arg0(workdir: &str, python: &str) -> String {
    let name = python.rsplit('/').next().unwrap_or(python);
    format!("{workdir}/{VENV}/bin/{name}")
}

/// Everything the guard needs in the workspace. The program runs as the interpreter's own main
/// script, which Python compiles without building the `ast` module's types, as `compile()` does
/// (~1.5 ms of every run when a loader compiled the program); the interpreter, started as
/// [`arg0`], reads the run's `pyvenv.cfg` (its home is the interpreter's directory; the system's
/// packages stay visible) and `site` executes the `.pth` line, which runs the loader. The guard
/// then gives the program the interpreter itself (`sys.executable`, `sys.prefix`, `sys.path`).
/// The line goes into Debian's `lib/python3/dist-packages` and the `lib/python3.X/site-packages`
/// of the version `compiled` names (of every version from 3.8 on without it); the first one
/// `site` reads runs the loader, each takes the environment's directories off `sys.path`.
pub(crate) fn files(workdir: &str, python: &str, compiled: Option<&Compiled>) -> Vec<FileEntry> {
    let file = |path: String, content: Vec<u8>| FileEntry {
        path,
        content,
        executable: false,
    };
    let home = python.rsplit_once('/').map_or("/usr/bin", |(dir, _)| dir);
    let loader = format!("{workdir}/{LOADER_FILE}");
    let venv = format!("{workdir}/{VENV}/");
    // Run the loader unless a line in another of the environment's directories did (the guard
    // sets `sys.prefix` back), then take the environment's directories off the path.
    let line = format!(
        "import sys; sys.prefix == sys.base_prefix or exec(open({loader:?}, \"rb\").read(), \
         {{\"__file__\": {loader:?}, \"__builtins__\": __builtins__}}); \
         sys.path[:] = [p for p in sys.path if not p.startswith({venv:?})]\n"
    );
    let versions: Vec<String> = match compiled {
        Some(c) => vec![c.version.clone()],
        None => MINOR_VERSIONS.map(|m| format!("3.{m}")).collect(),
    };
    let mut files = vec![
        file(LOADER_FILE.into(), LOADER.as_bytes().to_vec()),
        file(SOURCE_FILE.into(), SOURCE.as_bytes().to_vec()),
        file(EVENTS_FILE.into(), Vec::new()),
        file(
            format!("{VENV}/pyvenv.cfg"),
            format!("home = {home}\ninclude-system-site-packages = true\n").into_bytes(),
        ),
        file(
            format!("{VENV}/lib/python3/dist-packages/vana_guard.pth"),
            line.clone().into_bytes(),
        ),
    ];
    files.extend(versions.iter().map(|v| {
        file(
            format!("{VENV}/lib/python{v}/site-packages/vana_guard.pth"),
            line.clone().into_bytes(),
        )
    }));
    if let Some(c) = compiled {
        files.push(file(BYTECODE_FILE.into(), c.bytecode.clone()));
    }
    files
}

/// The guard's source: installs the audit hook and hands the program the interpreter itself.
pub(crate) const SOURCE: &str = include_str!("guards/python_guard.py");
/// The loader `site` runs before the program: the guard from bytecode or source.
pub(crate) const LOADER: &str = include_str!("guards/python_loader.py");

/// Where root keeps the compiled guard.
const ROOT_DIR: &str = "/var/cache/vana-sandbox/python-guard";
/// What a cache entry starts with, before its key and the payload.
const ENTRY_TAG: &[u8; 8] = b"VANAPYG2";
/// Largest payload accepted (the guard compiles to ~4 KiB).
const MAX_PAYLOAD: usize = 256 * 1024;
/// How long the one-off compilation may take.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(20);
/// The host-side compiler: the guard's source on stdin; on stdout the interpreter's version
/// (`3.11`) on a line, then its magic number and the marshalled code object (what the loader
/// checks and loads).
const COMPILE: &str = "import marshal, sys\n\
from importlib.util import MAGIC_NUMBER\n\
code = compile(sys.stdin.buffer.read(), '/workspace/.vana/guard_main.py', 'exec', dont_inherit=True)\n\
sys.stdout.buffer.write(b'%d.%d\\n' % sys.version_info[:2] + MAGIC_NUMBER + marshal.dumps(code))\n";

/// The guard compiled for one interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compiled {
    /// The interpreter's `major.minor` (`3.11`): names its `site-packages` directory.
    pub version: String,
    /// Magic number, then the marshalled code object.
    pub bytecode: Vec<u8>,
}

impl Compiled {
    /// Reads what [`COMPILE`] printed: a version of digits and one dot, a line break, then at
    /// least a magic number.
    fn parse(payload: &[u8]) -> Option<Self> {
        let end = payload.iter().position(|b| *b == b'\n')?;
        let (version, bytecode) = (&payload[..end], &payload[end + 1..]);
        let plausible = (3..=8).contains(&version.len())
            && version.iter().filter(|b| **b == b'.').count() == 1
            && version.iter().all(|b| b.is_ascii_digit() || *b == b'.')
            && bytecode.len() > 4;
        plausible.then(|| Self {
            version: String::from_utf8_lossy(version).into_owned(),
            bytecode: bytecode.to_vec(),
        })
    }
}

/// The guard for the interpreter at `python`: from the cache when a valid entry is there, else
/// compiled now and stored. `None` when it cannot be had; the loader then compiles the source in
/// the sandbox.
pub(crate) fn compiled(python: &Path) -> Option<Compiled> {
    let key = key(python)?;
    let dir = cache_dir();
    if let Some(dir) = &dir {
        if let Some(found) = read_entry(dir, &key).as_deref().and_then(Compiled::parse) {
            return Some(found);
        }
    }
    let payload = compile(python)?;
    let compiled = Compiled::parse(&payload)?;
    if let Some(dir) = &dir {
        if let Err(e) = write_entry(dir, &key, &payload) {
            tracing::debug!("python guard bytecode not cached in {}: {e}", dir.display());
        }
    }
    Some(compiled)
}

/// Everything the bytecode depends on: the guard's source and the interpreter binary (its
/// resolved path, device, inode, size and times: an upgrade changes them).
fn key(python: &Path) -> Option<[u8; 32]> {
    let real = std::fs::canonicalize(python).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    let mut h = Sha256::new();
    h.update(ENTRY_TAG);
    h.update((SOURCE.len() as u64).to_le_bytes());
    h.update(SOURCE.as_bytes());
    h.update(real.as_os_str().as_encoded_bytes());
    for n in [
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
        m.ctime() as u64,
        m.ctime_nsec() as u64,
    ] {
        h.update(n.to_le_bytes());
    }
    Some(h.finalize().into())
}

/// The cache directory for this user: root's under /var/cache; anyone else's under
/// `$XDG_CACHE_HOME` or `~/.cache`. `None` when there is none to use.
fn cache_dir() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Some(ROOT_DIR.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| Path::new(&h).join(".cache"))
        })?;
    Some(base.join("vana-sandbox").join("python-guard"))
}

fn entry_path(dir: &Path, key: &[u8; 32]) -> PathBuf {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.bin"))
}

/// Owned by this user and writable by nobody else.
fn private(m: &std::fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    m.uid() == unsafe { libc::geteuid() } && m.mode() & 0o022 == 0
}

/// The payload of the entry under `key`, when the directory and the file are this user's alone,
/// the file is a regular one of plausible size and it names `key`.
fn read_entry(dir: &Path, key: &[u8; 32]) -> Option<Vec<u8>> {
    let dm = std::fs::symlink_metadata(dir).ok()?;
    if !dm.is_dir() || !private(&dm) {
        return None;
    }
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(entry_path(dir, key))
        .ok()?;
    let fm = f.metadata().ok()?;
    let header = ENTRY_TAG.len() + key.len();
    if !fm.is_file() || !private(&fm) || fm.len() as usize > header + MAX_PAYLOAD {
        return None;
    }
    let mut data = Vec::with_capacity(fm.len() as usize);
    f.read_to_end(&mut data).ok()?;
    if data.len() < header + 4
        || data[..ENTRY_TAG.len()] != *ENTRY_TAG
        || data[ENTRY_TAG.len()..header] != *key
    {
        return None;
    }
    Some(data.split_off(header))
}

/// Stores an entry: the directory made private if new, the file written under a unique name
/// and renamed into place (concurrent writers each publish a whole entry).
fn write_entry(dir: &Path, key: &[u8; 32], payload: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let dm = std::fs::symlink_metadata(dir)?;
    if !dm.is_dir() || !private(&dm) {
        return Err(std::io::Error::other(
            "the cache directory is not this user's alone",
        ));
    }
    let target = entry_path(dir, key);
    let tmp = target.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let written = f
        .write_all(ENTRY_TAG)
        .and_then(|_| f.write_all(key))
        .and_then(|_| f.write_all(payload))
        .and_then(|_| std::fs::rename(&tmp, &target));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Compiles the guard with the interpreter at `python` (isolated, empty environment, no
/// bytecode written), within [`COMPILE_TIMEOUT`].
fn compile(python: &Path) -> Option<Vec<u8>> {
    let mut child = Command::new(python)
        .args(["-I", "-B", "-c", COMPILE])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| tracing::debug!("python guard: cannot compile: {e}"))
        .ok()?;
    // The source is 3 KiB: the pipe takes it whole, then closes.
    let fed = child
        .stdin
        .take()
        .map(|mut i| i.write_all(SOURCE.as_bytes()).is_ok())
        .unwrap_or(false);
    // Read beside the wait, so that the deadline holds even if the interpreter never closes
    // its output.
    let reader = child.stdout.take().map(|mut o| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            o.read_to_end(&mut out).map(|_| out)
        })
    });
    let deadline = Instant::now() + COMPILE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.and_then(|r| r.join().ok()?.ok());
    let (read, out) = (out.is_some(), out.unwrap_or_default());
    let ok = fed && read && status.is_some_and(|s| s.success());
    (ok && out.len() > 4 && out.len() <= MAX_PAYLOAD).then_some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PYTHON: &str = "/usr/bin/python3";

    #[test]
    fn a_cached_entry_is_used_only_when_it_is_this_users_and_names_its_key() {
        let dir = std::env::temp_dir().join(format!("vana-pyguard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = [7u8; 32];
        write_entry(&dir, &key, b"\x01\x02\x03\x04code").expect("write");
        assert_eq!(
            read_entry(&dir, &key).as_deref(),
            Some(&b"\x01\x02\x03\x04code"[..])
        );
        // Another key's entry renamed into this key's place is refused.
        let other = [8u8; 32];
        write_entry(&dir, &other, b"\x01\x02\x03\x04evil").expect("write");
        std::fs::copy(entry_path(&dir, &other), entry_path(&dir, &key)).expect("copy");
        assert_eq!(read_entry(&dir, &key), None);
        // A file others may write is refused, and so is a directory others may write.
        write_entry(&dir, &key, b"\x01\x02\x03\x04code").expect("write");
        let perms = |p: &Path, mode| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        perms(&entry_path(&dir, &key), 0o666);
        assert_eq!(read_entry(&dir, &key), None);
        perms(&entry_path(&dir, &key), 0o644);
        assert!(read_entry(&dir, &key).is_some());
        perms(&dir, 0o777);
        assert_eq!(read_entry(&dir, &key), None);
        perms(&dir, 0o700);
        // A symbolic link in the entry's place is not followed.
        std::fs::remove_file(entry_path(&dir, &key)).expect("rm");
        std::os::unix::fs::symlink(entry_path(&dir, &other), entry_path(&dir, &key))
            .expect("symlink");
        assert_eq!(read_entry(&dir, &key), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_key_follows_the_interpreter() {
        let py = key(Path::new(PYTHON)).expect("python3 is installed");
        assert_eq!(Some(py), key(Path::new(PYTHON)));
        assert_ne!(Some(py), key(Path::new("/usr/bin/bash")));
        assert_eq!(key(Path::new("/nonexistent/python3")), None);
    }

    /// The guard runs before the program, from the bytecode the host makes or from its source
    /// (when there is none, or its magic is another interpreter's), and hands the program the
    /// interpreter itself; a guard that cannot start keeps the program from running.
    #[test]
    fn the_guard_runs_before_the_program_from_bytecode_or_source() {
        use std::os::unix::process::CommandExt;
        let compiled = Compiled::parse(&compile(Path::new(PYTHON)).expect("compiles"))
            .expect("version and bytecode");
        assert!(compiled.version.starts_with("3."), "{}", compiled.version);
        let dir = std::env::temp_dir().join(format!("vana-pyguard-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let workdir = dir.to_str().expect("utf-8").to_string();
        std::fs::write(
            dir.join("main.py"),
            "import sys\nprint(__name__, sys.argv[1:], sys.path[0] == sys.argv[0].rpartition('/')[0], \
             sys.executable, sys.prefix == sys.base_prefix, [p for p in sys.path if '.vana' in p])\n",
        )
        .expect("main");
        let run = |compiled: Option<&Compiled>, source: &str| {
            let _ = std::fs::remove_dir_all(dir.join(".vana"));
            for f in files(&workdir, PYTHON, compiled) {
                let path = dir.join(&f.path);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                let content = if f.path == SOURCE_FILE {
                    source.as_bytes()
                } else {
                    &f.content
                };
                std::fs::write(path, content).expect("write");
            }
            Command::new(PYTHON)
                .arg0(arg0(&workdir, PYTHON))
                .args(["-I", "-B", "-u"])
                .arg(dir.join("main.py"))
                .arg("x")
                .output()
                .expect("python runs")
        };
        let expected = format!("__main__ ['x'] True {PYTHON} True []\n");
        let foreign = Compiled {
            bytecode: compiled
                .bytecode
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 0 { b ^ 0xff } else { *b })
                .collect(),
            ..compiled.clone()
        };
        for (with, name) in [
            (Some(&compiled), "bytecode"),
            (None, "source"),
            (Some(&foreign), "foreign magic"),
        ] {
            let out = run(with, SOURCE);
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{name}");
        }
        // A guard that cannot start (here: its source raises) ends the interpreter with 70
        // before the program runs.
        let out = run(None, "raise SystemExit(3)\n");
        assert_eq!(out.status.code(), Some(70));
        assert!(out.stdout.is_empty(), "the program ran: {:?}", out.stdout);
        assert!(String::from_utf8_lossy(&out.stderr).contains("the Python guard did not start"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
