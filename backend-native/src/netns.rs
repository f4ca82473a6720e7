//! Network namespaces made ahead (root mode).
//!
//! A new network namespace is the costliest part of the clone that makes a sandbox — on the
//! development host about 0.33 ms of the 0.48 ms all of its namespaces add to a plain fork (the
//! loopback device registered, per-namespace tables and sysctls set up). A thread of the
//! executor keeps some made: it unshares a new one, brings its loopback up and keeps a
//! descriptor, again and again. How many follows demand: one at first, none more after the first
//! sandbox (a one-shot process, the CLI's `run`, makes exactly the one it uses: making and
//! ending a network namespace costs as much CPU as a short program), then one more per sandbox,
//! up to [`READY`]. The thread that clones a sandbox enters one (`setns`) and clones without
//! `CLONE_NEWNET`; each namespace serves one sandbox and goes with it.
//!
//! What changes for the sandbox: its network namespace belongs to the host's user namespace
//! instead of its own, so nothing inside — not even init, root of the sandbox's user namespace
//! — holds a capability over it (programs never did). When none is ready the sandbox makes its
//! own as before; rootless, where only a new user namespace gives the right to make one, always.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::sys::{self, Fd};

/// How many namespaces are kept ready at most.
pub(crate) const READY: usize = 4;

/// Namespaces ready, and the thread that makes them.
pub(crate) struct NetnsPool {
    state: Arc<State>,
    maker: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    ready: Mutex<Ready>,
    taken: Condvar,
    stop: AtomicBool,
}

/// The namespaces made, how many to keep, and how many sandboxes asked for one.
struct Ready {
    fds: Vec<Fd>,
    wanted: usize,
    asked: usize,
}

impl Ready {
    /// How many to keep once `asked` sandboxes have asked: one for the first; none more until a
    /// second asks; then one fewer than have asked, up to [`READY`].
    fn wanted(asked: usize) -> usize {
        match asked {
            0 => 1,
            1 => 0,
            n => (n - 1).min(READY),
        }
    }
}

impl State {
    fn ready(&self) -> MutexGuard<'_, Ready> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl NetnsPool {
    /// Starts the maker thread; `None` if it cannot run (the sandboxes then make their own).
    pub(crate) fn start() -> Option<Self> {
        let state = Arc::new(State {
            ready: Mutex::new(Ready {
                fds: Vec::with_capacity(READY),
                wanted: Ready::wanted(0),
                asked: 0,
            }),
            taken: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = state.clone();
        let maker = std::thread::Builder::new()
            .name("vana-netns".into())
            .spawn(move || make_while_wanted(&s))
            .map_err(|e| tracing::warn!(error = %e, "starting the network namespace maker"))
            .ok()?;
        Some(Self {
            state,
            maker: Mutex::new(Some(maker)),
        })
    }

    /// A namespace made ahead, if one is ready.
    pub(crate) fn take(&self) -> Option<Fd> {
        let fd = {
            let mut ready = self.state.ready();
            ready.asked = ready.asked.saturating_add(1);
            ready.wanted = Ready::wanted(ready.asked);
            ready.fds.pop()
        };
        self.state.taken.notify_one();
        fd
    }

    /// Stops the maker and closes the namespaces not taken.
    pub(crate) fn stop(&self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.state.taken.notify_all();
        if let Some(t) = self.maker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        self.state.ready().fds.clear();
    }
}

impl Drop for NetnsPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The maker thread: tops the pool up, waits while it is full — in the host's namespace, so
/// that no namespace handed out has a host thread in it.
fn make_while_wanted(s: &State) {
    let host = match own_netns() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "opening the host's network namespace");
            return;
        }
    };
    let mut ready = s.ready();
    loop {
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        if ready.fds.len() >= ready.wanted {
            ready = s.taken.wait(ready).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        drop(ready);
        match make(&host) {
            Ok(fd) => {
                ready = s.ready();
                ready.fds.push(fd);
            }
            Err(e) => {
                // The sandboxes make their own; nothing is retried.
                tracing::warn!(error = %e, "making a network namespace ahead");
                return;
            }
        }
    }
}

/// A new network namespace with its loopback up (made by this thread, which returns to `host`).
fn make(host: &Fd) -> io::Result<Fd> {
    // SAFETY: unshare with a flag constant, on this thread only (it is the maker's own).
    sys::cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
    crate::child::loopback_up();
    let made = own_netns();
    // SAFETY: setns on a namespace descriptor we hold, for this thread only.
    let back = sys::cvt(unsafe { libc::setns(host.raw(), libc::CLONE_NEWNET) });
    let made = made?;
    back?;
    Ok(made)
}

/// The calling thread's network namespace.
fn own_netns() -> io::Result<Fd> {
    // SAFETY: a NUL-terminated path; the descriptor is owned by the returned `Fd`.
    let fd = sys::cvt(unsafe {
        libc::open(
            c"/proc/thread-self/ns/net".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    })?;
    Ok(Fd(fd))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    use super::*;

    fn inode_of(fd: &Fd) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{}", fd.raw()))
            .expect("stat the namespace")
            .ino()
    }

    fn take_within(pool: &NetnsPool, wait: Duration) -> Fd {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(fd) = pool.take() {
                return fd;
            }
            assert!(Instant::now() < deadline, "no namespace was made");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Each namespace taken is new (not the host's, not an earlier one), the maker keeps more
    /// as they are taken but never more than `READY`, and stopping closes what was not taken.
    /// After the first is taken it makes no other until a second sandbox asks.
    #[test]
    fn namespaces_are_new_used_once_and_made_as_they_are_taken() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "making network namespaces needs root; run the suite as root, as CI does"
        );
        let host = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let pool = NetnsPool::start().expect("the maker starts");
        let mut seen = std::collections::HashSet::new();
        // The first one, made before anyone asks (waited for, so one call takes it).
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.state.ready().fds.is_empty() {
            assert!(Instant::now() < deadline, "no namespace was made");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Kept open: a namespace closed may give its inode number to a later one.
        let mut held = vec![pool.take().expect("one is ready")];
        seen.insert(inode_of(&held[0]));
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            pool.state.ready().fds.is_empty(),
            "a namespace was made that no sandbox asked for"
        );
        for _ in 0..6 {
            let fd = take_within(&pool, Duration::from_secs(5));
            let ino = inode_of(&fd);
            assert_ne!(ino, host, "the host's own namespace was handed out");
            assert!(seen.insert(ino), "a namespace was handed out twice");
            held.push(fd);
        }
        std::thread::sleep(Duration::from_millis(300));
        let ready = pool.state.ready();
        assert_eq!(ready.wanted, READY);
        assert!(ready.fds.len() <= READY);
        drop(ready);
        pool.stop();
        assert!(pool.state.ready().fds.is_empty());
        assert!(pool.take().is_none());
        // The maker thread left no namespace of ours on this thread's process.
        assert_eq!(std::fs::metadata("/proc/self/ns/net").unwrap().ino(), host);
    }
}
