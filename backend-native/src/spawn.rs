//! Starting the setup child without copying the host process.
//!
//! A fork-style clone copies the page tables of the whole host process — a Python agent or a
//! server can hold hundreds of megabytes — and leaves every one of its pages copy-on-write, so
//! the host pays a fault on its next write to each. Here the child shares the host's memory
//! (`CLONE_VM`) on a stack of its own until it `execve`s init, the way `posix_spawn` works: it
//! only reads its [`ChildPlan`] (which the host keeps alive and unchanged until then) and writes
//! its own stack.
//!
//! The one other thing it shares is the thread pointer of the thread that cloned it, and with it
//! that thread's `errno`. So the clone is made by a thread of its own, with every signal
//! blocked, which afterwards makes no call that could set `errno` — it waits in `read` on a pipe
//! — until the host knows the child has exec'd or is dead and closes the pipe. Only then does
//! the thread end and the stack go.
//!
//! Per-memory state is shared too. The only such state that changes is the "dumpable" flag,
//! which the kernel resets whenever a thread switches ids (the cloning thread taking the owner's
//! id, the child taking its sandbox id); the host's own setting is put back once no child
//! shares its memory ([`Dumpable`]). Nothing depends on the flag meanwhile: the one write to the
//! child's `/proc` files, its time namespace's offsets, is the host's — as root it may open them
//! whatever the flag says, and rootless no id switch changes the kernel's id, so the flag stays.

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::child::{setup_main, ChildPlan};
use crate::sys::{self, Fd};

/// The setup child's stack. It needs little (no allocation, small buffers); the size leaves a
/// wide margin, and a guard page below it turns an overflow into a fault, not a write into
/// whatever the host keeps next to it.
const STACK_SIZE: usize = 512 << 10;
const GUARD: usize = 4096;

/// Namespaces and flags of the clone (besides `CLONE_VM`, added here).
pub(crate) type CloneFlags = libc::c_int;

/// What the cloning thread sets up for the child besides `flags`.
pub(crate) struct CloneSpec {
    /// Namespaces the child gets (`clone(2)` flags; `CLONE_VM` is added).
    pub flags: CloneFlags,
    /// The uid the cloning thread takes first, so that it owns the new user namespace.
    pub owner: Option<u32>,
    /// A network namespace made ahead ([`crate::netns`]) the child starts in.
    pub netns: Option<RawFd>,
    /// `timens_offsets` of a time namespace the cloning thread makes for the child's children
    /// (the child enters it when it execs); `None`: the child makes its own.
    pub time_offsets: Option<String>,
}

/// A child made by [`spawn`]. Dropping it ends the cloning thread and unmaps the child's stack:
/// only once the child has exec'd (its own memory from then on) or is dead and reaped.
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pidfd: Fd,
    release: Option<Fd>,
    thread: Option<JoinHandle<()>>,
    stack: Stack,
    _dumpable: Dumpable,
}

/// Children that share the host's memory now, and the host's dumpable setting from before the
/// first of them (a child's id switch resets the flag of the memory it shares).
static SHARING: Mutex<(usize, libc::c_int)> = Mutex::new((0, 1));

/// One child sharing the host's memory; the last one gone puts the host's flag back.
struct Dumpable;

impl Dumpable {
    fn enter() -> Self {
        let mut s = SHARING.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 == 0 {
            // SAFETY: prctl with integer arguments.
            s.1 = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }.max(0);
        }
        s.0 += 1;
        Self
    }
}

impl Drop for Dumpable {
    fn drop(&mut self) {
        let mut s = SHARING.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.saturating_sub(1);
        if s.0 == 0 {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, s.1 as libc::c_ulong, 0, 0, 0) };
        }
    }
}

impl Spawned {
    /// The child's pidfd, for its owner (taken once).
    pub(crate) fn take_pidfd(&mut self) -> Fd {
        std::mem::replace(&mut self.pidfd, Fd(-1))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // EOF on the pipe lets the cloning thread end.
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stack.unmap();
    }
}

struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; it is only unmapped through it.
unsafe impl Send for Stack {}

impl Stack {
    fn map() -> io::Result<Self> {
        let len = STACK_SIZE + GUARD;
        // SAFETY: an anonymous private mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, len };
        // SAFETY: the lowest page of our own mapping.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer (stacks grow down; the top is page-aligned).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of our mapping, which is what `clone` takes.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }

    fn unmap(&mut self) {
        if !self.base.is_null() {
            // SAFETY: our own mapping, unmapped once.
            unsafe { libc::munmap(self.base, self.len) };
            self.base = std::ptr::null_mut();
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.unmap();
    }
}

extern "C" fn child_entry(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` is the `ChildPlan` `spawn` was given, alive and unchanged until the child
    // has exec'd or died (the caller's contract); we are the new child on our own stack.
    unsafe { setup_main(&*(plan as *const ChildPlan<'_>)) }
}

/// Moves the calling thread into the network namespace `fd`.
fn enter_netns(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns on a namespace descriptor the caller holds, for this thread only.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a time namespace for the calling thread's children with `offsets` (the child is
/// cloned with `CLONE_VM`, so it stays in ours until it execs). Nothing on a kernel without
/// time namespaces. Needs the host's privileges: before the thread takes the owner's id.
fn time_ns_for_child(offsets: &str) -> io::Result<()> {
    // SAFETY: unshare with a flag constant, for this thread only (it clones one child, then ends).
    if unsafe { libc::unshare(sys::CLONE_NEWTIME) } < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINVAL) => Ok(()),
            _ => Err(e),
        };
    }
    // `/proc/<tid>` of a thread has the process-level entries, `timens_offsets` among them
    // (`/proc/thread-self`, a `task/` directory, has not).
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    std::fs::write(format!("/proc/{tid}/timens_offsets"), offsets)
}

/// Switches the calling thread's effective uid to `uid` (the owner the new user namespace gets).
/// Raw system call: only this thread changes, and it is the thread that clones.
fn take_owner_id(uid: u32) -> io::Result<()> {
    // SAFETY: setresuid on this thread only; -1 leaves the real and saved uids.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, -1i32, uid, -1i32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clones the setup child into new namespaces (`flags`), sharing this process's memory; into
/// the network namespace `netns` if one is given (entered by the cloning thread, which needs
/// the host's privileges for it: before it takes the owner's id).
///
/// # Safety
/// `plan` must stay alive and unchanged until the returned [`Spawned`] is dropped, and that
/// drop must come only after the child has exec'd or has died and been reaped.
pub(crate) unsafe fn spawn(plan: &ChildPlan<'_>, spec: CloneSpec) -> io::Result<Spawned> {
    let CloneSpec {
        flags,
        owner,
        netns,
        time_offsets,
    } = spec;
    let stack = Stack::map()?;
    let (release_r, release_w) = sys::pipe()?;
    let dumpable = Dumpable::enter();
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<(libc::pid_t, RawFd)>>(1);
    let plan_addr = plan as *const ChildPlan<'_> as usize;
    let top = stack.top() as usize;
    let thread = std::thread::Builder::new()
        .name("vana-spawn".into())
        .stack_size(64 << 10)
        .spawn(move || {
            // No handler may run on this thread (it would touch the errno the child shares).
            // SAFETY: a full signal set on this thread only.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            }
            let cloned = netns
                .map(enter_netns)
                .transpose()
                .and_then(|_| time_offsets.as_deref().map(time_ns_for_child).transpose())
                .and_then(|_| owner.map(take_owner_id).transpose())
                .and_then(|_| {
                    let mut pidfd: libc::c_int = -1;
                    // SAFETY: glibc's clone runs `child_entry` on the new stack in the child, which
                    // never returns (exec or _exit); the plan is kept alive by the caller.
                    let pid = unsafe {
                        libc::clone(
                            child_entry,
                            top as *mut libc::c_void,
                            flags | libc::CLONE_VM,
                            plan_addr as *mut libc::c_void,
                            &mut pidfd as *mut libc::c_int,
                            std::ptr::null_mut::<libc::c_void>(),
                            std::ptr::null_mut::<libc::pid_t>(),
                        )
                    };
                    if pid < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok((pid, pidfd))
                    }
                });
            let ok = cloned.is_ok();
            let _ = tx.send(cloned);
            if ok {
                // Wait for the release without a call that could fail and set errno: `read`
                // returns 0 once the host closed the other end (signals are blocked).
                let mut b = [0u8; 1];
                // SAFETY: a read into a local byte.
                while unsafe { libc::read(release_r.raw(), b.as_mut_ptr().cast(), 1) } > 0 {}
            }
        })?;
    let mut spawned = Spawned {
        pid: -1,
        pidfd: Fd(-1),
        release: Some(release_w),
        thread: Some(thread),
        stack,
        _dumpable: dumpable,
    };
    match rx.recv() {
        Ok(Ok((pid, pidfd))) => {
            spawned.pid = pid;
            spawned.pidfd = Fd(pidfd);
            Ok(spawned)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::other(
            "the spawning thread ended without an answer",
        )),
    }
}
