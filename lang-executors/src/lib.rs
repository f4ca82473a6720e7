//! Language executors: how a program in each language is placed in the workspace, compiled
//! (Go, Rust) and run.
//!
//! What is data about a language (name, aliases, file name, detection hints) is a
//! [`LanguageInfo`](vana_sandbox_core::LanguageInfo) constant in [`info`]; toolchains are the
//! host's own, looked up under `/usr` (which every backend exposes read-only) through the core's
//! [`Toolchain`](vana_sandbox_core::Toolchain). A language whose toolchain is missing stays
//! registered and reports a clear error when used.

mod compiled;
pub mod info;
mod interpreted;
mod python_guard;

use std::sync::Arc;

use vana_sandbox_core::Languages;

pub use compiled::{Go, Rust, GO_SEED_DIR};
pub use interpreted::{Bash, JavaScript, Python};

/// Every language this crate provides, with toolchains looked up on this host.
pub fn installed() -> Languages {
    Languages::new()
        .with(Arc::new(Python::detect()))
        .with(Arc::new(JavaScript::detect()))
        .with(Arc::new(Bash::detect()))
        .with(Arc::new(Go::detect()))
        .with(Arc::new(Rust::detect()))
}
