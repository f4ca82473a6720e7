//! Compatibility: ordinary programs keep working inside the sandbox, on every backend (native,
//! Docker with runc, Docker with runsc). Each program exercises what real code does — subprocesses,
//! threads and processes, local sockets, TLS set-up with the CA store, time zones, reading its own
//! network interfaces — and prints what it saw; the test compares the whole output.
//!
//! Needs root; the Docker variants need a running engine with the runtime image (scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use vana_sandbox::{ExecutionRequest, Status};

/// Runs `r` on `b` and asserts success with exactly `want` on stdout.
fn expect(b: Backend, r: ExecutionRequest, want: &str) {
    let mut r = r;
    r.timeout = Some(30.0);
    let res = run_on(b, r);
    assert_eq!(
        (res.status, res.output.as_str()),
        (Status::Success, want),
        "{res:#?}"
    );
    assert_clean(b);
}

fn python_processes_and_threads(b: Backend) {
    let code = r#"
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
    expect(
        b,
        req("python", code),
        "sub 42 0\npool 285\nthreads 285\nfrom child\ncpus True\n",
    );
}
all_backends!(python_processes_and_threads);

fn python_asyncio_sqlite_and_local_tcp(b: Backend) {
    let code = r#"
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
    expect(
        b,
        req("python", code),
        "asyncio echo\nsqlite 10\nsqlite memory 42\ntcp echo\nunix pair\n",
    );
}
all_backends!(python_asyncio_sqlite_and_local_tcp);

fn python_tls_time_zones_and_interfaces(b: Backend) {
    let code = r#"
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
    expect(
        b,
        req("python", code),
        "ca certificates True\nverify True True\nnew york -1 day, 20:00:00\ntokyo 9:00:00\nlocal UTC\nparis CEST\ninterfaces ['lo']\nhostname sandbox\n",
    );
}
all_backends!(python_tls_time_zones_and_interfaces);

fn python_output_before_a_kill_reaches_the_result(b: Backend) {
    let mut r = req(
        "python",
        "import time\nprint('before the timeout')\nwhile True:\n    time.sleep(0.1)\n",
    );
    r.timeout = Some(2.0);
    let res = run_on(b, r);
    assert_eq!(res.status, Status::Timeout, "{res:#?}");
    assert_eq!(res.output, "before the timeout\n", "{res:#?}");
    let res = run_on(
        b,
        req("python", "import os\nprint('before _exit')\nos._exit(3)\n"),
    );
    assert_eq!(
        (res.exit_code, res.output.as_str()),
        (Some(3), "before _exit\n"),
        "{res:#?}"
    );
    assert_clean(b);
}
all_backends!(python_output_before_a_kill_reaches_the_result);

fn node_os_workers_fs_crypto(b: Backend) {
    let code = r#"
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
    expect(
        b,
        req("javascript", code),
        "interfaces lo\ncpus true memory true\nnode fs\nsha256 ba7816bf8f01cfea\nrandom 8\nworker 42\n",
    );
}
all_backends!(node_os_workers_fs_crypto);

fn go_goroutines_and_http_client(b: Backend) {
    let code = r#"package main

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
    let mut policy_req = req("go", code);
    policy_req.timeout = Some(30.0);
    expect(
        b,
        policy_req,
        "goroutines 4950\nclient 5s true example.com\nzone true CET\n",
    );
}
all_backends!(go_goroutines_and_http_client);

fn rust_threads(b: Backend) {
    let code = r#"
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
    expect(
        b,
        req("rust", code),
        "threads 28\nchannel\nparallelism true\n",
    );
}
all_backends!(rust_threads);

fn bash_pipelines_and_tools(b: Backend) {
    let code = "set -e\nseq 1 100 | awk '{s+=$1} END {print \"sum\", s}'\nprintf 'b\\na\\n' | sort | tr '\\n' ' '; echo\n(sleep 0.1; echo subshell) &\nwait\necho \"$(date -u -d @0 +%Y)\"\nmkfifo /tmp/f; (echo fifo > /tmp/f &); cat /tmp/f\n";
    expect(
        b,
        req("bash", code),
        "sum 5050\na b \nsubshell\n1970\nfifo\n",
    );
}
all_backends!(bash_pipelines_and_tools);
