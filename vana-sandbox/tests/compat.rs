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
    let code = compat::PYTHON_PROCESSES_AND_THREADS;
    expect(
        b,
        req("python", code),
        "sub 42 0\npool 285\nthreads 285\nfrom child\ncpus True\n",
    );
}
all_backends!(python_processes_and_threads);

fn python_asyncio_sqlite_and_local_tcp(b: Backend) {
    let code = compat::PYTHON_ASYNCIO_SQLITE_AND_LOCAL_TCP;
    expect(
        b,
        req("python", code),
        "asyncio echo\nsqlite 10\nsqlite memory 42\ntcp echo\nunix pair\n",
    );
}
all_backends!(python_asyncio_sqlite_and_local_tcp);

fn python_tls_time_zones_and_interfaces(b: Backend) {
    let code = compat::PYTHON_TLS_TIME_ZONES_AND_INTERFACES;
    expect(
        b,
        req("python", code),
        "ca certificates True\nverify True True\nnew york -1 day, 20:00:00\ntokyo 9:00:00\nlocal UTC\nparis CEST\ninterfaces ['lo']\nhostname sandbox\n",
    );
}
all_backends!(python_tls_time_zones_and_interfaces);

fn python_output_before_a_kill_reaches_the_result(b: Backend) {
    let mut r = req("python", compat::PYTHON_OUTPUT_BEFORE_A_TIMEOUT);
    r.timeout = Some(2.0);
    let res = run_on(b, r);
    assert_eq!(res.status, Status::Timeout, "{res:#?}");
    assert_eq!(res.output, "before the timeout\n", "{res:#?}");
    let res = run_on(b, req("python", compat::PYTHON_OUTPUT_BEFORE_EXIT));
    assert_eq!(
        (res.exit_code, res.output.as_str()),
        (Some(3), "before _exit\n"),
        "{res:#?}"
    );
    assert_clean(b);
}
all_backends!(python_output_before_a_kill_reaches_the_result);

fn node_os_workers_fs_crypto(b: Backend) {
    let code = compat::NODE_OS_WORKERS_FS_CRYPTO;
    expect(
        b,
        req("javascript", code),
        "interfaces lo\ncpus true memory true\nnode fs\nsha256 ba7816bf8f01cfea\nrandom 8\nworker 42\n",
    );
}
all_backends!(node_os_workers_fs_crypto);

fn go_goroutines_and_http_client(b: Backend) {
    let code = compat::GO_GOROUTINES_AND_HTTP_CLIENT;
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
    let code = compat::RUST_THREADS;
    expect(
        b,
        req("rust", code),
        "threads 28\nchannel\nparallelism true\n",
    );
}
all_backends!(rust_threads);

fn bash_pipelines_and_tools(b: Backend) {
    let code = compat::BASH_PIPELINES_AND_TOOLS;
    expect(
        b,
        req("bash", code),
        "sum 5050\na b \nsubshell\n1970\nfifo\n",
    );
}
all_backends!(bash_pipelines_and_tools);
