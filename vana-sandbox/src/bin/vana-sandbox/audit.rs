//! `vana-sandbox audit verify FILE...`: checks an audit log's hash chain (see
//! `docs/OBSERVABILITY.md`). Exit status 0: intact; 1: the chain is broken (the first problem is
//! printed with its file and line); 2: the files or the key could not be read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use vana_sandbox_monitor::audit::{self, VerifyOptions};

/// Audit log tools.
#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Verify the hash chain of audit files given oldest first (e.g. `audit-*.jsonl`, which the
    /// shell sorts in order).
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The log's files, oldest first.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The HMAC key the log was written with (the file's bytes, less one trailing newline).
    #[arg(long)]
    hmac_key_file: Option<PathBuf>,
    /// Accept a log that does not end with `log_closed` (still being written). Lines cut from
    /// the end of such a log cannot be detected without an external anchor.
    #[arg(long)]
    allow_open: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn main(cmd: AuditCmd) -> ExitCode {
    match cmd {
        AuditCmd::Verify(a) => verify(a),
    }
}

fn verify(a: VerifyArgs) -> ExitCode {
    let key = match a.hmac_key_file.as_deref().map(audit::load_key).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("vana-sandbox audit verify: {e}");
            return ExitCode::from(2);
        }
    };
    let options = VerifyOptions {
        key,
        allow_open: a.allow_open,
    };
    let report = match audit::verify(&a.files, &options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vana-sandbox audit verify: {e}");
            return ExitCode::from(2);
        }
    };
    if a.json {
        let problem = report.problem.as_ref().map(|p| {
            serde_json::json!({
                "kind": p.kind.as_str(),
                "file": p.file,
                "line": p.line,
                "detail": p.detail,
            })
        });
        let out = serde_json::json!({
            "ok": report.is_ok(),
            "files": report.files,
            "lines": report.lines,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "last_hash": report.last_hash,
            "from_genesis": report.from_genesis,
            "closed": report.closed,
            "problem": problem,
        });
        println!("{out}");
    } else {
        match &report.problem {
            None => println!(
                "ok: {} line(s) in {} file(s), seq {}..{}, {}{}\nlast hash {}",
                report.lines,
                report.files.len(),
                report.first_seq.unwrap_or(0),
                report.last_seq.unwrap_or(0),
                if report.closed { "closed" } else { "open" },
                if report.from_genesis {
                    ""
                } else {
                    " (starts after earlier files that were not given)"
                },
                report.last_hash.as_deref().unwrap_or("-"),
            ),
            Some(p) => {
                println!("BROKEN: {p}");
                if let (Some(seq), Some(hash)) = (report.last_seq, &report.last_hash) {
                    println!("intact up to seq {seq} (hash {hash})");
                }
            }
        }
    }
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
