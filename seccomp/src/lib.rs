//! The system calls a sandboxed program may make, as one table ([`table::TABLE`]) that every
//! backend's filter is generated from: a seccomp-bpf program for the native backend
//! ([`bpf()`], a binary search over the numbers) and a seccomp profile for Docker containers
//! ([`docker_profile`], so Docker does not fall back to its default profile, which allows
//! io_uring among others).
//!
//! Policy: an allow-list. Anything not listed gets `ENOSYS`; a non-native architecture (and, on
//! x86-64, the x32 ABI) kills the process.

mod bpf;
pub mod table;

use serde_json::{json, Value};

pub use bpf::FilterError;
use table::{Cond, Op, TABLE};

/// One classic BPF instruction (`struct sock_filter`).
pub type Insn = libc::sock_filter;

/// How many system calls the table allows on this architecture.
pub fn table_size() -> usize {
    TABLE.len()
}

/// The highest system call number the table names.
pub fn table_max() -> i64 {
    TABLE.iter().map(|e| e.nr).max().unwrap_or(0)
}

/// The seccomp-bpf program of [`table::TABLE`] for this architecture: a binary search over the
/// system-call numbers (see the `bpf` module), a foreign ABI killed.
pub fn bpf() -> Result<Vec<Insn>, FilterError> {
    bpf::program(TABLE)
}

fn docker_condition(c: &Cond) -> Value {
    match c.op {
        Op::Eq => json!({"index": c.arg, "value": c.value, "op": "SCMP_CMP_EQ"}),
        Op::MaskedEq(mask) => {
            json!({"index": c.arg, "value": mask, "valueTwo": c.value, "op": "SCMP_CMP_MASKED_EQ"})
        }
    }
}

/// The Docker (OCI) seccomp profile of [`table::TABLE`]: the same allow-list and argument rules;
/// anything else `ENOSYS`; only the native architecture.
///
/// The default action is `SCMP_ACT_TRACE`, not `SCMP_ACT_ERRNO` with `defaultErrnoRet`: Docker
/// 20.10 (Debian's) drops `defaultErrnoRet` when it turns the profile into the OCI spec, and an
/// unlisted call then fails with `EPERM` — which breaks glibc, whose `clone3` falls back to
/// `clone` only on `ENOSYS`. A traced call with no tracer attached fails with `ENOSYS` (seccomp(2)),
/// and no process in the container can become a tracer: `ptrace` is not in the table. Verified
/// on this host under runc and under runsc (`--oci-seccomp`). Other architectures: runc's filter
/// (libseccomp) applies its bad-architecture action, which kills the calling thread (SIGSYS) —
/// for an i386 `int 0x80` and for x32 numbers alike; gVisor has no 32-bit or x32 ABI at all (it
/// runs an `int 0x80` as a 64-bit call, through the same filter, and answers x32 numbers with
/// `ENOSYS`). The Docker backend's init also installs [`bpf()`] in every program, which kills the
/// whole process for those and answers `ENOSYS` itself (stacked filters: the strictest wins).
pub fn docker_profile() -> Value {
    #[cfg(target_arch = "x86_64")]
    let arch = "SCMP_ARCH_X86_64";
    #[cfg(target_arch = "aarch64")]
    let arch = "SCMP_ARCH_AARCH64";
    let unconditional: Vec<&str> = TABLE
        .iter()
        .filter(|e| e.rules.is_empty())
        .map(|e| e.name)
        .collect();
    let mut syscalls = vec![json!({"names": unconditional, "action": "SCMP_ACT_ALLOW"})];
    for e in TABLE.iter().filter(|e| !e.rules.is_empty()) {
        for conds in e.rules {
            let args: Vec<Value> = conds.iter().map(docker_condition).collect();
            syscalls.push(json!({"names": [e.name], "action": "SCMP_ACT_ALLOW", "args": args}));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_TRACE",
        "architectures": [arch],
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests;
