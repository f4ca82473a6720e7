//! Observability options of `run`, `exec` and `load`: an audit log, the threat detector, and
//! findings printed on stderr. The bundle is started before the engine (so that the policy is
//! recorded) and shut down after the last run (so that the last findings are delivered and the
//! log ends with `log_closed`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use vana_sandbox::monitor::audit::{self, AuditLog};
use vana_sandbox::{Engine, Finding, Metrics, Observability, ObservabilityBuilder};

use crate::LogFormat;

/// How long a CLI process waits for another one that writes the same audit directory.
const AUDIT_LOCK_WAIT: Duration = Duration::from_secs(60);

/// How long closing waits for the detector and the audit log.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options shared by `run`, `exec` and `load`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ObserveArgs {
    /// Write a hash-chained audit log (JSON lines) in this directory, created if missing; check
    /// it with `vana-sandbox audit verify DIR/audit-*.jsonl`. Turns the threat detector on, whose
    /// findings are audited. One process writes a directory at a time: another waits for it (up
    /// to 60 s).
    #[arg(long, value_name = "DIR")]
    audit_log: Option<PathBuf>,
    /// Seal the audit log with HMAC-SHA256 under the key in this file (its bytes, less one
    /// trailing newline; at least 16 bytes).
    #[arg(long, value_name = "FILE", requires = "audit_log")]
    audit_hmac_key_file: Option<PathBuf>,
    /// Threat rules (TOML, or JSON for `.json`) added to or overriding the built-in ones; turns
    /// the detector on.
    #[arg(long, value_name = "FILE")]
    threat_rules: Option<PathBuf>,
    /// Print the threat detector's findings on stderr (one JSON object per line with
    /// `--log-format json`); turns the detector on.
    #[arg(long)]
    findings: bool,
}

/// Findings counted by rule (for `load`'s summary).
pub(crate) type FindingCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// The engine and the observability it reports to.
pub(crate) struct Observed {
    /// The engine.
    pub(crate) engine: Engine,
    observability: Option<Observability>,
    counts: Option<FindingCounts>,
}

impl Observed {
    pub(crate) fn new(engine: Engine, observability: Option<Observability>) -> Self {
        Self {
            engine,
            observability,
            counts: None,
        }
    }

    pub(crate) fn with_counts(mut self, counts: Option<FindingCounts>) -> Self {
        self.counts = counts;
        self
    }

    /// Findings by rule so far (after [`close`](Self::close): all of them); `None` when the
    /// detector is off.
    pub(crate) fn finding_counts(&self) -> Option<BTreeMap<String, u64>> {
        self.counts
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Delivers the last findings and closes the audit log; says on stderr when the log is
    /// incomplete (records that could not be written are counted, never silently lost).
    pub(crate) fn close(&self) {
        let Some(obs) = &self.observability else {
            return;
        };
        if !obs.shutdown(CLOSE_TIMEOUT) {
            eprintln!("vana-sandbox: the audit log or the threat detector did not finish within {CLOSE_TIMEOUT:?}");
        }
        if let Some(a) = &obs.audit {
            let s = a.stats();
            let missing = s.dropped_queue_full + s.lost_write_failed + s.dropped_after_close;
            if missing > 0 || !s.healthy {
                eprintln!(
                    "vana-sandbox: audit log {}: {missing} record(s) not written{}",
                    a.dir().display(),
                    s.last_error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                );
            }
        }
    }
}

impl ObserveArgs {
    /// Whether the detector runs.
    fn detector(&self) -> bool {
        self.findings || self.threat_rules.is_some() || self.audit_log.is_some()
    }

    /// Starts what the options ask for (`None`: nothing); `counts`: count findings by rule.
    pub(crate) fn start(
        &self,
        format: LogFormat,
        count_findings: bool,
    ) -> Result<(Option<Observability>, Option<FindingCounts>), String> {
        self.start_with(format, count_findings, None)
    }

    /// [`start`](Self::start), with `metrics` (then a bundle is always started: the server
    /// renders them).
    pub(crate) fn start_with(
        &self,
        format: LogFormat,
        count_findings: bool,
        metrics: Option<Metrics>,
    ) -> Result<(Option<Observability>, Option<FindingCounts>), String> {
        if !self.detector() && metrics.is_none() {
            return Ok((None, None));
        }
        let mut b = ObservabilityBuilder::default();
        if let Some(m) = metrics {
            b = b.metrics(m);
        }
        if let Some(dir) = &self.audit_log {
            let mut audit = AuditLog::builder(dir).lock_wait(AUDIT_LOCK_WAIT);
            if let Some(path) = &self.audit_hmac_key_file {
                audit = audit.hmac_key(audit::load_key(path).map_err(|e| e.to_string())?);
            }
            b = b.audit(audit);
        }
        b = match &self.threat_rules {
            Some(path) => b.threat_rules_file(path).map_err(|e| e.to_string())?,
            None if self.detector() => b.threat_detection(),
            None => b,
        };
        if self.findings {
            b = b.on_finding(move |f| print_finding(f, format));
        }
        let counts = count_findings.then(FindingCounts::default);
        if let Some(c) = &counts {
            let c = c.clone();
            b = b.on_finding(move |f| {
                *c.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(f.rule.clone())
                    .or_default() += 1;
            });
        }
        let obs = b.start().map_err(|e| e.to_string())?;
        Ok((Some(obs), counts))
    }
}

/// One finding on stderr.
fn print_finding(f: &Finding, format: LogFormat) {
    match format {
        LogFormat::Json => match serde_json::to_string(&serde_json::json!({ "finding": f })) {
            Ok(line) => eprintln!("{line}"),
            Err(e) => eprintln!("vana-sandbox: cannot print a finding: {e}"),
        },
        LogFormat::Text => eprintln!(
            "vana-sandbox: finding [{}] {}{}: {}",
            f.severity,
            f.rule,
            f.run_id
                .as_deref()
                .map(|r| format!(" (run {r})"))
                .unwrap_or_default(),
            f.explanation
        ),
    }
}
