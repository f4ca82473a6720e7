//! The audit log: one JSON line per fact that matters (runs started and finished, rejections,
//! security events, limit hits, egress decisions, sessions opened and closed; configuration
//! through [`Hooks`]; findings), hash-chained so that a changed, removed, inserted or reordered
//! line is found by [`verify`].
//!
//! Writing never blocks a run: [`AuditLog::on_event`] turns the event into a record and offers it
//! to a bounded queue; a writer thread does the rest. A full queue drops the record and counts
//! it, and the count is written as a `dropped` record as soon as there is room. A failing write
//! (full disk, unwritable directory) loses the record, counts it, reports the failure through
//! `tracing` at most once per interval, and records the count once writing works again.

mod chain;
mod lock;
mod record;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vana_sandbox_core::{Event, Monitor};

pub use chain::{AuditLine, GENESIS};
pub use record::{
    code_sha256, AuditRecord, CompileRecord, DropReason, FileStartReason, MacKind, UsageRecord,
    FORMAT_VERSION,
};
pub use verify::{verify, Problem, ProblemKind, Report, VerifyError, VerifyOptions};

use crate::hooks::{ConfigLoaded, Hooks};
use crate::metrics::{names, Metrics};
use crate::threat::{Finding, FindingSink};
use crate::util::hex;
use chain::Sealer;
use writer::{Msg, Settings, Writer};

/// Shortest HMAC key accepted.
pub const MIN_KEY_BYTES: usize = 16;

/// Errors of setting up an audit log or reading a key.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The HMAC key is too short.
    #[error("the audit HMAC key has {0} bytes; at least {MIN_KEY_BYTES} are needed")]
    KeyTooShort(usize),
    /// The key file could not be read.
    #[error("cannot read the audit HMAC key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid audit log setting: {0}")]
    Config(&'static str),
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Another process writes a log in this directory (one writer per directory: two would
    /// fork the chain).
    #[error("the audit log in {} is being written by another process{}", dir.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse {
        /// The log's directory.
        dir: PathBuf,
        /// The process holding it, when the kernel says.
        pid: Option<i32>,
    },
}

/// Reads an HMAC key: the file's bytes, less one trailing newline (`\n` or `\r\n`). Writer and
/// verifier both read keys through this function.
pub fn load_key(path: &Path) -> Result<Vec<u8>, AuditError> {
    let mut key = std::fs::read(path).map_err(|source| AuditError::KeyFile {
        path: path.to_path_buf(),
        source,
    })?;
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    if key.len() < MIN_KEY_BYTES {
        return Err(AuditError::KeyTooShort(key.len()));
    }
    Ok(key)
}

/// The last line written: what an external anchor keeps to detect a cut end of a live log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
    /// The file it is in.
    pub file: String,
}

/// Counters of an audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditStats {
    /// Lines written (structural ones included).
    pub written: u64,
    /// Records refused because the queue was full.
    pub dropped_queue_full: u64,
    /// Records lost because a write failed.
    pub lost_write_failed: u64,
    /// Records offered after the log was closed.
    pub dropped_after_close: u64,
    /// Failed writes, opens and syncs.
    pub write_errors: u64,
    /// Whether the last write succeeded.
    pub healthy: bool,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The last line written.
    pub head: Option<Head>,
}

/// State shared by the handle and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    written: AtomicU64,
    dropped_pending: AtomicU64,
    dropped_total: AtomicU64,
    dropped_after_close: AtomicU64,
    lost: AtomicU64,
    write_errors: AtomicU64,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    head: Mutex<Option<(u64, [u8; 32], String)>>,
    metrics: Option<Metrics>,
}

impl Shared {
    fn set_head(&self, seq: u64, hash: [u8; 32], file: &str, lines: u64) {
        let mut h = self.head.lock().unwrap_or_else(|p| p.into_inner());
        match h.as_mut() {
            Some((s, x, f)) => {
                *s = seq;
                *x = hash;
                if f != file {
                    *f = file.to_string();
                }
            }
            None => *h = Some((seq, hash, file.to_string())),
        }
        if let Some(m) = &self.metrics {
            m.count(names::AUDIT_RECORDS, &[], lines);
        }
    }

    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    fn error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Builds an [`AuditLog`].
#[derive(Debug, Clone)]
pub struct AuditBuilder {
    dir: PathBuf,
    prefix: String,
    max_file_bytes: u64,
    queue: usize,
    key: Option<Vec<u8>>,
    sync_interval: Option<Duration>,
    report_interval: Duration,
    metrics: Option<Metrics>,
    lock_wait: Duration,
}

impl AuditBuilder {
    /// File names: `<prefix>-000001.jsonl`, … (default `audit`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// A file is closed and the next one started when a line would take it past this size
    /// (default 64 MiB).
    pub fn max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// Records the queue holds before it drops (default 8192).
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.queue = records;
        self
    }

    /// Seal lines with HMAC-SHA256 under `key` (at least [`MIN_KEY_BYTES`]).
    pub fn hmac_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// `fdatasync` at most this long after a write (default 1 s); `None`: leave it to the OS.
    pub fn sync_interval(mut self, interval: Option<Duration>) -> Self {
        self.sync_interval = interval;
        self
    }

    /// A failure is logged at most once per interval (default 60 s).
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval;
        self
    }

    /// Count written, dropped and failed records in `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether [`metrics`](Self::metrics) was given.
    pub(crate) fn has_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// How long [`start`](Self::start) waits for another process that writes a log in the same
    /// directory to finish (default: not at all: [`AuditError::InUse`] at once).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the directory's lock (one writer per directory across processes; see
    /// [`lock_wait`](Self::lock_wait)) and starts the writer thread. Files are opened by the
    /// writer: a directory that cannot be written does not fail here; it is reported (and
    /// counted) like any later failure, and writing resumes when it works.
    pub fn start(self) -> Result<Arc<AuditLog>, AuditError> {
        if let Some(k) = &self.key {
            if k.len() < MIN_KEY_BYTES {
                return Err(AuditError::KeyTooShort(k.len()));
            }
        }
        if self.queue == 0 {
            return Err(AuditError::Config("queue_capacity must be at least 1"));
        }
        if self.max_file_bytes < 4096 {
            return Err(AuditError::Config("max_file_bytes must be at least 4096"));
        }
        if self.prefix.is_empty() || self.prefix.contains('/') {
            return Err(AuditError::Config(
                "prefix must be a non-empty file name part",
            ));
        }
        let dir_lock = lock::lock(&self.dir, &self.prefix, self.lock_wait)?;
        let sealer = Sealer::new(self.key.as_deref());
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            metrics: self.metrics.clone(),
            ..Shared::default()
        });
        let (tx, rx) = mpsc::sync_channel(self.queue);
        let settings = Settings {
            dir: self.dir.clone(),
            prefix: self.prefix.clone(),
            max_file_bytes: self.max_file_bytes,
            sync_interval: self.sync_interval,
            report_interval: self.report_interval,
        };
        let writer = Writer::new(settings, sealer, shared.clone(), dir_lock);
        let thread = std::thread::Builder::new()
            .name("vana-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(AuditError::Thread)?;
        Ok(Arc::new(AuditLog {
            tx,
            thread: Mutex::new(Some(thread)),
            shared,
            dir: self.dir,
            prefix: self.prefix,
        }))
    }
}

/// A hash-chained audit log of JSON lines: a [`Monitor`], [`Hooks`] and [`FindingSink`].
#[derive(Debug)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
    dir: PathBuf,
    prefix: String,
}

/// Keeps the writer waiting until dropped (see [`AuditLog::hold_writer`]).
#[derive(Debug)]
pub struct WriterHold(#[allow(dead_code)] SyncSender<()>);

impl AuditLog {
    /// A builder for a log in `dir` (created if missing).
    pub fn builder(dir: impl Into<PathBuf>) -> AuditBuilder {
        AuditBuilder {
            dir: dir.into(),
            prefix: "audit".into(),
            max_file_bytes: 64 << 20,
            queue: 8192,
            key: None,
            sync_interval: Some(Duration::from_secs(1)),
            report_interval: Duration::from_secs(60),
            metrics: None,
            lock_wait: Duration::ZERO,
        }
    }

    /// Offers `record` to the writer without waiting: counted as dropped when the queue is full.
    pub fn record(&self, record: AuditRecord) {
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.dropped_pending.fetch_add(1, Ordering::AcqRel);
                self.shared.dropped_total.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.shared.metrics {
                    m.count(names::AUDIT_DROPPED, &[("reason", "queue_full")], 1);
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared
                    .dropped_after_close
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends a control message, waiting for room until `deadline`.
    fn control(&self, msg: Msg, deadline: Instant) -> bool {
        let mut msg = msg;
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Waits until everything offered so far is written and synced (or `timeout` passes);
    /// `true` when it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack, done) = mpsc::sync_channel(1);
        self.control(Msg::Flush(ack), deadline)
            && done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok()
    }

    /// Writes `log_closed` and stops the writer (waiting at most `timeout`). Records offered
    /// later are counted in [`AuditStats::dropped_after_close`]. Dropping the last handle does
    /// the same with a 5 s wait.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack, done) = mpsc::sync_channel(1);
        let sent = self.control(Msg::Close(ack), deadline);
        let closed = sent
            && done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok();
        if closed {
            if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = t.join();
            }
        }
        closed
    }

    /// Holds the writer until the returned guard is dropped: records pile up in the queue as
    /// they would behind a stalled disk. For tests of overflow handling.
    #[doc(hidden)]
    pub fn hold_writer(&self) -> WriterHold {
        let (release, wait) = mpsc::sync_channel(0);
        let (held, holding) = mpsc::sync_channel(1);
        let deadline = Instant::now() + Duration::from_secs(5);
        if self.control(Msg::Hold(held, wait), deadline) {
            // Once the writer answers, the queue is empty and the writer waits.
            let _ = holding.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        WriterHold(release)
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's files in `dir`, in chain order: what [`verify`] takes.
    pub fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        Ok(writer::list_files(&self.dir, &self.prefix)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// The counters.
    pub fn stats(&self) -> AuditStats {
        let s = &self.shared;
        let head = s
            .head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(seq, hash, file)| Head {
                seq: *seq,
                hash: hex(hash),
                file: file.clone(),
            });
        AuditStats {
            written: s.written.load(Ordering::Relaxed),
            dropped_queue_full: s.dropped_total.load(Ordering::Relaxed),
            lost_write_failed: s.lost.load(Ordering::Relaxed),
            dropped_after_close: s.dropped_after_close.load(Ordering::Relaxed),
            write_errors: s.write_errors.load(Ordering::Relaxed),
            healthy: s.healthy.load(Ordering::Relaxed),
            last_error: s.error(),
            head,
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(5));
    }
}

impl Monitor for AuditLog {
    fn on_event(&self, event: &Event<'_>) {
        if let Some(r) = AuditRecord::from_event(event) {
            self.record(r);
        }
    }
}

impl Hooks for AuditLog {
    fn on_config(&self, config: &ConfigLoaded<'_>) {
        self.record(AuditRecord::config(config));
    }
}

impl FindingSink for AuditLog {
    fn on_finding(&self, finding: &Finding) {
        self.record(AuditRecord::finding(finding));
    }
}
