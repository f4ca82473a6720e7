//! Core of vana-sandbox: the JSON execution contract, the roles every backend, policy, monitor and
//! language plays, and the [`Engine`](engine::Engine) that ties them together.
//!
//! This crate depends on no other crate of the workspace. Backends (`vana-sandbox-native`, …),
//! policies (`vana-sandbox-policy`) and languages (`vana-sandbox-lang`) implement its traits; the
//! facade crate `vana-sandbox` wires them up.
//!
//! One request's way: [`request`] (wire) → [`validate`] (typed, checked once) → [`policy`] (a
//! [`SandboxSpec`]) → [`engine`] admission → pipeline (stage, compile, run, collect) over an
//! [`Executor`]'s [`Instance`] → a [`ProcessOutcome`] per step → [`result`] (wire).

pub mod capabilities;
pub mod capture;
pub mod chunk;
pub mod compile_cache;
pub mod egress;
pub mod engine;
pub mod error;
pub mod events;
pub mod executor;
pub mod fake;
pub mod files;
pub mod host;
pub mod language;
pub mod limits;
pub mod monitor;
pub mod network;
pub mod outcome;
pub mod outputs;
pub mod packages;
pub mod policy;
pub mod reaper;
pub mod request;
pub mod result;
pub mod session;
pub mod spec;
pub mod validate;

pub use capabilities::{BackendKind, Capabilities, Layer, LayerName, Runtime};
pub use capture::OutputCapture;
pub use chunk::{OutputChunk, OutputChunks, Utf8Chunker};
pub use compile_cache::{CacheScope, CompileCache, DirCompileCache};
pub use egress::{Egress, EgressProxy, ProxyConnection, ProxyEndpoint, ProxyStream};
pub use engine::{Engine, EngineBuilder};
pub use error::{BackendError, BoxError, EngineError};
pub use events::{Phase, Reporter, SecurityEvent, SecurityEventKind};
pub use executor::{Executor, Instance};
pub use files::{FileInfo, FileKind, Files, SharedFiles};
pub use language::{
    Command, CompileStep, Kernel, KernelRole, Language, LanguageError, LanguageInfo, Languages,
    StepContext, Toolchain,
};
pub use limits::{AskedLimits, Bytes, Cores, LimitKind, Limits};
pub use monitor::{Event, Load, Monitor, SessionEnd, TracingMonitor};
pub use outcome::{Exit, ProcessOutcome, Stop, Usage};
pub use packages::{
    Ecosystem, InstalledPackage, InstallerStatus, Interpreter, PackageCacheStatus, PackageError,
    PackageList, PackagePlan, PackageProvider, PackageRequest, PackageRules, PackageSpec,
    PackageSupport, PackageTarget, PackagesReport, PreparedPackages, SessionPackages,
};
pub use policy::{Policy, PolicyContext, Rejection, SessionPolicy};
pub use request::{ExecutionRequest, FileSpec, LimitsRequest, NetworkRequest};
pub use result::{
    CellException, CompileReport, DisplayData, ExecutionResult, OutputFile, ResourceUsage,
    SessionReport, Status, Truncated,
};
pub use session::{Session, SessionFiles, SessionOptions};
pub use spec::{
    EgressPolicy, FileEntry, Guards, InstanceSpec, Mount, MountKind, NetworkMode, OutputMode,
    OutputSink, ProcessIo, ProcessSpec, SandboxSpec, Stdin, StopSignal, StreamKind,
};
pub use validate::ValidRequest;
