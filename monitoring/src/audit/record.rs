//! What an audit line says: one typed record per fact. A line is the record plus the chain's
//! envelope (`seq`, `ts`, `prev` first, `hash` last), see [`chain`](super::chain).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vana_sandbox_core::network::Decision;
use vana_sandbox_core::spec::NetworkMode;
use vana_sandbox_core::{
    BackendKind, Event, ExecutionRequest, LimitKind, Limits, Phase, Reporter, Runtime,
    SecurityEventKind, SessionEnd, Status, Truncated,
};

use crate::hooks::{ConfigKind, ConfigLoaded};
use crate::threat::{Finding, Severity};
use crate::util::hex;

/// Version of the line format, written in every `log_start`.
pub const FORMAT_VERSION: u32 = 1;

/// How lines are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MacKind {
    /// Plain SHA-256: detects changes, but anyone can rebuild a valid chain.
    Sha256,
    /// HMAC-SHA256 with a key the writer holds: a chain cannot be rebuilt without it.
    HmacSha256,
}

/// Why a file other than the first was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStartReason {
    /// The previous file reached the size limit.
    Rotation,
    /// The writer started again (a new process) and continues the chain.
    Restart,
    /// The previous file could not be written any more (it was reopened as a new file).
    Recovery,
}

/// Why records were not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The writer's queue was full: the run went on without waiting.
    QueueFull,
    /// Writing failed (full disk, unwritable path); counted until a write succeeded again.
    WriteFailed,
}

/// Resources a run used, in numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// CPU seconds.
    pub cpu_time: f64,
    /// Peak memory in bytes.
    pub memory_peak_bytes: u64,
    /// Disk used in bytes.
    pub disk_usage_bytes: u64,
    /// Most processes alive at once.
    pub processes_peak: u64,
}

/// The compile step of a run, in short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompileRecord {
    /// Its status.
    pub status: Status,
    /// Whether the artifact came from the cache.
    pub cached: bool,
    /// Wall-clock seconds.
    pub execution_time: f64,
}

/// One audit record. **Format**: the `type` field carries the variant's snake-case name; see
/// `docs/OBSERVABILITY.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditRecord {
    /// The first line of a log: a new chain (`prev` is 64 zeros, `seq` is 1).
    LogStart {
        /// Line format version.
        version: u32,
        /// How lines are sealed.
        mac: MacKind,
    },
    /// The first line of every later file: names the file before it, whose last line's hash
    /// is this line's `prev`.
    FileStart {
        /// File name (no directory) of the file before.
        previous_file: String,
        /// Why a new file was started.
        reason: FileStartReason,
        /// Bytes of a torn last line that were cut from the previous file (a crash mid-write).
        #[serde(default, skip_serializing_if = "is_zero")]
        discarded_bytes: u64,
    },
    /// The writer shut down cleanly; the last line of a closed log.
    LogClosed,
    /// A configuration took effect.
    ConfigLoaded {
        /// What kind.
        kind: ConfigKind,
        /// Where from.
        source: String,
        /// Its fingerprint.
        fingerprint: String,
    },
    /// An execution got its slot and started.
    RunStarted {
        /// Execution id.
        id: String,
        /// Tenant or caller label the host vouched for.
        tenant: Option<String>,
        /// Canonical language.
        language: String,
        /// Backend.
        backend: BackendKind,
        /// Container runtime, where there is one.
        runtime: Option<Runtime>,
        /// SHA-256 of the code, hex.
        code_sha256: String,
        /// Size of the code.
        code_bytes: u64,
        /// Files placed beside the code.
        files: u64,
        /// Name of the policy.
        policy: String,
        /// Fingerprint of the effective policy.
        policy_fingerprint: String,
        /// Limits of the run step.
        limits: Limits,
        /// Network access.
        network: NetworkMode,
        /// Milliseconds spent waiting for a slot.
        queue_wait_ms: f64,
    },
    /// An execution that was admitted finished.
    RunFinished {
        /// Execution id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// Canonical language.
        language: String,
        /// Backend (`null` when nothing ran).
        backend: Option<BackendKind>,
        /// How it ended.
        status: Status,
        /// Exit status.
        exit_code: Option<i32>,
        /// Signal.
        signal: Option<i32>,
        /// The sandbox's reason for a status other than `success`/`error` (never program output).
        reason: Option<String>,
        /// Milliseconds from `execute` to the result.
        elapsed_ms: f64,
        /// Seconds of the run step.
        execution_time: f64,
        /// What the run step used.
        usage: UsageRecord,
        /// The compile step.
        compile: Option<CompileRecord>,
        /// Whether output was cut.
        truncated: Truncated,
        /// Security events in the result (each also has its own `security` line).
        security_events: u64,
        /// Fingerprint of the effective policy.
        policy_fingerprint: Option<String>,
    },
    /// A request refused by validation (no fingerprint) or policy (with the fingerprint).
    Rejected {
        /// Execution id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// Language as asked (canonical when known).
        language: String,
        /// SHA-256 of the code, hex.
        code_sha256: String,
        /// Size of the code.
        code_bytes: u64,
        /// Why.
        reason: String,
        /// Fingerprint of the policy that refused it.
        policy_fingerprint: Option<String>,
    },
    /// A security event of a run.
    Security {
        /// Execution id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// What kind.
        kind: SecurityEventKind,
        /// Who reported it.
        source: Reporter,
        /// Which step.
        phase: Option<Phase>,
        /// Detail (as reported; program reports are capped at the source).
        detail: String,
    },
    /// A limit was hit.
    LimitHit {
        /// Execution id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// Which limit.
        limit: LimitKind,
    },
    /// The queue was full: the request was refused before it waited.
    QueueFull {
        /// Execution id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// Executions waiting.
        queued: usize,
        /// Queue size.
        max_queue: usize,
    },
    /// The caller dropped an execution before it finished.
    Cancelled {
        /// Execution id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// Milliseconds from `execute` to the cancellation.
        elapsed_ms: f64,
    },
    /// An egress decision of the network proxy: one per request, tunnel or refused connection
    /// of a run or session (written when the run or session ends, in the proxy's order).
    Network {
        /// Execution or session id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// The decision, flat in the line: `host`, `port`, `method` (`GET`, …, `CONNECT`,
        /// `UNKNOWN` when no request was read), `address` (the checked address connected to,
        /// or `null`), `bytes_up`, `bytes_down`, `verdict` (`allowed`, `denied`), `reason`
        /// (only when denied: the proxy's stable reason name), `at_ms` (when the request
        /// arrived, Unix milliseconds) and `duration_ms`.
        #[serde(flatten)]
        decision: Decision,
    },
    /// A session opened: its sandbox exists and its kernel is ready.
    SessionOpened {
        /// Session id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// Backend.
        backend: BackendKind,
        /// Container runtime, where there is one.
        runtime: Option<Runtime>,
        /// Name of the policy.
        policy: String,
        /// Fingerprint of the effective policy.
        policy_fingerprint: String,
        /// The limits the policy set for the session.
        limits: Limits,
        /// Network access.
        network: NetworkMode,
    },
    /// A session ended; nothing of it is left.
    SessionClosed {
        /// Session id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// Why it ended.
        reason: SessionEnd,
        /// Cells it ran.
        cells: u64,
        /// Milliseconds from opening to closing.
        lifetime_ms: f64,
    },
    /// A finding of the threat detector.
    Finding {
        /// Rule id.
        rule: String,
        /// Severity.
        severity: Severity,
        /// Execution id, when the finding is about one run.
        id: Option<String>,
        /// Tenant.
        tenant: Option<String>,
        /// What matched, in words.
        explanation: String,
    },
    /// Records that could not be written, counted; written as soon as writing works again.
    Dropped {
        /// How many records.
        count: u64,
        /// Why.
        reason: DropReason,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// SHA-256 of `code`, hex.
pub fn code_sha256(code: &str) -> String {
    hex(&Sha256::digest(code.as_bytes()))
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_string)
}

fn rejected(
    request: &ExecutionRequest,
    tenant: Option<&str>,
    result: &vana_sandbox_core::ExecutionResult,
) -> AuditRecord {
    AuditRecord::Rejected {
        id: result.id.clone(),
        tenant: owned(tenant),
        language: result.language.clone(),
        code_sha256: code_sha256(&request.code),
        code_bytes: request.code.len() as u64,
        reason: result.error.clone().unwrap_or_default(),
        policy_fingerprint: result.policy_fingerprint.clone(),
    }
}

impl AuditRecord {
    /// The record for an engine event, for the events that matter to an audit (start, finish,
    /// rejection, security events, limit hits, a full queue, a cancellation, egress decisions,
    /// sessions opened and closed); `None` for the others (queued, ready, phase timings, cache
    /// lookups).
    pub fn from_event(event: &Event<'_>) -> Option<Self> {
        Some(match event {
            Event::Started {
                id,
                language,
                backend,
                tenant,
                request,
                spec,
                queue_wait,
                ..
            } => AuditRecord::RunStarted {
                id: id.to_string(),
                tenant: owned(*tenant),
                language: language.to_string(),
                backend: *backend,
                runtime: spec.runtime,
                code_sha256: code_sha256(&request.code),
                code_bytes: request.code.len() as u64,
                files: request.files.len() as u64,
                policy: spec.policy_name.clone(),
                policy_fingerprint: spec.policy_fingerprint.clone(),
                limits: spec.limits,
                network: spec.network.clone(),
                queue_wait_ms: ms(*queue_wait),
            },
            Event::Finished {
                result,
                tenant,
                request,
                elapsed,
                ..
            } => {
                if result.status == Status::Rejected {
                    return Some(rejected(request, *tenant, result));
                }
                let reason = match result.status {
                    Status::Success | Status::Error => None,
                    _ => result.error.clone(),
                };
                let u = &result.resource_usage;
                AuditRecord::RunFinished {
                    id: result.id.clone(),
                    tenant: owned(*tenant),
                    language: result.language.clone(),
                    backend: result.backend,
                    status: result.status,
                    exit_code: result.exit_code,
                    signal: result.signal,
                    reason,
                    elapsed_ms: ms(*elapsed),
                    execution_time: result.execution_time,
                    usage: UsageRecord {
                        cpu_time: u.cpu_time,
                        memory_peak_bytes: u.memory_peak_bytes,
                        disk_usage_bytes: u.disk_usage_bytes,
                        processes_peak: u.processes_peak,
                    },
                    compile: result.compile.as_ref().map(|c| CompileRecord {
                        status: c.status,
                        cached: c.cached,
                        execution_time: c.execution_time,
                    }),
                    truncated: result.truncated,
                    security_events: result.security_events.len() as u64,
                    policy_fingerprint: result.policy_fingerprint.clone(),
                }
            }
            Event::Security { id, tenant, event } => AuditRecord::Security {
                id: id.to_string(),
                tenant: owned(*tenant),
                kind: event.kind,
                source: event.source,
                phase: event.phase,
                detail: event.detail.clone(),
            },
            Event::LimitHit { id, tenant, limit } => AuditRecord::LimitHit {
                id: id.to_string(),
                tenant: owned(*tenant),
                limit: *limit,
            },
            Event::QueueFull { id, tenant, load } => AuditRecord::QueueFull {
                id: id.to_string(),
                tenant: owned(*tenant),
                queued: load.queued,
                max_queue: load.max_queue,
            },
            Event::Cancelled {
                id,
                tenant,
                elapsed,
                ..
            } => AuditRecord::Cancelled {
                id: id.to_string(),
                tenant: owned(*tenant),
                elapsed_ms: ms(*elapsed),
            },
            Event::Network {
                id,
                tenant,
                decision,
            } => AuditRecord::Network {
                id: id.to_string(),
                tenant: owned(*tenant),
                decision: (*decision).clone(),
            },
            Event::SessionOpened {
                id,
                tenant,
                backend,
                spec,
            } => AuditRecord::SessionOpened {
                id: id.to_string(),
                tenant: owned(*tenant),
                backend: *backend,
                runtime: spec.runtime,
                policy: spec.policy_name.clone(),
                policy_fingerprint: spec.policy_fingerprint.clone(),
                limits: spec.limits,
                network: spec.network.clone(),
            },
            Event::SessionClosed {
                id,
                tenant,
                reason,
                cells,
                lifetime,
            } => AuditRecord::SessionClosed {
                id: id.to_string(),
                tenant: owned(*tenant),
                reason: *reason,
                cells: *cells,
                lifetime_ms: ms(*lifetime),
            },
            _ => return None,
        })
    }

    /// The record of a configuration that took effect.
    pub fn config(c: &ConfigLoaded<'_>) -> Self {
        AuditRecord::ConfigLoaded {
            kind: c.kind,
            source: c.source.to_string(),
            fingerprint: c.fingerprint.to_string(),
        }
    }

    /// The record of a threat finding.
    pub fn finding(f: &Finding) -> Self {
        AuditRecord::Finding {
            rule: f.rule.clone(),
            severity: f.severity,
            id: f.run_id.clone(),
            tenant: f.tenant.clone(),
            explanation: f.explanation.clone(),
        }
    }

    /// The `type` name of this record.
    pub fn type_name(&self) -> &'static str {
        match self {
            AuditRecord::LogStart { .. } => "log_start",
            AuditRecord::FileStart { .. } => "file_start",
            AuditRecord::LogClosed => "log_closed",
            AuditRecord::ConfigLoaded { .. } => "config_loaded",
            AuditRecord::RunStarted { .. } => "run_started",
            AuditRecord::RunFinished { .. } => "run_finished",
            AuditRecord::Rejected { .. } => "rejected",
            AuditRecord::Security { .. } => "security",
            AuditRecord::LimitHit { .. } => "limit_hit",
            AuditRecord::QueueFull { .. } => "queue_full",
            AuditRecord::Cancelled { .. } => "cancelled",
            AuditRecord::Network { .. } => "network",
            AuditRecord::SessionOpened { .. } => "session_opened",
            AuditRecord::SessionClosed { .. } => "session_closed",
            AuditRecord::Finding { .. } => "finding",
            AuditRecord::Dropped { .. } => "dropped",
        }
    }
}
