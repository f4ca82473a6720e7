//! Builds `vana-init` (init/main.rs, std only) into a static executable with the same `rustc`
//! that builds this crate, so that the library can carry it (`include_bytes!`) and needs nothing
//! installed beside it — in a Rust host and in the Python wheel alike.
//!
//! Static linking needs the C library's static archive (`libc.a`, Debian's `libc6-dev`, which
//! any machine that links Rust has). Without it the build falls back to a dynamic executable,
//! which works wherever the sandbox shows the host's `/usr` (the native backend does), and says
//! so.

// A build script reports failure by panicking: there is no caller to return an error to.
#![allow(clippy::expect_used)]

use std::path::PathBuf;

use sha2::Digest;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=init/main.rs");
    println!("cargo:rerun-if-changed=init/serve.rs");
    println!("cargo:rerun-if-changed=src/protocol.rs");
    println!("cargo:rerun-if-changed=src/serve.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let exe = out.join("vana-init");
    let build = |static_link: bool| {
        let mut cmd = Command::new(&rustc);
        cmd.args([
            "--edition",
            "2021",
            "--crate-name",
            "vana_init",
            "--crate-type",
            "bin",
        ])
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "codegen-units=1", "--target", &target])
        .arg("-o")
        .arg(&exe)
        .arg("init/main.rs")
        // The host crate's own flags (coverage, sanitizers) do not apply to init.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
        if static_link {
            cmd.args(["-C", "target-feature=+crt-static"]);
        }
        cmd.output()
    };
    let stat = build(true).expect("running rustc for vana-init");
    if !stat.status.success() {
        println!(
            "cargo:warning=vana-init could not be linked statically (is libc6-dev installed?); \
             building it dynamically: {}",
            String::from_utf8_lossy(&stat.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
        let dynamic = build(false).expect("running rustc for vana-init");
        if !dynamic.status.success() {
            panic!(
                "building vana-init failed:\n{}",
                String::from_utf8_lossy(&dynamic.stderr)
            );
        }
    }
    // Its SHA-256, which names the copy a root host keeps of it (see the native backend).
    let bytes = std::fs::read(&exe).expect("reading the built vana-init");
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(out.join("vana-init.sha256"), digest).expect("writing the digest");
}
