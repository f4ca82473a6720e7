//! The `vana-sandbox` command: `run` for people, `exec --json` for programs, `doctor` for hosts,
//! `image build` for the Docker backend's runtime image, `audit verify` for audit logs.

mod audit;
mod doctor;
mod exec;
mod image;
mod load;
mod run;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use vana_sandbox::{DockerConfig, Engine, PolicyConfig, Runtime, Sandbox};

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
    /// Show which isolation layers this host enforces, which toolchains, Docker images and
    /// runtimes it has.
    Doctor(doctor::DoctorArgs),
    /// Manage the Docker backend's runtime images.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Audit log tools (verify a log's hash chain).
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Run the requests of a JSON-lines file many times at a concurrency; print a summary.
    Load(load::LoadArgs),
}

/// Options shared by `run` and `exec`.
#[derive(Args, Debug, Clone)]
pub(crate) struct EngineArgs {
    /// Isolation backend.
    #[arg(long, default_value = "native", value_parser = ["native", "docker"])]
    backend: String,
    /// Container runtime of the docker backend.
    #[arg(long, value_parser = ["runc", "runsc"])]
    runtime: Option<String>,
    /// Warm containers kept ahead (docker backend).
    #[arg(long, default_value_t = 0)]
    pool: usize,
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

    pub(crate) async fn engine(&self) -> Result<Engine, String> {
        self.build(None).await
    }

    /// An engine running `concurrency` executions at once.
    pub(crate) async fn engine_with(&self, concurrency: usize) -> Result<Engine, String> {
        self.build(Some(concurrency)).await
    }

    async fn build(&self, concurrency: Option<usize>) -> Result<Engine, String> {
        let policy = self.policy()?;
        if self.runtime.is_some() && self.backend != "docker" {
            return Err("--runtime needs --backend docker".into());
        }
        let mut builder = Sandbox::builder().policy(policy);
        if let Some(n) = concurrency {
            builder = builder.max_concurrency(n);
        }
        if self.backend == "docker" {
            builder = builder.docker(DockerConfig {
                runtime: self
                    .runtime
                    .as_deref()
                    .and_then(Runtime::parse)
                    .unwrap_or(Runtime::Runc),
                pool_size: self.pool,
                ..DockerConfig::default()
            });
        }
        builder.build().await.map_err(|e| e.to_string())
    }
}

/// Logs to stderr, filtered by `VANA_SANDBOX_LOG` (default `error`); one JSON object per line
/// when `VANA_SANDBOX_LOG_FORMAT=json` (with the `execution` span, which carries the run's id).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VANA_SANDBOX_LOG")
        .unwrap_or_else(|_| "error".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json =
        std::env::var("VANA_SANDBOX_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    if let Cmd::Audit(a) = cli.command {
        return audit::main(a);
    }
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
            Cmd::Doctor(a) => doctor::main(a).await,
            Cmd::Image(a) => image::main(a).await,
            Cmd::Audit(a) => audit::main(a),
            Cmd::Load(a) => load::main(a).await,
        }
    })
}
