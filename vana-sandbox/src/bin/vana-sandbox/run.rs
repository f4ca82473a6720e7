//! `run`: for people. Streams the program's output and exits with its exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use vana_sandbox::{ExecutionRequest, LimitsRequest, ProcessIo, Status, StreamKind};

use crate::{EngineArgs, LogFormat};

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Language (python, javascript, bash, go, rust, auto); from FILE's extension when omitted,
    /// else detected from the code.
    #[arg(long, short)]
    lang: Option<String>,
    /// Code to run.
    #[arg(long, short, conflicts_with = "file")]
    code: Option<String>,
    /// File to run.
    file: Option<std::path::PathBuf>,
    /// Text fed to standard input.
    #[arg(long, conflicts_with = "stdin_file")]
    stdin: Option<String>,
    /// File fed to standard input (`-` for this process's stdin).
    #[arg(long)]
    stdin_file: Option<std::path::PathBuf>,
    /// Wall-clock limit in seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Memory limit in MiB.
    #[arg(long)]
    memory: Option<i64>,
    /// A package to make available (repeatable): `numpy`, `requests==2.32.3` (Python wheels),
    /// `is-number@^7` (npm).
    #[arg(long = "package", short = 'p')]
    packages: Vec<String>,
    /// Print the JSON result instead of the program's output.
    #[arg(long)]
    json: bool,
    /// Arguments passed to the program.
    #[arg(last = true)]
    args: Vec<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

fn guess_language(path: &std::path::Path) -> Option<&'static str> {
    vana_sandbox::lang::info::by_extension(path.to_str()?).map(|l| l.name)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("vana-sandbox: {msg}");
    ExitCode::from(2)
}

/// Exit codes: the program's own; 128+N for signal N; 124 timeout; 137 memory; 125 sandbox error;
/// 2 rejected; 3 output limit.
fn exit_code(status: Status, code: Option<i32>, signal: Option<i32>) -> ExitCode {
    let n = match status {
        Status::Success => 0,
        Status::Error | Status::CompileError => code.unwrap_or(1),
        Status::Timeout => 124,
        Status::MemoryLimit => 137,
        Status::OutputLimit => 3,
        Status::Killed => 128 + signal.unwrap_or(9),
        Status::Rejected => 2,
        Status::SandboxError => 125,
    };
    ExitCode::from(n.clamp(0, 255) as u8)
}

pub(crate) async fn main(a: RunArgs, format: LogFormat) -> ExitCode {
    let code = match (&a.code, &a.file) {
        (Some(c), _) => c.clone(),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(c) => c,
            Err(e) => return fail(format_args!("cannot read {}: {e}", f.display())),
        },
        (None, None) => return fail("give --code or a file to run"),
    };
    let language = a
        .lang
        .clone()
        .or_else(|| a.file.as_deref().and_then(guess_language).map(String::from))
        .unwrap_or_else(|| "auto".into());
    let stdin = match (&a.stdin, &a.stdin_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut s = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
                Ok(_) => Some(s),
                Err(e) => return fail(format_args!("cannot read stdin: {e}")),
            }
        }
        (None, Some(p)) => match std::fs::read_to_string(p) {
            Ok(s) => Some(s),
            Err(e) => return fail(format_args!("cannot read {}: {e}", p.display())),
        },
        (None, None) => None,
    };
    let mut request = ExecutionRequest::new(language, code);
    request.stdin = stdin;
    request.timeout = a.timeout;
    request.args = a.args.clone();
    request.packages = a.packages.clone();
    if a.memory.is_some() {
        request.limits = Some(LimitsRequest {
            memory_mb: a.memory,
            ..Default::default()
        });
    }
    let observed = match a.engine.engine(format).await {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("vana-sandbox: {msg}");
            return ExitCode::from(125);
        }
    };
    let io = if a.json {
        ProcessIo::default()
    } else {
        ProcessIo::bytes(
            Vec::new(),
            Some(Box::new(|kind, data| {
                let _ = match kind {
                    StreamKind::Stdout => std::io::stdout()
                        .write_all(data)
                        .and_then(|_| std::io::stdout().flush()),
                    StreamKind::Stderr => std::io::stderr().write_all(data),
                };
            })),
        )
    };
    let result = observed.engine.execute_with_io(request, io).await;
    // The last findings are printed and the audit log closed before the result.
    observed.close();
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vana-sandbox: {e}");
            return ExitCode::from(125);
        }
    };
    if a.json {
        println!("{}", result.to_json());
    } else if !matches!(result.status, Status::Success | Status::Error) {
        if let Some(c) = &result.compile {
            if result.status == Status::CompileError {
                eprint!("{}", c.error.as_deref().unwrap_or(""));
            }
        }
        eprintln!(
            "vana-sandbox: {}: {}",
            result.status,
            result.error.as_deref().unwrap_or("")
        );
    }
    exit_code(result.status, result.exit_code, result.signal)
}
