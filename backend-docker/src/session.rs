//! The host's side of the serve protocol (`vana_sandbox_init::serve`): one attach connection per
//! container, held for the container's life. Requests go to init's stdin through a writer task
//! (so the host never blocks on a write while init waits for it to read); replies are reassembled
//! from init's stdout. Init's stderr carries only its own diagnostics.

use std::pin::Pin;

use bollard::container::{AttachContainerOptions, AttachContainerResults, LogOutput};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use vana_sandbox_init::serve::{FrameBuffer, Reply, Request, Setup, VERSION};

use crate::error::DockerError;

/// Most bytes of init's own diagnostics kept.
const MAX_DIAGNOSTICS: usize = 8 * 1024;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// An open conversation with a container's init.
pub(crate) struct Session {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    output: Output,
    frames: FrameBuffer,
    diagnostics: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pending", &self.frames.pending())
            .finish()
    }
}

impl Session {
    /// Attaches to container `id`, sends `setup` and waits for init's `Hello`.
    pub(crate) async fn open(docker: &Docker, id: &str, setup: Setup) -> Result<Self, DockerError> {
        let AttachContainerResults { output, mut input } = docker
            .attach_container(
                id,
                Some(AttachContainerOptions::<String> {
                    stdin: Some(true),
                    stdout: Some(true),
                    stderr: Some(true),
                    stream: Some(true),
                    logs: Some(false),
                    detach_keys: None,
                }),
            )
            .await
            .map_err(DockerError::api("attach container"))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                    return;
                }
            }
            // The session is gone: closing stdin makes init kill everything and exit.
            let _ = input.shutdown().await;
        });
        let mut session = Self {
            tx,
            output,
            frames: FrameBuffer::new(),
            diagnostics: Vec::new(),
        };
        session.send(&Request::Setup(setup))?;
        match session.recv().await? {
            Some(Reply::Hello { version: VERSION }) => Ok(session),
            Some(Reply::Hello { version }) => Err(DockerError::Protocol(format!(
                "the container's init speaks serve protocol {version}, the library {VERSION}"
            ))),
            other => Err(DockerError::Protocol(format!(
                "the container's init did not start ({other:?}){}",
                session.diagnostics()
            ))),
        }
    }

    /// Queues a request (sent in order by the writer task).
    pub(crate) fn send(&self, request: &Request) -> Result<(), DockerError> {
        let frame = request
            .encode()
            .map_err(|e| DockerError::Protocol(format!("encoding a request: {e}")))?;
        self.tx
            .send(frame)
            .map_err(|_| DockerError::Protocol("the connection to the container closed".into()))
    }

    /// The next reply; `None` when the stream ended (the container stopped).
    pub(crate) async fn recv(&mut self) -> Result<Option<Reply>, DockerError> {
        loop {
            match self.frames.next_frame() {
                Ok(Some(packet)) => {
                    return Reply::decode(&packet)
                        .map(Some)
                        .map_err(|e| DockerError::Protocol(format!("a reply from init: {e}")))
                }
                Ok(None) => {}
                Err(e) => return Err(DockerError::Protocol(format!("init's stream: {e}"))),
            }
            match self.output.next().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    tracing::debug!("attach stream ended: {e}");
                    return Ok(None);
                }
                Some(Ok(LogOutput::StdOut { message })) => self.frames.push(&message),
                Some(Ok(LogOutput::StdErr { message })) => {
                    let room = MAX_DIAGNOSTICS.saturating_sub(self.diagnostics.len());
                    self.diagnostics
                        .extend_from_slice(&message[..message.len().min(room)]);
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Init's own diagnostics so far, for error messages (`""` when none).
    pub(crate) fn diagnostics(&self) -> String {
        if self.diagnostics.is_empty() {
            String::new()
        } else {
            format!(": {}", String::from_utf8_lossy(&self.diagnostics).trim())
        }
    }
}
