//! The protocol between a host and `vana-init`, PID 1 of every sandbox instance.
//!
//! This file is compiled twice: into the `vana-sandbox-init` crate (the host side) and into the
//! init program itself (`init/main.rs`, std only, no dependencies), so that both sides share one
//! definition of every message. Messages travel over a `SOCK_SEQPACKET` socket (one message per
//! packet; file descriptors as `SCM_RIGHTS` beside a message): an 8-byte header (type, payload
//! length, both little-endian `u32`) and the payload.
//!
//! Only the host sends `Run` and `Kill`; only init sends `Hello`, `Exited` and `Failed` (a program
//! that starts is not reported: its end is, and a start that fails is). Nothing the sandboxed
//! program can write reaches this socket: it is init's alone, and init is PID 1 under an id the
//! program does not have.

/// Protocol version, sent in `Hello`.
pub const VERSION: u32 = 1;
/// Largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 192 * 1024;
/// Most argv entries plus env entries in a `Run`.
pub const MAX_STRINGS: usize = 8192;
/// Most rlimits in a `Run`.
pub const MAX_RLIMITS: usize = 16;
/// Descriptor number of the control socket in init.
pub const CONTROL_FD: i32 = 3;
/// Descriptor number of the Landlock ruleset init restricts itself with, when there is one.
pub const LANDLOCK_FD: i32 = 4;

pub(crate) const T_RUN: u32 = 1;
pub(crate) const T_KILL: u32 = 2;
const T_GO: u32 = 3;
const T_READY: u32 = 99;
pub(crate) const T_HELLO: u32 = 100;
// 101 was `Started`, a report of every program's start that no host read.
pub(crate) const T_EXITED: u32 = 102;
pub(crate) const T_FAILED: u32 = 103;

/// Where setting up a sandbox or starting a program failed. Every stage decodes to a
/// description, so a failure never reaches the user as a bare exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    /// Resetting signal handlers in the new child.
    Signals = 1,
    /// Closing inherited descriptors.
    Fds = 2,
    /// Joining the instance's cgroup.
    JoinCgroup = 3,
    /// Creating the cgroup namespace.
    CgroupNs = 4,
    /// Setting the hostname.
    Hostname = 5,
    /// One operation of building the root filesystem (the index says which).
    RootOp = 6,
    /// `pivot_root` into the sandbox root.
    PivotRoot = 7,
    /// Dropping capabilities and setting `no_new_privs`.
    DropPrivileges = 8,
    /// Starting the program (`fork`).
    ForkProgram = 9,
    /// Executing the program.
    Exec = 10,
    /// Entering the working directory.
    Workdir = 11,
    /// Connecting standard streams.
    Stdio = 12,
    /// Setting resource limits.
    Rlimits = 13,
    /// Applying the Landlock ruleset.
    Landlock = 14,
    /// Installing the seccomp filter.
    Seccomp = 15,
    /// Waiting for the host to map the user namespace's ids.
    WaitForIds = 16,
    /// Handing the workspace to the host.
    Handover = 17,
    /// Executing init itself.
    ExecInit = 18,
    /// Switching the program to its user and group.
    Identity = 19,
    /// A malformed message reached init.
    Protocol = 20,
    /// Creating the time namespace and setting its clock offsets.
    TimeNs = 21,
    /// Opening the proxy's listening socket inside the sandbox (serve mode).
    Listen = 22,
}

impl Stage {
    /// Decodes a stage number.
    pub fn from_u32(v: u32) -> Option<Self> {
        use Stage::*;
        Some(match v {
            1 => Signals,
            2 => Fds,
            3 => JoinCgroup,
            4 => CgroupNs,
            5 => Hostname,
            6 => RootOp,
            7 => PivotRoot,
            8 => DropPrivileges,
            9 => ForkProgram,
            10 => Exec,
            11 => Workdir,
            12 => Stdio,
            13 => Rlimits,
            14 => Landlock,
            15 => Seccomp,
            16 => WaitForIds,
            17 => Handover,
            18 => ExecInit,
            19 => Identity,
            20 => Protocol,
            21 => TimeNs,
            22 => Listen,
            _ => return None,
        })
    }

    /// What was being done, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Signals => "resetting signal handlers",
            Stage::Fds => "closing inherited file descriptors",
            Stage::JoinCgroup => "joining the instance's cgroup",
            Stage::CgroupNs => "creating the cgroup namespace",
            Stage::Hostname => "setting the hostname",
            Stage::RootOp => "building the root filesystem",
            Stage::PivotRoot => "pivot_root into the sandbox root",
            Stage::DropPrivileges => "dropping privileges",
            Stage::ForkProgram => "starting the program",
            Stage::Exec => "executing the program",
            Stage::Workdir => "entering the working directory",
            Stage::Stdio => "connecting standard streams",
            Stage::Rlimits => "setting resource limits",
            Stage::Landlock => "applying the Landlock ruleset",
            Stage::Seccomp => "installing the seccomp filter",
            Stage::WaitForIds => "waiting for the user namespace's id maps",
            Stage::Handover => "handing the workspace to the host",
            Stage::TimeNs => "creating the time namespace",
            Stage::ExecInit => "executing the sandbox init",
            Stage::Identity => "switching to the sandbox user",
            Stage::Protocol => "reading a message from the host",
            Stage::Listen => "opening the proxy's socket inside the sandbox",
        }
    }
}

/// One resource limit for a program (`setrlimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` number.
    pub resource: u32,
    /// Soft limit.
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// Start a program. Its stdin, stdout and stderr travel beside the message as three
/// descriptors, in that order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Run {
    /// User the program runs as (inside the user namespace).
    pub uid: u32,
    /// Group the program runs as.
    pub gid: u32,
    /// Limits set just before `execve`.
    pub rlimits: Vec<Rlimit>,
    /// Working directory.
    pub cwd: Vec<u8>,
    /// Program (absolute path) and arguments.
    pub argv: Vec<Vec<u8>>,
    /// The name the program is started under (its `argv[0]`), when not its path.
    pub arg0: Option<Vec<u8>>,
    /// The whole environment.
    pub env: Vec<Vec<u8>>,
}

/// How a program used the CPU and memory, from `wait4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rusage {
    /// User CPU time, microseconds.
    pub utime_us: u64,
    /// System CPU time, microseconds.
    pub stime_us: u64,
    /// Peak resident set, KiB.
    pub maxrss_kib: u64,
}

/// A message from the host to init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMessage {
    /// Start a program (only one runs at a time).
    Run(Run),
    /// Send `signal` to the running program's process group.
    Kill {
        /// The signal.
        signal: i32,
    },
    /// To the sandbox's first process, before init: the id maps are written, go on.
    Go,
}

/// A message from init to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitMessage {
    /// From the sandbox's first process, before init: the sandbox is built; the workspace's
    /// root directory travels beside this message as a descriptor.
    Ready,
    /// Init is up.
    Hello {
        /// Its protocol version.
        version: u32,
    },
    /// The program of the last `Run` ended; its process group was killed.
    Exited {
        /// Its wait status.
        status: i32,
        /// Its resource usage.
        rusage: Rusage,
    },
    /// Something failed (setting up, or starting the program).
    Failed {
        /// Where.
        stage: u32,
        /// Which index of a list of operations (root filesystem steps), else 0.
        index: u32,
        /// The `errno`.
        errno: i32,
    },
}

/// A message that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header or its declared payload.
    Truncated,
    /// A type neither side knows.
    UnknownType(u32),
    /// A count or length beyond the protocol's bounds.
    TooLarge,
    /// A string without its terminating NUL, or with one inside.
    BadString,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated message"),
            DecodeError::UnknownType(t) => write!(f, "unknown message type {t}"),
            DecodeError::TooLarge => f.write_str("message beyond the protocol's bounds"),
            DecodeError::BadString => f.write_str("malformed string"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn frame(kind: u32, payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    put_u32(&mut out, kind);
    put_u32(&mut out, payload.len() as u32);
    out.extend_from_slice(&payload);
    out
}

/// Reads fields off a payload, failing on truncation.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let lo = self.u32()? as u64;
        let hi = self.u32()? as u64;
        Ok(lo | (hi << 32))
    }

    /// A NUL-terminated string (the NUL is not returned).
    pub(crate) fn string(&mut self) -> Result<Vec<u8>, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|b| *b == 0)
            .ok_or(DecodeError::BadString)?;
        let s = self.take(end + 1)?;
        Ok(s[..end].to_vec())
    }
}

/// Splits a packet into its type and payload.
pub(crate) fn unframe(packet: &[u8]) -> Result<(u32, Reader<'_>), DecodeError> {
    if packet.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLarge);
    }
    let mut r = Reader { buf: packet };
    let kind = r.u32()?;
    let len = r.u32()? as usize;
    let payload = r.take(len)?;
    Ok((kind, Reader { buf: payload }))
}

pub(crate) fn put_string(out: &mut Vec<u8>, s: &[u8]) -> Result<(), DecodeError> {
    if s.contains(&0) {
        return Err(DecodeError::BadString);
    }
    out.extend_from_slice(s);
    out.push(0);
    Ok(())
}

/// The payload of a `Run` (shared with the serve protocol, which puts a run id before it).
pub(crate) fn encode_run(run: &Run) -> Result<Vec<u8>, DecodeError> {
    if run.argv.len() + run.env.len() > MAX_STRINGS || run.rlimits.len() > MAX_RLIMITS {
        return Err(DecodeError::TooLarge);
    }
    let mut p = Vec::new();
    put_u32(&mut p, run.uid);
    put_u32(&mut p, run.gid);
    put_u32(&mut p, run.rlimits.len() as u32);
    put_u32(&mut p, run.argv.len() as u32);
    put_u32(&mut p, run.env.len() as u32);
    for l in &run.rlimits {
        put_u32(&mut p, l.resource);
        put_u64(&mut p, l.cur);
        put_u64(&mut p, l.max);
    }
    put_string(&mut p, &run.cwd)?;
    put_u32(&mut p, u32::from(run.arg0.is_some()));
    if let Some(name) = &run.arg0 {
        put_string(&mut p, name)?;
    }
    for s in run.argv.iter().chain(&run.env) {
        put_string(&mut p, s)?;
    }
    Ok(p)
}

/// Reads a `Run` payload (see [`encode_run`]).
pub(crate) fn decode_run(r: &mut Reader<'_>) -> Result<Run, DecodeError> {
    let uid = r.u32()?;
    let gid = r.u32()?;
    let nlim = r.u32()? as usize;
    let argc = r.u32()? as usize;
    let envc = r.u32()? as usize;
    if nlim > MAX_RLIMITS || argc.saturating_add(envc) > MAX_STRINGS || argc == 0 {
        return Err(DecodeError::TooLarge);
    }
    let mut rlimits = Vec::with_capacity(nlim);
    for _ in 0..nlim {
        rlimits.push(Rlimit {
            resource: r.u32()?,
            cur: r.u64()?,
            max: r.u64()?,
        });
    }
    let cwd = r.string()?;
    let arg0 = match r.u32()? {
        0 => None,
        1 => Some(r.string()?),
        _ => return Err(DecodeError::TooLarge),
    };
    let mut argv = Vec::with_capacity(argc);
    for _ in 0..argc {
        argv.push(r.string()?);
    }
    let mut env = Vec::with_capacity(envc);
    for _ in 0..envc {
        env.push(r.string()?);
    }
    Ok(Run {
        uid,
        gid,
        rlimits,
        cwd,
        argv,
        arg0,
        env,
    })
}

impl HostMessage {
    /// The packet for this message. Fails for strings with a NUL inside, and for a message
    /// beyond [`MAX_MESSAGE`].
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let packet = match self {
            HostMessage::Run(run) => frame(T_RUN, encode_run(run)?),
            HostMessage::Kill { signal } => {
                let mut p = Vec::new();
                put_u32(&mut p, *signal as u32);
                frame(T_KILL, p)
            }
            HostMessage::Go => frame(T_GO, Vec::new()),
        };
        if packet.len() > MAX_MESSAGE {
            return Err(DecodeError::TooLarge);
        }
        Ok(packet)
    }

    /// Decodes a packet.
    pub fn decode(packet: &[u8]) -> Result<Self, DecodeError> {
        let (kind, mut r) = unframe(packet)?;
        match kind {
            T_RUN => Ok(HostMessage::Run(decode_run(&mut r)?)),
            T_KILL => Ok(HostMessage::Kill {
                signal: r.u32()? as i32,
            }),
            T_GO => Ok(HostMessage::Go),
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

impl InitMessage {
    /// The packet for this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        let kind = match self {
            InitMessage::Ready => T_READY,
            InitMessage::Hello { version } => {
                put_u32(&mut p, *version);
                T_HELLO
            }
            InitMessage::Exited { status, rusage } => {
                put_u32(&mut p, *status as u32);
                put_u64(&mut p, rusage.utime_us);
                put_u64(&mut p, rusage.stime_us);
                put_u64(&mut p, rusage.maxrss_kib);
                T_EXITED
            }
            InitMessage::Failed {
                stage,
                index,
                errno,
            } => {
                put_u32(&mut p, *stage);
                put_u32(&mut p, *index);
                put_u32(&mut p, *errno as u32);
                T_FAILED
            }
        };
        frame(kind, p)
    }

    /// Decodes a packet.
    pub fn decode(packet: &[u8]) -> Result<Self, DecodeError> {
        let (kind, mut r) = unframe(packet)?;
        Ok(match kind {
            T_READY => InitMessage::Ready,
            T_HELLO => InitMessage::Hello { version: r.u32()? },
            T_EXITED => InitMessage::Exited {
                status: r.u32()? as i32,
                rusage: Rusage {
                    utime_us: r.u64()?,
                    stime_us: r.u64()?,
                    maxrss_kib: r.u64()?,
                },
            },
            T_FAILED => InitMessage::Failed {
                stage: r.u32()?,
                index: r.u32()?,
                errno: r.u32()? as i32,
            },
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

/// Packets the sandbox's first process sends before init runs, encoded without allocating
/// (that process is a raw clone of a possibly multi-threaded host: it may not allocate).
pub mod child {
    use super::{Stage, T_FAILED, T_GO, T_READY};

    fn put(buf: &mut [u8], fields: &[u32]) -> usize {
        for (i, v) in fields.iter().enumerate() {
            if let Some(slot) = buf.get_mut(i * 4..i * 4 + 4) {
                slot.copy_from_slice(&v.to_le_bytes());
            }
        }
        fields.len() * 4
    }

    /// The `Failed` packet for `stage`; returns its length.
    pub fn failed(buf: &mut [u8; 20], stage: Stage, index: u32, errno: i32) -> usize {
        put(buf, &[T_FAILED, 12, stage as u32, index, errno as u32])
    }

    /// The `Ready` packet; returns its length.
    pub fn ready(buf: &mut [u8; 8]) -> usize {
        put(buf, &[T_READY, 0])
    }

    /// Whether `packet` is the host's `Go`.
    pub fn is_go(packet: &[u8]) -> bool {
        packet.len() == 8 && packet[..4] == T_GO.to_le_bytes() && packet[4..] == [0; 4]
    }
}
