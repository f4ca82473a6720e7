//! Ending sandboxes off the caller's path, for every backend.
//!
//! By the time a run's result exists its program has exited and every other process of the run
//! has been killed; what is left is bookkeeping no caller needs to wait for. Natively that is
//! init's exit (the kernel unmounting its tree, ending its namespaces) and the cgroup's removal,
//! about a millisecond; on Docker, the container's removal, about 45 ms. So a backend's
//! instance that is destroyed (or dropped) stops what could still act — the native init's
//! control socket or the container's attach stream is closed, and init kills what remains —
//! and hands the rest to this process's reaper thread. What the sandbox holds (an id lease, a
//! cgroup, a container) stays held until it is gone, so nothing is reused early.
//!
//! Sandboxes being ended are counted over the whole process: a new sandbox waits while
//! [`MAX_ENDING`] are (a host that ends sandboxes slower than it makes them never piles them
//! up), and dropping an executor or exiting the process (`atexit`) waits until none is.

use std::sync::mpsc::{self, Sender};
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

use crate::BackendError;

/// Sandboxes being ended at most before a new one waits.
pub const MAX_ENDING: usize = 8;

/// How long a new sandbox waits for the backlog to shrink below [`MAX_ENDING`] (then it goes
/// ahead: a stuck reaper must not stop the host).
pub const BACKLOG_WAIT: Duration = Duration::from_secs(10);

/// How long a dropped (or shut down) executor waits for the sandboxes being ended: long enough
/// for a slow container removal (gVisor taking down a sandbox of many processes was measured at
/// 19 s); the wait ends as soon as none is left.
pub const DROP_WAIT: Duration = Duration::from_secs(30);

/// How long an exiting process waits for its sandboxes to end (as long as a dropped executor).
const AT_EXIT_WAIT: Duration = DROP_WAIT;

/// Something the reaper ends (blocking; a failure is logged, there is no caller left).
pub type Ending = Box<dyn FnOnce() -> Result<(), BackendError> + Send>;

/// How many sandboxes are being ended, by the process counting (a forked child inherits the
/// memory but not the reaper thread: its count starts again at zero).
struct Count {
    ending: Mutex<(u32, usize)>,
    changed: Condvar,
}

static COUNT: Count = Count {
    ending: Mutex::new((0, 0)),
    changed: Condvar::new(),
};

/// The reaper thread's queue (started with the first sandbox ended), and its process.
static QUEUE: OnceLock<(Mutex<Sender<Ending>>, u32)> = OnceLock::new();

fn count() -> MutexGuard<'static, (u32, usize)> {
    let mut c = COUNT.ending.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if c.0 != pid {
        *c = (pid, 0);
    }
    c
}

fn changed(by: impl FnOnce(&mut usize)) {
    by(&mut count().1);
    COUNT.changed.notify_all();
}

/// Ends `ending` on the reaper thread, or here if there is none (it could not be started, or
/// this is a forked child of the process that started it).
pub fn end(ending: Ending) {
    changed(|n| *n += 1);
    let returned = match queue() {
        Some(q) => q
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(ending)
            .err()
            .map(|e| e.0),
        None => Some(ending),
    };
    if let Some(ending) = returned {
        finish(ending);
    }
}

fn finish(ending: Ending) {
    if let Err(e) = ending() {
        tracing::warn!(error = %e, "ending a sandbox");
    }
    changed(|n| *n = n.saturating_sub(1));
}

/// The reaper's queue, started once per process.
fn queue() -> Option<&'static Mutex<Sender<Ending>>> {
    let (q, pid) = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Ending>();
        let started = std::thread::Builder::new()
            .name("vana-reaper".into())
            .spawn(move || {
                for ending in rx {
                    finish(ending);
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "starting the sandbox reaper");
        }
        static AT_EXIT: Once = Once::new();
        // SAFETY: registers a function without arguments that only waits on a condition
        // variable (bounded).
        AT_EXIT.call_once(|| unsafe {
            libc::atexit(at_exit);
        });
        (Mutex::new(tx), std::process::id())
    });
    (*pid == std::process::id()).then_some(q)
}

extern "C" fn at_exit() {
    if QUEUE
        .get()
        .is_some_and(|(_, pid)| *pid == std::process::id())
    {
        wait_below(1, AT_EXIT_WAIT);
    }
}

/// How many sandboxes this process is ending now.
pub fn ending() -> usize {
    count().1
}

/// Waits (at most `timeout`) until fewer than `n` sandboxes are being ended.
pub fn wait_below(n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut ending = count();
    while ending.1 >= n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        ending = COUNT
            .changed
            .wait_timeout(ending, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}
