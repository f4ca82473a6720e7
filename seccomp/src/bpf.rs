//! The seccomp-bpf program of the table, as a binary search over system-call numbers.
//!
//! A filter runs on every system call of every sandboxed process, and the kernel checks and
//! JIT-compiles it at every install (once per sandbox). A linear list of comparisons — what
//! generic filter builders emit — walks up to every entry of the table for a late number and
//! is several times longer. Here the number space is cut into segments with one decision each
//! (runs of allowed numbers, runs of refused ones, single numbers whose arguments are checked),
//! and a balanced tree of `JGE` comparisons finds the segment: about `log2(segments)` jumps per
//! call, each decision inline at its leaf.
//!
//! Layout: the architecture check (a foreign ABI is killed), on x86-64 the x32 guard (numbers
//! with bit 30 set are killed), then the tree. Argument checks compare 32-bit words of
//! `seccomp_data.args` (little-endian on every supported target: low word first).

use crate::table::{Cond, Entry, Op};
use crate::Insn;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
#[cfg(target_arch = "x86_64")]
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

/// `AUDIT_ARCH_*` of the native ABI.
#[cfg(target_arch = "x86_64")]
pub(crate) const AUDIT_ARCH: u32 = 0xC000_003E;
/// `AUDIT_ARCH_*` of the native ABI.
#[cfg(target_arch = "aarch64")]
pub(crate) const AUDIT_ARCH: u32 = 0xC000_00B7;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const REFUSE: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

/// The table cannot be expressed as a program (a bug, caught by the tests).
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// An argument check longer than a conditional jump reaches.
    #[error("the argument checks of system call {0} are too long for one jump")]
    RuleTooLong(&'static str),
    /// The table names a number twice, or a negative one.
    #[error("system call {0} is listed twice or has an invalid number")]
    BadNumber(&'static str),
    /// More instructions than a seccomp program may have.
    #[error("the program has {0} instructions, more than the kernel's 4096")]
    TooLong(usize),
}

/// What the program answers for a range of numbers.
#[derive(Clone, Copy)]
enum Decision {
    Allow,
    Refuse,
    /// Allowed when one of the entry's rules holds.
    Rules(&'static Entry),
}

/// Numbers from `start` up to the next segment's start.
struct Segment {
    start: u32,
    decision: Decision,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The program for `table` (any order; every number at most once).
pub(crate) fn program(table: &'static [Entry]) -> Result<Vec<Insn>, FilterError> {
    let segments = segments(table)?;
    let mut out = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, KILL),
        stmt(LD_W_ABS, NR),
    ];
    #[cfg(target_arch = "x86_64")]
    out.extend([jump(JSET_K, 0x4000_0000, 0, 1), stmt(RET_K, KILL)]);
    out.extend(tree(&segments)?);
    if out.len() > 4096 {
        return Err(FilterError::TooLong(out.len()));
    }
    Ok(out)
}

/// The number space from 0 to `u32::MAX` as segments, neighbours always differing (runs of
/// allowed numbers and of refused ones merged).
fn segments(table: &'static [Entry]) -> Result<Vec<Segment>, FilterError> {
    let mut entries: Vec<&'static Entry> = table.iter().collect();
    entries.sort_by_key(|e| e.nr);
    let mut out = vec![Segment {
        start: 0,
        decision: Decision::Refuse,
    }];
    let mut next: u64 = 0;
    for e in entries {
        let nr = u32::try_from(e.nr).map_err(|_| FilterError::BadNumber(e.name))?;
        if u64::from(nr) < next {
            return Err(FilterError::BadNumber(e.name));
        }
        if u64::from(nr) > next {
            push(&mut out, next as u32, Decision::Refuse);
        }
        let decision = if e.rules.is_empty() {
            Decision::Allow
        } else {
            Decision::Rules(e)
        };
        push(&mut out, nr, decision);
        next = u64::from(nr) + 1;
    }
    if next <= u64::from(u32::MAX) {
        push(&mut out, next as u32, Decision::Refuse);
    }
    Ok(out)
}

/// Appends a segment, or extends the last one when both allow or both refuse.
fn push(out: &mut Vec<Segment>, start: u32, decision: Decision) {
    let same = matches!(
        (out.last().map(|s| s.decision), decision),
        (Some(Decision::Allow), Decision::Allow) | (Some(Decision::Refuse), Decision::Refuse)
    );
    if same {
        return;
    }
    match out.last_mut() {
        // The first, empty placeholder segment takes the first real decision.
        Some(last) if last.start == start => last.decision = decision,
        _ => out.push(Segment { start, decision }),
    }
}

/// The search over `segments` (the accumulator holds the number), each leaf its decision.
fn tree(segments: &[Segment]) -> Result<Vec<Insn>, FilterError> {
    match segments {
        [] => Ok(vec![stmt(RET_K, REFUSE)]),
        [only] => leaf(only.decision),
        _ => {
            let (left, right) = segments.split_at(segments.len() / 2);
            let split = right[0].start;
            let left = tree(left)?;
            let right = tree(right)?;
            let mut out = Vec::with_capacity(left.len() + right.len() + 2);
            match u8::try_from(left.len()) {
                // number >= split: over the left half.
                Ok(over) => out.push(jump(JGE_K, split, over, 0)),
                // Too far for a conditional jump: through an unconditional one.
                Err(_) => {
                    out.push(jump(JGE_K, split, 0, 1));
                    out.push(stmt(JA, left.len() as u32));
                }
            }
            out.extend(left);
            out.extend(right);
            Ok(out)
        }
    }
}

fn leaf(decision: Decision) -> Result<Vec<Insn>, FilterError> {
    match decision {
        Decision::Allow => Ok(vec![stmt(RET_K, ALLOW)]),
        Decision::Refuse => Ok(vec![stmt(RET_K, REFUSE)]),
        Decision::Rules(e) => rules(e),
    }
}

/// One block per rule (all of its comparisons hold: allowed); a comparison that fails jumps to
/// the next rule's block, after the last to the refusal.
fn rules(e: &'static Entry) -> Result<Vec<Insn>, FilterError> {
    let mut out = Vec::new();
    for rule in e.rules {
        // Each comparison as (loads and masks, the value compared with); the failure jumps
        // are filled in once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        let mut checks: Vec<usize> = Vec::new();
        for c in *rule {
            for (offset, mask, value) in words(c) {
                block.push(stmt(LD_W_ABS, offset));
                if mask != u32::MAX {
                    block.push(stmt(ALU_AND_K, mask));
                }
                checks.push(block.len());
                block.push(jump(JEQ_K, value & mask, 0, 0));
            }
        }
        block.push(stmt(RET_K, ALLOW));
        let len = block.len();
        for at in checks {
            // From the instruction after the check to the end of the block.
            let skip = u8::try_from(len - at - 1).map_err(|_| FilterError::RuleTooLong(e.name))?;
            block[at].jf = skip;
        }
        out.extend(block);
    }
    out.push(stmt(RET_K, REFUSE));
    Ok(out)
}

/// The 32-bit words one comparison checks: (offset, mask, value).
fn words(c: &Cond) -> Vec<(u32, u32, u32)> {
    let low = ARGS + 8 * u32::from(c.arg);
    let high = low + 4;
    let mask = match c.op {
        Op::Eq => u64::MAX,
        Op::MaskedEq(m) => m,
    };
    let mut out = Vec::with_capacity(2);
    if !c.dword {
        out.push((high, (mask >> 32) as u32, (c.value >> 32) as u32));
    }
    out.push((low, mask as u32, c.value as u32));
    out
}
