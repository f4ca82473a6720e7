//! Network namespaces made ahead (root mode).
//!
//! A new network namespace is the costliest part of the clone that makes a sandbox — on the
//! development host about 0.33 ms of the 0.48 ms all of its namespaces add to a plain fork (the
//! loopback device registered, per-namespace tables and sysctls set up). A thread of the
//! executor keeps [`READY`] of them made: it unshares a new one, brings its loopback up and
//! keeps a descriptor, again and again. The thread that clones a sandbox enters one (`setns`)
//! and clones without `CLONE_NEWNET`; each namespace serves one sandbox and goes with it.
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

/// How many namespaces are kept ready.
pub(crate) const READY: usize = 4;

/// Namespaces ready, and the thread that makes them.
pub(crate) struct NetnsPool {
    state: Arc<State>,
    maker: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    ready: Mutex<Vec<Fd>>,
    taken: Condvar,
    stop: AtomicBool,
}

impl State {
    fn ready(&self) -> MutexGuard<'_, Vec<Fd>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl NetnsPool {
    /// Starts the maker thread; `None` if it cannot run (the sandboxes then make their own).
    pub(crate) fn start() -> Option<Self> {
        let state = Arc::new(State {
            ready: Mutex::new(Vec::with_capacity(READY)),
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
        let fd = self.state.ready().pop();
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
        self.state.ready().clear();
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
        if ready.len() >= READY {
            ready = s.taken.wait(ready).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        drop(ready);
        match make(&host) {
            Ok(fd) => {
                ready = s.ready();
                ready.push(fd);
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
