//! Programs shared by the suites, so that each is written once: the attack suite's programs
//! (`attacks.rs`) that the threat-detection test (`threats.rs`) replays, and the compatibility
//! suite's ordinary programs (`compat.rs`), on which the detector must stay silent.
#![allow(dead_code)]

/// Attacker programs of `attacks.rs`.
pub mod attack {
    /// Python helpers for raw system calls. `denied(name, nr, *args)` prints `name blocked` when the
    /// call fails with an expected errno (by default `ENOSYS`, what the seccomp allow-list answers
    /// for anything it does not list, or `EPERM`, what the kernel answers for a missing privilege),
    /// and `name ALLOWED …` otherwise.
    pub const PRELUDE: &str = r#"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    return r, ctypes.get_errno()
def denied(name, nr, *a, errnos=(errno.EPERM, errno.ENOSYS)):
    r, e = sc(nr, *a)
    print(name, "blocked" if r == -1 and e in errnos else "ALLOWED r=%d errno=%d" % (r, e), flush=True)
def fails(name, fn, errnos=None):
    try:
        fn()
        print(name, "ALLOWED", flush=True)
    except OSError as e:
        ok = errnos is None or e.errno in errnos
        print(name, "blocked" if ok else "ALLOWED-but-errno=%s" % e.errno, flush=True)
"#;

    /// Python (after [`PRELUDE`]): credential files the host would have (`/etc/shadow`, root's SSH key).
    pub const FS_HOST_SECRETS: &str = r#"
for p in ["/etc/shadow", "/root/.ssh/id_rsa", "/root/.bash_history", "/home", "/run/vana-sandbox", "/var/lib", "/boot"]:
    fails(p, lambda: open(p).read(), (errno.ENOENT,))
"#;

    /// Python (after [`PRELUDE`]): writes to the read-only base.
    pub const FS_BASE_READ_ONLY: &str = r#"
for p in ["/usr/bin/evil", "/etc/passwd", "/evil", "/bin/evil", "/lib/evil", "/proc/evil"]:
    fails(p, lambda: open(p, "w").write("x"))
fails("chmod /usr/bin/python3", lambda: os.chmod("/usr/bin/python3", 0o777))
fails("rename /etc/hosts", lambda: os.rename("/etc/hosts", "/etc/hosts2"))
"#;

    /// Python (after [`PRELUDE`]): init's root, environment and memory through `/proc/1`.
    pub const FS_PROC_ROOT_TRAVERSAL: &str = r#"
fails("/proc/1/root", lambda: os.listdir("/proc/1/root"))
fails("/proc/1/root/etc/passwd", lambda: open("/proc/1/root/etc/passwd").read())
fails("/proc/1/environ", lambda: open("/proc/1/environ").read())
fails("/proc/1/mem", lambda: open("/proc/1/mem", "rb").read(1))
fails("/proc/1/cwd", lambda: os.listdir("/proc/1/cwd"))
"#;

    /// Python (after [`PRELUDE`]): `ptrace` and `process_vm_readv` by raw system call number.
    pub const K_PTRACE: &str = r#"
denied("attach init", 101, 16, 1, 0, 0)
denied("traceme", 101, 0, 0, 0, 0)
denied("process_vm_readv", 310, 1, 0, 0, 0, 0, 0)
"#;

    /// Python (after [`PRELUDE`]): a 32-bit system call through `int 0x80` (killed by seccomp).
    pub const K_32BIT_INT80: &str = r#"
import mmap
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(b"\xb8\x14\x00\x00\x00\xcd\x80\xc3")  # mov eax, 20 (getpid); int 0x80; ret
fn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
print("calling", flush=True)
fn()
print("SURVIVED")
"#;

    /// Python (after [`PRELUDE`]): mounting a cgroup hierarchy to reach `release_agent`.
    pub const K_CGROUP_RELEASE_AGENT: &str = r#"
os.makedirs("/tmp/cg", exist_ok=True)
ctypes.set_errno(0)
r = libc.mount(b"cgroup", b"/tmp/cg", b"cgroup", 0, b"rdma")
print("mount cgroup", "blocked" if r == -1 else "ALLOWED")
fails("release_agent", lambda: open("/sys/fs/cgroup/release_agent", "w").write("/tmp/x"), (errno.ENOENT,))
fails("own cgroup procs", lambda: open("/proc/self/cgroup").read() and open("/sys/fs/cgroup/cgroup.procs", "w").write("1"), (errno.ENOENT,))
"#;

    /// Python (after [`PRELUDE`]): name resolution with no network.
    pub const NET_DNS_RESOLUTION: &str = r#"
import socket
try:
    socket.getaddrinfo("example.com", 80)
    print("dns ALLOWED")
except OSError:
    print("dns blocked")
"#;

    /// Python: allocates and touches memory until the limit stops it.
    pub const R_MEMORY_BOMB: &str = "a = []\nwhile True:\n    a.append(bytearray(10**6) * 1)\n    a[-1][::4096] = b'x' * len(a[-1][::4096])\n";

    /// Bash: the classic fork bomb; the script then stays alive (`sleep`, or bash's own retries
    /// of a refused fork) so that the bomb spreads to the limit instead of being killed with the
    /// script when it ends (a bare `:(){ :|:& };:` often ends before a second fork).
    pub const R_FORK_BOMB_IN_BASH: &str = ":(){ :|:& };:\nsleep 5\n";
}

/// Ordinary programs of `compat.rs`: what real code does (subprocesses, threads, local
/// sockets, TLS set-up, time zones, workers, compilers).
pub mod compat {
    /// Python: a subprocess, a process pool, threads, a queue between processes.
    pub const PYTHON_PROCESSES_AND_THREADS: &str = r#"
import subprocess, multiprocessing, threading, concurrent.futures, os

out = subprocess.run(["bash", "-c", "echo sub $((6*7))"], capture_output=True, text=True)
print(out.stdout.strip(), out.returncode)

def square(x):
    return x * x

if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        print("pool", sum(pool.map(square, range(10))))
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        print("threads", sum(ex.map(square, range(10))))
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=q.put, args=("from child",))
    p.start(); print(q.get()); p.join()
    print("cpus", os.cpu_count() >= 1)
"#;

    /// Python: an asyncio server and client on loopback, SQLite, a TCP echo, a socket pair.
    pub const PYTHON_ASYNCIO_SQLITE_AND_LOCAL_TCP: &str = r#"
import asyncio, sqlite3, socket, threading

async def handle(reader, writer):
    writer.write(await reader.readline()); await writer.drain(); writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"asyncio echo\n"); await writer.drain()
    print((await reader.readline()).decode().strip())
    writer.close(); server.close()
asyncio.run(main())

db = sqlite3.connect("/workspace/t.db")
db.execute("create table t (x)"); db.executemany("insert into t values (?)", [(i,) for i in range(5)])
print("sqlite", db.execute("select sum(x) from t").fetchone()[0])
mem = sqlite3.connect(":memory:")
print("sqlite memory", mem.execute("select 40 + 2").fetchone()[0])

srv = socket.create_server(("127.0.0.1", 0))
def echo():
    c, _ = srv.accept(); c.sendall(c.recv(64)); c.close()
threading.Thread(target=echo).start()
c = socket.create_connection(srv.getsockname())
c.sendall(b"tcp echo"); print(c.recv(64).decode())
a, b2 = socket.socketpair(); a.sendall(b"unix pair"); print(b2.recv(64).decode())
"#;

    /// Python: a TLS context from the CA store, time zones, interfaces, the host name.
    pub const PYTHON_TLS_TIME_ZONES_AND_INTERFACES: &str = r#"
import ssl, socket, datetime, zoneinfo, time, os
ctx = ssl.create_default_context()
print("ca certificates", ctx.cert_store_stats()["x509_ca"] > 0)
print("verify", ctx.verify_mode == ssl.CERT_REQUIRED, ctx.check_hostname)
ny = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
print("new york", ny.utcoffset())
print("tokyo", datetime.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")).utcoffset())
print("local", time.strftime("%Z", time.localtime(0)))
os.environ["TZ"] = "Europe/Paris"; time.tzset()
print("paris", time.strftime("%Z", time.localtime(1719835200)))
print("interfaces", [n for _, n in socket.if_nameindex()])
print("hostname", socket.gethostname())
"#;

    /// JavaScript: `os`, files, hashes, a worker thread.
    pub const NODE_OS_WORKERS_FS_CRYPTO: &str = r#"
const os = require("os");
const fs = require("fs");
const crypto = require("crypto");
const { Worker } = require("worker_threads");
console.log("interfaces", Object.keys(os.networkInterfaces()).join(","));
console.log("cpus", os.cpus().length >= 1, "memory", os.totalmem() > 0);
fs.writeFileSync("/workspace/n.txt", "node fs");
console.log(fs.readFileSync("/workspace/n.txt", "utf8"));
console.log("sha256", crypto.createHash("sha256").update("abc").digest("hex").slice(0, 16));
console.log("random", crypto.randomBytes(8).length);
const w = new Worker("const { parentPort } = require('worker_threads'); parentPort.postMessage(6 * 7);", { eval: true });
w.on("message", (m) => { console.log("worker", m); w.terminate(); });
"#;

    /// Go: goroutines, an HTTP client set up (not used), a time zone.
    pub const GO_GOROUTINES_AND_HTTP_CLIENT: &str = r#"package main

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

func main() {
	var wg sync.WaitGroup
	var mu sync.Mutex
	sum := 0
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			mu.Lock()
			sum += n
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	fmt.Println("goroutines", sum)
	client := &http.Client{Timeout: 5 * time.Second}
	req, err := http.NewRequest("GET", "https://example.com/", nil)
	fmt.Println("client", client.Timeout, err == nil, req.URL.Host)
	loc, err := time.LoadLocation("Europe/Berlin")
	fmt.Println("zone", err == nil, time.Date(2024, 1, 1, 0, 0, 0, 0, loc).Format("MST"))
}
"#;

    /// Rust: threads, a channel.
    pub const RUST_THREADS: &str = r#"
use std::sync::{Arc, Mutex};
fn main() {
    let total = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            let t = Arc::clone(&total);
            std::thread::spawn(move || *t.lock().unwrap() += i)
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    println!("threads {}", total.lock().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send("channel").unwrap());
    println!("{}", rx.recv().unwrap());
    println!("parallelism {}", std::thread::available_parallelism().is_ok());
}
"#;

    /// Bash: pipelines, awk, sort, a background subshell, `date`, a FIFO.
    pub const BASH_PIPELINES_AND_TOOLS: &str = "set -e\nseq 1 100 | awk '{s+=$1} END {print \"sum\", s}'\nprintf 'b\\na\\n' | sort | tr '\\n' ' '; echo\n(sleep 0.1; echo subshell) &\nwait\necho \"$(date -u -d @0 +%Y)\"\nmkfifo /tmp/f; (echo fifo > /tmp/f &); cat /tmp/f\n";

    /// Python: prints, then sleeps until its timeout.
    pub const PYTHON_OUTPUT_BEFORE_A_TIMEOUT: &str =
        "import time\nprint('before the timeout')\nwhile True:\n    time.sleep(0.1)\n";

    /// Python: prints, then leaves with `os._exit(3)`.
    pub const PYTHON_OUTPUT_BEFORE_EXIT: &str = "import os\nprint('before _exit')\nos._exit(3)\n";
}
