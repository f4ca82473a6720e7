//! `exec --json`: the stable machine interface. Request JSON in, result JSON out.

use std::io::Read;
use std::process::ExitCode;

use clap::Args;
use vana_sandbox::{ExecutionRequest, ExecutionResult};

use crate::{EngineArgs, LogFormat};

#[derive(Args, Debug)]
pub(crate) struct ExecArgs {
    /// Read and write JSON (the only format; accepted for clarity in scripts).
    #[arg(long)]
    json: bool,
    /// Request file; `-` or nothing reads standard input.
    file: Option<std::path::PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

fn print(result: &ExecutionResult) {
    println!("{}", result.to_json());
}

pub(crate) async fn main(args: ExecArgs, format: LogFormat) -> ExitCode {
    let _ = args.json;
    let text = match args.file.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map(|_| s)
                .map_err(|e| format!("cannot read stdin: {e}"))
        }
    };
    let request = match text.and_then(|t| {
        ExecutionRequest::from_json(&t).map_err(|e| format!("malformed request JSON: {e}"))
    }) {
        Ok(r) => r,
        Err(msg) => {
            print(&ExecutionResult::rejected("invalid", "", msg));
            return ExitCode::SUCCESS;
        }
    };
    let id = request.id.clone().unwrap_or_else(|| "unassigned".into());
    let observed = match args.engine.engine(format).await {
        Ok(e) => e,
        Err(msg) => {
            print(&ExecutionResult::sandbox_error(id, request.language, msg));
            return ExitCode::from(1);
        }
    };
    let result = observed.engine.execute(request).await;
    observed.close();
    match result {
        Ok(result) => {
            print(&result);
            ExitCode::SUCCESS
        }
        Err(e) => {
            print(&ExecutionResult::sandbox_error(id, "", e.to_string()));
            ExitCode::from(1)
        }
    }
}
