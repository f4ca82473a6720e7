//! The `vana-sandbox` command: `run` for people, `exec --json` for programs, `doctor` for hosts,
//! `image build` for the Docker backend's runtime image, `audit verify` for audit logs, `serve`
//! for the HTTP server and `keygen` for its API keys.

mod audit;
mod doctor;
mod exec;
mod image;
mod load;
mod observe;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vana_sandbox::{DockerConfig, PolicyConfig, Runtime, Sandbox};

use observe::{ObserveArgs, Observed};

/// Run untrusted code in a sandbox.
#[derive(Parser, Debug)]
#[command(name = "vana-sandbox", version, about, propagate_version = true)]
struct Cli {
    /// Format of logs and findings on stderr: `text`, or `json` (one object per line; a log line
    /// carries the run's `execution` span). Default: `$VANA_SANDBOX_LOG_FORMAT`, else text.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Cmd,
}

/// Format of what goes to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `--log-format`, else `$VANA_SANDBOX_LOG_FORMAT` (`json` or `text`), else text.
    fn resolve(flag: Option<LogFormat>) -> LogFormat {
        flag.unwrap_or_else(|| match std::env::var("VANA_SANDBOX_LOG_FORMAT") {
            Ok(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        })
    }
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
    /// Serve the JSON contract over HTTP (Unix socket by default, TCP when asked): executions,
    /// sessions, files, streaming, tenants with API keys and quotas, /metrics.
    Serve(serve::ServeArgs),
    /// Print a new API key for `serve` and the configuration line with its hash.
    Keygen(serve::KeygenArgs),
}

/// Options shared by `run`, `exec` and `load`.
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
    #[command(flatten)]
    observe: ObserveArgs,
}

impl EngineArgs {
    /// The policy and where it came from (for the audit log's `config_loaded` line).
    pub(crate) fn policy(&self) -> Result<(PolicyConfig, String), String> {
        match (&self.policy, &self.preset) {
            (Some(p), _) => PolicyConfig::from_path(p)
                .map(|c| (c, p.display().to_string()))
                .map_err(|e| e.to_string()),
            (None, Some(name)) => PolicyConfig::preset(name)
                .map(|c| (c, format!("preset:{name}")))
                .map_err(|e| e.to_string()),
            (None, None) => Ok((PolicyConfig::default(), "default".into())),
        }
    }

    pub(crate) async fn engine(&self, format: LogFormat) -> Result<Observed, String> {
        self.build(None, format, false).await
    }

    /// An engine running `concurrency` executions at once, counting findings by rule.
    pub(crate) async fn engine_with(
        &self,
        concurrency: usize,
        format: LogFormat,
    ) -> Result<Observed, String> {
        self.build(Some(concurrency), format, true).await
    }

    async fn build(
        &self,
        concurrency: Option<usize>,
        format: LogFormat,
        count_findings: bool,
    ) -> Result<Observed, String> {
        let (policy, source) = self.policy()?;
        if self.runtime.is_some() && self.backend != "docker" {
            return Err("--runtime needs --backend docker".into());
        }
        let mut builder = Sandbox::builder().policy(policy).policy_source(source);
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
        let (observability, counts) = self.observe.start(format, count_findings)?;
        if let Some(o) = &observability {
            builder = builder.observability(o.clone());
        }
        let engine = builder.build().await.map_err(|e| e.to_string())?;
        Ok(Observed::new(engine, observability).with_counts(counts))
    }
}

/// Logs to stderr, filtered by `VANA_SANDBOX_LOG` (default `error`); one JSON object per line
/// in the `json` format (with the `execution` span, which carries the run's id).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VANA_SANDBOX_LOG")
        .unwrap_or_else(|_| "error".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = LogFormat::resolve(cli.log_format);
    init_logging(format);
    let cli = match cli.command {
        Cmd::Audit(a) => return audit::main(a),
        Cmd::Keygen(a) => return serve::keygen(a),
        command => Cli { command, ..cli },
    };
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
            Cmd::Run(a) => run::main(a, format).await,
            Cmd::Exec(a) => exec::main(a, format).await,
            Cmd::Doctor(a) => doctor::main(a).await,
            Cmd::Image(a) => image::main(a).await,
            Cmd::Audit(a) => audit::main(a),
            Cmd::Keygen(a) => serve::keygen(a),
            Cmd::Load(a) => load::main(a, format).await,
            Cmd::Serve(a) => serve::main(a, format).await,
        }
    })
}
