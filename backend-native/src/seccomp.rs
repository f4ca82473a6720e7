//! Installing the seccomp filter. The filter itself — an allow-list shared with the Docker
//! backend — comes from `vana-sandbox-seccomp`, built once in the parent; the setup child
//! installs it with one `prctl` (no allocation after clone) and it covers init and every program.

pub(crate) use vana_sandbox_seccomp::Insn;

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
