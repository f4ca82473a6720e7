//! `exec --json`: the stable machine interface. Request JSON in, result JSON out.
//!
//! With `--stream`, standard output carries JSON lines instead: one
//! `{"event": "chunk", "data": {"stream": "stdout", "text": …}}` per piece of output as it
//! happens, then one `{"event": "result", "data": <result JSON>}` (the server's event names).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Args;
use serde::Serialize;
use vana_sandbox::{ExecutionRequest, ExecutionResult, OutputChunk, OutputChunks, ProcessIo};

use crate::{EngineArgs, LogFormat};

#[derive(Args, Debug)]
pub(crate) struct ExecArgs {
    /// Read and write JSON (the only format; accepted for clarity in scripts).
    #[arg(long)]
    json: bool,
    /// Emit JSON lines: output chunks as they happen, then the result.
    #[arg(long)]
    stream: bool,
    /// Request file; `-` or nothing reads standard input.
    file: Option<std::path::PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// One line of `--stream` output.
#[derive(Serialize)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
enum Line<'a> {
    Chunk(&'a OutputChunk),
    Result(&'a ExecutionResult),
}

fn write_line(line: &Line<'_>) {
    if let Ok(text) = serde_json::to_string(line) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}").and_then(|_| out.flush());
    }
}

/// Where results go: one JSON document, or the last of the JSON lines.
#[derive(Clone, Copy)]
struct Printer {
    stream: bool,
}

impl Printer {
    fn result(self, result: &ExecutionResult) {
        if self.stream {
            write_line(&Line::Result(result));
        } else {
            println!("{}", result.to_json());
        }
    }

    /// The run's I/O: chunk lines as output arrives when streaming, else captured only.
    fn io(self) -> (ProcessIo, Option<Arc<Mutex<OutputChunks>>>) {
        if !self.stream {
            return (ProcessIo::default(), None);
        }
        let chunks = Arc::new(Mutex::new(OutputChunks::default()));
        let sink = chunks.clone();
        let io = ProcessIo::bytes(
            Vec::new(),
            Some(Box::new(move |kind, data| {
                let chunk = sink
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(kind, data);
                if let Some(chunk) = chunk {
                    write_line(&Line::Chunk(&chunk));
                }
            })),
        );
        (io, Some(chunks))
    }
}

pub(crate) async fn main(args: ExecArgs, format: LogFormat) -> ExitCode {
    let _ = args.json;
    let printer = Printer {
        stream: args.stream,
    };
    let print = |result: &ExecutionResult| printer.result(result);
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
    let (io, chunks) = printer.io();
    let result = observed.engine.execute_with_io(request, io).await;
    observed.close();
    for chunk in chunks
        .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()).finish())
        .unwrap_or_default()
    {
        write_line(&Line::Chunk(&chunk));
    }
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
