//! The attack suite: attacker programs against every layer of the native backend. Each asserts
//! the safe outcome and that the host is unchanged afterwards. Needs root; x86-64 (it uses raw
//! system call numbers and machine code).
#![cfg(target_arch = "x86_64")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use common::*;
use vana_sandbox::{ExecutionRequest, ExecutionResult, Status};

/// What must be the same on the host before and after an attack.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    hostname: String,
    mounts: usize,
    tmp: BTreeSet<String>,
    passwd: String,
    interfaces: BTreeSet<String>,
}

fn host_state() -> HostState {
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    HostState {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default(),
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .count(),
        tmp: names("/tmp"),
        passwd: std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        interfaces: names("/sys/class/net"),
    }
}

fn attack_with(
    language: &str,
    code: &str,
    tweak: impl FnOnce(&mut ExecutionRequest),
    check: impl FnOnce(&ExecutionResult),
) {
    let _g = serial();
    require_root();
    let before = host_state();
    let code = if language == "python" {
        format!("{}\n{code}", attack::PRELUDE)
    } else {
        code.to_string()
    };
    let mut r = req(language, &code);
    r.timeout = Some(10.0);
    tweak(&mut r);
    let res = run(r);
    check(&res);
    assert_no_leftovers();
    assert_eq!(host_state(), before, "the host changed");
}

fn attack(language: &str, code: &str, check: impl FnOnce(&ExecutionResult)) {
    attack_with(language, code, |_| {}, check)
}

/// Every probe printed `blocked`, none `ALLOWED`, and the program finished normally.
fn all_blocked(expected: usize) -> impl FnOnce(&ExecutionResult) {
    move |r| {
        assert_eq!(r.status, Status::Success, "{r:#?}");
        assert!(!r.output.contains("ALLOWED"), "{}", r.output);
        let n = r.output.lines().filter(|l| l.ends_with(" blocked")).count();
        assert_eq!(n, expected, "{}", r.output);
    }
}

// ---------------------------------------------------------------- filesystem

#[test]
fn fs_host_secrets_are_absent() {
    attack("python", attack::FS_HOST_SECRETS, all_blocked(7));
}

#[test]
fn fs_base_is_read_only() {
    attack("python", attack::FS_BASE_READ_ONLY, all_blocked(8));
}

#[test]
fn fs_proc_root_traversal() {
    attack("python", attack::FS_PROC_ROOT_TRAVERSAL, all_blocked(5));
}

#[test]
fn fs_symlink_planted_for_the_host_is_not_followed() {
    let _g = serial();
    require_root();
    use vana_sandbox::{Executor, NativeExecutor};
    let exec = NativeExecutor::new().expect("native");
    let rt = rt();
    rt.block_on(async {
        let limits = vana_sandbox::Limits {
            memory: vana_sandbox::Bytes::mib(256),
            processes: 16,
            timeout: Duration::from_secs(5),
            output: vana_sandbox::Bytes(1 << 16),
            disk: vana_sandbox::Bytes::mib(16),
            ..Default::default()
        };
        let spec = vana_sandbox_core::InstanceSpec {
            id: "symlink".into(),
            language: "bash".into(),
            limits,
            runtime: None,
            mounts: vec![],
            network: Default::default(),
        };
        let mut inst = exec.create(&spec).await.expect("create");
        let p = vana_sandbox_core::ProcessSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), "ln -s /etc/shadow /workspace/out; mkdir /workspace/d; ln -s / /workspace/d/up; ln -s /etc /workspace/etc".into()],
            arg0: None,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/workspace".into(),
            limits,
        };
        let o = inst.run(&p, Default::default()).await.expect("run");
        assert_eq!(o.exit_code(), Some(0), "{o:?}");
        for path in ["out", "d/up/etc/shadow", "etc/shadow"] {
            assert!(inst.files().read(&[path.to_string()], 1 << 20).await.is_err(), "{path} was followed");
        }
        let put = vana_sandbox_core::FileEntry { path: "etc/evil".into(), content: b"x".to_vec(), executable: false };
        assert!(inst.files().put(&[put]).await.is_err(), "put_files followed a planted symlink");
        assert!(!std::path::Path::new("/etc/evil").exists());
        inst.destroy().await.expect("destroy");
    });
    assert_no_leftovers();
}

#[test]
fn fs_hardlink_to_the_base_fails() {
    attack(
        "python",
        r#"
fails("link python3", lambda: os.link("/usr/bin/python3", "/workspace/py"))
fails("link passwd", lambda: os.link("/etc/passwd", "/tmp/p"))
"#,
        all_blocked(2),
    );
}

#[test]
fn fs_overwrite_proc_self_exe_fails() {
    attack(
        "python",
        r#"
fails("write /proc/self/exe", lambda: open("/proc/self/exe", "wb").write(b"x"))
fails("write /usr/bin/python3", lambda: open("/usr/bin/python3", "r+b").write(b"x"))
"#,
        all_blocked(2),
    );
}

#[test]
fn fs_sensitive_proc_entries_are_masked() {
    attack(
        "python",
        r#"
for p in ["/proc/kallsyms", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/cmdline", "/proc/modules"]:
    try:
        data = open(p).read()
        print(p, "blocked" if data == "" else "ALLOWED %d bytes" % len(data))
    except OSError:
        print(p, "blocked")
fails("sysrq-trigger", lambda: open("/proc/sysrq-trigger", "w").write("b"))
fails("/proc/sys/kernel/hostname", lambda: open("/proc/sys/kernel/hostname", "w").write("x"))
fails("/proc/sys/vm/drop_caches", lambda: open("/proc/sys/vm/drop_caches", "w").write("3"))
# Under the read-only /proc/sys, masked too; directories masked by an empty read-only one.
print("/proc/sys/fs/file-nr", "blocked" if open("/proc/sys/fs/file-nr").read() == "" else "ALLOWED")
for d in ["/proc/acpi", "/proc/driver", "/proc/tty", "/proc/pressure"]:
    if not os.path.isdir(d):
        print(d, "blocked")
        continue
    print(d, "blocked" if os.listdir(d) == [] else "ALLOWED " + ",".join(os.listdir(d)[:3]))
fails("/proc/tty write", lambda: open("/proc/tty/x", "w"))
fails("/proc/pressure mkdir", lambda: os.mkdir("/proc/pressure/x"))
"#,
        all_blocked(16),
    );
}

/// Every `/proc` file on the mask list gives the program nothing, whichever way it is closed:
/// masked by an empty read-only file, or — where the kernel makes it root's alone (mode 0400:
/// `kmsg`, `slabinfo`, `kpage*`, ...) — refused by its own mode, which no id of a sandbox can
/// pass. Reading yields no byte, writing fails.
#[test]
fn fs_every_masked_proc_file_gives_nothing() {
    let files = vana_sandbox_core::host::PROC_MASKED_FILES;
    let list = files
        .iter()
        .map(|f| format!("{f:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let code = format!(
        r#"
for f in [{list}]:
    p = "/proc/" + f
    try:
        with open(p, "rb") as fh:
            data = fh.read(4096)
    except OSError:
        data = b""
    try:
        with open(p, "wb") as fh:
            fh.write(b"1")
        wrote = True
    except OSError:
        wrote = False
    print(p, "blocked" if data == b"" and not wrote else "ALLOWED %d bytes, written %s" % (len(data), wrote))
"#
    );
    attack("python", &code, all_blocked(files.len()));
}

#[test]
fn fs_no_sys_and_no_cgroupfs() {
    attack(
        "python",
        r#"
for p in ["/sys", "/sys/fs/cgroup", "/sys/kernel"]:
    fails(p, lambda: os.listdir(p), (errno.ENOENT,))
"#,
        all_blocked(3),
    );
}

// ---------------------------------------------------------------- network

#[test]
fn net_tcp_to_host_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nb");
    let port = listener.local_addr().expect("addr").port();
    let code = format!("import socket\ns = socket.socket()\ns.settimeout(2)\nfails('tcp', lambda: s.connect(('127.0.0.1', {port})))\n");
    attack("python", &code, all_blocked(1));
    assert!(
        listener.accept().is_err(),
        "the host listener saw a connection"
    );
}

#[test]
fn net_udp_to_host_loopback() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    sock.set_nonblocking(true).expect("nb");
    let port = sock.local_addr().expect("addr").port();
    let code = format!(
        "import socket\ntry:\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    for _ in range(20): s.sendto(b'leak', ('127.0.0.1', {port}))\nexcept OSError as e:\n    print('send failed', e.errno)\nprint('sent')\n"
    );
    attack("python", &code, |r| {
        assert_eq!(r.status, Status::Success, "{r:#?}")
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 16];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "the host received a datagram from the sandbox"
    );
}

#[test]
fn net_ipv6_loopback() {
    let listener = TcpListener::bind("[::1]:0").ok();
    let port = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(9, |a| a.port());
    let code = format!("import socket\ns = socket.socket(socket.AF_INET6)\ns.settimeout(2)\nfails('tcp6', lambda: s.connect(('::1', {port})))\n");
    attack("python", &code, all_blocked(1));
    if let Some(l) = listener {
        l.set_nonblocking(true).expect("nb");
        assert!(l.accept().is_err());
    }
}

#[test]
fn net_raw_packet_and_netlink_sockets() {
    attack(
        "python",
        r#"
import socket
fails("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
fails("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
fails("netlink audit", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9))
fails("netlink uevent", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15))
fails("vsock", lambda: socket.socket(40, socket.SOCK_STREAM, 0))
fails("bluetooth", lambda: socket.socket(31, socket.SOCK_RAW, 0))
# Routing netlink is allowed for reading one's own (private) interfaces; changing them is not.
import struct
nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
nl.bind((0, 0))
# RTM_NEWADDR, flags REQUEST|ACK|CREATE|EXCL, ifaddrmsg(AF_INET, /8, 0, 0, index 1), IFA_LOCAL 10.9.9.9
msg = struct.pack("BBBBI", socket.AF_INET, 8, 0, 0, 1) + struct.pack("HH4s", 8, 2, bytes([10, 9, 9, 9]))
nl.send(struct.pack("IHHII", 16 + len(msg), 20, 0x1 | 0x4 | 0x400 | 0x200, 1, 0) + msg)
reply = nl.recv(4096)
err = -struct.unpack("i", reply[16:20])[0]
print("netlink add address", "blocked" if err == errno.EPERM else "ALLOWED err=%d" % err)
"#,
        all_blocked(7),
    );
}

#[test]
fn net_dns_resolution_fails() {
    attack("python", attack::NET_DNS_RESOLUTION, all_blocked(1));
}

#[test]
fn net_host_abstract_unix_socket_is_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("vana-attack-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind abstract");
    listener.set_nonblocking(true).expect("nb");
    let code = format!("import socket\ns = socket.socket(socket.AF_UNIX)\nfails('abstract', lambda: s.connect('\\0{name}'))\n");
    attack("python", &code, all_blocked(1));
    assert!(
        listener.accept().is_err(),
        "the host's abstract socket saw a connection"
    );
}

/// A local server inside the sandbox works (test suites start one) and stays inside: the port is
/// taken on the host too, and the host's listener sees nothing.
#[test]
fn net_local_tcp_server_stays_inside() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nb");
    let port = listener.local_addr().expect("addr").port();
    let code = format!(
        r#"
import socket, threading
srv = socket.socket()
srv.bind(("127.0.0.1", {port}))
srv.listen(1)
def echo():
    c, _ = srv.accept()
    c.sendall(c.recv(100))
threading.Thread(target=echo).start()
c = socket.create_connection(("127.0.0.1", {port}), timeout=5)
c.sendall(b"ping")
print("echo", c.recv(100).decode())
"#
    );
    attack("python", &code, |r| {
        assert_eq!(
            (r.status, r.output.as_str()),
            (Status::Success, "echo ping\n"),
            "{r:#?}"
        );
    });
    assert!(
        listener.accept().is_err(),
        "the host's listener saw a connection"
    );
}

// ---------------------------------------------------------------- kernel

#[test]
fn k_ptrace() {
    attack("python", attack::K_PTRACE, all_blocked(3));
}

#[test]
fn k_mount_family() {
    attack(
        "python",
        r#"
ctypes.set_errno(0)
r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
print("mount", "blocked" if r == -1 else "ALLOWED")
denied("umount2", 166, 0, 0)
denied("fsopen", 430, 0, 0)
denied("open_tree", 428, -100, 0, 0)
denied("move_mount", 429, -100, 0, -100, 0, 0)
denied("pivot_root", 155, 0, 0)
denied("chroot", 161, 0)
"#,
        all_blocked(7),
    );
}

#[test]
fn k_namespaces() {
    attack(
        "python",
        r#"
denied("unshare user", 272, 0x10000000)
denied("unshare net", 272, 0x40000000)
denied("clone newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)
denied("clone newns", 56, 0x00020000 | 17, 0, 0, 0, 0)
denied("clone3", 435, 0, 0, errnos=(errno.ENOSYS,))
fd = os.open("/proc/self/ns/net", os.O_RDONLY)
denied("setns", 308, fd, 0)
"#,
        all_blocked(6),
    );
}

#[test]
fn k_keys_bpf_perf() {
    attack(
        "python",
        r#"
denied("keyctl", 250, 0, -3, 0)
denied("add_key", 248, 0, 0, 0, 0, 0)
denied("request_key", 249, 0, 0, 0, 0)
denied("bpf", 321, 0, 0, 0)
denied("perf_event_open", 298, 0, 0, -1, -1, 0)
"#,
        all_blocked(5),
    );
}

#[test]
fn k_io_uring_and_userfaultfd() {
    attack(
        "python",
        r#"
denied("io_uring_setup", 425, 8, 0)
denied("io_uring_enter", 426, 0, 0, 0, 0, 0)
denied("io_uring_register", 427, 0, 0, 0, 0)
denied("userfaultfd", 323, 0)
"#,
        all_blocked(4),
    );
}

#[test]
fn k_module_loading_and_kexec() {
    attack(
        "python",
        r#"
denied("init_module", 175, 0, 0, 0)
denied("finit_module", 313, 0, 0, 0)
denied("delete_module", 176, 0, 0)
denied("kexec_load", 246, 0, 0, 0, 0)
denied("reboot", 169, 0, 0, 0, 0)
"#,
        all_blocked(5),
    );
}

#[test]
fn k_file_handles() {
    attack(
        "python",
        r#"
denied("open_by_handle_at", 304, -100, 0, 0)
denied("name_to_handle_at", 303, -100, 0, 0, 0, 0)
"#,
        all_blocked(2),
    );
}

#[test]
fn k_32bit_int80_is_killed() {
    attack("python", attack::K_32BIT_INT80, |r| {
        assert_eq!(r.status, Status::Killed, "{r:#?}");
        assert_eq!(r.signal, Some(31));
        assert!(!r.output.contains("SURVIVED"));
        assert!(
            r.security_events
                .iter()
                .any(|e| e.kind.as_str() == "seccomp_kill"),
            "{r:#?}"
        );
    });
}

#[test]
fn k_x32_syscall_is_killed() {
    attack(
        "python",
        r#"
print("calling", flush=True)
sc(0x40000000 | 39)
print("SURVIVED")
"#,
        |r| {
            assert_eq!(r.status, Status::Killed, "{r:#?}");
            assert_eq!(r.signal, Some(31));
            assert!(!r.output.contains("SURVIVED"));
            assert!(
                r.security_events
                    .iter()
                    .any(|e| e.kind.as_str() == "seccomp_kill"),
                "{r:#?}"
            );
        },
    );
}

#[test]
fn k_tiocsti_and_tioclinux() {
    attack(
        "python",
        r#"
import fcntl, termios
# No terminal is reachable: standard streams are pipes and /dev holds no tty, console or pty.
for fd in (0, 1, 2):
    fails("TIOCSTI %d" % fd, lambda: fcntl.ioctl(fd, termios.TIOCSTI, b"x"), (errno.ENOTTY, errno.EPERM))
    fails("TIOCLINUX %d" % fd, lambda: fcntl.ioctl(fd, 0x541C, b"\x00"), (errno.ENOTTY, errno.EPERM))
for dev in ("/dev/tty", "/dev/console", "/dev/ptmx", "/dev/pts/0", "/dev/tty0"):
    fails(dev, lambda: os.open(dev, os.O_RDWR), (errno.ENOENT,))
"#,
        all_blocked(11),
    );
}

#[test]
fn k_setuid_binaries_give_nothing() {
    attack(
        "bash",
        r#"
found=0
for b in /usr/bin/su /usr/bin/mount /usr/bin/passwd /usr/bin/newgrp /usr/bin/chsh; do
  [ -u "$b" ] && found=$((found+1))
done
echo "setuid binaries: $found"
if /usr/bin/su -c 'id -u' root </dev/null 2>/dev/null | grep -qx 0; then echo "su ALLOWED"; else echo "su blocked"; fi
mkdir -p /workspace/m
if /usr/bin/mount -t tmpfs none /workspace/m 2>/dev/null; then echo "mount ALLOWED"; else echo "mount blocked"; fi
echo "uid $(id -u) euid $(id -u)"
"#,
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            assert!(!r.output.contains("ALLOWED"), "{}", r.output);
            assert!(
                r.output.contains("su blocked") && r.output.contains("mount blocked"),
                "{}",
                r.output
            );
        },
    );
}

#[test]
fn k_device_nodes() {
    attack(
        "python",
        r#"
fails("mknod block", lambda: os.mknod("/workspace/sda", 0o600 | 0o060000, os.makedev(8, 0)))
fails("mknod char", lambda: os.mknod("/tmp/mem", 0o600 | 0o020000, os.makedev(1, 1)))
fails("/dev/mem", lambda: open("/dev/mem", "rb"), (errno.ENOENT,))
fails("/dev/kmsg", lambda: open("/dev/kmsg", "rb"), (errno.ENOENT,))
fails("/dev/vda", lambda: open("/dev/vda", "rb"), (errno.ENOENT,))
extra = sorted(set(os.listdir("/dev")) - {"null", "zero", "full", "random", "urandom", "fd", "stdin", "stdout", "stderr", "shm"})
print("extra dev", "blocked" if not extra else "ALLOWED %s" % extra)
"#,
        all_blocked(6),
    );
}

#[test]
fn k_cgroup_release_agent() {
    attack("python", attack::K_CGROUP_RELEASE_AGENT, all_blocked(3));
}

#[test]
fn k_personality_and_misc() {
    attack(
        "python",
        r#"
denied("personality ADDR_NO_RANDOMIZE", 135, 0x0040000)
denied("personality READ_IMPLIES_EXEC", 135, 0x0400000)
denied("syslog", 103, 3, 0, 0)
denied("acct", 163, 0)
denied("swapon", 167, 0, 0)
denied("iopl", 172, 3)
denied("ioperm", 173, 0, 1024, 1)
denied("settimeofday", 164, 0, 0)
denied("sethostname", 170, 0, 0)
"#,
        all_blocked(9),
    );
}

// ---------------------------------------------------------------- resources

#[test]
fn r_cpu_spin_times_out() {
    attack_with(
        "python",
        "while True:\n    pass\n",
        |r| r.timeout = Some(1.5),
        |r| {
            assert_eq!(r.status, Status::Timeout, "{r:#?}");
            assert!(r.execution_time < 2.5, "{r:#?}");
        },
    );
}

#[test]
fn r_memory_bomb() {
    attack_with(
        "python",
        attack::R_MEMORY_BOMB,
        |r| {
            r.limits = limits(|l| l.memory_mb = Some(48));
        },
        |r| assert_eq!(r.status, Status::MemoryLimit, "{r:#?}"),
    );
}

#[test]
fn r_fork_bomb_in_bash() {
    attack_with(
        "bash",
        attack::R_FORK_BOMB_IN_BASH,
        |r| {
            r.timeout = Some(3.0);
            r.limits = limits(|l| l.max_processes = Some(24));
        },
        |r| {
            assert!(
                matches!(
                    r.status,
                    Status::Timeout | Status::Error | Status::Success | Status::Killed
                ),
                "{r:#?}"
            );
            assert!(r.resource_usage.processes_peak <= 24, "{r:#?}");
        },
    );
}

#[test]
fn r_thread_bomb() {
    attack_with(
        "python",
        r#"
import threading, time
n = 0
try:
    while True:
        t = threading.Thread(target=time.sleep, args=(5,), daemon=True)
        t.start()
        n += 1
except RuntimeError:
    pass
print("threads", n)
"#,
        |r| r.limits = limits(|l| l.max_processes = Some(20)),
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            let n: u64 = r
                .output
                .trim()
                .strip_prefix("threads ")
                .and_then(|n| n.parse().ok())
                .unwrap_or(999);
            assert!(n < 20, "{n} threads");
        },
    );
}

#[test]
fn r_inode_flood_is_bounded() {
    attack_with(
        "python",
        r#"
n = 0
try:
    while True:
        open("/workspace/f%d" % n, "w").close()
        n += 1
except OSError as e:
    print("stopped", errno.errorcode[e.errno], n)
"#,
        |r| r.limits = limits(|l| l.disk_mb = Some(8)),
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            assert!(r.output.contains("stopped ENOSPC"), "{}", r.output);
            let n: u64 = r
                .output
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .unwrap_or(u64::MAX);
            assert!(n <= 4096, "{n} inodes");
        },
    );
}

#[test]
fn r_dev_shm_counts_against_the_disk_limit() {
    attack_with(
        "python",
        r#"
total = 0
try:
    with open("/dev/shm/fill", "wb") as f:
        while True:
            f.write(b"x" * (1 << 20)); f.flush(); total += 1 << 20
except OSError as e:
    print("stopped", errno.errorcode[e.errno], total)
"#,
        |r| r.limits = limits(|l| l.disk_mb = Some(8)),
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            assert!(r.output.contains("stopped"), "{}", r.output);
            assert!(r.resource_usage.disk_usage_bytes <= 8 << 20, "{r:#?}");
        },
    );
}

#[test]
fn r_output_flood() {
    attack("bash", "yes flood", |r| {
        assert_eq!(r.status, Status::OutputLimit, "{r:#?}");
        assert_eq!(r.output.len(), 1 << 20);
    });
}

#[test]
fn r_stdin_flood_does_not_hang() {
    attack_with(
        "python",
        "import time\ntime.sleep(0.2)\nprint('ignored stdin')\n",
        |r| {
            r.stdin = Some("x".repeat(16 << 20));
        },
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            assert_eq!(r.output, "ignored stdin\n");
        },
    );
}

#[test]
fn r_sleeping_and_double_forked_survivors() {
    attack("bash", "(setsid sh -c 'sleep 1000 &' &); nohup sleep 1000 >/dev/null 2>&1 & disown; sleep 0.2; echo bye", |r| {
        assert_eq!(r.status, Status::Success, "{r:#?}");
        let left = settled(sandbox_processes);
        assert!(left.is_empty(), "survivors: {left:?}");
    });
}

#[test]
fn r_ignored_sigterm() {
    attack_with("python", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.1)\n", |r| {
        r.timeout = Some(1.0);
    }, |r| assert_eq!(r.status, Status::Timeout, "{r:#?}"));
}

#[test]
fn r_zombies() {
    attack(
        "python",
        r#"
import time
for _ in range(40):
    if os.fork() == 0:
        os._exit(0)
time.sleep(0.3)
print("zombies left", len([p for p in os.listdir("/proc") if p.isdigit()]))
"#,
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            assert!(r.output.starts_with("zombies left"), "{}", r.output);
        },
    );
}

#[test]
fn r_cpu_time_rlimit() {
    attack_with(
        "python",
        "while True:\n    pass\n",
        |r| {
            r.limits = limits(|l| l.cpu_time_secs = Some(1.0));
        },
        |r| {
            assert_eq!(r.status, Status::Killed, "{r:#?}");
            assert!(matches!(r.signal, Some(24) | Some(9)), "{r:#?}");
            assert!(r.execution_time < 5.0);
        },
    );
}

#[test]
fn r_benign_run_beside_a_fork_bomb() {
    let _g = serial();
    require_root();
    let e = engine(2);
    let rt = rt();
    let mut bomb = req("bash", ":(){ :|:& };:");
    bomb.timeout = Some(3.0);
    let (bomb, benign) = rt.block_on(async {
        let b = e.execute(bomb);
        let n = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            e.execute(req("python", "print(sum(range(1000)))")).await
        };
        tokio::join!(b, n)
    });
    let benign = benign.expect("benign");
    assert_eq!(benign.status, Status::Success, "{benign:#?}");
    assert_eq!(benign.output, "499500\n");
    assert!(bomb.is_ok());
    assert_no_leftovers();
}

// ---------------------------------------------------------------- leaks

#[test]
fn leak_environment() {
    let _g = serial();
    // SAFETY: tests in this binary are serialised.
    std::env::set_var("VANA_ATTACK_SECRET", "s3cr3t");
    drop(_g);
    attack(
        "python",
        r#"
leaked = [k for k, v in os.environ.items() if "s3cr3t" in v or k.startswith("VANA") or k.startswith("CARGO") or k == "SSH_AUTH_SOCK"]
print("env", "blocked" if not leaked else "ALLOWED %s" % leaked)
"#,
        all_blocked(1),
    );
    std::env::remove_var("VANA_ATTACK_SECRET");
}

#[test]
fn leak_hostname() {
    attack(
        "python",
        r#"
import socket
print("hostname", "blocked" if socket.gethostname() == "sandbox" else "ALLOWED " + socket.gethostname())
fails("sethostname", lambda: socket.sethostname("evil"))
"#,
        all_blocked(2),
    );
}

#[test]
fn leak_host_processes() {
    attack(
        "python",
        r#"
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print("pids", "blocked" if pids == [1, 2] else "ALLOWED %s" % pids)
fails("kill host init", lambda: os.kill(1, 9) or (_ for _ in ()).throw(OSError(errno.EPERM, "ignored")), (errno.EPERM,))
"#,
        all_blocked(2),
    );
}

#[test]
fn leak_host_interfaces() {
    attack(
        "python",
        r#"
lines = open("/proc/net/dev").read().splitlines()[2:]
ifaces = sorted(l.split(":")[0].strip() for l in lines)
print("interfaces", "blocked" if ifaces == ["lo"] else "ALLOWED %s" % ifaces)
"#,
        all_blocked(1),
    );
}

#[test]
fn leak_another_sandboxs_files() {
    let _g = serial();
    require_root();
    let e = engine(2);
    let rt = rt();
    let writer = req("bash", "echo TOPSECRET-7f3a > /workspace/secret; echo TOPSECRET-7f3a > /tmp/secret; echo TOPSECRET-7f3a > /dev/shm/secret; sleep 2");
    let reader = req("bash", "s=TOPSECRET; s=$s-7f3a; sleep 0.5; if grep -rs \"$s\" /workspace /tmp /dev/shm /proc/*/cwd 2>/dev/null; then echo FOUND; else echo clean; fi; ls /proc | grep -c '^[0-9]'");
    let (w, r) = rt.block_on(async { tokio::join!(e.execute(writer), e.execute(reader)) });
    let (w, r) = (w.expect("writer"), r.expect("reader"));
    assert_eq!(w.status, Status::Success, "{w:#?}");
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert!(r.output.starts_with("clean"), "{}", r.output);
    assert_no_leftovers();
}

// ---------------------------------------------------------------- compile cache

/// A request that sets Go's build flags must not change what it compiles, and above all must not
/// put its own binary into the shared cache under a clean program's key: the next caller who sends
/// the same source without any env must run the clean program.
#[test]
fn cache_poisoning_through_build_env_fails() {
    let _g = serial();
    require_root();
    let dir = std::env::temp_dir().join(format!("vana-attack-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut policy = vana_sandbox::PolicyConfig::default();
    policy.compile.cpus = vana_sandbox::Cores::new(2.0).expect("cores");
    let e = vana_sandbox::Engine::builder()
        .executor(std::sync::Arc::new(
            vana_sandbox::NativeExecutor::new().expect("native"),
        ))
        .policy(std::sync::Arc::new(policy))
        .languages(vana_sandbox::lang::installed())
        .compile_cache(std::sync::Arc::new(
            vana_sandbox::DirCompileCache::new(&dir, 64 << 20).expect("cache"),
        ))
        .build()
        .expect("engine");
    let rt = rt();
    let code = "package main\n\nimport \"fmt\"\n\nvar msg = \"clean\"\n\nfunc main() {\n\tfmt.Println(msg)\n}\n";
    let mut hostile = req("go", code);
    for (k, v) in [
        ("GOFLAGS", "-ldflags=-X=main.msg=pwned"),
        ("CGO_ENABLED", "1"),
        ("GOENV", "/workspace/goenv"),
        ("GOROOT", "/workspace"),
        ("GOCACHE", "/workspace/cache"),
    ] {
        hostile.env.insert(k.into(), v.into());
    }
    let first = rt.block_on(e.execute(hostile)).expect("engine");
    assert_eq!(first.status, Status::Success, "{first:#?}");
    assert_eq!(
        first.output, "clean\n",
        "the request's env reached the compiler"
    );
    let clean = rt.block_on(e.execute(req("go", code))).expect("engine");
    assert_eq!(clean.status, Status::Success, "{clean:#?}");
    assert_eq!(clean.output, "clean\n", "a poisoned artifact was served");
    assert!(
        clean.compile.as_ref().is_some_and(|c| c.cached),
        "{clean:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_no_leftovers();
}

// ------------------------------------------------- every backend: one test per class of issue 10
//
// Each runs on native, Docker with runc and Docker with runsc (gVisor) unless the class cannot
// apply, and asserts the safe outcome and a clean host.

/// Runs `code` (Python gets the raw-syscall prelude) on `b` with `tweak`, checks it, and checks
/// that nothing of the run is left and the host is unchanged.
fn attack_on(
    b: Backend,
    language: &str,
    code: &str,
    tweak: impl FnOnce(&mut ExecutionRequest),
    check: impl FnOnce(&ExecutionResult),
) {
    let before = host_state();
    let code = if language == "python" {
        format!("{}\n{code}", attack::PRELUDE)
    } else {
        code.to_string()
    };
    let mut r = req(language, &code);
    r.timeout = Some(20.0);
    tweak(&mut r);
    let res = run_on(b, r);
    check(&res);
    assert_clean(b);
    assert_eq!(host_state(), before, "the host changed");
}

/// The number the program printed after `key` (`key N`).
fn printed(r: &ExecutionResult, key: &str) -> Option<u64> {
    r.output
        .lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
}

/// Rare, new and unneeded system calls get ENOSYS from the allow-list, and so does any number
/// past the table's end (AIO's `io_setup` would otherwise reserve the host's `aio-max-nr`).
fn syscalls_outside_the_table_get_enosys(b: Backend) {
    let aio_before = std::fs::read_to_string("/proc/sys/fs/aio-nr").unwrap_or_default();
    let max = vana_sandbox::seccomp::table_max();
    let code = format!(
        r#"
for name, nr in [("open_tree_attr", 467), ("modify_ldt", 154), ("memfd_secret", 447),
                 ("kcmp", 312), ("io_setup", 206), ("io_uring_setup", 425),
                 ("fanotify_init", 300), ("lookup_dcookie", 212), ("past the table", {past}),
                 ("far past", 1000)]:
    denied(name, nr, 1, 0, 0, errnos=(errno.ENOSYS,))
"#,
        past = max + 1
    );
    attack_on(b, "python", &code, |_| {}, all_blocked(10));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/fs/aio-nr").unwrap_or_default(),
        aio_before
    );
}
all_backends!(syscalls_outside_the_table_get_enosys);

/// Datagram IP sockets are refused: on cgroup v1 their buffers are charged to no limit.
fn udp_sockets_are_refused(b: Backend) {
    let code = r#"
import socket
fails("udp4", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), (errno.ENOSYS, errno.EPERM, errno.EACCES))
fails("udp6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM), (errno.ENOSYS, errno.EPERM, errno.EACCES))
fails("icmp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), (errno.ENOSYS, errno.EPERM, errno.EACCES))
"#;
    attack_on(b, "python", code, |_| {}, all_blocked(3));
}
all_backends!(udp_sockets_are_refused);

/// A program that stuffs stream sockets (TCP over loopback, Unix socket pairs) and pipes with
/// unread data under a 64 MiB limit either ends at the memory limit or queued no more than the
/// limit plus the per-run socket cap: none of it is outside every bound.
fn queued_kernel_buffers_are_bounded(b: Backend) {
    let code = r#"
import socket, fcntl
def stuff(w):
    n = 0
    w.setblocking(False) if hasattr(w, "setblocking") else None
    while True:
        try:
            k = w.send(b"x" * 65536) if hasattr(w, "send") else os.write(w, b"x" * 65536)
        except (BlockingIOError, InterruptedError):
            return n
        except OSError:
            return n
        n += k
keep = []
def tcp():
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(64)
    total = 0
    for _ in range(300):
        c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        c.connect(srv.getsockname()); a, _ = srv.accept()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        keep.extend([c, a]); total += stuff(c)
    return total
def unix():
    total = 0
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM) * 150:
        a, c = socket.socketpair(socket.AF_UNIX, kind)
        keep.extend([a, c])
        try:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        except OSError:
            pass
        total += stuff(c)
    return total
def pipes():
    total = 0
    for _ in range(300):
        r, w = os.pipe(); keep.extend([r, w])
        try:
            fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
        except OSError:
            pass
        os.set_blocking(w, False)
        total += stuff(w)
    return total
for name, fn in [("tcp", tcp), ("unix", unix), ("pipes", pipes)]:
    try:
        print(name, fn() >> 20, flush=True)
    except OSError as e:
        print(name, "stopped", e, flush=True)
"#;
    attack_on(
        b,
        "python",
        code,
        |r| r.limits = limits(|l| l.memory_mb = Some(64)),
        |r| {
            assert!(
                matches!(r.status, Status::Success | Status::MemoryLimit),
                "{r:#?}"
            );
            let total: u64 = ["tcp", "unix", "pipes"]
                .iter()
                .filter_map(|k| printed(r, k))
                .sum();
            // 64 MiB of memory and a 16 MiB socket cap: anything near this is already bounded;
            // unbounded kernel buffers reached hundreds of MiB.
            assert!(
                total <= 96,
                "{total} MiB queued in kernel buffers: {}",
                r.output
            );
        },
    );
}
all_backends!(queued_kernel_buffers_are_bounded);

/// System V shared memory outlives its process in the IPC namespace: its total is bounded by the
/// memory limit, and it goes with the sandbox.
fn sysv_shared_memory_is_bounded(b: Backend) {
    let code = r#"
libc.shmget.restype = ctypes.c_int
libc.shmat.restype = ctypes.c_void_p
total = 0
for i in range(64):
    id = libc.shmget(0, 8 << 20, 0o1600)
    if id < 0:
        print("shmget refused", ctypes.get_errno(), flush=True)
        break
    addr = libc.shmat(id, None, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        print("shmat refused", flush=True)
        break
    ctypes.memset(addr, 1, 8 << 20)
    total += 8
    print("shm", total, flush=True)
"#;
    let host_shm = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    attack_on(
        b,
        "python",
        code,
        |r| r.limits = limits(|l| l.memory_mb = Some(64)),
        |r| {
            assert!(
                matches!(r.status, Status::Success | Status::MemoryLimit),
                "{r:#?}"
            );
            let last = r
                .output
                .lines()
                .filter_map(|l| l.strip_prefix("shm ")?.parse::<u64>().ok())
                .next_back()
                .unwrap_or(0);
            assert!(
                last <= 72,
                "{last} MiB of shared memory under a 64 MiB limit"
            );
        },
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default(),
        host_shm,
        "segments outlived the sandbox"
    );
}
all_backends!(sysv_shared_memory_is_bounded);

/// inotify instances are capped per sandbox (their kernel objects are outside the memory limit).
fn inotify_instances_are_capped(b: Backend) {
    let code = r#"
libc.inotify_init1.restype = ctypes.c_int
n = 0
while n < 10000:
    if libc.inotify_init1(0) < 0:
        break
    n += 1
print("instances", n)
"#;
    attack_on(
        b,
        "python",
        code,
        |_| {},
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            let n = printed(r, "instances").unwrap_or(u64::MAX);
            if b.is_gvisor() {
                // gVisor's inotify is the sentry's own object, in the container's memory; the
                // file-descriptor limit bounds it.
                assert!(n < 4096, "{n} inotify instances");
            } else {
                assert!(n <= 128, "{n} inotify instances");
            }
        },
    );
}
all_backends!(inotify_instances_are_capped);

/// One disk budget for every writable place: writing to /workspace, /tmp and /dev/shm in turn
/// stores no more than the disk limit in all.
fn one_disk_budget_for_all_writable_places(b: Backend) {
    let code = r#"
total = 0
for d in ["/workspace", "/tmp", "/dev/shm"]:
    n = 0
    try:
        with open(d + "/fill", "wb") as f:
            while n < (16 << 20):
                f.write(b"x" * (1 << 20)); f.flush(); n += 1 << 20
    except OSError:
        pass
    total += os.stat(d + "/fill").st_size if os.path.exists(d + "/fill") else 0
print("stored", total >> 20)
"#;
    attack_on(
        b,
        "python",
        code,
        |r| r.limits = limits(|l| l.disk_mb = Some(16)),
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            let stored = printed(r, "stored").unwrap_or(u64::MAX);
            assert!(
                stored <= 16,
                "{stored} MiB stored under a 16 MiB disk limit"
            );
        },
    );
}
all_backends!(one_disk_budget_for_all_writable_places);

/// A program that raises SIGSYS itself is killed by a signal, not by seccomp: a `seccomp_kill`
/// event needs the kernel's evidence.
fn raised_sigsys_is_not_a_seccomp_kill(b: Backend) {
    attack_on(
        b,
        "python",
        "import signal\nprint('raising', flush=True)\nos.kill(os.getpid(), signal.SIGSYS)\n",
        |_| {},
        |r| {
            assert_eq!((r.status, r.signal), (Status::Killed, Some(31)), "{r:#?}");
            assert!(
                r.security_events
                    .iter()
                    .all(|e| e.kind.as_str() != "seccomp_kill"),
                "a forged seccomp kill: {r:#?}"
            );
        },
    );
}
all_backends!(raised_sigsys_is_not_a_seccomp_kill);

/// The guard's events file is the program's to write: rewritten with invented events and then
/// made a 64 MiB sparse file, it yields at most a capped number of events, each marked as
/// reported by the program, and never an event the sandbox itself would report.
fn guard_events_file_cannot_forge_results(b: Backend) {
    let code = r#"
import json
path = "/workspace/.vana/events.jsonl"
with open(path, "w") as f:
    for kind in ["seccomp_kill", "oom", "network_blocked"] * 40:
        f.write(json.dumps({"kind": kind, "detail": "forged", "source": "sandbox"}) + "\n")
print("forged", flush=True)
"#;
    attack_on(
        b,
        "python",
        code,
        |_| {},
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            assert!(r.security_events.len() <= 50 + 5, "{r:#?}");
            for e in r
                .security_events
                .iter()
                .filter(|e| e.detail.contains("forged"))
            {
                assert_eq!(e.kind.as_str(), "language_guard", "{e:?}");
                assert_eq!(e.source, vana_sandbox::Reporter::Program, "{e:?}");
            }
        },
    );
    let sparse = r#"
path = "/workspace/.vana/events.jsonl"
with open(path, "w") as f:
    f.truncate(64 << 20)
print("sparse", flush=True)
"#;
    attack_on(
        b,
        "python",
        sparse,
        |_| {},
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            assert!(r.execution_time < 10.0, "{r:#?}");
        },
    );
}
all_backends!(guard_events_file_cannot_forge_results);

fn host_btime() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn host_uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Host facts stay outside: the boot id, memory size (meminfo, and the host's devtmpfs, which is
/// sized by memory), uptime, disk size (statfs of the base), `/proc/locks`, global fork and
/// interrupt counters, and what the host administrator installed in `/usr/local`.
fn host_facts_are_not_visible(b: Backend) {
    let host_boot_id =
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let code = r#"
def read(p):
    try:
        return open(p).read()
    except OSError:
        return ""
print("boot_id", read("/proc/sys/kernel/random/boot_id").strip() or "none")
mem = [l for l in read("/proc/meminfo").splitlines() if l.startswith("MemTotal:")]
print("memtotal_kb", mem[0].split()[1] if mem else 0)
up = read("/proc/uptime").split()
print("uptime", int(float(up[0])) if up else 0)
st = os.statvfs("/usr")
print("usr_mb", st.f_blocks * st.f_frsize >> 20)
print("locks", len(read("/proc/locks")))
stat = dict(l.split(None, 1) for l in read("/proc/stat").splitlines() if " " in l)
print("processes", stat.get("processes", "0").strip())
print("btime", stat.get("btime", "0").strip())
print("devtmpfs", sum(1 for l in read("/proc/self/mountinfo").splitlines() if " - devtmpfs " in l))
print("usr_local", len(os.listdir("/usr/local")) if os.path.isdir("/usr/local") else 0)
"#;
    attack_on(
        b,
        "python",
        code,
        |r| r.limits = limits(|l| l.memory_mb = Some(256)),
        |r| {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            assert!(
                !r.output.contains(host_boot_id.trim()),
                "host boot id: {}",
                r.output
            );
            let get = |k| printed(r, k).unwrap_or(u64::MAX);
            assert!(get("memtotal_kb") <= 256 * 1024, "{}", r.output);
            assert!((get("uptime") as f64) + 5.0 < host_uptime(), "{}", r.output);
            // Docker's image layers live on the engine's storage: statfs there reports that
            // filesystem's size (a documented limit in docs/SECURITY.md); natively the base is an
            // overlay of ours whose statfs is our own small tmpfs.
            if b == Backend::Native {
                assert!(
                    get("usr_mb") <= 1024,
                    "statfs(/usr) shows the host's disk: {}",
                    r.output
                );
            }
            assert_eq!(get("locks"), 0, "{}", r.output);
            assert_eq!(get("processes"), 0, "{}", r.output);
            // gVisor reports its own boot (the sandbox's start); anything but the host's.
            let btime = get("btime");
            assert!(
                btime == 0 || (b.is_gvisor() && btime.abs_diff(host_btime()) > 60),
                "host boot time: {}",
                r.output
            );
            assert_eq!(get("devtmpfs"), 0, "{}", r.output);
            assert_eq!(get("usr_local"), 0, "{}", r.output);
        },
    );
}
all_backends!(host_facts_are_not_visible);

/// The base shares no inode-level state: two concurrent runs cannot signal each other with
/// `flock` on a base file, and a run watching base directories with inotify sees nothing of the
/// host's activity there.
fn base_shares_no_inode_state(b: Backend) {
    let (rt, e) = engine_on(b, vana_sandbox::PolicyConfig::default());
    let holder = req(
        "python",
        "import fcntl, time\nf = open('/usr/share/zoneinfo/UTC', 'rb')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(3)\n",
    );
    let prober = req(
        "python",
        r#"
import ctypes, fcntl, os, struct, time, select
time.sleep(1)
f = open("/usr/share/zoneinfo/UTC", "rb")
try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("lock free")
except OSError:
    print("lock HELD BY ANOTHER RUN")
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
libc.inotify_add_watch(fd, b"/usr/share/zoneinfo", 0x20 | 0x1)  # IN_OPEN | IN_ACCESS
time.sleep(1.5)
try:
    n = len(os.read(fd, 65536))
except BlockingIOError:
    n = 0
print("events", n)
"#,
    );
    let host_activity = async {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = std::fs::read("/usr/share/zoneinfo/UTC");
        }
    };
    let (h, p, ()) =
        rt.block_on(async { tokio::join!(e.execute(holder), e.execute(prober), host_activity) });
    let (h, p) = (h.expect("holder"), p.expect("prober"));
    assert_eq!(
        (h.status, h.output.as_str()),
        (Status::Success, "held\n"),
        "{h:#?}"
    );
    assert_eq!(p.status, Status::Success, "{p:#?}");
    assert_eq!(p.output, "lock free\nevents 0\n", "{p:#?}");
    drop(e);
    assert_clean(b);
}
all_backends!(base_shares_no_inode_state);

/// The two-request compile-cache attack on every backend: a hostile build env must not change
/// what a later clean request with the same source runs.
fn compile_cache_cannot_be_poisoned(b: Backend) {
    let dir = std::env::temp_dir().join(
        format!("vana-attack-cache-{}-{:?}", std::process::id(), b).replace(['(', ')', '"'], ""),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let cache: std::sync::Arc<dyn vana_sandbox::CompileCache> =
        std::sync::Arc::new(vana_sandbox::DirCompileCache::new(&dir, 64 << 20).expect("cache"));
    let mut policy = vana_sandbox::PolicyConfig::default();
    policy.compile.cpus = vana_sandbox::Cores::new(2.0).expect("cores");
    let (rt, e) = engine_with(b, policy, Some(cache));
    let code = "package main\n\nimport \"fmt\"\n\nvar msg = \"clean\"\n\nfunc main() {\n\tfmt.Println(msg)\n}\n";
    let mut hostile = req("go", code);
    for (k, v) in [
        ("GOFLAGS", "-ldflags=-X=main.msg=pwned"),
        ("CGO_ENABLED", "1"),
        ("GOENV", "/workspace/goenv"),
        ("GOROOT", "/workspace"),
        ("GOCACHE", "/workspace/cache"),
    ] {
        hostile.env.insert(k.into(), v.into());
    }
    let first = rt.block_on(e.execute(hostile)).expect("engine");
    assert_eq!(
        (first.status, first.output.as_str()),
        (Status::Success, "clean\n"),
        "{first:#?}"
    );
    let clean = rt.block_on(e.execute(req("go", code))).expect("engine");
    assert_eq!(
        (clean.status, clean.output.as_str()),
        (Status::Success, "clean\n"),
        "{clean:#?}"
    );
    assert!(
        clean.compile.as_ref().is_some_and(|c| c.cached),
        "{clean:#?}"
    );
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    assert_clean(b);
}
all_backends!(compile_cache_cannot_be_poisoned);
