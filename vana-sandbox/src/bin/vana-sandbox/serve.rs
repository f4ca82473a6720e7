//! `serve`: the HTTP server (`vana-sandbox-server`) over one engine, and `keygen` for its API
//! keys.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use vana_sandbox::server::{self, Listen, Server, ServerConfig, Tenants};
use vana_sandbox::{ConfigKind, DockerConfig, Metrics, Runtime, Sandbox};

use crate::observe::Observed;
use crate::{EngineArgs, LogFormat};

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Server configuration (TOML): a `[server]` table and one `[[tenant]]` table per tenant
    /// with its key hashes, policy and quotas (see docs/SERVER.md). Without tenants the server
    /// takes unauthenticated requests on a Unix socket only.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to listen: `unix:/path` or `tcp:ADDRESS:PORT` (default: the file's, else
    /// `unix:/run/vana.sock`).
    #[arg(long, value_name = "ADDRESS")]
    listen: Option<String>,
    /// TLS certificate chain (PEM) for TCP; with --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Executions running at once (default: the number of CPUs).
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// Executions waiting for a slot before requests get 429 (default: 64 per slot).
    #[arg(long)]
    max_queue: Option<usize>,
    /// Sessions open at once before opening one gets 429 (default: 64).
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Seconds a shutdown (SIGTERM, ctrl-c) waits for running work before killing it.
    #[arg(long, value_name = "SECS")]
    shutdown_grace: Option<f64>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
pub(crate) struct KeygenArgs {
    /// Tenant name for the printed `[[tenant]]` snippet.
    #[arg(long, default_value = "my-tenant")]
    tenant: String,
}

/// `keygen`: a new API key on stdout's first line, then the configuration snippet that lets it
/// in (only the hash goes into the file).
pub(crate) fn keygen(args: KeygenArgs) -> ExitCode {
    match server::generate_key() {
        Ok(key) => {
            let text = format!(
                "{key}\n# [[tenant]]\n# name = \"{}\"\n# keys = [{{ sha256 = \"{}\" }}]\n",
                args.tenant,
                server::hash_key(&key)
            );
            // A reader that stops after the first line is not an error.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vana-sandbox: no randomness for a key: {e}");
            ExitCode::from(1)
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("vana-sandbox serve: {msg}");
    ExitCode::from(1)
}

pub(crate) async fn main(args: ServeArgs, format: LogFormat) -> ExitCode {
    let mut config = match &args.config {
        Some(p) => match ServerConfig::from_path(p) {
            Ok(c) => c,
            Err(e) => return fail(e),
        },
        None => ServerConfig::default(),
    };
    let s = &mut config.server;
    if let Some(l) = &args.listen {
        match Listen::parse(l) {
            Ok(l) => s.listen = l,
            Err(e) => return fail(e),
        }
    }
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        s.tls_cert = Some(c.clone());
        s.tls_key = Some(k.clone());
    }
    if let Some(g) = args.shutdown_grace {
        s.shutdown_grace_secs = g;
    }
    if let Err(e) = config.check() {
        return fail(e);
    }
    let tenant_policies = match config.policies() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let (mut policy, source) = match args.engine.policy() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    // Tenants without a policy of their own share this one: its cache is per tenant too.
    server::config::narrow_cache(&mut policy);
    let tenants = if config.tenants.is_empty() {
        Tenants::anonymous()
    } else {
        match Tenants::from_config(&config) {
            Ok(t) => t,
            Err(e) => return fail(e),
        }
    };

    let metrics = match Metrics::with_prometheus() {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let e = &args.engine;
    if e.runtime.is_some() && e.backend != "docker" {
        return fail("--runtime needs --backend docker");
    }
    let (observability, _) = match e.observe.start_with(format, false, Some(metrics.clone())) {
        Ok(o) => o,
        Err(msg) => return fail(msg),
    };
    let mut requirements = vec![(
        format!("policy `{}`", policy.name),
        policy.require.clone(),
        policy.runtime,
    )];
    let mut builder = Sandbox::builder().policy(policy).policy_source(source);
    for tp in tenant_policies {
        requirements.push((
            format!("tenant `{}` policy `{}`", tp.tenant, tp.policy.name),
            tp.policy.require.clone(),
            tp.policy.runtime,
        ));
        builder = builder.tenant_policy(tp.tenant, tp.policy, tp.source);
    }
    if let Some(n) = args.max_concurrency {
        builder = builder.max_concurrency(n);
    }
    if let Some(n) = args.max_queue {
        builder = builder.max_queue(n);
    }
    if let Some(n) = args.max_sessions {
        builder = builder.max_sessions(n);
    }
    if e.backend == "docker" {
        builder = builder.docker(DockerConfig {
            runtime: e
                .runtime
                .as_deref()
                .and_then(Runtime::parse)
                .unwrap_or(Runtime::Runc),
            pool_size: e.pool,
            ..DockerConfig::default()
        });
    }
    if let Some(o) = &observability {
        builder = builder.observability(o.clone());
        let source = args
            .config
            .as_ref()
            .map_or_else(|| "flags".to_string(), |p| p.display().to_string());
        o.config_loaded(ConfigKind::Server, &source, &config.fingerprint());
    }
    let engine = match builder.build().await {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let observed = Observed::new(engine.clone(), observability);

    let mut sb = Server::builder(engine)
        .settings(config.server.clone())
        .tenants(tenants)
        .metrics(metrics);
    for (label, layers, runtime) in requirements {
        sb = sb.require(label, layers, runtime);
    }
    let server = match sb.bind().await {
        Ok(s) => s,
        Err(e) => {
            observed.close();
            return fail(e);
        }
    };
    // The first line on stdout says where (tests and scripts read the port from it).
    println!(
        "listening on {}{}",
        server.local_addr(),
        if server.is_tls() { " (TLS)" } else { "" }
    );
    let _ = std::io::stdout().flush();
    let report = server.run(server::shutdown_signal()).await;
    eprintln!(
        "vana-sandbox serve: stopped ({}; {} run(s) killed at the end of the grace, {} session(s) closed)",
        if report.drained {
            "every request finished"
        } else {
            "the grace ran out"
        },
        report.killed_runs,
        report.sessions_closed,
    );
    observed.close();
    // Give the runtime's blocking threads (sandbox teardown) a moment before exit.
    tokio::time::sleep(Duration::from_millis(10)).await;
    if report.left_running > 0 {
        return fail(format!(
            "{} execution(s) still held a slot at exit",
            report.left_running
        ));
    }
    ExitCode::SUCCESS
}
