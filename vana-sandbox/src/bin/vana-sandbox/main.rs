//! The `vana-sandbox` command: `run` for people, `exec --json` for programs, `doctor` for hosts.

mod doctor;
mod exec;
mod run;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use vana_sandbox::{lang, Engine, NativeExecutor, PolicyConfig};

/// Run untrusted code in a sandbox.
#[derive(Parser, Debug)]
#[command(name = "vana-sandbox", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a snippet or a file; prints its output and exits with its exit code.
    Run(run::RunArgs),
    /// Read a request as JSON (stdin or a file) and print the result as JSON.
    Exec(exec::ExecArgs),
    /// Show which isolation layers this host enforces and which toolchains were found.
    Doctor(doctor::DoctorArgs),
}

/// Options shared by `run` and `exec`.
#[derive(Args, Debug, Clone)]
pub(crate) struct EngineArgs {
    /// Isolation backend.
    #[arg(long, default_value = "native", value_parser = ["native"])]
    backend: String,
    /// Policy file (TOML or JSON).
    #[arg(long, conflicts_with = "preset")]
    policy: Option<std::path::PathBuf>,
    /// Policy preset: default, strict, relaxed.
    #[arg(long)]
    preset: Option<String>,
}

impl EngineArgs {
    pub(crate) fn policy(&self) -> Result<PolicyConfig, String> {
        match (&self.policy, &self.preset) {
            (Some(p), _) => PolicyConfig::from_path(p).map_err(|e| e.to_string()),
            (None, Some(name)) => PolicyConfig::preset(name).map_err(|e| e.to_string()),
            (None, None) => Ok(PolicyConfig::default()),
        }
    }

    pub(crate) fn engine(&self) -> Result<Engine, String> {
        let policy = self.policy()?;
        let executor = NativeExecutor::new().map_err(|e| e.to_string())?;
        let mut builder = Engine::builder();
        if let Some(cache) = vana_sandbox::default_compile_cache() {
            builder = builder.compile_cache(cache);
        }
        builder
            .executor(Arc::new(executor))
            .policy(Arc::new(policy))
            .languages(lang::installed())
            .monitor(Arc::new(vana_sandbox::TracingMonitor))
            .build()
            .map_err(|e| e.to_string())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VANA_SANDBOX_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vana-sandbox: cannot start the runtime: {e}");
            return ExitCode::from(125);
        }
    };
    rt.block_on(async {
        match cli.command {
            Cmd::Run(a) => run::main(a).await,
            Cmd::Exec(a) => exec::main(a).await,
            Cmd::Doctor(a) => doctor::main(a),
        }
    })
}
