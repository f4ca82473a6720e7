//! The seccomp-bpf filter of every native run, assembled in the parent (a plain `Vec` of BPF
//! instructions) and installed by the child with one `prctl` — no allocation after clone.
//!
//! Policy: kill the process for any non-native architecture and (on x86-64) the x32 ABI; deny
//! with EPERM the kernel attack surface a program never needs; ENOSYS for `clone3` so that
//! runtimes fall back to `clone`, whose namespace flags are checked; only AF_UNIX, AF_INET and
//! AF_INET6 sockets; no TIOCSTI/TIOCLINUX; `personality` only with harmless values.

/// One classic BPF instruction (`struct sock_filter`).
pub(crate) type Insn = libc::sock_filter;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// x32 system calls are the native numbers with this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Namespace-creating clone flags (including CLONE_NEWTIME).
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32
    | 0x80;

const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;

/// `personality` values allowed: PER_LINUX, PER_LINUX32, UNAME26 variants, and the query.
const PERSONALITY_OK: [u32; 5] = [0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// System calls denied with EPERM.
pub(crate) const DENIED: &[(&str, libc::c_long)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("ustat", libc::SYS_ustat),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
];

/// A tiny assembler with forward labels (classic BPF only jumps forward).
struct Asm {
    code: Vec<Insn>,
    /// (instruction index, label, is_true_branch); every label lies after its jumps.
    fixups: Vec<(usize, Label, bool)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Allow,
    Eperm,
    Enosys,
    Kill,
    Clone,
    Socket,
    Ioctl,
    Personality,
    Next,
}

impl Asm {
    fn stmt(&mut self, code: u16, k: u32) {
        self.code.push(Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        });
    }

    /// `if A <op> k goto t else goto f`; `Label::Next` falls through.
    fn jump(&mut self, code: u16, k: u32, t: Label, f: Label) {
        let at = self.code.len();
        self.code.push(Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        });
        if t != Label::Next {
            self.fixups.push((at, t, true));
        }
        if f != Label::Next {
            self.fixups.push((at, f, false));
        }
    }

    fn resolve(mut self, labels: &[(Label, usize)]) -> Vec<Insn> {
        for (at, label, t) in self.fixups {
            let target = labels
                .iter()
                .find(|(l, _)| *l == label)
                .map_or(at + 1, |(_, i)| *i);
            // Classic BPF jumps only forward; the unit test checks every decision.
            let off = target.saturating_sub(at + 1).min(255) as u8;
            if let Some(insn) = self.code.get_mut(at) {
                if t {
                    insn.jt = off;
                } else {
                    insn.jf = off;
                }
            }
        }
        self.code
    }
}

/// Builds the filter.
pub(crate) fn build() -> Vec<Insn> {
    let mut a = Asm {
        code: Vec::with_capacity(128),
        fixups: Vec::new(),
    };
    let mut labels = Vec::new();
    a.stmt(LD_W_ABS, OFF_ARCH);
    a.jump(JEQ_K, AUDIT_ARCH, Label::Next, Label::Kill);
    a.stmt(LD_W_ABS, OFF_NR);
    #[cfg(target_arch = "x86_64")]
    a.jump(JGE_K, X32_SYSCALL_BIT, Label::Kill, Label::Next);
    for (_, nr) in DENIED {
        a.jump(JEQ_K, *nr as u32, Label::Eperm, Label::Next);
    }
    a.jump(JEQ_K, libc::SYS_clone3 as u32, Label::Enosys, Label::Next);
    a.jump(JEQ_K, libc::SYS_clone as u32, Label::Clone, Label::Next);
    a.jump(JEQ_K, libc::SYS_socket as u32, Label::Socket, Label::Next);
    a.jump(
        JEQ_K,
        libc::SYS_socketpair as u32,
        Label::Socket,
        Label::Next,
    );
    a.jump(JEQ_K, libc::SYS_ioctl as u32, Label::Ioctl, Label::Next);
    a.jump(
        JEQ_K,
        libc::SYS_personality as u32,
        Label::Personality,
        Label::Next,
    );
    a.stmt(RET_K, RET_ALLOW);

    labels.push((Label::Clone, a.code.len()));
    a.stmt(LD_W_ABS, off_arg_lo(0));
    a.jump(JSET_K, CLONE_NS_FLAGS, Label::Eperm, Label::Allow);

    labels.push((Label::Socket, a.code.len()));
    a.stmt(LD_W_ABS, off_arg_lo(0));
    for fam in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
        a.jump(JEQ_K, fam as u32, Label::Allow, Label::Next);
    }
    a.stmt(RET_K, RET_ERRNO | libc::EAFNOSUPPORT as u32);

    labels.push((Label::Ioctl, a.code.len()));
    a.stmt(LD_W_ABS, off_arg_lo(1));
    a.jump(JEQ_K, TIOCSTI, Label::Eperm, Label::Next);
    a.jump(JEQ_K, TIOCLINUX, Label::Eperm, Label::Allow);

    labels.push((Label::Personality, a.code.len()));
    a.stmt(LD_W_ABS, off_arg_lo(0));
    for p in PERSONALITY_OK {
        a.jump(JEQ_K, p, Label::Allow, Label::Next);
    }
    labels.push((Label::Eperm, a.code.len()));
    a.stmt(RET_K, RET_ERRNO | libc::EPERM as u32);
    labels.push((Label::Enosys, a.code.len()));
    a.stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32);
    labels.push((Label::Kill, a.code.len()));
    a.stmt(RET_K, RET_KILL_PROCESS);
    labels.push((Label::Allow, a.code.len()));
    a.stmt(RET_K, RET_ALLOW);
    a.resolve(&labels)
}

/// Installs `filter` on the calling thread. Child-safe (no allocation).
pub(crate) fn install(filter: &[Insn]) -> Result<(), i32> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    crate::sys::check(r as libc::c_long).map(drop)
}

/// Whether the kernel supports seccomp filters.
pub(crate) fn available() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small interpreter for the subset of BPF the filter uses, to check its decisions
    /// without installing it.
    fn eval(f: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = f[pc];
            match i.code {
                LD_W_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_ne_bytes([data[k], data[k + 1], data[k + 2], data[k + 3]]);
                    pc += 1;
                }
                RET_K => return i.k,
                c => {
                    let taken = match c {
                        JEQ_K => acc == i.k,
                        JGE_K => acc >= i.k,
                        JSET_K => acc & i.k != 0,
                        _ => panic!("unexpected opcode {c:#x}"),
                    };
                    pc += 1 + if taken { i.jt as usize } else { i.jf as usize };
                }
            }
        }
    }

    #[test]
    fn decisions() {
        let f = build();
        assert!(f.len() < 255);
        let ok = |nr: libc::c_long, args: [u64; 6]| eval(&f, AUDIT_ARCH, nr as u32, args);
        let z = [0u64; 6];
        assert_eq!(ok(libc::SYS_read, z), RET_ALLOW);
        assert_eq!(ok(libc::SYS_ptrace, z), RET_ERRNO | libc::EPERM as u32);
        assert_eq!(ok(libc::SYS_mount, z), RET_ERRNO | libc::EPERM as u32);
        assert_eq!(ok(libc::SYS_clone3, z), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(
            ok(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            ok(libc::SYS_clone, [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
            RET_ERRNO | libc::EPERM as u32
        );
        assert_eq!(
            ok(libc::SYS_socket, [libc::AF_INET as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            ok(libc::SYS_socket, [libc::AF_NETLINK as u64, 0, 0, 0, 0, 0]),
            RET_ERRNO | libc::EAFNOSUPPORT as u32
        );
        assert_eq!(
            ok(libc::SYS_socket, [libc::AF_PACKET as u64, 0, 0, 0, 0, 0]),
            RET_ERRNO | libc::EAFNOSUPPORT as u32
        );
        assert_eq!(
            ok(libc::SYS_ioctl, [0, TIOCSTI as u64, 0, 0, 0, 0]),
            RET_ERRNO | libc::EPERM as u32
        );
        assert_eq!(ok(libc::SYS_ioctl, [0, 0x5401, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            ok(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            ok(libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0]),
            RET_ERRNO | libc::EPERM as u32
        );
        assert_eq!(
            eval(&f, 0x4000_0003, 20, z),
            RET_KILL_PROCESS,
            "i386 must be killed"
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            ok(libc::SYS_getpid | X32_SYSCALL_BIT as libc::c_long, z),
            RET_KILL_PROCESS
        );
    }
}
