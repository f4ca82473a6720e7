//! What the detector reports: a finding names its rule, its severity, the run and tenant, and
//! the evidence (code lines or events) that matched, explained in words.

use std::fmt;

use serde::{Deserialize, Serialize};
use vana_sandbox_core::network::DenyReason;
use vana_sandbox_core::{LimitKind, Reporter, SecurityEventKind};

/// How serious a finding (or alert) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Unusual.
    Low,
    /// Suspicious.
    Medium,
    /// Likely an attack.
    High,
    /// An attack.
    Critical,
}

impl Severity {
    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One thing that matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Evidence {
    /// A line of the submitted code.
    Code {
        /// Line number (1-based).
        line: usize,
        /// The line (cut to 200 characters).
        text: String,
        /// The pattern that matched.
        pattern: String,
    },
    /// A security event of a run.
    Security {
        /// Execution id.
        run_id: String,
        /// Its kind.
        kind: SecurityEventKind,
        /// Who reported it.
        source: Reporter,
        /// Its detail.
        detail: String,
    },
    /// A limit a run hit.
    Limit {
        /// Execution id.
        run_id: String,
        /// Which limit.
        limit: LimitKind,
    },
    /// A refused egress connection.
    Network {
        /// Execution id.
        run_id: String,
        /// Host asked for.
        host: String,
        /// Port asked for.
        port: u16,
        /// Why it was refused (the proxy's reason name).
        reason: DenyReason,
    },
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::Code {
                line,
                text,
                pattern,
            } => write!(f, "line {line} matches `{pattern}`: {text}"),
            Evidence::Security {
                run_id,
                kind,
                source,
                detail,
            } => {
                let who = match source {
                    Reporter::Sandbox => "sandbox",
                    Reporter::Program => "program",
                };
                write!(
                    f,
                    "run {run_id}: {kind} event reported by the {who}: {detail}"
                )
            }
            Evidence::Limit { run_id, limit } => write!(f, "run {run_id}: {limit} limit hit"),
            Evidence::Network {
                run_id,
                host,
                port,
                reason,
            } => write!(f, "run {run_id}: egress to {host}:{port} denied ({reason})"),
        }
    }
}

/// A finding of the threat detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's id.
    pub rule: String,
    /// Its severity.
    pub severity: Severity,
    /// What the rule looks for.
    pub summary: String,
    /// The run it is about (none for findings about a tenant's pattern of runs).
    pub run_id: Option<String>,
    /// The tenant (caller) the host vouched for.
    pub tenant: Option<String>,
    /// The run's language, when known.
    pub language: Option<String>,
    /// Which rule matched what, in words.
    pub explanation: String,
    /// What matched (at most [`MAX_EVIDENCE`]; the explanation gives the total).
    pub evidence: Vec<Evidence>,
}

/// Most pieces of evidence kept in one finding.
pub const MAX_EVIDENCE: usize = 10;

/// Receives findings (called on the detector's thread; must not block for long).
pub trait FindingSink: Send + Sync {
    /// Called once per finding.
    fn on_finding(&self, finding: &Finding);
}

impl<F: Fn(&Finding) + Send + Sync> FindingSink for F {
    fn on_finding(&self, finding: &Finding) {
        self(finding)
    }
}
