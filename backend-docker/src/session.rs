//! The host's side of the serve protocol (`vana_sandbox_init::serve`): one attach connection per
//! container, held for the container's life. Requests go to init's stdin through a writer task
//! (so the host never blocks on a write while init waits for it to read). A reader task
//! reassembles init's replies from its stdout and routes each: a run's to that run's channel
//! (several runs may be live: a session's kernel and the file helpers beside it), a relayed
//! connection's to that connection's pumps, which join it to an in-memory stream the engine's
//! egress proxy serves. Init's stderr carries only its own diagnostics.
//!
//! Flow control: a run's replies wait in a bounded channel (a slow consumer slows init, and with
//! it the program, rather than growing the host's memory); relayed connections keep the
//! protocol's window each way, so a connection never holds more than that in flight.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bollard::container::{AttachContainerOptions, AttachContainerResults, LogOutput};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use vana_sandbox_core::ProxyConnection;
use vana_sandbox_init::protocol::DecodeError;
use vana_sandbox_init::protocol::Stage;
use vana_sandbox_init::serve::{
    Conn, FrameBuffer, FsIds, PutEntry, Reply, Request, Setup, CONN_WINDOW, MAX_CHUNK, VERSION,
};

use crate::error::DockerError;

/// Most bytes of init's own diagnostics kept.
const MAX_DIAGNOSTICS: usize = 8 * 1024;
/// Replies of one run waiting for its loop.
const RUN_QUEUE: usize = 64;
/// How long init has to answer `Setup` and `Listen`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type Writer = mpsc::UnboundedSender<Vec<u8>>;

/// Where replies go.
#[derive(Default)]
struct Routes {
    hello: Option<oneshot::Sender<u32>>,
    listening: Option<oneshot::Sender<Result<u16, i32>>>,
    runs: HashMap<u32, mpsc::Sender<Reply>>,
    /// Where new relayed connections go (set by `listen`).
    accept: Option<mpsc::Sender<ProxyConnection>>,
    conns: HashMap<u32, ConnRoute>,
    diagnostics: Vec<u8>,
    /// The stream ended: the container stopped.
    closed: bool,
}

/// A relayed connection's host side.
struct ConnRoute {
    /// `Data`, `End` and `Reset` from init, for the task that writes to the proxy.
    down: mpsc::UnboundedSender<Conn>,
    /// Bytes the task that reads from the proxy may still send to init.
    credit: Arc<Semaphore>,
    /// That task (stopped when init resets the connection).
    up: tokio::task::AbortHandle,
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode(writer: &Writer, request: &Request) -> Result<(), DockerError> {
    let frame = request
        .encode()
        .map_err(|e| DockerError::Protocol(format!("encoding a request: {e}")))?;
    writer
        .send(frame)
        .map_err(|_| DockerError::Protocol("the connection to the container closed".into()))
}

/// An open conversation with a container's init.
pub(crate) struct Session {
    tx: Writer,
    routes: Arc<Mutex<Routes>>,
    next_run: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = lock(&self.routes);
        f.debug_struct("Session")
            .field("runs", &r.runs.len())
            .field("conns", &r.conns.len())
            .field("closed", &r.closed)
            .finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One run's replies, until it is dropped.
pub(crate) struct RunReplies {
    /// The run's id.
    pub id: u32,
    rx: mpsc::Receiver<Reply>,
    routes: Weak<Mutex<Routes>>,
}

impl RunReplies {
    /// The run's next reply; `None` once the container's stream ended.
    pub(crate) async fn recv(&mut self) -> Option<Reply> {
        self.rx.recv().await
    }
}

impl Drop for RunReplies {
    fn drop(&mut self) {
        if let Some(routes) = self.routes.upgrade() {
            lock(&routes).runs.remove(&self.id);
        }
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
            // An empty frame (never a request's) is `close`.
            while let Some(bytes) = rx.recv().await.filter(|b| !b.is_empty()) {
                if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                    return;
                }
            }
            // The session is closed or gone: closing stdin makes init kill everything and exit.
            let _ = input.shutdown().await;
        });
        let (hello_tx, hello_rx) = oneshot::channel();
        let routes = Arc::new(Mutex::new(Routes {
            hello: Some(hello_tx),
            ..Routes::default()
        }));
        let reader = tokio::spawn(read_replies(output, routes.clone(), tx.clone()));
        let session = Self {
            tx,
            routes,
            next_run: AtomicU32::new(1),
            reader,
        };
        session.send(&Request::Setup(setup))?;
        match tokio::time::timeout(ANSWER_TIMEOUT, hello_rx).await {
            Ok(Ok(VERSION)) => Ok(session),
            Ok(Ok(version)) => Err(DockerError::Protocol(format!(
                "the container's init speaks serve protocol {version}, the library {VERSION}"
            ))),
            Ok(Err(_)) => Err(DockerError::Protocol(format!(
                "the container's init did not start{}",
                session.diagnostics()
            ))),
            Err(_) => Err(DockerError::Protocol(format!(
                "the container's init did not answer in {ANSWER_TIMEOUT:?}{}",
                session.diagnostics()
            ))),
        }
    }

    /// Ends the conversation whoever else still holds the session: init's stdin is closed after
    /// the requests already queued, and init kills everything and exits.
    pub(crate) fn close(&self) {
        lock(&self.routes).closed = true;
        let _ = self.tx.send(Vec::new());
    }

    /// Places `entries` in the workspace through init itself (the protocol's `Put`): `None`
    /// when they do not fit one frame (the caller moves them another way); else init's answer,
    /// the index and `errno` of the entry that failed.
    pub(crate) async fn place(
        &self,
        ids: FsIds,
        entries: Vec<PutEntry>,
    ) -> Result<Option<Result<(), (u32, i32)>>, DockerError> {
        let mut replies = self.start_run()?;
        let request = Request::Put {
            id: replies.id,
            ids,
            entries,
        };
        match request.encode() {
            Err(DecodeError::TooLarge) => return Ok(None),
            Err(e) => return Err(DockerError::Protocol(format!("encoding a request: {e}"))),
            Ok(frame) => self.tx.send(frame).map_err(|_| {
                DockerError::Protocol("the connection to the container closed".into())
            })?,
        }
        match self.answer(&mut replies).await? {
            Reply::Placed { errno: 0, .. } => Ok(Some(Ok(()))),
            Reply::Placed { index, errno, .. } => Ok(Some(Err((index, errno)))),
            other => Err(DockerError::Protocol(format!(
                "unexpected answer to Put: {other:?}"
            ))),
        }
    }

    /// A regular file of the workspace, at most `max` bytes, read by init itself (the protocol's
    /// `Get`): its bytes, or the `errno` init met.
    pub(crate) async fn fetch(
        &self,
        ids: FsIds,
        path: &str,
        max: u32,
    ) -> Result<Result<(u32, Vec<u8>), i32>, DockerError> {
        let mut replies = self.start_run()?;
        self.send(&Request::Get {
            id: replies.id,
            ids,
            path: path.as_bytes().to_vec(),
            max,
        })?;
        match self.answer(&mut replies).await? {
            Reply::Got {
                errno: 0,
                mode,
                data,
                ..
            } => Ok(Ok((mode, data))),
            Reply::Got { errno, .. } => Ok(Err(errno)),
            other => Err(DockerError::Protocol(format!(
                "unexpected answer to Get: {other:?}"
            ))),
        }
    }

    /// The one reply an operation gets, within [`ANSWER_TIMEOUT`].
    async fn answer(&self, replies: &mut RunReplies) -> Result<Reply, DockerError> {
        match tokio::time::timeout(ANSWER_TIMEOUT, replies.recv()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(DockerError::Protocol(format!(
                "the container stopped{}",
                self.diagnostics()
            ))),
            Err(_) => Err(DockerError::Protocol(format!(
                "the container's init did not answer in {ANSWER_TIMEOUT:?}"
            ))),
        }
    }

    /// Queues a request (sent in order by the writer task).
    pub(crate) fn send(&self, request: &Request) -> Result<(), DockerError> {
        encode(&self.tx, request)
    }

    /// A new run id and the channel its replies arrive on (register before sending `Run`).
    pub(crate) fn start_run(&self) -> Result<RunReplies, DockerError> {
        let (tx, rx) = mpsc::channel(RUN_QUEUE);
        let mut routes = lock(&self.routes);
        if routes.closed {
            return Err(DockerError::Protocol(
                "the connection to the container closed".into(),
            ));
        }
        let id = loop {
            let id = self.next_run.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !routes.runs.contains_key(&id) {
                break id;
            }
        };
        routes.runs.insert(id, tx);
        Ok(RunReplies {
            id,
            rx,
            routes: Arc::downgrade(&self.routes),
        })
    }

    /// Makes init listen on `127.0.0.1:port` inside the container; the connections programs open
    /// there go to `accept`.
    pub(crate) async fn listen(
        &self,
        port: u16,
        accept: mpsc::Sender<ProxyConnection>,
    ) -> Result<(), DockerError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = lock(&self.routes);
            if routes.closed {
                return Err(DockerError::Protocol(
                    "the connection to the container closed".into(),
                ));
            }
            routes.listening = Some(tx);
            routes.accept = Some(accept);
        }
        self.send(&Request::Listen { port })?;
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(errno))) => Err(DockerError::Protocol(format!(
                "init could not listen on 127.0.0.1:{port}: {}",
                std::io::Error::from_raw_os_error(errno)
            ))),
            Ok(Err(_)) => Err(DockerError::Protocol(
                "the connection to the container closed".into(),
            )),
            Err(_) => Err(DockerError::Protocol(format!(
                "init did not answer `Listen` in {ANSWER_TIMEOUT:?}"
            ))),
        }
    }

    /// Whether the container's stream ended (the container stopped).
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.routes).closed
    }

    /// Init's own diagnostics so far, for error messages (`""` when none).
    pub(crate) fn diagnostics(&self) -> String {
        let routes = lock(&self.routes);
        if routes.diagnostics.is_empty() {
            String::new()
        } else {
            format!(": {}", String::from_utf8_lossy(&routes.diagnostics).trim())
        }
    }
}

/// Reads init's stdout until it ends, routing every reply.
async fn read_replies(mut output: Output, routes: Arc<Mutex<Routes>>, tx: Writer) {
    let mut frames = FrameBuffer::new();
    'stream: while let Some(item) = output.next().await {
        match item {
            Ok(LogOutput::StdOut { message }) => frames.push(&message),
            Ok(LogOutput::StdErr { message }) => {
                let mut r = lock(&routes);
                let room = MAX_DIAGNOSTICS.saturating_sub(r.diagnostics.len());
                r.diagnostics
                    .extend_from_slice(&message[..message.len().min(room)]);
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("attach stream ended: {e}");
                break;
            }
        }
        loop {
            match frames.next_frame() {
                Ok(Some(packet)) => match Reply::decode(&packet) {
                    Ok(reply) => route(reply, &routes, &tx).await,
                    Err(e) => tracing::warn!("a reply from the container's init: {e}"),
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(
                        "the container's init stream cannot be read past a bad frame: {e}"
                    );
                    break 'stream;
                }
            }
        }
    }
    // The container stopped: every run sees its channel close, every connection ends.
    let mut r = lock(&routes);
    r.closed = true;
    r.hello = None;
    r.listening = None;
    r.accept = None;
    r.runs.clear();
    r.conns.clear();
}

async fn route(reply: Reply, routes: &Arc<Mutex<Routes>>, tx: &Writer) {
    let run = match &reply {
        Reply::Output { id, .. }
        | Reply::Disk { id, .. }
        | Reply::Exited { id, .. }
        | Reply::StdinAck { id, .. }
        | Reply::Placed { id, .. }
        | Reply::Got { id, .. } => Some(*id),
        Reply::Failed { id, .. } if *id != 0 => Some(*id),
        _ => None,
    };
    if let Some(id) = run {
        let sender = lock(routes).runs.get(&id).cloned();
        if let Some(sender) = sender {
            // A run that stopped listening drops what is left of it.
            let _ = sender.send(reply).await;
        }
        return;
    }
    match reply {
        Reply::Hello { version } => {
            if let Some(hello) = lock(routes).hello.take() {
                let _ = hello.send(version);
            }
        }
        Reply::Listening { port } => {
            if let Some(l) = lock(routes).listening.take() {
                let _ = l.send(Ok(port));
            }
        }
        Reply::Failed { stage, errno, .. } if stage == Stage::Listen as u32 => {
            if let Some(l) = lock(routes).listening.take() {
                let _ = l.send(Err(errno));
            }
        }
        Reply::Failed { stage, errno, .. } => {
            let what = Stage::from_u32(stage).map_or("serving the host", Stage::describe);
            tracing::warn!(
                "the container's init failed {what}: {}",
                std::io::Error::from_raw_os_error(errno)
            );
        }
        Reply::Conn { id, frame } => relay(id, frame, routes, tx),
        // Routed above.
        Reply::Output { .. }
        | Reply::Disk { .. }
        | Reply::Exited { .. }
        | Reply::StdinAck { .. }
        | Reply::Placed { .. }
        | Reply::Got { .. } => {}
    }
}

/// One frame of relayed connection `id` from init.
fn relay(id: u32, frame: Conn, routes: &Arc<Mutex<Routes>>, tx: &Writer) {
    let mut r = lock(routes);
    match frame {
        Conn::Open => {
            let accepted = r
                .accept
                .as_ref()
                .and_then(|accept| accept.clone().try_reserve_owned().ok());
            let Some(permit) = accepted.filter(|_| !r.conns.contains_key(&id)) else {
                // Nobody takes connections (or too many wait): init closes it.
                drop(r);
                let _ = encode(
                    tx,
                    &Request::Conn {
                        id,
                        frame: Conn::Reset,
                    },
                );
                return;
            };
            let (route, stream) = open_conn(id, routes, tx);
            r.conns.insert(id, route);
            permit.send(Box::new(stream));
        }
        Conn::Ack(n) => {
            if let Some(c) = r.conns.get(&id) {
                // Never more credit than the window (a confused init cannot inflate it).
                let room = (CONN_WINDOW as usize).saturating_sub(c.credit.available_permits());
                c.credit.add_permits((n as usize).min(room));
            }
        }
        Conn::Reset => {
            if let Some(c) = r.conns.get(&id) {
                c.up.abort();
                let _ = c.down.send(Conn::Reset);
            }
        }
        frame => {
            if let Some(c) = r.conns.get(&id) {
                let _ = c.down.send(frame);
            }
        }
    }
}

/// Removes a connection's route once both of its tasks are done.
struct ConnGuard {
    id: u32,
    routes: Weak<Mutex<Routes>>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(routes) = self.routes.upgrade() {
            lock(&routes).conns.remove(&self.id);
        }
    }
}

/// The pumps of relayed connection `id`: one copies what init sends into the stream the proxy
/// serves (acknowledging it), the other what the proxy writes to init (within the credit init
/// gives). Returns the route and the proxy's end.
fn open_conn(
    id: u32,
    routes: &Arc<Mutex<Routes>>,
    tx: &Writer,
) -> (ConnRoute, tokio::io::DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(MAX_CHUNK);
    let (mut from_proxy, mut to_proxy) = tokio::io::split(ours);
    let credit = Arc::new(Semaphore::new(CONN_WINDOW as usize));
    let (down_tx, mut down_rx) = mpsc::unbounded_channel::<Conn>();
    let guard = Arc::new(ConnGuard {
        id,
        routes: Arc::downgrade(routes),
    });
    let up = {
        let guard = guard.clone();
        let credit = credit.clone();
        let tx = tx.clone();
        let down_tx = down_tx.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                // At least one byte of credit, then as much as there is.
                let Ok(first) = credit.acquire().await else {
                    return;
                };
                first.forget();
                let want = (1 + credit.available_permits()).min(MAX_CHUNK);
                let n = match from_proxy.read(&mut buf[..want]).await {
                    Ok(n) => n,
                    Err(_) => {
                        let _ = encode(
                            &tx,
                            &Request::Conn {
                                id,
                                frame: Conn::Reset,
                            },
                        );
                        let _ = down_tx.send(Conn::Reset);
                        return;
                    }
                };
                if n == 0 {
                    let _ = encode(
                        &tx,
                        &Request::Conn {
                            id,
                            frame: Conn::End,
                        },
                    );
                    return;
                }
                if n > 1 {
                    if let Ok(rest) = credit.try_acquire_many((n - 1) as u32) {
                        rest.forget();
                    }
                }
                let data = buf[..n].to_vec();
                if encode(
                    &tx,
                    &Request::Conn {
                        id,
                        frame: Conn::Data(data),
                    },
                )
                .is_err()
                {
                    return;
                }
            }
        })
    };
    let up_handle = up.abort_handle();
    let tx = tx.clone();
    tokio::spawn(async move {
        let _guard = guard;
        while let Some(frame) = down_rx.recv().await {
            match frame {
                Conn::Data(data) => {
                    if to_proxy.write_all(&data).await.is_err() {
                        let _ = encode(
                            &tx,
                            &Request::Conn {
                                id,
                                frame: Conn::Reset,
                            },
                        );
                        up.abort();
                        return;
                    }
                    let ack = Request::Conn {
                        id,
                        frame: Conn::Ack(data.len() as u32),
                    };
                    if encode(&tx, &ack).is_err() {
                        up.abort();
                        return;
                    }
                }
                Conn::End => {
                    let _ = to_proxy.shutdown().await;
                    return;
                }
                Conn::Reset | Conn::Open | Conn::Ack(_) => {
                    up.abort();
                    return;
                }
            }
        }
        // The container's stream ended.
        up.abort();
    });
    (
        ConnRoute {
            down: down_tx,
            credit,
            up: up_handle,
        },
        theirs,
    )
}
