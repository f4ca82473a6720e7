//! Core of vana-sandbox: the JSON execution contract, the roles every backend, policy, monitor and
//! language plays, and the [`Engine`](engine::Engine) that ties them together.
//!
//! This crate depends on no other crate of the workspace. Backends (`vana-sandbox-native`, …),
//! policies (`vana-sandbox-policy`) and languages (`vana-sandbox-lang`) implement its traits; the
//! facade crate `vana-sandbox` wires them up.

pub mod capture;
pub mod compile_cache;
pub mod engine;
pub mod error;
pub mod executor;
pub mod language;
pub mod monitor;
pub mod policy;
pub mod request;
pub mod result;
pub mod spec;
pub mod status;
pub mod units;
pub mod validate;

pub use capture::OutputCapture;
pub use engine::{Engine, EngineBuilder};
pub use error::{BackendError, EngineError};
pub use executor::{Capabilities, Executor, Instance, Layer};
pub use language::{Command, Language, LanguageError, Languages, StepContext};
pub use monitor::{Event, Monitor, Phase, TracingMonitor};
pub use policy::{Policy, PolicyContext, Rejection};
pub use request::{ExecutionRequest, FileSpec, LimitsRequest, NetworkRequest};
pub use result::{CompileReport, ExecutionResult, ResourceUsage, SecurityEvent, Status, Truncated};
pub use spec::{
    FileEntry, Guards, InstanceSpec, Mount, NetworkMode, OutputSink, ProcessIo, ProcessLimits,
    ProcessOutcome, ProcessSpec, SandboxSpec, StreamKind,
};
