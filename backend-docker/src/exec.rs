//! One process through `docker exec`: stdin fed, stdout/stderr demultiplexed with a byte cap,
//! the wall clock enforced by killing the container, the exit reported by `vana-exec`.

use std::time::{Duration, Instant};

use bollard::container::{KillContainerOptions, LogOutput};
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use vana_sandbox_core::{
    BackendError, Exit, OutputCapture, OutputSink, ProcessOutcome, ProcessSpec, Stop, StreamKind,
};

use crate::error::DockerError;
use crate::memcg::Memcg;
use crate::Shared;

/// Where `vana-exec` lives in the runtime image.
pub const VANA_EXEC: &str = "/usr/local/bin/vana-exec";

/// What one exec produced: the outcome (exit, output, wall time, OOM evidence seen while it
/// ran; the caller adds usage) and whether the container had to be killed.
#[derive(Debug, Default)]
pub(crate) struct Ran {
    pub outcome: ProcessOutcome,
    /// The container was killed (timeout, output limit, OOM): it cannot run anything else.
    pub container_killed: bool,
}

fn nonce() -> String {
    let mut b = [0u8; 12];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..12].copy_from_slice(&t.to_le_bytes()[..12]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Splits `vana-exec`'s signal marker off stderr: `"\n<nonce>:signal:<n>\n"` at the end.
pub(crate) fn take_signal_marker(stderr: &mut Vec<u8>, nonce: &str) -> Option<i32> {
    let marker = format!("\n{nonce}:signal:");
    let text = String::from_utf8_lossy(stderr);
    let at = text.rfind(&marker)?;
    let sig = text.get(at + marker.len()..)?.trim().parse().ok()?;
    stderr.truncate(at);
    Some(sig)
}

async fn kill(shared: &Shared, id: &str) {
    let _ = shared
        .docker
        .kill_container(id, Some(KillContainerOptions { signal: "SIGKILL" }))
        .await;
}

/// An exec started with its output attached and its stdin being fed (then closed).
struct Attached {
    exec_id: String,
    output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    writer: tokio::task::JoinHandle<()>,
}

/// Creates and starts an exec as the sandbox user, feeding `stdin` in the background.
async fn attach(
    shared: &Shared,
    id: &str,
    cmd: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    stdin: Vec<u8>,
) -> Result<Attached, BackendError> {
    let created = shared
        .docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(cmd),
                env: Some(env),
                user: Some(format!("{0}:{0}", shared.config.uid)),
                working_dir: Some(cwd.to_string()),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(DockerError::api("create exec"))?;
    let started = shared
        .docker
        .start_exec(&created.id, None)
        .await
        .map_err(DockerError::api("start exec"))?;
    let StartExecResults::Attached { output, mut input } = started else {
        return Err(DockerError::Other("docker exec did not attach".into()).into());
    };
    let writer = tokio::spawn(async move {
        if !stdin.is_empty() {
            let _ = input.write_all(&stdin).await;
        }
        let _ = input.shutdown().await;
    });
    Ok(Attached {
        exec_id: created.id,
        output,
        writer,
    })
}

/// Runs `process` in container `id`.
pub(crate) async fn run(
    shared: &Shared,
    id: &str,
    process: &ProcessSpec,
    stdin: Vec<u8>,
    sink: Option<OutputSink>,
    (nproc, fsize): (u64, u64),
    oom_watch: Option<(&Memcg, u64)>,
) -> Result<Ran, BackendError> {
    let nonce = nonce();
    let mut cmd = vec![
        VANA_EXEC.to_string(),
        nonce.clone(),
        nproc.to_string(),
        fsize.to_string(),
    ];
    cmd.extend(process.argv.iter().cloned());
    let env: Vec<String> = process
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + process.limits.timeout;
    let Attached {
        exec_id,
        mut output,
        writer,
    } = attach(shared, id, cmd, env, &process.cwd, stdin).await?;
    let mut cap = OutputCapture::new(process.limits.output.get(), sink);
    let mut ran = Ran::default();
    let out = &mut ran.outcome;
    // An OOM kill under gVisor can take the sandbox down without ending the exec stream: watch
    // the cgroup's counter and stop at the first kill.
    let mut oom_tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = oom_tick.tick(), if oom_watch.is_some() => {
                if let Some((memcg, before)) = oom_watch {
                    if memcg.oom_kills() > before {
                        out.oom_killed = true;
                        kill(shared, id).await;
                        ran.container_killed = true;
                        break;
                    }
                    if !memcg.exists() {
                        // The container is gone (gVisor's sandbox OOM-killed, say) while the
                        // exec stream stays open: stop waiting; the caller asks the engine why.
                        ran.container_killed = true;
                        break;
                    }
                }
            }
            chunk = output.next() => match chunk {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!("exec stream ended: {e}");
                    break;
                }
                Some(Ok(msg)) => {
                    let (kind, data) = match msg {
                        LogOutput::StdOut { message } => (StreamKind::Stdout, message),
                        LogOutput::StdErr { message } => (StreamKind::Stderr, message),
                        _ => continue,
                    };
                    if cap.push(kind, &data) {
                        out.stopped = Some(Stop::OutputLimit);
                        kill(shared, id).await;
                        ran.container_killed = true;
                        break;
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                out.stopped = Some(Stop::Timeout);
                kill(shared, id).await;
                ran.container_killed = true;
                break;
            }
        }
    }
    writer.abort();
    out.wall_time = start.elapsed();
    (out.stdout, out.stderr, out.truncated) = cap.finish();
    let inspected = shared.docker.inspect_exec(&exec_id).await.ok();
    let code = inspected
        .as_ref()
        .and_then(|i| i.exit_code)
        .map(|c| c as i32);
    out.exit = if let Some(sig) = take_signal_marker(&mut out.stderr, &nonce) {
        Exit::Signal(sig)
    } else if ran.container_killed {
        Exit::Signal(libc::SIGKILL)
    } else {
        match code {
            Some(c) => Exit::Code(c),
            None => {
                return Err(
                    DockerError::Other("docker exec finished without an exit code".into()).into(),
                )
            }
        }
    };
    Ok(ran)
}

/// Runs a helper command (tar for file transfer) as the sandbox user and collects everything,
/// up to `max` bytes of stdout. Returns (exit code, stdout, stderr).
pub(crate) async fn run_plain(
    shared: &Shared,
    id: &str,
    argv: &[&str],
    stdin: Vec<u8>,
    max: u64,
) -> Result<(i64, Vec<u8>, Vec<u8>), BackendError> {
    let cmd = argv.iter().map(|s| s.to_string()).collect();
    let Attached {
        exec_id,
        mut output,
        writer,
    } = attach(shared, id, cmd, Vec::new(), "/workspace", stdin).await?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(Ok(msg)) = output.next().await {
        match msg {
            LogOutput::StdOut { message } => out.extend_from_slice(&message),
            LogOutput::StdErr { message } => err.extend_from_slice(&message),
            _ => {}
        }
        if out.len() as u64 > max {
            writer.abort();
            return Err(BackendError::File {
                path: argv.last().map(|s| s.to_string()).unwrap_or_default(),
                reason: "file too large to read back".into(),
            });
        }
    }
    let _ = writer.await;
    let code = shared
        .docker
        .inspect_exec(&exec_id)
        .await
        .map_err(DockerError::api("inspect exec"))?
        .exit_code
        .unwrap_or(-1);
    Ok((code, out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_marker_is_parsed_and_stripped() {
        let mut e = b"oops\n\nabc:signal:9\n".to_vec();
        assert_eq!(take_signal_marker(&mut e, "abc"), Some(9));
        assert_eq!(e, b"oops\n");
        let mut e = b"plain stderr".to_vec();
        assert_eq!(take_signal_marker(&mut e, "abc"), None);
        assert_eq!(e, b"plain stderr");
    }
}
