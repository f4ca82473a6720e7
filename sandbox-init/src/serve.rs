//! Serve mode: the protocol between the Docker backend and `vana-init serve`, the main process
//! (PID 1) of every container.
//!
//! Compiled into both sides like [`crate::protocol`], whose framing (an 8-byte header: type and
//! payload length, little-endian `u32`s; then the payload) and whose `Run` payload it reuses. The
//! frames travel over a byte stream: the container's stdin (host to init) and stdout (init to
//! host), which Docker carries over the one attach connection the host holds; [`FrameBuffer`]
//! reassembles them, and refuses a header that announces more than [`MAX_MESSAGE`].
//!
//! The program never holds init's stdin or stdout: init gives it pipes of its own and forwards
//! what it writes inside `Output` frames, so nothing the program writes can pose as a frame.
//! Init runs as root of the container (with only the capabilities to switch the program to its
//! user and to signal it) and is not dumpable, so the program cannot reach init's descriptors
//! through `/proc` either. Everything a result says about how a program ended (`Exited`, `Disk`)
//! comes from init.
//!
//! A conversation: the host sends `Setup` (the seccomp filter every program gets, and the
//! writable mounts whose usage init reports); init answers `Hello`. Then runs, each named by an id
//! the host picks, several at once (a session's kernel runs while files move): `Run`, then its
//! standard input as `Stdin` chunks and `StdinEnd`. The host keeps at most [`STDIN_WINDOW`] bytes
//! of a run's input unacknowledged; init acknowledges (`StdinAck`) what it wrote to the program
//! (or dropped, once the program closed its input), so input of any length streams in bounded
//! memory. Init answers `Output` frames while the program runs, then `Disk` and `Exited` once it
//! ended, its process group was killed (everything but init, when no other run is live) and its
//! output drained. `Kill` signals a run's process group (everything but init, when it is the only
//! live run). When the host's side closes (the host destroyed the container, or died), init kills
//! everything and exits.
//!
//! Network: `Listen` makes init listen on `127.0.0.1:<port>` inside the container (whose network
//! is `none`: loopback only) and relay every connection a program opens there to the host as
//! `Conn` frames (`Open` from init; `Data`, `End` — one direction is over —, `Ack` and `Reset` both
//! ways). Each side keeps at most [`CONN_WINDOW`] bytes of a connection unacknowledged, and init
//! holds at most [`MAX_CONNS`] connections, so a program that opens many, or never reads, costs
//! bounded memory. The host hands each connection to its egress proxy: the relay leads nowhere
//! else, and a program that ignores the proxy has no route out.

use crate::protocol::{
    decode_run, encode_run, frame, put_string, put_u32, put_u64, unframe, DecodeError, Run, Rusage,
    MAX_MESSAGE, T_HELLO,
};

/// Serve-protocol version, sent in `Hello`.
pub const VERSION: u32 = 3;
/// Largest chunk of a program's input or output, or of a relayed connection, in one frame.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Largest seccomp filter `Setup` carries, in instructions (the kernel's `BPF_MAXINSNS`).
pub const MAX_FILTER_INSNS: usize = 4096;
/// Most paths `Setup` may name for usage.
pub const MAX_USAGE_PATHS: usize = 8;
/// Bytes of one run's standard input the host may have sent and init not yet acknowledged.
pub const STDIN_WINDOW: u32 = 256 * 1024;
/// Bytes of one relayed connection either side may have sent and the other not yet
/// acknowledged.
pub const CONN_WINDOW: u32 = 128 * 1024;
/// Most relayed connections init holds at once (it closes further ones at once).
pub const MAX_CONNS: usize = 64;
/// Most runs init keeps at once.
pub const MAX_RUNS: usize = 16;
/// Most entries one `Put` carries.
pub const MAX_PUT_ENTRIES: usize = 4096;
/// Most bytes of a file one `Get` returns (what fits a frame with room to spare).
pub const MAX_GET_BYTES: u32 = 128 * 1024;

const T_SETUP: u32 = 200;
const T_STDIN: u32 = 201;
const T_STDIN_END: u32 = 202;
const T_RUN: u32 = 203;
const T_KILL: u32 = 204;
const T_LISTEN: u32 = 205;
const T_PUT: u32 = 206;
const T_GET: u32 = 207;
const T_CONN_OPEN: u32 = 210;
const T_CONN_DATA: u32 = 211;
const T_CONN_END: u32 = 212;
const T_CONN_ACK: u32 = 213;
const T_CONN_RESET: u32 = 214;
const T_OUTPUT: u32 = 300;
const T_DISK: u32 = 301;
const T_EXITED: u32 = 302;
const T_FAILED: u32 = 303;
const T_STDIN_ACK: u32 = 304;
const T_LISTENING: u32 = 305;
const T_PLACED: u32 = 306;
const T_GOT: u32 = 307;

/// The first message: what every program of this container gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Setup {
    /// A classic BPF program (`struct sock_filter` array, 8 bytes per instruction, native byte
    /// order) that init installs in every program just before `execve`; empty: none.
    pub filter: Vec<u8>,
    /// Writable mounts whose used bytes `Disk` reports (each mount counted once).
    pub usage_paths: Vec<Vec<u8>>,
}

/// One entry of a `Put`: a directory, or a file and its bytes, by its path relative to the
/// workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutEntry {
    /// Relative path (no empty, `.` or `..` component; init checks).
    pub path: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// The file's bytes; `None`: a directory.
    pub content: Option<Vec<u8>>,
}

/// The file-system ids a `Put` or `Get` acts as (the program's: init switches its own for the
/// operation, and follows no link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsIds {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// What travels on one relayed connection (both directions; only init sends `Open`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    /// A program connected to the listening socket (init to host).
    Open,
    /// Bytes of the connection (at most [`MAX_CHUNK`]).
    Data(Vec<u8>),
    /// The sender's direction is over (a half close): no more `Data` from it.
    End,
    /// The receiver delivered this many bytes: the sender may send as many more.
    Ack(u32),
    /// The connection is gone (an error, or no room for it): forget it.
    Reset,
}

/// A message from the host to init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Configure the container (once, first).
    Setup(Setup),
    /// Start a program as run `id` (an id not in use); its stdin follows as `Stdin` frames and
    /// `StdinEnd`.
    Run {
        /// The run's id, chosen by the host.
        id: u32,
        /// The program.
        run: Run,
    },
    /// A chunk of run `id`'s standard input (within [`STDIN_WINDOW`]).
    Stdin {
        /// The run.
        id: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Run `id`'s standard input ends.
    StdinEnd {
        /// The run.
        id: u32,
    },
    /// Send `signal` to run `id`'s process group (to every process but init when no other run
    /// is live).
    Kill {
        /// The run.
        id: u32,
        /// The signal.
        signal: i32,
    },
    /// Listen on `127.0.0.1:port` inside the container and relay its connections.
    Listen {
        /// The port.
        port: u16,
    },
    /// Place files and directories in the workspace (answered by `Placed`, under an id not in
    /// use by a run).
    Put {
        /// The operation's id.
        id: u32,
        /// As whom.
        ids: FsIds,
        /// What, in order (a directory before what is in it).
        entries: Vec<PutEntry>,
    },
    /// Read a regular file of the workspace, at most `max` bytes (answered by `Got`).
    Get {
        /// The operation's id.
        id: u32,
        /// As whom.
        ids: FsIds,
        /// Relative path.
        path: Vec<u8>,
        /// Most bytes (at most [`MAX_GET_BYTES`]).
        max: u32,
    },
    /// A frame of relayed connection `id`.
    Conn {
        /// The connection (numbered by init).
        id: u32,
        /// What.
        frame: Conn,
    },
}

/// Which output stream an `Output` frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The program's standard output.
    Stdout,
    /// The program's standard error.
    Stderr,
}

/// A message from init to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer to `Setup`.
    Hello {
        /// Init's serve-protocol version.
        version: u32,
    },
    /// A chunk of run `id`'s output.
    Output {
        /// The run.
        id: u32,
        /// Which stream.
        stream: Stream,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Bytes in use on the writable mounts `Setup` named, after run `id` ended (sent just
    /// before its `Exited`).
    Disk {
        /// The run.
        id: u32,
        /// Used bytes, every mount counted once.
        used: u64,
    },
    /// Run `id` ended (see [`crate::protocol::InitMessage::Exited`]).
    Exited {
        /// The run.
        id: u32,
        /// Its wait status.
        status: i32,
        /// Its resource usage.
        rusage: Rusage,
    },
    /// Something failed: starting run `id`, or (`id` 0) something not about a run.
    Failed {
        /// The run, or 0.
        id: u32,
        /// Where ([`crate::protocol::Stage`]).
        stage: u32,
        /// Which index, else 0.
        index: u32,
        /// The `errno`.
        errno: i32,
    },
    /// Init wrote (or, after the program closed its input, dropped) `bytes` of run `id`'s input.
    StdinAck {
        /// The run.
        id: u32,
        /// How many.
        bytes: u32,
    },
    /// Init listens on the port `Listen` named.
    Listening {
        /// The port.
        port: u16,
    },
    /// `Put` `id` is done: `errno` 0, every entry placed; else entry `index` failed.
    Placed {
        /// The operation.
        id: u32,
        /// The entry that failed.
        index: u32,
        /// Why (0: none did).
        errno: i32,
    },
    /// `Get` `id`'s answer: `errno` 0, the file's mode and bytes; `EFBIG` when it holds more
    /// than asked for.
    Got {
        /// The operation.
        id: u32,
        /// Why it failed (0: it did not).
        errno: i32,
        /// The file's mode (permission bits).
        mode: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A frame of relayed connection `id`.
    Conn {
        /// The connection.
        id: u32,
        /// What.
        frame: Conn,
    },
}

fn with_id(id: u32, rest: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + rest.len());
    put_u32(&mut p, id);
    p.extend_from_slice(rest);
    p
}

fn encode_conn(id: u32, frame_: &Conn, from_init: bool) -> Result<Vec<u8>, DecodeError> {
    Ok(match frame_ {
        Conn::Open if from_init => frame(T_CONN_OPEN, with_id(id, &[])),
        Conn::Open => return Err(DecodeError::UnknownType(T_CONN_OPEN)),
        Conn::Data(data) => {
            if data.len() > MAX_CHUNK {
                return Err(DecodeError::TooLarge);
            }
            frame(T_CONN_DATA, with_id(id, data))
        }
        Conn::End => frame(T_CONN_END, with_id(id, &[])),
        Conn::Ack(n) => frame(T_CONN_ACK, with_id(id, &n.to_le_bytes())),
        Conn::Reset => frame(T_CONN_RESET, with_id(id, &[])),
    })
}

fn decode_conn(
    kind: u32,
    r: &mut crate::protocol::Reader<'_>,
    from_init: bool,
) -> Result<(u32, Conn), DecodeError> {
    let id = r.u32()?;
    let c = match kind {
        T_CONN_OPEN if from_init => Conn::Open,
        T_CONN_DATA => {
            if r.buf.len() > MAX_CHUNK {
                return Err(DecodeError::TooLarge);
            }
            Conn::Data(r.buf.to_vec())
        }
        T_CONN_END => Conn::End,
        T_CONN_ACK => Conn::Ack(r.u32()?),
        T_CONN_RESET => Conn::Reset,
        other => return Err(DecodeError::UnknownType(other)),
    };
    Ok((id, c))
}

impl Request {
    /// The frame for this message.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let packet = match self {
            Request::Setup(setup) => {
                if setup.filter.len() % 8 != 0
                    || setup.filter.len() / 8 > MAX_FILTER_INSNS
                    || setup.usage_paths.len() > MAX_USAGE_PATHS
                {
                    return Err(DecodeError::TooLarge);
                }
                let mut p = Vec::new();
                put_u32(&mut p, setup.filter.len() as u32);
                p.extend_from_slice(&setup.filter);
                put_u32(&mut p, setup.usage_paths.len() as u32);
                for path in &setup.usage_paths {
                    put_string(&mut p, path)?;
                }
                frame(T_SETUP, p)
            }
            Request::Run { id, run } => frame(T_RUN, with_id(*id, &encode_run(run)?)),
            Request::Stdin { id, data } => {
                if data.len() > MAX_CHUNK {
                    return Err(DecodeError::TooLarge);
                }
                frame(T_STDIN, with_id(*id, data))
            }
            Request::StdinEnd { id } => frame(T_STDIN_END, with_id(*id, &[])),
            Request::Kill { id, signal } => {
                frame(T_KILL, with_id(*id, &(*signal as u32).to_le_bytes()))
            }
            Request::Listen { port } => frame(T_LISTEN, (*port as u32).to_le_bytes().to_vec()),
            Request::Put { id, ids, entries } => {
                if entries.len() > MAX_PUT_ENTRIES {
                    return Err(DecodeError::TooLarge);
                }
                let mut p = Vec::new();
                for v in [*id, ids.uid, ids.gid, entries.len() as u32] {
                    put_u32(&mut p, v);
                }
                for e in entries {
                    put_string(&mut p, &e.path)?;
                    put_u32(&mut p, e.mode);
                    match &e.content {
                        None => put_u32(&mut p, 0),
                        Some(c) => {
                            put_u32(&mut p, 1);
                            put_u32(
                                &mut p,
                                u32::try_from(c.len()).map_err(|_| DecodeError::TooLarge)?,
                            );
                            p.extend_from_slice(c);
                        }
                    }
                    if p.len() > MAX_MESSAGE {
                        return Err(DecodeError::TooLarge);
                    }
                }
                frame(T_PUT, p)
            }
            Request::Get { id, ids, path, max } => {
                if *max > MAX_GET_BYTES {
                    return Err(DecodeError::TooLarge);
                }
                let mut p = Vec::new();
                for v in [*id, ids.uid, ids.gid, *max] {
                    put_u32(&mut p, v);
                }
                put_string(&mut p, path)?;
                frame(T_GET, p)
            }
            Request::Conn { id, frame } => encode_conn(*id, frame, false)?,
        };
        if packet.len() > MAX_MESSAGE {
            return Err(DecodeError::TooLarge);
        }
        Ok(packet)
    }

    /// Decodes one frame.
    pub fn decode(packet: &[u8]) -> Result<Self, DecodeError> {
        let (kind, mut r) = unframe(packet)?;
        match kind {
            T_SETUP => {
                let len = r.u32()? as usize;
                if len % 8 != 0 || len / 8 > MAX_FILTER_INSNS {
                    return Err(DecodeError::TooLarge);
                }
                let filter = r.take(len)?.to_vec();
                let n = r.u32()? as usize;
                if n > MAX_USAGE_PATHS {
                    return Err(DecodeError::TooLarge);
                }
                let mut usage_paths = Vec::with_capacity(n);
                for _ in 0..n {
                    usage_paths.push(r.string()?);
                }
                Ok(Request::Setup(Setup {
                    filter,
                    usage_paths,
                }))
            }
            T_RUN => {
                let id = r.u32()?;
                Ok(Request::Run {
                    id,
                    run: decode_run(&mut r)?,
                })
            }
            T_STDIN => {
                let id = r.u32()?;
                if r.buf.len() > MAX_CHUNK {
                    return Err(DecodeError::TooLarge);
                }
                Ok(Request::Stdin {
                    id,
                    data: r.buf.to_vec(),
                })
            }
            T_STDIN_END => Ok(Request::StdinEnd { id: r.u32()? }),
            T_KILL => Ok(Request::Kill {
                id: r.u32()?,
                signal: r.u32()? as i32,
            }),
            T_LISTEN => {
                let port = r.u32()?;
                Ok(Request::Listen {
                    port: u16::try_from(port).map_err(|_| DecodeError::TooLarge)?,
                })
            }
            T_PUT => {
                let id = r.u32()?;
                let ids = FsIds {
                    uid: r.u32()?,
                    gid: r.u32()?,
                };
                let n = r.u32()? as usize;
                if n > MAX_PUT_ENTRIES {
                    return Err(DecodeError::TooLarge);
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let path = r.string()?;
                    let mode = r.u32()?;
                    let content = match r.u32()? {
                        0 => None,
                        1 => {
                            let len = r.u32()? as usize;
                            Some(r.take(len)?.to_vec())
                        }
                        other => return Err(DecodeError::UnknownType(other)),
                    };
                    entries.push(PutEntry {
                        path,
                        mode,
                        content,
                    });
                }
                Ok(Request::Put { id, ids, entries })
            }
            T_GET => {
                let id = r.u32()?;
                let ids = FsIds {
                    uid: r.u32()?,
                    gid: r.u32()?,
                };
                let max = r.u32()?;
                if max > MAX_GET_BYTES {
                    return Err(DecodeError::TooLarge);
                }
                Ok(Request::Get {
                    id,
                    ids,
                    max,
                    path: r.string()?,
                })
            }
            T_CONN_DATA | T_CONN_END | T_CONN_ACK | T_CONN_RESET => {
                let (id, frame) = decode_conn(kind, &mut r, false)?;
                Ok(Request::Conn { id, frame })
            }
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

impl Reply {
    /// The frame for this message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Hello { version } => frame(T_HELLO, version.to_le_bytes().to_vec()),
            Reply::Output { id, stream, data } => {
                let mut p = Vec::with_capacity(8 + data.len());
                put_u32(&mut p, *id);
                put_u32(
                    &mut p,
                    match stream {
                        Stream::Stdout => 1,
                        Stream::Stderr => 2,
                    },
                );
                p.extend_from_slice(data);
                frame(T_OUTPUT, p)
            }
            Reply::Disk { id, used } => {
                let mut p = Vec::new();
                put_u32(&mut p, *id);
                put_u64(&mut p, *used);
                frame(T_DISK, p)
            }
            Reply::Exited { id, status, rusage } => {
                let mut p = Vec::new();
                put_u32(&mut p, *id);
                put_u32(&mut p, *status as u32);
                put_u64(&mut p, rusage.utime_us);
                put_u64(&mut p, rusage.stime_us);
                put_u64(&mut p, rusage.maxrss_kib);
                frame(T_EXITED, p)
            }
            Reply::Failed {
                id,
                stage,
                index,
                errno,
            } => {
                let mut p = Vec::new();
                for v in [*id, *stage, *index, *errno as u32] {
                    put_u32(&mut p, v);
                }
                frame(T_FAILED, p)
            }
            Reply::StdinAck { id, bytes } => frame(T_STDIN_ACK, with_id(*id, &bytes.to_le_bytes())),
            Reply::Listening { port } => frame(T_LISTENING, (*port as u32).to_le_bytes().to_vec()),
            Reply::Placed { id, index, errno } => {
                let mut p = Vec::new();
                for v in [*id, *index, *errno as u32] {
                    put_u32(&mut p, v);
                }
                frame(T_PLACED, p)
            }
            Reply::Got {
                id,
                errno,
                mode,
                data,
            } => {
                let mut p = Vec::with_capacity(12 + data.len());
                put_u32(&mut p, *id);
                put_u32(&mut p, *errno as u32);
                put_u32(&mut p, *mode);
                p.extend_from_slice(data);
                frame(T_GOT, p)
            }
            // Init's frames are built from its own values: an over-long chunk cannot happen, and
            // would only make the host drop the stream.
            Reply::Conn { id, frame: f } => {
                encode_conn(*id, f, true).unwrap_or_else(|_| frame(T_CONN_RESET, with_id(*id, &[])))
            }
        }
    }

    /// Decodes one frame.
    pub fn decode(packet: &[u8]) -> Result<Self, DecodeError> {
        let (kind, mut r) = unframe(packet)?;
        match kind {
            T_HELLO => Ok(Reply::Hello { version: r.u32()? }),
            T_OUTPUT => {
                let id = r.u32()?;
                let stream = match r.u32()? {
                    1 => Stream::Stdout,
                    2 => Stream::Stderr,
                    _ => return Err(DecodeError::UnknownType(kind)),
                };
                if r.buf.len() > MAX_CHUNK {
                    return Err(DecodeError::TooLarge);
                }
                Ok(Reply::Output {
                    id,
                    stream,
                    data: r.buf.to_vec(),
                })
            }
            T_DISK => Ok(Reply::Disk {
                id: r.u32()?,
                used: r.u64()?,
            }),
            T_EXITED => Ok(Reply::Exited {
                id: r.u32()?,
                status: r.u32()? as i32,
                rusage: Rusage {
                    utime_us: r.u64()?,
                    stime_us: r.u64()?,
                    maxrss_kib: r.u64()?,
                },
            }),
            T_FAILED => Ok(Reply::Failed {
                id: r.u32()?,
                stage: r.u32()?,
                index: r.u32()?,
                errno: r.u32()? as i32,
            }),
            T_STDIN_ACK => Ok(Reply::StdinAck {
                id: r.u32()?,
                bytes: r.u32()?,
            }),
            T_LISTENING => Ok(Reply::Listening {
                port: u16::try_from(r.u32()?).map_err(|_| DecodeError::TooLarge)?,
            }),
            T_PLACED => Ok(Reply::Placed {
                id: r.u32()?,
                index: r.u32()?,
                errno: r.u32()? as i32,
            }),
            T_GOT => {
                let id = r.u32()?;
                let errno = r.u32()? as i32;
                let mode = r.u32()?;
                if r.buf.len() > MAX_GET_BYTES as usize {
                    return Err(DecodeError::TooLarge);
                }
                Ok(Reply::Got {
                    id,
                    errno,
                    mode,
                    data: r.buf.to_vec(),
                })
            }
            T_CONN_OPEN | T_CONN_DATA | T_CONN_END | T_CONN_ACK | T_CONN_RESET => {
                let (id, frame) = decode_conn(kind, &mut r, true)?;
                Ok(Reply::Conn { id, frame })
            }
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

/// Reassembles frames from a byte stream.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not form a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, if one has arrived. A header that announces more than
    /// [`MAX_MESSAGE`] is an error: the stream cannot be trusted past it.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let rest = &self.buf[self.start..];
        let Some(header) = rest.get(..8) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > MAX_MESSAGE - 8 {
            return Err(DecodeError::TooLarge);
        }
        let Some(packet) = rest.get(..8 + len) else {
            return Ok(None);
        };
        let packet = packet.to_vec();
        self.start += 8 + len;
        if self.start > (1 << 20) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Rlimit;

    #[test]
    fn requests_and_replies_round_trip_through_a_stream() {
        let requests = vec![
            Request::Setup(Setup {
                filter: vec![7; 16],
                usage_paths: vec![b"/workspace".to_vec(), b"/dev/shm".to_vec()],
            }),
            Request::Run {
                id: 7,
                run: Run {
                    uid: 10001,
                    gid: 10001,
                    rlimits: vec![Rlimit {
                        resource: 4,
                        cur: 0,
                        max: 0,
                    }],
                    cwd: b"/workspace".to_vec(),
                    argv: vec![b"/bin/true".to_vec()],
                    arg0: None,
                    env: vec![b"A=b".to_vec()],
                },
            },
            Request::Stdin {
                id: 7,
                data: b"input".to_vec(),
            },
            Request::StdinEnd { id: 7 },
            Request::Kill { id: 7, signal: 9 },
            Request::Listen { port: 3128 },
            Request::Conn {
                id: 3,
                frame: Conn::Data(b"GET / HTTP/1.1\r\n".to_vec()),
            },
            Request::Conn {
                id: 3,
                frame: Conn::Ack(1 << 20),
            },
            Request::Conn {
                id: 3,
                frame: Conn::End,
            },
            Request::Conn {
                id: 4,
                frame: Conn::Reset,
            },
            Request::Put {
                id: 8,
                ids: FsIds {
                    uid: 1000,
                    gid: 1000,
                },
                entries: vec![
                    PutEntry {
                        path: b".tmp".to_vec(),
                        mode: 0o1777,
                        content: None,
                    },
                    PutEntry {
                        path: b"a/main.py".to_vec(),
                        mode: 0o644,
                        content: Some(b"print(1)\n".to_vec()),
                    },
                    PutEntry {
                        path: b"empty".to_vec(),
                        mode: 0o755,
                        content: Some(Vec::new()),
                    },
                ],
            },
            Request::Get {
                id: 9,
                ids: FsIds {
                    uid: 1000,
                    gid: 1000,
                },
                path: b".vana/events.jsonl".to_vec(),
                max: 65536,
            },
        ];
        let mut stream = Vec::new();
        for r in &requests {
            stream.extend(r.encode().unwrap_or_default());
        }
        // Delivered a byte at a time, as a pipe may.
        let mut frames = FrameBuffer::new();
        let mut got = Vec::new();
        for b in stream {
            frames.push(&[b]);
            while let Ok(Some(p)) = frames.next_frame() {
                got.push(Request::decode(&p));
            }
        }
        assert_eq!(got, requests.into_iter().map(Ok).collect::<Vec<_>>());
        assert_eq!(frames.pending(), 0);

        for m in [
            Reply::Hello { version: VERSION },
            Reply::Output {
                id: 2,
                stream: Stream::Stderr,
                data: b"x".to_vec(),
            },
            Reply::Disk {
                id: 2,
                used: 1 << 40,
            },
            Reply::Exited {
                id: 2,
                status: 9,
                rusage: Rusage {
                    utime_us: 1,
                    stime_us: 2,
                    maxrss_kib: 3,
                },
            },
            Reply::Failed {
                id: 0,
                stage: 10,
                index: 0,
                errno: 2,
            },
            Reply::StdinAck { id: 2, bytes: 77 },
            Reply::Listening { port: 3128 },
            Reply::Placed {
                id: 8,
                index: 1,
                errno: 28,
            },
            Reply::Got {
                id: 9,
                errno: 0,
                mode: 0o755,
                data: b"{}".to_vec(),
            },
            Reply::Conn {
                id: 1,
                frame: Conn::Open,
            },
            Reply::Conn {
                id: 1,
                frame: Conn::Data(vec![1, 2, 3]),
            },
            Reply::Conn {
                id: 1,
                frame: Conn::Ack(5),
            },
            Reply::Conn {
                id: 1,
                frame: Conn::End,
            },
            Reply::Conn {
                id: 1,
                frame: Conn::Reset,
            },
        ] {
            assert_eq!(Reply::decode(&m.encode()), Ok(m));
        }
    }

    /// A `Put` larger than a frame, with too many entries or a path holding a NUL cannot be
    /// encoded (the host then falls back); a `Get` beyond its bound neither; hostile counts and
    /// lengths are errors on decoding.
    #[test]
    fn puts_and_gets_stay_within_their_bounds() {
        let ids = FsIds { uid: 1, gid: 1 };
        let file = |n: usize| PutEntry {
            path: b"f".to_vec(),
            mode: 0o644,
            content: Some(vec![0; n]),
        };
        let put = |entries| Request::Put {
            id: 1,
            ids,
            entries,
        };
        assert!(put(vec![file(MAX_MESSAGE / 2)]).encode().is_ok());
        assert_eq!(
            put(vec![file(MAX_MESSAGE)]).encode(),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            put(vec![file(0); MAX_PUT_ENTRIES + 1]).encode(),
            Err(DecodeError::TooLarge)
        );
        let nul = PutEntry {
            path: b"a\0b".to_vec(),
            ..file(1)
        };
        assert!(put(vec![nul]).encode().is_err());
        let get = |max| Request::Get {
            id: 1,
            ids,
            path: b"f".to_vec(),
            max,
        };
        assert!(get(MAX_GET_BYTES).encode().is_ok());
        assert_eq!(get(MAX_GET_BYTES + 1).encode(), Err(DecodeError::TooLarge));
        // A file announcing more bytes than the frame holds; an entry count beyond the bound.
        let mut p = Vec::new();
        for v in [1u32, 1, 1, 1] {
            put_u32(&mut p, v);
        }
        p.extend_from_slice(b"f\0");
        for v in [0o644u32, 1, 1000] {
            put_u32(&mut p, v);
        }
        assert_eq!(
            Request::decode(&frame(T_PUT, p)),
            Err(DecodeError::Truncated)
        );
        let mut p = Vec::new();
        for v in [1u32, 1, 1, MAX_PUT_ENTRIES as u32 + 1] {
            put_u32(&mut p, v);
        }
        assert_eq!(
            Request::decode(&frame(T_PUT, p)),
            Err(DecodeError::TooLarge)
        );
        let mut p = Vec::new();
        for v in [1u32, 0, 0o644] {
            put_u32(&mut p, v);
        }
        p.extend(vec![0; MAX_GET_BYTES as usize + 1]);
        assert_eq!(Reply::decode(&frame(T_GOT, p)), Err(DecodeError::TooLarge));
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        let mut frames = FrameBuffer::new();
        frames.push(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(frames.next_frame(), Err(DecodeError::TooLarge));
        // A filter that is not whole instructions, an output chunk on an unknown stream.
        let mut p = vec![200, 0, 0, 0, 8, 0, 0, 0];
        p.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Request::decode(&p).is_err());
        assert!(Reply::decode(&frame(T_OUTPUT, vec![1, 0, 0, 0, 3, 0, 0, 0])).is_err());
        assert_eq!(
            Request::Stdin {
                id: 1,
                data: vec![0; MAX_CHUNK + 1]
            }
            .encode(),
            Err(DecodeError::TooLarge)
        );
        assert!(Request::decode(&frame(T_STDIN, vec![0; MAX_CHUNK + 5])).is_err());
        assert!(Request::decode(&frame(T_CONN_DATA, vec![0; MAX_CHUNK + 5])).is_err());
        assert!(Reply::decode(&frame(T_CONN_DATA, vec![0; MAX_CHUNK + 5])).is_err());
        // Frames cut short, a port out of range, and an `Open` the host may not send.
        assert!(Request::decode(&frame(T_KILL, vec![1, 0, 0, 0])).is_err());
        assert!(Request::decode(&frame(T_LISTEN, vec![0, 0, 1, 0])).is_err());
        assert!(Request::decode(&frame(T_CONN_OPEN, vec![1, 0, 0, 0])).is_err());
        assert!(Request::Conn {
            id: 1,
            frame: Conn::Open
        }
        .encode()
        .is_err());
        assert!(Reply::decode(&frame(T_EXITED, vec![1, 0, 0, 0, 0, 0])).is_err());
    }
}
