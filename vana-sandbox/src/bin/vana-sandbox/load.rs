//! `load`: runs the requests of a JSON-lines file many times at a given concurrency through one
//! engine, and prints a JSON summary (statuses, latency percentiles, runs per second, and every
//! result that did not match its expectation). For load tests and for checking that runs do not
//! disturb each other.
//!
//! Each line is `{"request": {...}, "expect": {"status": "success", "output": "ok\n"}}`;
//! `expect` (and either of its keys) may be left out.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};
use vana_sandbox::{ExecutionRequest, Status};

use crate::{EngineArgs, LogFormat};

#[derive(Args, Debug)]
pub(crate) struct LoadArgs {
    /// JSON-lines file of requests (with optional expectations).
    file: std::path::PathBuf,
    /// Runs in all (the file's lines are cycled).
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Runs at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Line {
    request: ExecutionRequest,
    #[serde(default)]
    expect: Expect,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: Option<Status>,
    output: Option<String>,
}

#[derive(Serialize)]
struct Mismatch {
    line: usize,
    status: Status,
    output: String,
    error: Option<String>,
}

#[derive(Serialize)]
struct Summary {
    runs: usize,
    concurrency: usize,
    seconds: f64,
    runs_per_second: f64,
    statuses: BTreeMap<String, usize>,
    latency_ms: BTreeMap<&'static str, f64>,
    /// Findings of the threat detector by rule (when it runs: `--findings`, `--audit-log`,
    /// `--threat-rules`).
    #[serde(skip_serializing_if = "Option::is_none")]
    findings: Option<BTreeMap<String, u64>>,
    mismatches: Vec<Mismatch>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub(crate) async fn main(a: LoadArgs, format: LogFormat) -> ExitCode {
    let text = match std::fs::read_to_string(&a.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vana-sandbox: cannot read {}: {e}", a.file.display());
            return ExitCode::from(2);
        }
    };
    let mut lines = Vec::new();
    for (i, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Line>(l) {
            Ok(line) => lines.push((i + 1, line)),
            Err(e) => {
                eprintln!("vana-sandbox: {}:{}: {e}", a.file.display(), i + 1);
                return ExitCode::from(2);
            }
        }
    }
    if lines.is_empty() {
        eprintln!("vana-sandbox: {} holds no requests", a.file.display());
        return ExitCode::from(2);
    }
    let observed = match a.engine.engine_with(a.concurrency.max(1), format).await {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("vana-sandbox: {msg}");
            return ExitCode::from(125);
        }
    };
    let lines = Arc::new(lines);
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(a.runs);
    for n in 0..a.runs {
        let (engine, lines, gate) = (observed.engine.clone(), lines.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let (line_no, line) = &lines[n % lines.len()];
            let t = Instant::now();
            let result = engine.execute(line.request.clone()).await;
            (*line_no, line.expect.clone(), t.elapsed(), result)
        }));
    }
    let mut statuses = BTreeMap::new();
    let mut latencies = Vec::with_capacity(a.runs);
    let mut mismatches = Vec::new();
    for t in tasks {
        let Ok((line, expect, took, result)) = t.await else {
            continue;
        };
        latencies.push(took);
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                *statuses.entry("engine_error".to_string()).or_insert(0) += 1;
                mismatches.push(Mismatch {
                    line,
                    status: Status::SandboxError,
                    output: String::new(),
                    error: Some(e.to_string()),
                });
                continue;
            }
        };
        *statuses.entry(r.status.to_string()).or_insert(0) += 1;
        let bad_status = expect.status.is_some_and(|s| s != r.status);
        let bad_output = expect.output.as_ref().is_some_and(|o| *o != r.output);
        if bad_status || bad_output {
            mismatches.push(Mismatch {
                line,
                status: r.status,
                output: r.output.chars().take(200).collect(),
                error: r.error.map(|e| e.chars().take(500).collect()),
            });
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    observed.close();
    latencies.sort();
    let summary = Summary {
        runs: latencies.len(),
        concurrency: a.concurrency,
        seconds,
        runs_per_second: latencies.len() as f64 / seconds.max(1e-9),
        statuses,
        latency_ms: [
            ("p50", percentile(&latencies, 0.5)),
            ("p90", percentile(&latencies, 0.9)),
            ("p99", percentile(&latencies, 0.99)),
            ("max", percentile(&latencies, 1.0)),
        ]
        .into_iter()
        .collect(),
        findings: observed.finding_counts(),
        mismatches,
    };
    match serde_json::to_string_pretty(&summary) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("vana-sandbox: {e}"),
    }
    if summary.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
