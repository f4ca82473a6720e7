//! Checking a log: every line's seal, every link of the chain, the order of files, and the end.
//! The first problem is reported with its file and line number and what it looks like:
//! a line altered, removed, inserted or reordered.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::chain::{split, Sealer, GENESIS};
use crate::util::hex;

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The HMAC key the log was written with (`None`: plain SHA-256).
    pub key: Option<Vec<u8>>,
    /// Accept a log that does not end with `log_closed` (a live log, or a writer that died).
    /// Without an external anchor ([`Head`](super::Head)), lines cut from the end of such a
    /// log cannot be detected.
    pub allow_open: bool,
}

/// What a problem looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The line's content no longer matches its seal (or, for the line before a broken link,
    /// the hash the next line recorded).
    Altered,
    /// Lines are missing: the sequence jumps here.
    Removed,
    /// This line does not belong: the chain continues past it.
    Inserted,
    /// This line is out of order.
    Reordered,
    /// This line is not a sealed record at all (damaged, or torn by a crash).
    Malformed,
    /// The files were given out of order, or one is missing between them.
    FileOrder,
    /// The log does not end with `log_closed`: lines were cut from its end, or it is still open.
    Unterminated,
    /// There is nothing to verify.
    Empty,
}

impl ProblemKind {
    /// A short name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Altered => "altered",
            ProblemKind::Removed => "removed",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Malformed => "malformed",
            ProblemKind::FileOrder => "file order",
            ProblemKind::Unterminated => "unterminated",
            ProblemKind::Empty => "empty",
        }
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What it looks like.
    pub kind: ProblemKind,
    /// The file.
    pub file: PathBuf,
    /// The line number in that file (1-based; one past the last line for a missing end).
    pub line: u64,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.kind.as_str(),
            self.detail
        )
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The files, in the order checked.
    pub files: Vec<PathBuf>,
    /// Lines read.
    pub lines: u64,
    /// Sequence number of the first line.
    pub first_seq: Option<u64>,
    /// Sequence number of the last line verified in order.
    pub last_seq: Option<u64>,
    /// Hash of that line (hex): compare it with an external anchor.
    pub last_hash: Option<String>,
    /// Whether the first line starts the log (`log_start`); otherwise the check starts at a
    /// later file's `file_start`, trusting its link to files not given.
    pub from_genesis: bool,
    /// Whether the log ends with `log_closed`.
    pub closed: bool,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

impl Report {
    /// No problem found.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Errors reading the files.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No file was given.
    #[error("no audit file given")]
    NoFiles,
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct Head {
    seq: u64,
    prev: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    previous_file: Option<String>,
}

struct Parsed {
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    sealed: bool,
    kind: String,
    previous_file: Option<String>,
}

struct Entry {
    file: usize,
    line: u64,
    parsed: Option<Parsed>,
}

#[derive(Clone, Copy)]
struct State {
    seq: u64,
    hash: [u8; 32],
}

impl Parsed {
    fn links(&self, to: &State) -> bool {
        self.seq == to.seq + 1 && self.prev == to.hash
    }
}

fn parse(line: &str, sealer: &Sealer) -> Option<Parsed> {
    let (body, hash) = split(line)?;
    let head: Head = serde_json::from_str(line).ok()?;
    let prev = crate::util::unhex32(&head.prev)?;
    Some(Parsed {
        seq: head.seq,
        prev,
        hash,
        sealed: sealer.digest(body.as_bytes()) == hash,
        kind: head.kind,
        previous_file: head.previous_file,
    })
}

fn valid(e: &Entry) -> Option<&Parsed> {
    e.parsed.as_ref().filter(|p| p.sealed)
}

fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Verifies the log made of `files`, in the order given (oldest first).
pub fn verify<P: AsRef<Path>>(files: &[P], options: &VerifyOptions) -> Result<Report, VerifyError> {
    if files.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let sealer = Sealer::new(options.key.as_deref());
    let paths: Vec<PathBuf> = files.iter().map(|p| p.as_ref().to_path_buf()).collect();
    let mut entries = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let read_err = |source| VerifyError::Read {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut n = 0;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
                break;
            }
            n += 1;
            let complete = buf.last() == Some(&b'\n');
            let text = std::str::from_utf8(buf.strip_suffix(b"\n").unwrap_or(&buf));
            let parsed = match (complete, text) {
                (true, Ok(t)) => parse(t, &sealer),
                _ => None,
            };
            entries.push(Entry {
                file: i,
                line: n,
                parsed,
            });
        }
    }
    Ok(check(&paths, &entries, options, &sealer))
}

fn check(paths: &[PathBuf], entries: &[Entry], options: &VerifyOptions, sealer: &Sealer) -> Report {
    let mut report = Report {
        files: paths.to_vec(),
        lines: entries.len() as u64,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        from_genesis: false,
        closed: false,
        problem: None,
    };
    let problem = |kind, e: &Entry, detail: String| Problem {
        kind,
        file: paths[e.file].clone(),
        line: e.line,
        detail,
    };
    let Some(first) = entries.first() else {
        report.problem = Some(Problem {
            kind: ProblemKind::Empty,
            file: paths[0].clone(),
            line: 1,
            detail: "no lines".into(),
        });
        return report;
    };
    report.first_seq = first.parsed.as_ref().map(|p| p.seq);

    let genesis = State {
        seq: 0,
        hash: GENESIS,
    };
    let mut cur = genesis;
    let mut before: Option<State> = None;
    let mut last_kind = String::new();

    for (i, e) in entries.iter().enumerate() {
        let first_in_file = i == 0 || entries[i - 1].file != e.file;
        if i == 0 {
            if let Some(p) = valid(e).filter(|p| p.kind == "file_start") {
                // A check that starts at a later file trusts that file's link to the earlier
                // ones.
                cur = State {
                    seq: p.seq,
                    hash: p.hash,
                };
                last_kind.clone_from(&p.kind);
                continue;
            }
        } else if first_in_file {
            let prev_entry = &entries[i - 1];
            let previous = base_name(&paths[prev_entry.file]);
            if let Some(p) = valid(e) {
                let found = if p.kind != "file_start" {
                    (p.seq > cur.seq + 1).then(|| {
                        problem(
                            ProblemKind::Removed,
                            e,
                            format!(
                                "this file does not begin with `file_start` (seq jumps from {} to {}): its first line(s) are missing",
                                cur.seq, p.seq
                            ),
                        )
                    })
                } else if p.previous_file.as_deref() != Some(previous.as_str()) {
                    Some(problem(
                        ProblemKind::FileOrder,
                        e,
                        format!(
                            "this file continues `{}`, but follows `{previous}`: files out of order or one missing",
                            p.previous_file.as_deref().unwrap_or("?")
                        ),
                    ))
                } else if p.seq > cur.seq + 1 {
                    Some(Problem {
                        kind: ProblemKind::Removed,
                        file: paths[prev_entry.file].clone(),
                        line: prev_entry.line + 1,
                        detail: format!(
                            "the next file continues at seq {}, this one ends at seq {}: {} line(s) missing at its end",
                            p.seq,
                            cur.seq,
                            p.seq - cur.seq - 1
                        ),
                    })
                } else {
                    None
                };
                if found.is_some() {
                    report.problem = found;
                    break;
                }
            }
        }

        if let Some(p) = valid(e).filter(|p| p.links(&cur)) {
            before = Some(cur);
            cur = State {
                seq: p.seq,
                hash: p.hash,
            };
            if p.seq == 1 && p.kind == "log_start" {
                report.from_genesis = true;
            }
            last_kind.clone_from(&p.kind);
            continue;
        }

        let next = entries.get(i + 1).and_then(valid);
        let p = valid(e);
        // Swapped with the next line: it comes one too early and the next one fits here.
        if let (Some(p), Some(n)) = (p, next) {
            if p.seq == cur.seq + 2 && n.links(&cur) {
                report.problem = Some(problem(
                    ProblemKind::Reordered,
                    e,
                    format!(
                        "seq {} comes before seq {}: this line and the next are swapped",
                        p.seq, n.seq
                    ),
                ));
                break;
            }
        }
        // The next line continues the chain: this one does not belong.
        if next.is_some_and(|n| n.links(&cur)) {
            report.problem = Some(problem(
                ProblemKind::Inserted,
                e,
                format!(
                    "the chain goes from seq {} straight to the next line; this line does not belong",
                    cur.seq
                ),
            ));
            break;
        }
        // This line continues from the one before the previous: the previous does not belong.
        if let (Some(p), Some(b)) = (p, before) {
            if p.links(&b) {
                let prev_entry = &entries[i - 1];
                report.problem = Some(problem(
                    ProblemKind::Inserted,
                    prev_entry,
                    format!(
                        "the chain goes from seq {} straight to the line after this one; this line does not belong",
                        b.seq
                    ),
                ));
                break;
            }
        }
        let Some(parsed) = e.parsed.as_ref() else {
            report.problem = Some(problem(
                ProblemKind::Malformed,
                e,
                "not a sealed audit record (damaged, or torn by a crash)".into(),
            ));
            break;
        };
        if !parsed.sealed {
            let keyed = if options.key.is_none() && parsed.kind == "log_start" {
                " (if this log is sealed with HMAC, give its key)"
            } else {
                ""
            };
            report.problem = Some(problem(
                ProblemKind::Altered,
                e,
                format!(
                    "the line does not match its {} seal{keyed}",
                    match sealer.kind() {
                        super::MacKind::Sha256 => "SHA-256",
                        super::MacKind::HmacSha256 => "HMAC-SHA256",
                    }
                ),
            ));
            break;
        }
        report.problem = Some(if i == 0 {
            problem(
                ProblemKind::Removed,
                e,
                format!(
                    "the log starts at seq {} with `{}`, not with `log_start`: its first line(s) are missing",
                    parsed.seq, parsed.kind
                ),
            )
        } else if parsed.seq == cur.seq + 1 {
            problem(
                ProblemKind::Altered,
                &entries[i - 1],
                format!(
                    "this line no longer has the hash that the next line (seq {}) recorded for it",
                    parsed.seq
                ),
            )
        } else if parsed.seq > cur.seq + 1 {
            problem(
                ProblemKind::Removed,
                e,
                format!(
                    "the sequence jumps from {} to {}: {} line(s) missing before this line",
                    cur.seq,
                    parsed.seq,
                    parsed.seq - cur.seq - 1
                ),
            )
        } else {
            problem(
                ProblemKind::Reordered,
                e,
                format!(
                    "seq {} after seq {}: out of order or repeated",
                    parsed.seq, cur.seq
                ),
            )
        });
        break;
    }

    if report.problem.is_none() {
        report.last_seq = Some(cur.seq);
        report.last_hash = Some(hex(&cur.hash));
        report.closed = last_kind == "log_closed";
        if !report.closed && !options.allow_open {
            let last = &entries[entries.len() - 1];
            report.problem = Some(Problem {
                kind: ProblemKind::Unterminated,
                file: paths[last.file].clone(),
                line: last.line + 1,
                detail: format!(
                    "the log ends at seq {} without `log_closed`: lines were cut from its end, or it is still open (allow an open log to accept that)",
                    cur.seq
                ),
            });
        }
    } else {
        report.last_seq = (cur.seq > 0).then_some(cur.seq);
        report.last_hash = (cur.seq > 0).then(|| hex(&cur.hash));
    }
    report
}
