//! Background priority for sandboxes prepared ahead (the pool): building one is a few
//! milliseconds of CPU that should not be taken from the request running beside it (on a
//! machine of two cores, the refill started by a request competed with that request's program).
//!
//! The thread preparing instances runs at the lowest priority while it does; what it starts
//! inherits that (the setup child, then init), so once an instance is ready, init — and through
//! it every program it will start — is given back the priority the thread had before. Only as
//! root: lowering a nice value again needs `CAP_SYS_NICE`, and an instance left at the lowest
//! priority would run its programs there.

use std::io;

/// The nice value of the preparing thread (the lowest priority).
const BACKGROUND_NICE: libc::c_int = 19;

/// The calling thread at background priority, until dropped.
pub(crate) struct Background {
    /// The thread's nice value before.
    previous: libc::c_int,
}

impl Background {
    /// Lowers the calling thread's priority; `None` if its nice value cannot be read or set.
    pub(crate) fn enter() -> Option<Self> {
        let previous = nice_of(0).ok()?;
        set_nice(0, BACKGROUND_NICE).ok()?;
        Some(Self { previous })
    }

    /// Gives the process (or thread) `pid` of the host's pid namespace the priority the thread
    /// had before [`enter`](Self::enter).
    pub(crate) fn restore(&self, pid: libc::pid_t) -> io::Result<()> {
        set_nice(pid, self.previous)?;
        if nice_of(pid)? != self.previous {
            return Err(io::Error::other("the priority did not take"));
        }
        Ok(())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // The thread goes back to the pool it came from at its old priority. A failure (not
        // possible as root) leaves a slower thread, never a sandbox.
        let _ = set_nice(0, self.previous);
    }
}

/// The nice value of `pid` (0: the calling thread).
fn nice_of(pid: libc::pid_t) -> io::Result<libc::c_int> {
    // getpriority(2) may return -1 as a value: errno tells.
    // SAFETY: __errno_location is this thread's errno; getpriority takes integers.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t);
        if n == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n)
    }
}

/// Sets the nice value of `pid` (0: the calling thread).
fn set_nice(pid: libc::pid_t, nice: libc::c_int) -> io::Result<()> {
    // SAFETY: setpriority(2) with integer arguments.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread is lowered while inside, and given back its priority after, on its own
    /// thread (the test harness's threads are not touched). As root, a process started while
    /// lowered is given the old priority back.
    #[test]
    fn the_preparing_thread_is_lowered_and_what_it_started_restored() {
        let r = std::thread::spawn(|| {
            let before = nice_of(0).ok()?;
            let bg = Background::enter()?;
            let inside = nice_of(0).ok()?;
            let child = std::process::Command::new("sleep").arg("5").spawn().ok();
            let restored = child.as_ref().map(|c| {
                let pid = c.id() as libc::pid_t;
                let lowered = nice_of(pid).ok();
                (lowered, bg.restore(pid).is_ok(), nice_of(pid).ok())
            });
            if let Some(mut c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
            drop(bg);
            Some((before, inside, nice_of(0).ok()?, restored))
        })
        .join();
        let Ok(Some((before, inside, after, restored))) = r else {
            panic!("no priority could be read or set: {r:?}");
        };
        assert_eq!(inside, BACKGROUND_NICE);
        assert_eq!(after, before, "the thread keeps a lowered priority");
        let Some((lowered, ok, now)) = restored else {
            panic!("sleep could not be started");
        };
        assert_eq!(
            lowered,
            Some(BACKGROUND_NICE),
            "a child inherits the priority"
        );
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(ok, "root restores a child's priority");
            assert_eq!(now, Some(before));
        }
    }
}
