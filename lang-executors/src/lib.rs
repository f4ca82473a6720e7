//! Language executors: how a program in each language is placed in the workspace, compiled
//! (Go, Rust) and run.
//!
//! Toolchains are the host's own, looked up under `/usr` (which every backend exposes read-only).
//! A language whose toolchain is missing stays registered and reports a clear error when used.

mod compiled;
mod interpreted;
mod toolchain;

use std::sync::Arc;

use vana_sandbox_core::Languages;

pub use compiled::{Go, Rust};
pub use interpreted::{Bash, JavaScript, Python};
pub use toolchain::find_program;

/// Every language this crate provides, with toolchains looked up on this host.
pub fn installed() -> Languages {
    Languages::new()
        .with(Arc::new(Python::detect()))
        .with(Arc::new(JavaScript::detect()))
        .with(Arc::new(Bash::detect()))
        .with(Arc::new(Go::detect()))
        .with(Arc::new(Rust::detect()))
}
