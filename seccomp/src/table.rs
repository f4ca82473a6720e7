//! The system calls a sandboxed program may make: one allow-list for every backend. Anything not
//! here gets `ENOSYS` (what a kernel without the call would answer, so runtimes fall back
//! gracefully — glibc from `clone3` to `clone`, for one); a non-native ABI is killed.
//!
//! Left out on purpose, among others: `ptrace`, `process_vm_*`, `pidfd_getfd`, `kcmp`; the mount
//! family, `pivot_root`, `chroot`, `unshare`, `setns`; `bpf`, `perf_event_open`, `userfaultfd`;
//! `io_uring_*` and AIO's `io_setup`/`io_submit` (a run could reserve the host's whole
//! `aio-max-nr`); `keyctl`, `add_key`, `request_key`; module loading, `kexec_*`, `reboot`,
//! `swapon`, `acct`, `quotactl`, `syslog`; `open_by_handle_at`, `name_to_handle_at`;
//! `modify_ldt`, `iopl`, `ioperm`, `uselib`; `memfd_secret`; `fanotify_init`; clock and time
//! setting; `clone3` (its flags are in memory seccomp cannot read: `clone` is checked instead);
//! and every system call the kernel grows after this list was written.

/// How an argument is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `arg == value`.
    Eq,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

/// One comparison of a system call argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index (0-5).
    pub arg: u8,
    /// Compare the low 32 bits only (`int` arguments) or all 64.
    pub dword: bool,
    /// The comparison.
    pub op: Op,
    /// The value compared with.
    pub value: u64,
}

/// `arg == value` on a 32-bit argument.
const fn eq32(arg: u8, value: u64) -> Cond {
    Cond {
        arg,
        dword: true,
        op: Op::Eq,
        value,
    }
}

/// `arg == value` on a 64-bit argument.
const fn eq64(arg: u8, value: u64) -> Cond {
    Cond {
        arg,
        dword: false,
        op: Op::Eq,
        value,
    }
}

/// `arg & mask == value` on a 32-bit argument.
const fn masked32(arg: u8, mask: u64, value: u64) -> Cond {
    Cond {
        arg,
        dword: true,
        op: Op::MaskedEq(mask),
        value,
    }
}

/// One allowed system call: always (no rules), or when any rule holds (a rule holds when all of
/// its comparisons do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The name (what a Docker seccomp profile lists).
    pub name: &'static str,
    /// The number on this architecture.
    pub nr: libc::c_long,
    /// Alternatives; empty: allowed with any arguments.
    pub rules: &'static [&'static [Cond]],
}

const fn any(name: &'static str, nr: libc::c_long) -> Entry {
    Entry {
        name,
        nr,
        rules: &[],
    }
}

const fn when(name: &'static str, nr: libc::c_long, rules: &'static [&'static [Cond]]) -> Entry {
    Entry { name, nr, rules }
}

/// Namespace flags of `clone` (`CLONE_NEWTIME` is 0x80).
const CLONE_NS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64
    | 0x80;

const S_IFMT: u64 = 0o170000;

/// `clone` without namespace flags.
const CLONE: &[&[Cond]] = &[&[masked32(0, CLONE_NS, 0)]];
/// The socket type without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
const SOCK_TYPE_MASK: u64 = 0xf;

/// Unix sockets; IPv4 and IPv6 **stream** sockets; and routing netlink (reading one's own
/// interfaces: `getifaddrs`; changing them needs a capability the program does not have).
/// Datagram and raw IP sockets are refused: on a cgroup v1 host their buffers are charged to no
/// memory limit (a run held ~400 MiB of host memory in loopback UDP queues), while TCP's are
/// bounded per run (`memory.kmem.tcp.limit_in_bytes` on v1; the memory limit itself on v2).
const SOCKET: &[&[Cond]] = &[
    &[eq32(0, libc::AF_UNIX as u64)],
    &[
        eq32(0, libc::AF_INET as u64),
        masked32(1, SOCK_TYPE_MASK, libc::SOCK_STREAM as u64),
    ],
    &[
        eq32(0, libc::AF_INET6 as u64),
        masked32(1, SOCK_TYPE_MASK, libc::SOCK_STREAM as u64),
    ],
    &[
        eq32(0, libc::AF_NETLINK as u64),
        eq32(2, libc::NETLINK_ROUTE as u64),
    ],
];
const SOCKETPAIR: &[&[Cond]] = &[&[eq32(0, libc::AF_UNIX as u64)]];
/// FIFOs and regular files only (no device nodes); the mode is argument 2 of `mknodat`.
const MKNODAT: &[&[Cond]] = &[
    &[masked32(2, S_IFMT, libc::S_IFIFO as u64)],
    &[masked32(2, S_IFMT, libc::S_IFREG as u64)],
    &[masked32(2, S_IFMT, 0)],
];
/// Only for the calling process itself (pid 0): nothing can change another process's limits,
/// priority or scheduling — in a rootless sandbox, init has the program's uid.
const SELF_ARG0: &[&[Cond]] = &[&[eq64(0, 0)]];
/// `setpriority(PRIO_PROCESS, 0, …)` only.
const SETPRIORITY: &[&[Cond]] = &[&[eq32(0, libc::PRIO_PROCESS as u64), eq32(1, 0)]];
/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, …)` only.
const IOPRIO_SET: &[&[Cond]] = &[&[eq32(0, 1), eq32(1, 0)]];
/// `personality`: Linux, 32-bit, UNAME26 variants, and the query.
const PERSONALITY: &[&[Cond]] = &[
    &[eq32(0, 0)],
    &[eq32(0, 0x0008)],
    &[eq32(0, 0x0002_0000)],
    &[eq32(0, 0x0002_0008)],
    &[eq32(0, 0xffff_ffff)],
];

/// The allow-list.
pub const TABLE: &[Entry] = &[
    // Files and descriptors.
    any("read", libc::SYS_read),
    any("write", libc::SYS_write),
    any("readv", libc::SYS_readv),
    any("writev", libc::SYS_writev),
    any("pread64", libc::SYS_pread64),
    any("pwrite64", libc::SYS_pwrite64),
    any("preadv", libc::SYS_preadv),
    any("pwritev", libc::SYS_pwritev),
    any("preadv2", libc::SYS_preadv2),
    any("pwritev2", libc::SYS_pwritev2),
    any("close", libc::SYS_close),
    any("close_range", libc::SYS_close_range),
    any("openat", libc::SYS_openat),
    any("openat2", libc::SYS_openat2),
    any("lseek", libc::SYS_lseek),
    any("fstat", libc::SYS_fstat),
    any("newfstatat", libc::SYS_newfstatat),
    any("statx", libc::SYS_statx),
    any("statfs", libc::SYS_statfs),
    any("fstatfs", libc::SYS_fstatfs),
    any("faccessat", libc::SYS_faccessat),
    any("faccessat2", libc::SYS_faccessat2),
    any("fchmod", libc::SYS_fchmod),
    any("fchmodat", libc::SYS_fchmodat),
    any("fchmodat2", libc::SYS_fchmodat2),
    any("fchown", libc::SYS_fchown),
    any("fchownat", libc::SYS_fchownat),
    any("fcntl", libc::SYS_fcntl),
    any("flock", libc::SYS_flock),
    any("fsync", libc::SYS_fsync),
    any("fdatasync", libc::SYS_fdatasync),
    any("sync", libc::SYS_sync),
    any("syncfs", libc::SYS_syncfs),
    any("sync_file_range", libc::SYS_sync_file_range),
    any("truncate", libc::SYS_truncate),
    any("ftruncate", libc::SYS_ftruncate),
    any("fallocate", libc::SYS_fallocate),
    any("fadvise64", libc::SYS_fadvise64),
    any("readahead", libc::SYS_readahead),
    any("getdents64", libc::SYS_getdents64),
    any("getcwd", libc::SYS_getcwd),
    any("chdir", libc::SYS_chdir),
    any("fchdir", libc::SYS_fchdir),
    any("mkdirat", libc::SYS_mkdirat),
    when("mknodat", libc::SYS_mknodat, MKNODAT),
    any("unlinkat", libc::SYS_unlinkat),
    any("renameat", libc::SYS_renameat),
    any("renameat2", libc::SYS_renameat2),
    any("linkat", libc::SYS_linkat),
    any("symlinkat", libc::SYS_symlinkat),
    any("readlinkat", libc::SYS_readlinkat),
    any("utimensat", libc::SYS_utimensat),
    any("dup", libc::SYS_dup),
    any("dup3", libc::SYS_dup3),
    any("pipe2", libc::SYS_pipe2),
    any("memfd_create", libc::SYS_memfd_create),
    any("sendfile", libc::SYS_sendfile),
    any("splice", libc::SYS_splice),
    any("tee", libc::SYS_tee),
    any("vmsplice", libc::SYS_vmsplice),
    any("copy_file_range", libc::SYS_copy_file_range),
    any("ioctl", libc::SYS_ioctl),
    any("getxattr", libc::SYS_getxattr),
    any("lgetxattr", libc::SYS_lgetxattr),
    any("fgetxattr", libc::SYS_fgetxattr),
    any("listxattr", libc::SYS_listxattr),
    any("llistxattr", libc::SYS_llistxattr),
    any("flistxattr", libc::SYS_flistxattr),
    any("setxattr", libc::SYS_setxattr),
    any("lsetxattr", libc::SYS_lsetxattr),
    any("fsetxattr", libc::SYS_fsetxattr),
    any("removexattr", libc::SYS_removexattr),
    any("lremovexattr", libc::SYS_lremovexattr),
    any("fremovexattr", libc::SYS_fremovexattr),
    any("inotify_init1", libc::SYS_inotify_init1),
    any("inotify_add_watch", libc::SYS_inotify_add_watch),
    any("inotify_rm_watch", libc::SYS_inotify_rm_watch),
    // Memory.
    any("brk", libc::SYS_brk),
    any("mmap", libc::SYS_mmap),
    any("munmap", libc::SYS_munmap),
    any("mprotect", libc::SYS_mprotect),
    any("mremap", libc::SYS_mremap),
    any("msync", libc::SYS_msync),
    any("madvise", libc::SYS_madvise),
    any("mincore", libc::SYS_mincore),
    any("mlock", libc::SYS_mlock),
    any("mlock2", libc::SYS_mlock2),
    any("munlock", libc::SYS_munlock),
    any("mlockall", libc::SYS_mlockall),
    any("munlockall", libc::SYS_munlockall),
    any("get_mempolicy", libc::SYS_get_mempolicy),
    any("set_mempolicy", libc::SYS_set_mempolicy),
    any("mbind", libc::SYS_mbind),
    any("membarrier", libc::SYS_membarrier),
    any("pkey_alloc", libc::SYS_pkey_alloc),
    any("pkey_free", libc::SYS_pkey_free),
    any("pkey_mprotect", libc::SYS_pkey_mprotect),
    any("mseal", libc::SYS_mseal),
    // Processes and threads.
    when("clone", libc::SYS_clone, CLONE),
    any("execve", libc::SYS_execve),
    any("execveat", libc::SYS_execveat),
    any("exit", libc::SYS_exit),
    any("exit_group", libc::SYS_exit_group),
    any("wait4", libc::SYS_wait4),
    any("waitid", libc::SYS_waitid),
    any("kill", libc::SYS_kill),
    any("tkill", libc::SYS_tkill),
    any("tgkill", libc::SYS_tgkill),
    any("pidfd_open", libc::SYS_pidfd_open),
    any("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    any("getpid", libc::SYS_getpid),
    any("getppid", libc::SYS_getppid),
    any("gettid", libc::SYS_gettid),
    any("getuid", libc::SYS_getuid),
    any("geteuid", libc::SYS_geteuid),
    any("getgid", libc::SYS_getgid),
    any("getegid", libc::SYS_getegid),
    any("getresuid", libc::SYS_getresuid),
    any("getresgid", libc::SYS_getresgid),
    any("getgroups", libc::SYS_getgroups),
    // Changing ids needs a capability the program does not have; the calls themselves are
    // ordinary (a program dropping to its own id).
    any("setuid", libc::SYS_setuid),
    any("setgid", libc::SYS_setgid),
    any("setreuid", libc::SYS_setreuid),
    any("setregid", libc::SYS_setregid),
    any("setresuid", libc::SYS_setresuid),
    any("setresgid", libc::SYS_setresgid),
    any("setgroups", libc::SYS_setgroups),
    any("setfsuid", libc::SYS_setfsuid),
    any("setfsgid", libc::SYS_setfsgid),
    any("capget", libc::SYS_capget),
    any("capset", libc::SYS_capset),
    any("setpgid", libc::SYS_setpgid),
    any("getpgid", libc::SYS_getpgid),
    any("getsid", libc::SYS_getsid),
    any("setsid", libc::SYS_setsid),
    any("getpriority", libc::SYS_getpriority),
    when("setpriority", libc::SYS_setpriority, SETPRIORITY),
    any("ioprio_get", libc::SYS_ioprio_get),
    when("ioprio_set", libc::SYS_ioprio_set, IOPRIO_SET),
    any("sched_yield", libc::SYS_sched_yield),
    any("sched_getaffinity", libc::SYS_sched_getaffinity),
    when("sched_setaffinity", libc::SYS_sched_setaffinity, SELF_ARG0),
    any("sched_getparam", libc::SYS_sched_getparam),
    when("sched_setparam", libc::SYS_sched_setparam, SELF_ARG0),
    any("sched_getscheduler", libc::SYS_sched_getscheduler),
    when(
        "sched_setscheduler",
        libc::SYS_sched_setscheduler,
        SELF_ARG0,
    ),
    any("sched_getattr", libc::SYS_sched_getattr),
    when("sched_setattr", libc::SYS_sched_setattr, SELF_ARG0),
    any("sched_get_priority_max", libc::SYS_sched_get_priority_max),
    any("sched_get_priority_min", libc::SYS_sched_get_priority_min),
    any("sched_rr_get_interval", libc::SYS_sched_rr_get_interval),
    when("prlimit64", libc::SYS_prlimit64, SELF_ARG0),
    any("getrlimit", libc::SYS_getrlimit),
    any("setrlimit", libc::SYS_setrlimit),
    any("getrusage", libc::SYS_getrusage),
    any("times", libc::SYS_times),
    any("sysinfo", libc::SYS_sysinfo),
    any("uname", libc::SYS_uname),
    any("umask", libc::SYS_umask),
    any("prctl", libc::SYS_prctl),
    when("personality", libc::SYS_personality, PERSONALITY),
    any("getcpu", libc::SYS_getcpu),
    any("getrandom", libc::SYS_getrandom),
    any("seccomp", libc::SYS_seccomp),
    any("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    any("landlock_add_rule", libc::SYS_landlock_add_rule),
    any("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    // Signals.
    any("rt_sigaction", libc::SYS_rt_sigaction),
    any("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    any("rt_sigreturn", libc::SYS_rt_sigreturn),
    any("rt_sigpending", libc::SYS_rt_sigpending),
    any("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    any("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    any("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    any("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    any("sigaltstack", libc::SYS_sigaltstack),
    any("signalfd4", libc::SYS_signalfd4),
    any("restart_syscall", libc::SYS_restart_syscall),
    // Synchronisation and time.
    any("futex", libc::SYS_futex),
    any("futex_waitv", libc::SYS_futex_waitv),
    any("set_robust_list", libc::SYS_set_robust_list),
    any("get_robust_list", libc::SYS_get_robust_list),
    any("set_tid_address", libc::SYS_set_tid_address),
    any("rseq", libc::SYS_rseq),
    any("nanosleep", libc::SYS_nanosleep),
    any("clock_nanosleep", libc::SYS_clock_nanosleep),
    any("clock_gettime", libc::SYS_clock_gettime),
    any("clock_getres", libc::SYS_clock_getres),
    any("gettimeofday", libc::SYS_gettimeofday),
    any("timer_create", libc::SYS_timer_create),
    any("timer_settime", libc::SYS_timer_settime),
    any("timer_gettime", libc::SYS_timer_gettime),
    any("timer_getoverrun", libc::SYS_timer_getoverrun),
    any("timer_delete", libc::SYS_timer_delete),
    any("timerfd_create", libc::SYS_timerfd_create),
    any("timerfd_settime", libc::SYS_timerfd_settime),
    any("timerfd_gettime", libc::SYS_timerfd_gettime),
    any("getitimer", libc::SYS_getitimer),
    any("setitimer", libc::SYS_setitimer),
    // Waiting on descriptors.
    any("ppoll", libc::SYS_ppoll),
    any("pselect6", libc::SYS_pselect6),
    any("epoll_create1", libc::SYS_epoll_create1),
    any("epoll_ctl", libc::SYS_epoll_ctl),
    any("epoll_pwait", libc::SYS_epoll_pwait),
    any("epoll_pwait2", libc::SYS_epoll_pwait2),
    any("eventfd2", libc::SYS_eventfd2),
    // Sockets (the network namespace decides what they can reach).
    when("socket", libc::SYS_socket, SOCKET),
    when("socketpair", libc::SYS_socketpair, SOCKETPAIR),
    any("bind", libc::SYS_bind),
    any("listen", libc::SYS_listen),
    any("accept", libc::SYS_accept),
    any("accept4", libc::SYS_accept4),
    any("connect", libc::SYS_connect),
    any("getsockname", libc::SYS_getsockname),
    any("getpeername", libc::SYS_getpeername),
    any("sendto", libc::SYS_sendto),
    any("recvfrom", libc::SYS_recvfrom),
    any("sendmsg", libc::SYS_sendmsg),
    any("recvmsg", libc::SYS_recvmsg),
    any("sendmmsg", libc::SYS_sendmmsg),
    any("recvmmsg", libc::SYS_recvmmsg),
    any("shutdown", libc::SYS_shutdown),
    any("setsockopt", libc::SYS_setsockopt),
    any("getsockopt", libc::SYS_getsockopt),
    // System V and POSIX IPC (the IPC namespace is the sandbox's own, its limits lowered).
    any("shmget", libc::SYS_shmget),
    any("shmat", libc::SYS_shmat),
    any("shmdt", libc::SYS_shmdt),
    any("shmctl", libc::SYS_shmctl),
    any("semget", libc::SYS_semget),
    any("semop", libc::SYS_semop),
    any("semtimedop", libc::SYS_semtimedop),
    any("semctl", libc::SYS_semctl),
    any("msgget", libc::SYS_msgget),
    any("msgsnd", libc::SYS_msgsnd),
    any("msgrcv", libc::SYS_msgrcv),
    any("msgctl", libc::SYS_msgctl),
    any("mq_open", libc::SYS_mq_open),
    any("mq_unlink", libc::SYS_mq_unlink),
    any("mq_timedsend", libc::SYS_mq_timedsend),
    any("mq_timedreceive", libc::SYS_mq_timedreceive),
    any("mq_notify", libc::SYS_mq_notify),
    any("mq_getsetattr", libc::SYS_mq_getsetattr),
    // The x86-64 ABI's older calls, still made by ordinary programs.
    #[cfg(target_arch = "x86_64")]
    any("open", libc::SYS_open),
    #[cfg(target_arch = "x86_64")]
    any("creat", libc::SYS_creat),
    #[cfg(target_arch = "x86_64")]
    any("stat", libc::SYS_stat),
    #[cfg(target_arch = "x86_64")]
    any("lstat", libc::SYS_lstat),
    #[cfg(target_arch = "x86_64")]
    any("access", libc::SYS_access),
    #[cfg(target_arch = "x86_64")]
    any("poll", libc::SYS_poll),
    #[cfg(target_arch = "x86_64")]
    any("select", libc::SYS_select),
    #[cfg(target_arch = "x86_64")]
    any("pipe", libc::SYS_pipe),
    #[cfg(target_arch = "x86_64")]
    any("dup2", libc::SYS_dup2),
    #[cfg(target_arch = "x86_64")]
    any("fork", libc::SYS_fork),
    #[cfg(target_arch = "x86_64")]
    any("vfork", libc::SYS_vfork),
    #[cfg(target_arch = "x86_64")]
    any("getpgrp", libc::SYS_getpgrp),
    #[cfg(target_arch = "x86_64")]
    any("link", libc::SYS_link),
    #[cfg(target_arch = "x86_64")]
    any("unlink", libc::SYS_unlink),
    #[cfg(target_arch = "x86_64")]
    any("mkdir", libc::SYS_mkdir),
    #[cfg(target_arch = "x86_64")]
    any("rmdir", libc::SYS_rmdir),
    #[cfg(target_arch = "x86_64")]
    any("rename", libc::SYS_rename),
    #[cfg(target_arch = "x86_64")]
    any("readlink", libc::SYS_readlink),
    #[cfg(target_arch = "x86_64")]
    any("symlink", libc::SYS_symlink),
    #[cfg(target_arch = "x86_64")]
    any("chmod", libc::SYS_chmod),
    #[cfg(target_arch = "x86_64")]
    any("chown", libc::SYS_chown),
    #[cfg(target_arch = "x86_64")]
    any("lchown", libc::SYS_lchown),
    #[cfg(target_arch = "x86_64")]
    any("utime", libc::SYS_utime),
    #[cfg(target_arch = "x86_64")]
    any("utimes", libc::SYS_utimes),
    #[cfg(target_arch = "x86_64")]
    any("futimesat", libc::SYS_futimesat),
    #[cfg(target_arch = "x86_64")]
    when(
        "mknod",
        libc::SYS_mknod,
        &[
            &[masked32(1, S_IFMT, libc::S_IFIFO as u64)],
            &[masked32(1, S_IFMT, libc::S_IFREG as u64)],
            &[masked32(1, S_IFMT, 0)],
        ],
    ),
    #[cfg(target_arch = "x86_64")]
    any("getdents", libc::SYS_getdents),
    #[cfg(target_arch = "x86_64")]
    any("epoll_create", libc::SYS_epoll_create),
    #[cfg(target_arch = "x86_64")]
    any("epoll_wait", libc::SYS_epoll_wait),
    #[cfg(target_arch = "x86_64")]
    any("signalfd", libc::SYS_signalfd),
    #[cfg(target_arch = "x86_64")]
    any("eventfd", libc::SYS_eventfd),
    #[cfg(target_arch = "x86_64")]
    any("inotify_init", libc::SYS_inotify_init),
    #[cfg(target_arch = "x86_64")]
    any("time", libc::SYS_time),
    #[cfg(target_arch = "x86_64")]
    any("alarm", libc::SYS_alarm),
    #[cfg(target_arch = "x86_64")]
    any("pause", libc::SYS_pause),
    #[cfg(target_arch = "x86_64")]
    any("arch_prctl", libc::SYS_arch_prctl),
];
