//! Sessions: a sandbox across calls, on every backend. State kept across cells (a variable, an
//! import, a file) with a failing cell between; a timeout that restarts the kernel and says so;
//! files in and out; output artifacts with a matplotlib PNG; streaming before the end; a kill
//! that frees the slot within a second; 20 concurrent sessions without cross-talk; bad input
//! (paths out of the workspace, links, archives that escape or explode) refused; nothing left.
//!
//! Needs root; the Docker variants need the Docker engine and runtime image (scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vana_sandbox::{Engine, ExecutionRequest, PolicyConfig, SessionOptions, Status, StreamKind};

fn open(b: Backend) -> (tokio::runtime::Runtime, Engine) {
    engine_on(b, PolicyConfig::default())
}

fn cell(lang: &str, code: &str) -> ExecutionRequest {
    ExecutionRequest::new(lang, code)
}

fn state_is_kept_across_cells(b: Backend) {
    let (rt, e) = open(b);
    rt.block_on(async {
        let s = e.session(SessionOptions::default()).await.expect("session");
        let r = s
            .run_code(
                "python",
                "import json\nx = 41\nopen('kept.txt', 'w').write('file state')",
            )
            .await
            .unwrap();
        assert_eq!(r.status, Status::Success, "{r:#?}");
        let r = s.run_code("python", "1 / 0").await.unwrap();
        assert_eq!(r.status, Status::Error, "{r:#?}");
        let ex = r.exception.as_ref().expect("exception");
        assert_eq!(ex.name, "ZeroDivisionError", "{r:#?}");
        assert!(ex.traceback.contains("ZeroDivisionError"), "{r:#?}");
        assert!(!r.session.as_ref().unwrap().kernel_restarted);
        let r = s
            .run_code(
                "python",
                "print(json.dumps({'x': x + 1}))\nopen('kept.txt').read()",
            )
            .await
            .unwrap();
        assert_eq!(r.status, Status::Success, "{r:#?}");
        assert_eq!(r.output, "{\"x\": 42}\n");
        assert_eq!(r.results[0].0["text/plain"], "'file state'", "{r:#?}");
        assert_eq!(r.session.as_ref().unwrap().cell, 3);
        // Bash keeps its working directory and exported variables; JavaScript its context.
        let r = s
            .command("mkdir -p sub && cd sub && export GREETING=hi")
            .await
            .unwrap();
        assert_eq!(r.status, Status::Success, "{r:#?}");
        let r = s
            .command("echo $GREETING from $(basename $PWD)")
            .await
            .unwrap();
        assert_eq!(r.output, "hi from sub\n", "{r:#?}");
        let r = s.command("exit 3").await.unwrap();
        assert_eq!((r.status, r.exit_code), (Status::Error, Some(3)), "{r:#?}");
        let r = s
            .run_code("javascript", "let total = 40; total + 2")
            .await
            .unwrap();
        assert_eq!(r.results[0].0["text/plain"], "42", "{r:#?}");
        let r = s
            .run_code("javascript", "console.log('js', total + 1)")
            .await
            .unwrap();
        assert_eq!(r.output, "js 41\n", "{r:#?}");
        let r = s.run_code("javascript", "null.x").await.unwrap();
        assert_eq!(
            r.exception.as_ref().map(|e| e.name.as_str()),
            Some("TypeError"),
            "{r:#?}"
        );
        s.close().await.unwrap();
    });
    assert_clean(b);
}
all_backends!(state_is_kept_across_cells);

fn a_timeout_restarts_the_kernel_and_says_so(b: Backend) {
    let (rt, e) = open(b);
    rt.block_on(async {
        let s = e.session(SessionOptions::default()).await.expect("session");
        s.run_code("python", "x = 1").await.unwrap();
        // Interruptible: the kernel survives a KeyboardInterrupt.
        let mut r = cell("python", "import time\nprint('before', flush=True)\ntime.sleep(60)");
        r.timeout = Some(1.0);
        let r = s.run(r, None).await.unwrap();
        assert_eq!(r.status, Status::Timeout, "{r:#?}");
        assert_eq!(r.output, "before\n");
        assert!(!r.session.as_ref().unwrap().kernel_restarted, "{r:#?}");
        let r = s.run_code("python", "x").await.unwrap();
        assert_eq!(r.results[0].0["text/plain"], "1", "{r:#?}");
        // Not interruptible (signals blocked in C): killed and restarted, state lost.
        let mut r = cell("python", "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass");
        r.timeout = Some(1.0);
        let t = Instant::now();
        let r = s.run(r, None).await.unwrap();
        assert_eq!(r.status, Status::Timeout, "{r:#?}");
        assert!(r.session.as_ref().unwrap().kernel_restarted, "{r:#?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let r = s.run_code("python", "'x' in globals()").await.unwrap();
        assert_eq!(r.results[0].0["text/plain"], "False", "{r:#?}");
        // A memory kill takes the kernel: the cell says memory_limit and the next one works.
        let r = s.run_code("python", "a = bytearray(2 << 30)").await.unwrap();
        assert!(matches!(r.status, Status::MemoryLimit | Status::Error), "{r:#?}");
        let r = s.run_code("python", "print('alive')").await.unwrap();
        assert_eq!(r.output, "alive\n", "{r:#?}");
        s.close().await.unwrap();
    });
    assert_clean(b);
}
all_backends!(a_timeout_restarts_the_kernel_and_says_so);

fn files_round_trip_and_bad_paths_are_refused(b: Backend) {
    let (rt, e) = open(b);
    rt.block_on(async {
        let s = e.session(SessionOptions::default()).await.expect("session");
        let f = s.files();
        f.write("data/in.csv", b"a,b\n1,2\n".to_vec()).await.unwrap();
        let r = s
            .run_code("python", "import csv\nrows = list(csv.reader(open('data/in.csv')))\nopen('data/out.txt', 'w').write(str(len(rows)))")
            .await
            .unwrap();
        assert_eq!(r.status, Status::Success, "{r:#?}");
        assert_eq!(f.read("data/out.txt").await.unwrap(), b"2");
        let names: Vec<String> = f.list("").await.unwrap().into_iter().map(|i| i.path).collect();
        assert!(names.contains(&"data/in.csv".to_string()), "{names:?}");
        let tar = f.download("data").await.unwrap();
        f.remove("data").await.unwrap();
        assert!(f.read("data/in.csv").await.is_err());
        assert_eq!(f.upload(&tar).await.unwrap(), 2);
        assert_eq!(f.read("data/in.csv").await.unwrap(), b"a,b\n1,2\n");
        // The program plants links to the host; nothing follows them.
        s.command("ln -s /etc/passwd passwd; ln -s / root; mkfifo fifo").await.unwrap();
        assert!(f.read("passwd").await.is_err());
        assert!(f.read("root/etc/passwd").await.is_err());
        assert!(f.write("root/tmp/x", b"x".to_vec()).await.is_err());
        assert!(f.read("fifo").await.is_err());
        for bad in ["../x", "/etc/passwd", "a/../../x"] {
            assert!(f.write(bad, b"x".to_vec()).await.is_err(), "{bad}");
            assert!(f.read(bad).await.is_err(), "{bad}");
        }
        // A sparse file counts by its apparent size.
        s.command("truncate -s 90M sparse").await.unwrap();
        let info = f.list("").await.unwrap();
        let sparse = info.iter().find(|i| i.path == "sparse").unwrap();
        assert_eq!(sparse.size, 90 << 20);
        assert!(f.read("sparse").await.is_err(), "90 MiB read back past the cap");
        s.close().await.unwrap();
    });
    assert_clean(b);
}
all_backends!(files_round_trip_and_bad_paths_are_refused);

fn charts_and_outputs_come_back(b: Backend) {
    let (rt, e) = open(b);
    rt.block_on(async {
        let s = e.session(SessionOptions::default()).await.expect("session");
        let mut r = cell(
            "python",
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nopen('report.csv', 'w').write('n,sq\\n3,9\\n')",
        );
        r.outputs = vec!["*.csv".into()];
        let r = s.run(r, None).await.unwrap();
        assert_eq!(r.status, Status::Success, "{r:#?}");
        let png = r
            .results
            .iter()
            .find_map(|d| d.0.get("image/png"))
            .expect("a figure");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(r.files.len(), 1, "{:?}", r.files);
        assert_eq!(r.files[0].path, "report.csv");
        assert_eq!(r.files[0].mime_type, "text/csv");
        s.close().await.unwrap();
    });
    assert_clean(b);
}
all_backends!(charts_and_outputs_come_back);

fn output_streams_before_the_cell_ends_and_kill_frees_the_slot(b: Backend) {
    let (rt, e) = open(b);
    rt.block_on(async {
        let s = e.session(SessionOptions::default()).await.expect("session");
        let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let sink_seen = seen.clone();
        let sink = Box::new(move |kind: StreamKind, data: &[u8]| {
            if kind == StreamKind::Stdout {
                sink_seen
                    .lock()
                    .unwrap()
                    .push((Instant::now(), String::from_utf8_lossy(data).into()));
            }
        });
        let r = s
            .run(
                cell(
                    "python",
                    "import time\nprint('early', flush=True)\ntime.sleep(1.5)\nprint('late')",
                ),
                Some(sink),
            )
            .await
            .unwrap();
        let ended = Instant::now();
        assert_eq!(r.output, "early\nlate\n", "{r:#?}");
        let first = seen.lock().unwrap().first().cloned().expect("a chunk");
        assert!(first.1.contains("early"));
        assert!(
            ended.duration_since(first.0) >= Duration::from_millis(1000),
            "streamed only at the end"
        );

        let killer = s.clone();
        let t = Instant::now();
        let running =
            tokio::spawn(async move { killer.run_code("python", "while True: pass").await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.kill();
        let r = running.await.unwrap().unwrap();
        assert_eq!(r.status, Status::Killed, "{r:#?}");
        assert!(
            t.elapsed() < Duration::from_millis(500) + Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(e.running(), 0, "the slot was not freed");
        let r = s.run_code("python", "print('after kill')").await.unwrap();
        assert_eq!(r.output, "after kill\n", "{r:#?}");
        s.close().await.unwrap();
    });
    assert_clean(b);
}
all_backends!(output_streams_before_the_cell_ends_and_kill_frees_the_slot);

fn twenty_sessions_without_cross_talk(b: Backend) {
    let (rt, e) = open(b);
    rt.block_on(async {
        let mut sessions = Vec::new();
        for i in 0..20 {
            let s = e.session(SessionOptions::default()).await.expect("session");
            s.run_code("python", &format!("secret = {i}"))
                .await
                .unwrap();
            s.files()
                .write("who.txt", format!("{i}").into_bytes())
                .await
                .unwrap();
            sessions.push(s);
        }
        let checks = sessions.iter().enumerate().map(|(i, s)| async move {
            let r = s
                .run_code(
                    "python",
                    "import os\nprint(secret, open('who.txt').read(), sorted(os.listdir('.')))",
                )
                .await
                .unwrap();
            (i, r)
        });
        for (i, r) in futures_util::future::join_all(checks).await {
            assert_eq!(r.status, Status::Success, "{r:#?}");
            assert!(
                r.output.starts_with(&format!("{i} {i} ")),
                "{i}: {}",
                r.output
            );
        }
        for s in sessions {
            s.close().await.unwrap();
        }
    });
    assert_clean(b);
}
all_backends!(twenty_sessions_without_cross_talk);

fn a_dropped_or_idle_session_is_cleaned_up(b: Backend) {
    let mut policy = PolicyConfig::default();
    policy.session.idle_timeout_secs = 1.0;
    let (rt, e) = engine_on(b, policy);
    rt.block_on(async {
        let s = e.session(SessionOptions::default()).await.expect("session");
        s.run_code("python", "x = 1").await.unwrap();
        drop(s);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let s = e.session(SessionOptions::default()).await.expect("session");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(s.is_closed(), "idle past the policy's timeout");
        assert!(s.run_code("python", "1").await.is_err());
    });
    drop(e);
    drop(rt);
    assert_clean(b);
}
all_backends!(a_dropped_or_idle_session_is_cleaned_up);

/// Cancelling a one-shot run (dropping its future, as an aborted asyncio task does) stops its
/// sandbox within a second and frees its slot.
fn a_cancelled_run_stops_within_a_second(b: Backend) {
    let (rt, e) = open(b);
    rt.block_on(async {
        let engine = e.clone();
        let task = tokio::spawn(async move {
            let mut r = cell("python", "while True: pass");
            r.timeout = Some(30.0);
            engine.execute(r).await
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(e.running(), 1);
        let t = Instant::now();
        task.abort();
        let _ = task.await;
        assert_eq!(e.running(), 0, "the slot was not freed");
        loop {
            let left = match b {
                Backend::Native => sandbox_processes().len(),
                Backend::Docker(_) => docker_leftovers().len(),
            };
            if left == 0 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "still running after {:?}",
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_clean(b);
}
all_backends!(a_cancelled_run_stops_within_a_second);

/// Cancelling a session's cell (dropping its future, as an aborted asyncio task does)
/// interrupts that cell within a second and frees its slot; the session goes on with its state.
fn a_cancelled_cell_stops_within_a_second_and_the_session_goes_on(b: Backend) {
    let (rt, e) = open(b);
    rt.block_on(async {
        let s = e.session(SessionOptions::default()).await.expect("session");
        s.run_code("python", "kept = 7").await.unwrap();
        let cell_session = s.clone();
        let task = tokio::spawn(async move {
            let mut r = cell("python", "while True: pass");
            r.timeout = Some(30.0);
            cell_session.run(r, None).await
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(e.running(), 1);
        let t = Instant::now();
        task.abort();
        let _ = task.await;
        while e.running() > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "the slot was not freed after {:?}",
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = s.run_code("python", "print(kept)").await.unwrap();
        assert_eq!(r.output, "7\n", "{r:#?}");
        assert!(!r.session.as_ref().unwrap().kernel_restarted, "{r:#?}");
        s.close().await.unwrap();
    });
    assert_clean(b);
}
all_backends!(a_cancelled_cell_stops_within_a_second_and_the_session_goes_on);
