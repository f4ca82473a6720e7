//! The filter's decisions, checked by interpreting the BPF program (no filter is installed),
//! and the Docker profile checked against the same table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use super::*;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

/// Runs the classic-BPF program on one `seccomp_data`.
fn eval(f: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    run(f, &data).0
}

/// Runs the program on raw `seccomp_data`: the decision and how many instructions ran.
fn run(f: &[Insn], data: &[u8; 64]) -> (u32, usize) {
    let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0usize);
    loop {
        let i = f[pc];
        pc += 1;
        steps += 1;
        match i.code {
            LD_W_ABS => {
                let k = i.k as usize;
                acc = u32::from_ne_bytes([data[k], data[k + 1], data[k + 2], data[k + 3]]);
            }
            ALU_AND_K => acc &= i.k,
            JA => pc += i.k as usize,
            RET_K => return (i.k, steps),
            c => {
                let taken = match c {
                    JEQ_K => acc == i.k,
                    JGT_K => acc > i.k,
                    JGE_K => acc >= i.k,
                    JSET_K => acc & i.k != 0,
                    _ => panic!("unexpected opcode {c:#x}"),
                };
                pc += if taken { i.jt as usize } else { i.jf as usize };
            }
        }
    }
}

fn decide(nr: libc::c_long, args: [u64; 6]) -> u32 {
    eval(&bpf().unwrap(), AUDIT_ARCH, nr as u32, args)
}

fn a0(v: u64) -> [u64; 6] {
    [v, 0, 0, 0, 0, 0]
}

#[test]
fn ordinary_calls_are_allowed_and_the_attack_surface_is_not() {
    let z = [0u64; 6];
    for nr in [
        libc::SYS_read,
        libc::SYS_openat,
        libc::SYS_futex,
        libc::SYS_execve,
    ] {
        assert_eq!(decide(nr, z), ALLOW, "{nr}");
    }
    for nr in [
        libc::SYS_ptrace,
        libc::SYS_io_setup,
        libc::SYS_io_submit,
        libc::SYS_io_uring_setup,
        libc::SYS_kcmp,
        libc::SYS_memfd_secret,
        libc::SYS_bpf,
        libc::SYS_mount,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_keyctl,
        libc::SYS_userfaultfd,
        libc::SYS_perf_event_open,
        libc::SYS_open_by_handle_at,
        libc::SYS_clone3,
        libc::SYS_pidfd_getfd,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_modify_ldt,
    ] {
        assert_eq!(decide(nr, z), ENOSYS, "{nr}");
    }
}

#[test]
fn arguments_are_checked() {
    assert_eq!(decide(libc::SYS_clone, a0(libc::SIGCHLD as u64)), ALLOW);
    assert_eq!(decide(libc::SYS_clone, a0(0x003d_0f00)), ALLOW); // pthread_create's flags
    assert_eq!(
        decide(libc::SYS_clone, a0(libc::CLONE_NEWUSER as u64)),
        ENOSYS
    );
    assert_eq!(decide(libc::SYS_clone, a0(0x80)), ENOSYS); // CLONE_NEWTIME
    let sock = |family: i32, ty: i32| [family as u64, ty as u64, 0, 0, 0, 0];
    let stream = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    assert_eq!(
        decide(libc::SYS_socket, sock(libc::AF_INET6, stream)),
        ALLOW
    );
    assert_eq!(decide(libc::SYS_socket, sock(libc::AF_INET, stream)), ALLOW);
    // Datagram and raw IP sockets: their buffers are charged to no limit on cgroup v1.
    for ty in [
        libc::SOCK_DGRAM,
        libc::SOCK_RAW,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
    ] {
        assert_eq!(decide(libc::SYS_socket, sock(libc::AF_INET, ty)), ENOSYS);
        assert_eq!(decide(libc::SYS_socket, sock(libc::AF_INET6, ty)), ENOSYS);
    }
    assert_eq!(
        decide(libc::SYS_socket, sock(libc::AF_UNIX, libc::SOCK_DGRAM)),
        ALLOW
    );
    assert_eq!(decide(libc::SYS_socket, a0(libc::AF_PACKET as u64)), ENOSYS);
    assert_eq!(decide(libc::SYS_socket, a0(libc::AF_VSOCK as u64)), ENOSYS);
    let route = [
        libc::AF_NETLINK as u64,
        3,
        libc::NETLINK_ROUTE as u64,
        0,
        0,
        0,
    ];
    assert_eq!(decide(libc::SYS_socket, route), ALLOW);
    let audit = [
        libc::AF_NETLINK as u64,
        3,
        libc::NETLINK_AUDIT as u64,
        0,
        0,
        0,
    ];
    assert_eq!(decide(libc::SYS_socket, audit), ENOSYS);
    assert_eq!(decide(libc::SYS_prlimit64, a0(0)), ALLOW);
    assert_eq!(decide(libc::SYS_prlimit64, a0(1)), ENOSYS);
    assert_eq!(decide(libc::SYS_setpriority, [0, 0, 10, 0, 0, 0]), ALLOW);
    assert_eq!(decide(libc::SYS_setpriority, [0, 1, 10, 0, 0, 0]), ENOSYS);
    assert_eq!(decide(libc::SYS_setpriority, [2, 0, 10, 0, 0, 0]), ENOSYS); // PRIO_USER
    let fifo = [0, 0, libc::S_IFIFO as u64 | 0o644, 0, 0, 0];
    let chr = [0, 0, libc::S_IFCHR as u64 | 0o644, 0, 0, 0];
    assert_eq!(decide(libc::SYS_mknodat, fifo), ALLOW);
    assert_eq!(decide(libc::SYS_mknodat, chr), ENOSYS);
    assert_eq!(decide(libc::SYS_personality, a0(0xffff_ffff)), ALLOW);
    assert_eq!(decide(libc::SYS_personality, a0(0x0040_0000)), ENOSYS);
}

#[test]
fn other_abis_are_killed_and_unknown_numbers_get_enosys() {
    let f = bpf().unwrap();
    let z = [0u64; 6];
    assert_eq!(eval(&f, 0x4000_0003, 20, z), KILL, "i386");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        eval(&f, AUDIT_ARCH, libc::SYS_getpid as u32 | 0x4000_0000, z),
        KILL,
        "x32"
    );
    let max = table_max() as u32;
    for nr in [max + 1, max + 100, 1000, 4095, 0x3fff_ffff] {
        assert_eq!(eval(&f, AUDIT_ARCH, nr, z), ENOSYS, "{nr}");
    }
}

#[test]
fn the_bpf_program_and_the_docker_profile_come_from_one_table() {
    let f = bpf().unwrap();
    // Every number the table names is allowed by the program (with arguments that satisfy its
    // first rule), and every number it does not name up to the maximum is not.
    let named: BTreeSet<i64> = TABLE.iter().map(|e| e.nr).collect();
    for e in TABLE {
        let mut args = [0u64; 6];
        if let Some(rule) = e.rules.first() {
            for c in *rule {
                args[c.arg as usize] = c.value;
            }
        }
        assert_eq!(eval(&f, AUDIT_ARCH, e.nr as u32, args), ALLOW, "{}", e.name);
    }
    for nr in 0..=table_max() {
        if !named.contains(&nr) {
            assert_eq!(eval(&f, AUDIT_ARCH, nr as u32, [0; 6]), ENOSYS, "{nr}");
        }
    }
    // The profile allows exactly the table's names, each rule as one entry.
    let profile = docker_profile();
    // TRACE without a tracer is ENOSYS (see docker_profile).
    assert_eq!(profile["defaultAction"], "SCMP_ACT_TRACE");
    let mut names = BTreeSet::new();
    let mut conditional_entries = 0;
    for s in profile["syscalls"].as_array().unwrap() {
        assert_eq!(s["action"], "SCMP_ACT_ALLOW");
        for n in s["names"].as_array().unwrap() {
            names.insert(n.as_str().unwrap().to_string());
        }
        if s.get("args").is_some() {
            conditional_entries += 1;
        }
    }
    let table_names: BTreeSet<String> = TABLE.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(names, table_names);
    let rules: usize = TABLE.iter().map(|e| e.rules.len()).sum();
    assert_eq!(conditional_entries, rules);
    assert_eq!(table_size(), TABLE.len());
    assert_eq!(table_names.len(), TABLE.len(), "a name is listed twice");
}

/// The program of the generic builder it replaced (`seccompiler`: one comparison per number, in
/// a row), behind the same x32 guard.
fn linear_program() -> Vec<Insn> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    #[cfg(target_arch = "x86_64")]
    let arch = TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    let arch = TargetArch::aarch64;
    let rules = TABLE
        .iter()
        .map(|e| {
            let alternatives = e
                .rules
                .iter()
                .map(|conds| {
                    let conds = conds
                        .iter()
                        .map(|c| {
                            let len = if c.dword {
                                SeccompCmpArgLen::Dword
                            } else {
                                SeccompCmpArgLen::Qword
                            };
                            let op = match c.op {
                                Op::Eq => SeccompCmpOp::Eq,
                                Op::MaskedEq(m) => SeccompCmpOp::MaskedEq(m),
                            };
                            SeccompCondition::new(c.arg, len, op, c.value).unwrap()
                        })
                        .collect();
                    SeccompRule::new(conds).unwrap()
                })
                .collect();
            (e.nr, alternatives)
        })
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::ENOSYS as u32),
        SeccompAction::Allow,
        arch,
    )
    .unwrap();
    let program: seccompiler::BpfProgram = filter.try_into().unwrap();
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    out.extend([
        Insn {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
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
            k: KILL,
        },
    ]);
    out.extend(program.iter().map(|i| Insn {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    }));
    out
}

/// Argument vectors that probe an entry's rules: each compared value as is, with one bit off,
/// with garbage in the other half of the word, and pseudo-random ones.
fn probes(e: &table::Entry, seed: &mut u64) -> Vec<[u64; 6]> {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *seed
    };
    let mut out = vec![[0u64; 6], [u64::MAX; 6]];
    for rule in e.rules {
        let mut all = [0u64; 6];
        for c in *rule {
            all[c.arg as usize] = c.value;
        }
        out.push(all);
        for c in *rule {
            for v in [
                c.value ^ 1,
                c.value | 0xffff_ffff_0000_0000,
                c.value ^ 0x1_0000_0000,
                c.value | 0x8000,
                !c.value,
            ] {
                let mut a = all;
                a[c.arg as usize] = v;
                out.push(a);
            }
        }
    }
    for _ in 0..64 {
        let mut a = [0u64; 6];
        for (i, x) in a.iter_mut().enumerate() {
            let r = next();
            // Mostly small values, which the rules compare with.
            *x = if i % 2 == 0 { r & 0xffff } else { r };
        }
        out.push(a);
    }
    out
}

#[test]
fn the_search_decides_like_the_linear_program_on_every_number() {
    let search = bpf().unwrap();
    let linear = linear_program();
    let mut seed = 7;
    let mut numbers: Vec<u32> = (0..=table_max() as u32 + 64).collect();
    numbers.extend([
        0x3fff_ffff,
        0x4000_0000,
        0x4000_0001,
        0x7fff_ffff,
        0x8000_0000,
        u32::MAX,
    ]);
    for nr in numbers {
        let entry = TABLE.iter().find(|e| e.nr as u32 == nr);
        let args = match entry {
            Some(e) => probes(e, &mut seed),
            None => vec![[0; 6], [u64::MAX; 6]],
        };
        for arch in [AUDIT_ARCH, 0x4000_0003, 0xC000_00B7, 0xC000_003E] {
            for a in &args {
                assert_eq!(
                    eval(&search, arch, nr, *a),
                    eval(&linear, arch, nr, *a),
                    "number {nr}, arch {arch:#x}, args {a:x?}"
                );
            }
        }
    }
}

#[test]
fn every_call_walks_a_short_path() {
    let search = bpf().unwrap();
    let linear = linear_program();
    let worst = |f: &[Insn]| {
        (0..=table_max() as u32 + 1)
            .map(|nr| {
                let mut data = [0u8; 64];
                data[0..4].copy_from_slice(&nr.to_ne_bytes());
                data[4..8].copy_from_slice(&AUDIT_ARCH.to_ne_bytes());
                run(f, &data).1
            })
            .max()
            .unwrap()
    };
    let (search_worst, linear_worst) = (worst(&search), worst(&linear));
    println!(
        "search: {} instructions, at most {search_worst} run; linear: {}, at most {linear_worst}",
        search.len(),
        linear.len()
    );
    // log2 of a few hundred segments, two instructions per level at most, plus the header and
    // the longest argument check.
    assert!(search_worst <= 48, "{search_worst} instructions");
    assert!(
        search.len() * 2 < linear.len(),
        "{} vs {}",
        search.len(),
        linear.len()
    );
    assert!(
        search_worst * 10 < linear_worst,
        "{search_worst} vs {linear_worst}"
    );
}
