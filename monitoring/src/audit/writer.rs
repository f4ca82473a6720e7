//! The writer thread: the only code that touches the files. It seals records into the chain,
//! rotates by size, continues the chain after a restart, and turns every failure into counts,
//! a throttled log line and, once writing works again, a `dropped` record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::chain::{seal, split, Sealer, GENESIS};
use super::lock::DirLock;
use super::record::{AuditRecord, DropReason, FileStartReason, FORMAT_VERSION};
use super::Shared;
use crate::util::{rfc3339, Inbox, Next, Throttle};

/// What the handle sends the writer.
pub(crate) enum Msg {
    /// A record to append.
    Record(Box<AuditRecord>),
    /// Write what is pending (drop counts), sync, then answer.
    Flush(SyncSender<()>),
    /// Answer, then wait until the sender is dropped (tests: a writer that cannot keep up).
    Hold(SyncSender<()>, Receiver<()>),
    /// Write `log_closed`, sync, answer and stop.
    Close(SyncSender<()>),
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub dir: PathBuf,
    pub prefix: String,
    pub max_file_bytes: u64,
    pub sync_interval: Option<Duration>,
    pub report_interval: Duration,
}

/// The first line the next file gets.
#[derive(Debug, Clone)]
enum Opening {
    LogStart,
    FileStart {
        previous_file: String,
        reason: FileStartReason,
        discarded_bytes: u64,
    },
}

struct Current {
    file: File,
    name: String,
    len: u64,
}

pub(crate) struct Writer {
    settings: Settings,
    sealer: Sealer,
    shared: Arc<Shared>,
    current: Option<Current>,
    next_index: u64,
    opening: Opening,
    seq: u64,
    last: [u8; 32],
    /// Records lost to failed writes, not yet recorded.
    lost: u64,
    throttle: Throttle,
    dirty_since: Option<Instant>,
    recovered: bool,
    batch: Batch,
    /// The directory's lock, held until the writer stops.
    _lock: Option<DirLock>,
}

/// Sealed lines not yet written, and what they carry.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    lines: u64,
    last: Option<[u8; 32]>,
    /// Ordinary records in it.
    records: u64,
    /// Counts carried by its `dropped` records, by reason.
    queue_full: u64,
    write_failed: u64,
}

/// A batch is written when it reaches this size (or the queue is empty).
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// `<prefix>-<index>.jsonl`.
pub(crate) fn file_name(prefix: &str, index: u64) -> String {
    format!("{prefix}-{index:06}.jsonl")
}

fn index_of(prefix: &str, name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(prefix)?
        .strip_prefix('-')?
        .strip_suffix(".jsonl")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log's files in `dir`, in order.
pub(crate) fn list_files(dir: &Path, prefix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(i) = name.to_str().and_then(|n| index_of(prefix, n)) else {
            continue;
        };
        // Only regular files are the log's (never follow a link to a device or elsewhere).
        if entry.file_type()?.is_file() {
            files.push((i, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Cuts a torn last line (no newline) from `path`; returns the bytes cut and the last
/// complete line.
fn repair_tail(path: &Path) -> io::Result<(u64, Option<String>)> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    // Lines are small; the last complete one is within the last 1 MiB.
    let start = len.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let keep = match tail.iter().rposition(|&b| b == b'\n') {
        Some(p) => p + 1,
        None if start == 0 => 0,
        None => tail.len(),
    };
    let cut = (tail.len() - keep) as u64;
    if cut > 0 {
        file.set_len(len - cut)?;
        file.sync_data()?;
    }
    let complete = &tail[..keep];
    let last = complete
        .strip_suffix(b"\n")
        .and_then(|c| c.split(|&b| b == b'\n').next_back())
        .map(|l| String::from_utf8_lossy(l).into_owned());
    Ok((cut, last))
}

fn seq_and_hash(line: &str) -> Option<(u64, [u8; 32])> {
    #[derive(serde::Deserialize)]
    struct Head {
        seq: u64,
    }
    let (_, hash) = split(line)?;
    let head: Head = serde_json::from_str(line).ok()?;
    Some((head.seq, hash))
}

impl Writer {
    pub(crate) fn new(
        settings: Settings,
        sealer: Sealer,
        shared: Arc<Shared>,
        lock: Option<DirLock>,
    ) -> Self {
        let throttle = Throttle::new(settings.report_interval);
        Self {
            settings,
            sealer,
            shared,
            current: None,
            next_index: 1,
            opening: Opening::LogStart,
            seq: 0,
            last: GENESIS,
            lost: 0,
            throttle,
            dirty_since: None,
            recovered: false,
            batch: Batch::default(),
            _lock: lock,
        }
    }

    /// Serves `rx` until it closes or a `Close` arrives.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        if let Err(e) = self.ensure_open() {
            self.failed(&e);
        }
        let tick = self
            .settings
            .sync_interval
            .unwrap_or(self.settings.report_interval)
            .min(self.settings.report_interval)
            .max(Duration::from_millis(10));
        let mut inbox = Inbox::new(rx);
        loop {
            match inbox.next(tick) {
                Next::Item(Msg::Record(r)) => {
                    self.record_pending();
                    self.append(&r);
                }
                Next::Item(Msg::Flush(ack)) => {
                    self.record_pending();
                    self.commit();
                    self.sync(true);
                    let _ = ack.send(());
                }
                Next::Item(Msg::Hold(held, release)) => {
                    self.commit();
                    let _ = held.send(());
                    let _ = release.recv();
                }
                Next::Item(Msg::Close(ack)) => {
                    self.close();
                    let _ = ack.send(());
                    return;
                }
                Next::Drained => {
                    self.commit();
                    self.sync(false);
                }
                Next::Idle => {
                    self.record_pending();
                    self.commit();
                    self.sync(false);
                    if let Some(n) = self.throttle.pending(Instant::now()) {
                        self.report(n, None);
                    }
                }
                Next::Closed => {
                    self.close();
                    return;
                }
            }
        }
    }

    /// Continues the chain of the files already in the directory, in a new file.
    fn recover(&mut self) -> io::Result<()> {
        if self.recovered {
            return Ok(());
        }
        let dir = &self.settings.dir;
        fs::create_dir_all(dir)?;
        let files = list_files(dir, &self.settings.prefix)?;
        self.recovered = true;
        let Some((index, path)) = files.last() else {
            return Ok(());
        };
        self.next_index = index + 1;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match repair_tail(path) {
            Ok((cut, Some(line))) => match seq_and_hash(&line) {
                Some((seq, hash)) => {
                    self.seq = seq;
                    self.last = hash;
                    self.opening = Opening::FileStart {
                        previous_file: name,
                        reason: FileStartReason::Restart,
                        discarded_bytes: cut,
                    };
                    if cut > 0 {
                        tracing::warn!(file = %path.display(), bytes = cut, "audit log: cut a torn last line left by a crash");
                    }
                }
                None => tracing::warn!(
                    file = %path.display(),
                    "audit log: the last line of the previous file is not a sealed record; starting a new chain"
                ),
            },
            Ok((_, None)) => tracing::warn!(
                file = %path.display(),
                "audit log: the previous file is empty; starting a new chain"
            ),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "audit log: cannot read the previous file; starting a new chain");
            }
        }
        Ok(())
    }

    fn ensure_open(&mut self) -> io::Result<()> {
        if self.current.is_some() {
            return Ok(());
        }
        self.recover()?;
        let name = file_name(&self.settings.prefix, self.next_index);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(self.settings.dir.join(&name))?;
        self.next_index += 1;
        self.current = Some(Current { file, name, len: 0 });
        let first = match self.opening.clone() {
            Opening::LogStart => AuditRecord::LogStart {
                version: FORMAT_VERSION,
                mac: self.sealer.kind(),
            },
            Opening::FileStart {
                previous_file,
                reason,
                discarded_bytes,
            } => AuditRecord::FileStart {
                previous_file,
                reason,
                discarded_bytes,
            },
        };
        if let Err(e) = self.write_line(&first, true) {
            // The file exists but could not take its first line: the next attempt starts
            // another file that continues from the same point.
            self.current = None;
            return Err(e);
        }
        Ok(())
    }

    /// Seals `record` as the next line and adds it to the batch (`direct`: writes it at once,
    /// after the batch; for the first and last line of a file). Rotates first when the file is
    /// full.
    fn write_line(&mut self, record: &AuditRecord, direct: bool) -> io::Result<()> {
        match self.try_write_line(record, direct) {
            Ok(()) => Ok(()),
            Err((e, in_batch)) => {
                // A record in a failed batch was counted with it; one that never got there is
                // counted here.
                if !in_batch {
                    self.lose(record);
                }
                Err(e)
            }
        }
    }

    /// Counts `record` as not written (the counts of a `dropped` record go back to be
    /// recorded later; the structural lines are not counted).
    fn lose(&mut self, record: &AuditRecord) {
        match record {
            AuditRecord::Dropped {
                count,
                reason: DropReason::QueueFull,
            } => {
                self.shared
                    .dropped_pending
                    .fetch_add(*count, Ordering::AcqRel);
            }
            AuditRecord::Dropped {
                count,
                reason: DropReason::WriteFailed,
            } => self.lost += count,
            AuditRecord::LogStart { .. }
            | AuditRecord::FileStart { .. }
            | AuditRecord::LogClosed => {}
            _ => {
                self.lost += 1;
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// [`write_line`](Self::write_line); the error says whether the record was in the batch
    /// that failed.
    fn try_write_line(
        &mut self,
        record: &AuditRecord,
        direct: bool,
    ) -> Result<(), (io::Error, bool)> {
        let before = |e| (e, false);
        if direct {
            self.commit_or_err().map_err(before)?;
        }
        let ts = rfc3339(SystemTime::now());
        let (seq, last) = (
            self.seq + self.batch.lines,
            self.batch.last.unwrap_or(self.last),
        );
        let (mut line, mut hash) = seal(&self.sealer, seq + 1, &ts, &last, record)
            .map_err(|e| before(io::Error::other(e)))?;
        let used = self.current.as_ref().map_or(0, |c| c.len) + self.batch.buf.len() as u64;
        if !direct && used > 0 && used + line.len() as u64 + 1 > self.settings.max_file_bytes {
            self.commit_or_err().map_err(before)?;
            self.rotate().map_err(before)?;
            (line, hash) = seal(&self.sealer, self.seq + 1, &ts, &self.last, record)
                .map_err(|e| before(io::Error::other(e)))?;
        }
        line.push('\n');
        if direct {
            let Some(cur) = self.current.as_mut() else {
                return Err(before(io::Error::other("no audit file is open")));
            };
            if let Err(e) = cur.file.write_all(line.as_bytes()) {
                self.cut_back();
                return Err(before(e));
            }
            cur.len += line.len() as u64;
            self.seq += 1;
            self.last = hash;
            self.committed(1);
            return Ok(());
        }
        self.batch.buf.extend_from_slice(line.as_bytes());
        self.batch.lines += 1;
        self.batch.last = Some(hash);
        match record {
            AuditRecord::Dropped {
                count,
                reason: DropReason::QueueFull,
            } => self.batch.queue_full += count,
            AuditRecord::Dropped {
                count,
                reason: DropReason::WriteFailed,
            } => self.batch.write_failed += count,
            _ => self.batch.records += 1,
        }
        if self.batch.buf.len() >= MAX_BATCH_BYTES {
            self.commit_or_err().map_err(|e| (e, true))?;
        }
        Ok(())
    }

    /// Writes the batch; a failure is counted and reported.
    fn commit(&mut self) {
        if let Err(e) = self.commit_or_err() {
            self.failed(&e);
        }
    }

    /// Writes the batch. On failure its records are lost (counted), the counts of its `dropped`
    /// records go back to be recorded later, and the chain stays where the file ends.
    fn commit_or_err(&mut self) -> io::Result<()> {
        if self.batch.lines == 0 {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        let result = match self.current.as_mut() {
            Some(cur) => cur.file.write_all(&batch.buf),
            None => Err(io::Error::other("no audit file is open")),
        };
        match result {
            Ok(()) => {
                if let Some(cur) = self.current.as_mut() {
                    cur.len += batch.buf.len() as u64;
                }
                self.seq += batch.lines;
                self.last = batch.last.unwrap_or(self.last);
                self.committed(batch.lines);
                // Keep the buffer's allocation for the next batch.
                batch.buf.clear();
                self.batch.buf = batch.buf;
                Ok(())
            }
            Err(e) => {
                self.cut_back();
                self.lost += batch.records + batch.write_failed;
                self.shared.lost.fetch_add(batch.records, Ordering::Relaxed);
                self.shared
                    .dropped_pending
                    .fetch_add(batch.queue_full, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    /// Lines are on disk: counters, head, health.
    fn committed(&mut self, lines: u64) {
        self.dirty_since.get_or_insert_with(Instant::now);
        self.shared.written.fetch_add(lines, Ordering::Relaxed);
        self.shared.healthy.store(true, Ordering::Relaxed);
        if let Some(cur) = &self.current {
            self.shared.set_head(self.seq, self.last, &cur.name, lines);
        }
    }

    /// Never leave half a line: cut the file back to its last whole line (or give the file up,
    /// and continue in a new one, when even that fails).
    fn cut_back(&mut self) {
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        if cur.file.set_len(cur.len).is_err() {
            self.opening = Opening::FileStart {
                previous_file: cur.name.clone(),
                reason: FileStartReason::Recovery,
                discarded_bytes: 0,
            };
            self.current = None;
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync(true);
        let Some(old) = self.current.take() else {
            return Ok(());
        };
        self.opening = Opening::FileStart {
            previous_file: old.name.clone(),
            reason: FileStartReason::Rotation,
            discarded_bytes: 0,
        };
        drop(old);
        self.ensure_open()
    }

    fn append(&mut self, record: &AuditRecord) {
        if let Err(e) = self.ensure_open() {
            self.lost += 1;
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            self.failed(&e);
            return;
        }
        // A failure here is a batch that could not be written (its records are counted).
        if let Err(e) = self.write_line(record, false) {
            self.failed(&e);
        }
    }

    /// Adds `dropped` records for what the queue refused and what failed writes lost. A count
    /// that cannot be written goes back to be recorded later.
    fn record_pending(&mut self) {
        let full = self.shared.dropped_pending.swap(0, Ordering::AcqRel);
        if full > 0 {
            self.add_dropped(full, DropReason::QueueFull);
        }
        let lost = std::mem::take(&mut self.lost);
        if lost > 0 {
            self.add_dropped(lost, DropReason::WriteFailed);
        }
    }

    fn add_dropped(&mut self, count: u64, reason: DropReason) {
        let r = AuditRecord::Dropped { count, reason };
        let result = match self.ensure_open() {
            Ok(()) => self.write_line(&r, false),
            Err(e) => {
                self.lose(&r);
                Err(e)
            }
        };
        if let Err(e) = result {
            self.failed(&e);
        }
    }

    fn sync(&mut self, force: bool) {
        let Some(since) = self.dirty_since else {
            return;
        };
        let due = force
            || self
                .settings
                .sync_interval
                .is_some_and(|i| since.elapsed() >= i);
        if !due {
            return;
        }
        if let Some(cur) = &self.current {
            if let Err(e) = cur.file.sync_data() {
                self.failed(&e);
                return;
            }
        }
        self.dirty_since = None;
    }

    fn close(&mut self) {
        self.record_pending();
        self.commit();
        if self.current.is_some() {
            if let Err(e) = self.write_line(&AuditRecord::LogClosed, true) {
                self.failed(&e);
            }
        }
        self.sync(true);
        self.current = None;
    }

    fn failed(&mut self, e: &io::Error) {
        self.shared.healthy.store(false, Ordering::Relaxed);
        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        self.shared.set_error(e.to_string());
        if let Some(m) = &self.shared.metrics {
            m.count(crate::metrics::names::AUDIT_WRITE_ERRORS, &[], 1);
        }
        if let Some(n) = self.throttle.hit(Instant::now()) {
            self.report(n, Some(e));
        }
    }

    fn report(&self, failures: u64, e: Option<&io::Error>) {
        let lost = self.shared.lost.load(Ordering::Relaxed);
        let error = e.map(|e| e.to_string()).or_else(|| self.shared.error());
        tracing::error!(
            dir = %self.settings.dir.display(),
            error = error.as_deref().unwrap_or("unknown"),
            failures_since_last_report = failures,
            records_lost_total = lost,
            "audit log cannot write; runs go on, lost records are counted and recorded once writing works again"
        );
    }
}
