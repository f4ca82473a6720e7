//! The system calls a sandboxed program may make, as one table ([`table::TABLE`]) that every
//! backend's filter is generated from: a seccomp-bpf program for the native backend
//! ([`bpf`], through the `seccompiler` crate) and a seccomp profile for Docker containers
//! ([`docker_profile`], so Docker does not fall back to its default profile, which allows
//! io_uring among others).
//!
//! Policy: an allow-list. Anything not listed gets `ENOSYS`; a non-native architecture (and, on
//! x86-64, the x32 ABI) kills the process.

pub mod table;

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use serde_json::{json, Value};

use table::{Cond, Op, TABLE};

/// One classic BPF instruction (`struct sock_filter`).
pub type Insn = libc::sock_filter;

/// Building the filter failed (the table is wrong: a bug, caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("building the seccomp filter: {0:?}")]
pub struct FilterError(seccompiler::BackendError);

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// How many system calls the table allows on this architecture.
pub fn table_size() -> usize {
    TABLE.len()
}

/// The highest system call number the table names.
pub fn table_max() -> i64 {
    TABLE.iter().map(|e| e.nr).max().unwrap_or(0)
}

fn condition(c: &Cond) -> Result<SeccompCondition, FilterError> {
    let len = if c.dword {
        SeccompCmpArgLen::Dword
    } else {
        SeccompCmpArgLen::Qword
    };
    let op = match c.op {
        Op::Eq => SeccompCmpOp::Eq,
        Op::MaskedEq(mask) => SeccompCmpOp::MaskedEq(mask),
    };
    SeccompCondition::new(c.arg, len, op, c.value).map_err(FilterError)
}

/// The seccomp-bpf program of [`table::TABLE`] for this architecture.
pub fn bpf() -> Result<Vec<Insn>, FilterError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for e in TABLE {
        let mut alternatives = Vec::with_capacity(e.rules.len());
        for conds in e.rules {
            let conds = conds.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
            alternatives.push(SeccompRule::new(conds).map_err(FilterError)?);
        }
        rules.insert(e.nr, alternatives);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::ENOSYS as u32),
        SeccompAction::Allow,
        ARCH,
    )
    .map_err(FilterError)?;
    let program: seccompiler::BpfProgram = filter.try_into().map_err(FilterError)?;
    let mut out = x32_guard();
    out.extend(program.iter().map(|i| Insn {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    }));
    Ok(out)
}

/// On x86-64, x32 system calls are the native numbers with bit 30 set and the native arch
/// value: `seccompiler` checks the arch only, so a guard in front kills them.
fn x32_guard() -> Vec<Insn> {
    #[cfg(target_arch = "x86_64")]
    {
        const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
        const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
        vec![
            Insn {
                code: LD_W_ABS,
                jt: 0,
                jf: 0,
                k: 0, // seccomp_data.nr
            },
            Insn {
                code: JSET_K,
                jt: 0,
                jf: 1,
                k: 0x4000_0000,
            },
            Insn {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_KILL_PROCESS,
            },
        ]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
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
/// `ENOSYS`). The Docker backend's init also installs [`bpf`] in every program, which kills the
/// whole process for those and answers `ENOSYS` itself (stacked filters: the strictest wins).
pub fn docker_profile() -> Value {
    let arch = match ARCH {
        TargetArch::x86_64 => "SCMP_ARCH_X86_64",
        TargetArch::aarch64 => "SCMP_ARCH_AARCH64",
        _ => "SCMP_ARCH_NATIVE",
    };
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
