//! Serve mode: the protocol between the Docker backend and `vana-init serve`, the main process
//! (PID 1) of every container.
//!
//! Compiled into both sides like [`crate::protocol`], whose framing (an 8-byte header: type and
//! payload length, little-endian `u32`s; then the payload) and whose `Run`, `Kill`, `Hello`,
//! `Exited` and `Failed` messages it reuses. The frames travel over a byte stream: the
//! container's stdin (host to init) and stdout (init to host), which Docker carries over the one
//! attach connection the host holds; [`FrameBuffer`] reassembles them.
//!
//! The program never holds init's stdin or stdout: init gives it pipes of its own and forwards
//! what it writes inside `Output` frames, so nothing the program writes can pose as a frame.
//! Init runs as root of the container (with only the capabilities to switch the program to its
//! user and to signal it) and is not dumpable, so the program cannot reach init's descriptors
//! through `/proc` either. Everything a result says about how a program ended (`Exited`, `Disk`)
//! comes from init.
//!
//! A conversation: the host sends `Setup` (the seccomp filter every program gets, and the
//! writable mounts whose usage init reports); init answers `Hello`. Then any number of runs, one
//! at a time: `Run`, `Stdin` chunks, `StdinEnd`; init answers `Output` frames while the program
//! runs, then `Disk` and `Exited` once the program has ended, everything it left has been killed
//! and its output is drained. `Kill` kills every process but init. When the host's side closes
//! (the host destroyed the container, or died), init kills everything and exits.

use crate::protocol::{
    frame, put_string, put_u32, put_u64, unframe, DecodeError, HostMessage, InitMessage, Run,
    MAX_MESSAGE, T_EXITED, T_FAILED, T_HELLO, T_KILL, T_RUN,
};

/// Serve-mode protocol version, sent in `Hello`.
pub const VERSION: u32 = 1;
/// Largest chunk of a program's input or output in one frame.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Largest seccomp filter `Setup` carries, in instructions (the kernel's `BPF_MAXINSNS`).
pub const MAX_FILTER_INSNS: usize = 4096;
/// Most paths `Setup` may name for usage.
pub const MAX_USAGE_PATHS: usize = 8;

const T_SETUP: u32 = 200;
const T_STDIN: u32 = 201;
const T_STDIN_END: u32 = 202;
const T_OUTPUT: u32 = 300;
const T_DISK: u32 = 301;

/// The first message: what every program of this container gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Setup {
    /// A classic BPF program (`struct sock_filter` array, 8 bytes per instruction, native byte
    /// order) that init installs in every program just before `execve`; empty: none.
    pub filter: Vec<u8>,
    /// Writable mounts whose used bytes `Disk` reports (each mount counted once).
    pub usage_paths: Vec<Vec<u8>>,
}

/// A message from the host to init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Configure the container (once, first).
    Setup(Setup),
    /// Start a program (one at a time); its stdin follows as `Stdin` frames and `StdinEnd`.
    Run(Run),
    /// A chunk of the running program's standard input.
    Stdin(Vec<u8>),
    /// The running program's standard input ends.
    StdinEnd,
    /// Send `signal` to every process of the container but init.
    Kill {
        /// The signal.
        signal: i32,
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
    /// A chunk of the running program's output.
    Output {
        /// Which stream.
        stream: Stream,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Bytes in use on the writable mounts `Setup` named, after the program ended (sent just
    /// before `Exited`).
    Disk {
        /// Used bytes, every mount counted once.
        used: u64,
    },
    /// The program ended (see [`InitMessage::Exited`]).
    Exited {
        /// Its wait status.
        status: i32,
        /// Its resource usage.
        rusage: crate::protocol::Rusage,
    },
    /// Something failed (see [`InitMessage::Failed`]).
    Failed {
        /// Where ([`crate::protocol::Stage`]).
        stage: u32,
        /// Which index, else 0.
        index: u32,
        /// The `errno`.
        errno: i32,
    },
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
            Request::Run(run) => HostMessage::Run(run.clone()).encode()?,
            Request::Stdin(data) => {
                if data.len() > MAX_CHUNK {
                    return Err(DecodeError::TooLarge);
                }
                frame(T_STDIN, data.clone())
            }
            Request::StdinEnd => frame(T_STDIN_END, Vec::new()),
            Request::Kill { signal } => HostMessage::Kill { signal: *signal }.encode()?,
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
            T_STDIN => {
                if r.buf.len() > MAX_CHUNK {
                    return Err(DecodeError::TooLarge);
                }
                Ok(Request::Stdin(r.buf.to_vec()))
            }
            T_STDIN_END => Ok(Request::StdinEnd),
            T_RUN | T_KILL => match HostMessage::decode(packet)? {
                HostMessage::Run(run) => Ok(Request::Run(run)),
                HostMessage::Kill { signal } => Ok(Request::Kill { signal }),
                HostMessage::Go => Err(DecodeError::UnknownType(kind)),
            },
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

impl Reply {
    /// The frame for this message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Hello { version } => InitMessage::Hello { version: *version }.encode(),
            Reply::Output { stream, data } => {
                let mut p = Vec::with_capacity(4 + data.len());
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
            Reply::Disk { used } => {
                let mut p = Vec::new();
                put_u64(&mut p, *used);
                frame(T_DISK, p)
            }
            Reply::Exited { status, rusage } => InitMessage::Exited {
                status: *status,
                rusage: *rusage,
            }
            .encode(),
            Reply::Failed {
                stage,
                index,
                errno,
            } => InitMessage::Failed {
                stage: *stage,
                index: *index,
                errno: *errno,
            }
            .encode(),
        }
    }

    /// Decodes one frame.
    pub fn decode(packet: &[u8]) -> Result<Self, DecodeError> {
        let (kind, mut r) = unframe(packet)?;
        match kind {
            T_OUTPUT => {
                let stream = match r.u32()? {
                    1 => Stream::Stdout,
                    2 => Stream::Stderr,
                    _ => return Err(DecodeError::UnknownType(kind)),
                };
                if r.buf.len() > MAX_CHUNK {
                    return Err(DecodeError::TooLarge);
                }
                Ok(Reply::Output {
                    stream,
                    data: r.buf.to_vec(),
                })
            }
            T_DISK => Ok(Reply::Disk { used: r.u64()? }),
            T_HELLO | T_EXITED | T_FAILED => match InitMessage::decode(packet)? {
                InitMessage::Hello { version } => Ok(Reply::Hello { version }),
                InitMessage::Exited { status, rusage } => Ok(Reply::Exited { status, rusage }),
                InitMessage::Failed {
                    stage,
                    index,
                    errno,
                } => Ok(Reply::Failed {
                    stage,
                    index,
                    errno,
                }),
                _ => Err(DecodeError::UnknownType(kind)),
            },
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
    use crate::protocol::{Rlimit, Rusage};

    #[test]
    fn requests_and_replies_round_trip_through_a_stream() {
        let requests = vec![
            Request::Setup(Setup {
                filter: vec![7; 16],
                usage_paths: vec![b"/workspace".to_vec(), b"/dev/shm".to_vec()],
            }),
            Request::Run(Run {
                uid: 10001,
                gid: 10001,
                rlimits: vec![Rlimit {
                    resource: 4,
                    cur: 0,
                    max: 0,
                }],
                cwd: b"/workspace".to_vec(),
                argv: vec![b"/bin/true".to_vec()],
                env: vec![b"A=b".to_vec()],
            }),
            Request::Stdin(b"input".to_vec()),
            Request::StdinEnd,
            Request::Kill { signal: 9 },
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
                stream: Stream::Stderr,
                data: b"x".to_vec(),
            },
            Reply::Disk { used: 1 << 40 },
            Reply::Exited {
                status: 9,
                rusage: Rusage {
                    utime_us: 1,
                    stime_us: 2,
                    maxrss_kib: 3,
                },
            },
            Reply::Failed {
                stage: 10,
                index: 0,
                errno: 2,
            },
        ] {
            assert_eq!(Reply::decode(&m.encode()), Ok(m));
        }
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
        assert!(Reply::decode(&[44, 1, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0]).is_err());
        assert_eq!(
            Request::Stdin(vec![0; MAX_CHUNK + 1]).encode(),
            Err(DecodeError::TooLarge)
        );
        assert!(Request::decode(&frame(T_STDIN, vec![0; MAX_CHUNK + 1])).is_err());
    }
}
