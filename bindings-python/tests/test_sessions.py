"""Sessions from Python on real sandboxes, every test on the native backend and on Docker (runc): state across cells with a failing cell between,
a timeout that restarts the kernel and says so, files in and out, a matplotlib chart as PNG,
output streamed before the run ends (callbacks and ``async for``), cancellation and ``kill()``
freeing the slot within a second, 20 sessions at once without cross-talk, and bad input (paths
out of the workspace, planted links and FIFOs, hostile archives) refused with clear errors."""

import asyncio
import io
import os
import signal
import tarfile
import threading
import time

import pytest

from vana_sandbox import (
    AsyncSandbox,
    CellExecution,
    ExecutionError,
    FileError,
    OutputChunk,
    PolicyRejected,
    Sandbox,
    SandboxError,
    SessionClosed,
)


@pytest.fixture(scope="module", params=["native", "docker"])
def backend(request):
    """Every test runs on both backends. Docker needs the engine and the runtime image
    (scripts/test.sh sets them up); without them the test errors, it is never skipped."""
    return request.param


@pytest.fixture(scope="module")
def sb(backend):
    with Sandbox(backend=backend) as s:
        yield s


def wait_until(pred, within):
    end = time.monotonic() + within
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_state_is_kept_across_cells_with_a_failing_cell_between(sb):
    with sb.session() as s:
        r = s.run_code("import json\nx = 41\nopen('note.txt', 'w').write('kept')\nx + 1")
        assert isinstance(r, CellExecution)
        assert (r.status, r.error, r.text, r.cell) == ("success", None, "42", 1), r.to_dict()
        failing = s.run_code("print('before')\n1 / 0")
        assert failing.status == "error" and failing.exit_code == 1
        assert failing.stdout == "before\n"
        assert isinstance(failing.error, ExecutionError)
        assert (failing.error.name, failing.error.value) == ("ZeroDivisionError", "division by zero")
        assert "1 / 0" in failing.error.traceback and "ZeroDivisionError" in failing.error.traceback
        assert not failing.kernel_restarted
        # The variable, the import and the file are all still there.
        r = s.run_code("print(x, json.dumps({'k': open('note.txt').read()}))")
        assert r.stdout == '41 {"k": "kept"}\n', r.to_dict()
        # A warning on stderr does not make a cell fail.
        r = s.run_code("import sys\nsys.stderr.write('careful\\n')\n'fine'")
        assert (r.ok, r.error, r.stderr, r.text) == (True, None, "careful\n", "'fine'")
        # JavaScript and Bash keep theirs too.
        s.run_code("let n = 5", language="javascript")
        assert s.run_code("n * 2", language="javascript").text == "10"
        s.commands.run("export GREETING=hi; mkdir -p sub; cd sub")
        r = s.commands.run("echo $GREETING; pwd")
        assert (r.exit_code, r.stdout) == (0, "hi\n/workspace/sub\n"), r.to_dict()
        r = s.commands.run("exit 3")
        assert (r.status, r.exit_code, r.error.name) == ("error", 3, "Error")


def test_a_timeout_restarts_the_kernel_and_says_so(sb):
    with sb.session() as s:
        s.run_code("x = 1")
        # Interruptible: the cell is stopped, the kernel (and x) survive.
        r = s.run_code("import time\nprint('started', flush=True)\ntime.sleep(60)", timeout=1)
        assert (r.status, r.stdout, r.kernel_restarted) == ("timeout", "started\n", False), r.to_dict()
        assert r.error.name == "TimeoutError"
        assert s.run_code("x").text == "1"
        # Not interruptible: the kernel is killed and restarted, and the result says so.
        t = time.monotonic()
        r = s.run_code(
            "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass",
            timeout=1,
        )
        assert r.status == "timeout" and r.kernel_restarted, r.to_dict()
        assert time.monotonic() - t < 5
        assert s.run_code("'x' in globals()").text == "False"
        assert s.run_code("print('alive')").stdout == "alive\n"


def test_files_round_trip(sb, tmp_path):
    with sb.session() as s:
        s.files.write("data/in.csv", "a,b\n1,2\n")
        s.files.write("data/blob.bin", b"\x00\x01\xff")
        assert s.files.read("data/in.csv") == "a,b\n1,2\n"
        assert s.files.read("data/blob.bin", format="bytes") == b"\x00\x01\xff"
        r = s.run_code("import csv\nrows = list(csv.reader(open('data/in.csv')))\nopen('data/out.txt', 'w').write(str(len(rows)))")
        assert r.ok, r.to_dict()
        assert s.files.read("data/out.txt") == "2"
        listing = {e.path: e for e in s.files.list("data")}
        assert {"data/in.csv", "data/blob.bin", "data/out.txt"} <= set(listing)
        assert (listing["data/blob.bin"].type, listing["data/blob.bin"].size, listing["data/blob.bin"].name) == ("file", 3, "blob.bin")
        assert s.files.exists("data/in.csv") and not s.files.exists("data/nope")
        archive = s.files.download("data")
        names = sorted(m.name for m in tarfile.open(fileobj=io.BytesIO(archive)).getmembers() if m.isfile())
        assert names == ["data/blob.bin", "data/in.csv", "data/out.txt"]
        s.files.remove("data")
        assert not s.files.exists("data/in.csv")
        with pytest.raises(FileError):
            s.files.read("data/in.csv")
        assert s.files.upload(archive) == 3
        assert s.files.read("data/in.csv") == "a,b\n1,2\n"
        # Files given with the cell, and output files named by the cell.
        r = s.run_code(
            "print(open('given.txt').read())\nopen('report.csv', 'w').write('n\\n1\\n')",
            files={"given.txt": "hello"},
            outputs=["*.csv"],
        )
        assert r.stdout == "hello\n"
        assert [(f.path, f.mime_type, f.content) for f in r.files] == [("report.csv", "text/csv", b"n\n1\n")]


def test_a_matplotlib_chart_comes_back_as_png(sb):
    with sb.session() as s:
        r = s.run_code(
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nprint('plotted')"
        )
        assert r.ok, r.to_dict()
        figures = [d for d in r.results if d.is_figure]
        assert len(figures) == 1, r.results
        png = figures[0].png_bytes
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
        assert figures[0].png.startswith("iVBOR")  # base64 too, as E2B gives it
        assert r.text is None  # no trailing expression


def test_one_shot_runs_return_output_files(sb):
    r = sb.run_code("open('out.json', 'w').write('{}')\nopen('skip.txt', 'w').write('x')", outputs=["*.json"])
    assert r.ok and [(f.path, f.content) for f in r.files] == [("out.json", b"{}")]
    assert r.results == [] and r.exception is None


SLOW = "import time\nprint('early', flush=True)\ntime.sleep(1.5)\nprint('late')"


def check_streamed(run):
    """``run(on_stdout)`` streams SLOW's output to the callback, on the caller's thread, before
    it ends."""
    seen, caller = [], threading.get_ident()
    r = run(lambda chunk: seen.append((time.monotonic(), chunk, threading.get_ident())))
    ended = time.monotonic()
    assert r.stdout == "early\nlate\n"
    assert "".join(c for _, c, _ in seen) == "early\nlate\n"
    assert seen[0][1].startswith("early")
    assert ended - seen[0][0] >= 1.0, "streamed only at the end"
    assert all(t == caller for _, _, t in seen), "callbacks run on the caller's thread"


def test_streaming_callbacks_get_chunks_before_the_run_ends(sb):
    check_streamed(lambda cb: sb.run_code(SLOW, on_stdout=cb))
    with sb.session() as s:
        check_streamed(lambda cb: s.run_code(SLOW, on_stdout=cb))
        got = []
        s.commands.run("echo out; echo err >&2", on_stderr=got.append)
        assert got == ["err\n"]
    # stderr too, and a callback that raises stops the run and is raised.
    got = []
    r = sb.run_code("import sys\nsys.stderr.write('oops\\n')", on_stderr=got.append)
    assert got == ["oops\n"] and r.stderr == "oops\n"

    def boom(_chunk):
        raise ValueError("callback failed")

    t = time.monotonic()
    with pytest.raises(ValueError, match="callback failed"):
        sb.run_code("import time\nprint('x', flush=True)\ntime.sleep(30)", on_stdout=boom)
    assert time.monotonic() - t < 5
    assert wait_until(lambda: sb.running == 0, 1)


def test_async_streaming_and_callbacks(backend):
    async def main():
        async with AsyncSandbox(backend=backend) as sb:
            loop = asyncio.get_running_loop()
            seen = []
            start = time.monotonic()
            stream = sb.stream(SLOW)
            async for chunk in stream:
                assert isinstance(chunk, OutputChunk)
                seen.append((time.monotonic(), chunk))
            assert "".join(c.data for _, c in seen) == "early\nlate\n"
            assert seen[0][1].stream == "stdout" and seen[0][1].data.startswith("early")
            assert seen[0][0] - start < 1.4, "the first chunk came only at the end"
            assert stream.result.ok and stream.result.stdout == "early\nlate\n"
            async with sb.session() as s:
                on_loop, chunks = [], []

                async def on_stdout(chunk):  # a coroutine callback, scheduled on the loop
                    chunks.append(chunk)
                    on_loop.append(asyncio.get_running_loop() is loop)

                r = await s.run_code(SLOW, on_stdout=on_stdout)
                await asyncio.sleep(0.05)
                assert r.stdout == "early\nlate\n" and "".join(chunks) == "early\nlate\n" and all(on_loop)
                st = s.stream("for i in range(3): print(i)")
                parts = [c.data async for c in st]
                assert "".join(parts) == "0\n1\n2\n" and st.result.ok

    asyncio.run(main())


def test_cancelling_a_task_frees_the_slot_within_a_second(backend):
    async def main():
        async with AsyncSandbox(backend=backend, max_concurrency=2) as sb:
            # One-shot: the task's future is dropped, its sandbox stopped at once.
            task = asyncio.ensure_future(sb.run_code("while True: pass", timeout=30))
            await asyncio.sleep(0.8)
            assert sb.running == 1
            t = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            while sb.running:
                assert time.monotonic() - t < 1.0, "one-shot slot still taken"
                await asyncio.sleep(0.01)
            # A session's cell: interrupted, the session goes on with its state.
            async with sb.session() as s:
                await s.run_code("kept = 7")
                task = asyncio.ensure_future(s.run_code("while True: pass", timeout=30))
                await asyncio.sleep(0.8)
                assert sb.running == 1
                t = time.monotonic()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                while sb.running:
                    assert time.monotonic() - t < 1.0, "cell slot still taken"
                    await asyncio.sleep(0.01)
                r = await s.run_code("print(kept)")
                assert (r.stdout, r.kernel_restarted) == ("7\n", False), r.to_dict()
                # An abandoned stream stops its cell too.
                async with s.stream("import time\nprint('a', flush=True)\ntime.sleep(30)") as st:
                    async for chunk in st:
                        assert chunk.data.startswith("a")
                        break
                t = time.monotonic()
                while sb.running:
                    assert time.monotonic() - t < 1.0, "abandoned stream still running"
                    await asyncio.sleep(0.01)

    asyncio.run(main())


def test_kill_stops_runs_from_another_thread(sb):
    results = {}
    s = sb.session()

    def one_shot():
        results["one_shot"] = sb.run_code("while True: pass", timeout=30)

    def cell():
        results["cell"] = s.run_code("while True: pass", timeout=30)

    threads = [threading.Thread(target=f) for f in (one_shot, cell)]
    for th in threads:
        th.start()
    assert wait_until(lambda: sb.running == 2, 10)
    t = time.monotonic()
    assert sb.kill() == 2
    for th in threads:
        th.join(5)
    assert time.monotonic() - t < 1.0
    assert sb.running == 0
    assert results["one_shot"].status == "killed"
    assert results["cell"].status == "killed" and results["cell"].error.name == "Killed"
    assert s.run_code("print('still open')").stdout == "still open\n"
    # kill() closes a session, E2B-style.
    s.kill()
    assert s.is_closed and not s.is_running()
    with pytest.raises(SessionClosed):
        s.run_code("1")


def test_ctrl_c_stops_a_blocking_run(sb):
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    t = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        sb.run_code("while True: pass", timeout=30)
    assert time.monotonic() - t < 2.0
    assert wait_until(lambda: sb.running == 0, 1)


def test_twenty_sessions_without_cross_talk(backend):
    async def main():
        async with AsyncSandbox(backend=backend) as sb:
            sessions = []
            for i in range(20):
                s = await sb.session()
                await s.run_code("secret = %d" % i)
                await s.files.write("who.txt", str(i))
                sessions.append(s)

            async def check(i, s):
                r = await s.run_code("import os\nprint(secret, open('who.txt').read(), sorted(f for f in os.listdir('.') if not f.startswith('.')))")
                return i, r

            for i, r in await asyncio.gather(*(check(i, s) for i, s in enumerate(sessions))):
                assert r.stdout == "%d %d ['who.txt']\n" % (i, i), r.to_dict()
            assert len({s.id for s in sessions}) == 20
            for s in sessions:
                await s.close()
            assert all(s.is_closed for s in sessions)

    asyncio.run(main())


def _tar(*members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info, data if kind == tarfile.REGTYPE else None


def test_bad_input_gets_clear_errors(sb):
    with sb.session() as s:
        for bad in ("../escape", "/etc/passwd", "a/../../x", ""):
            with pytest.raises(FileError, match="workspace|relative|component|1-1024"):
                s.files.write(bad, "x")
            with pytest.raises(FileError):
                s.files.read(bad)
        # Links and FIFOs the program plants are never followed or read.
        s.commands.run("ln -s /etc/passwd passwd; ln -s / root; mkfifo fifo")
        for path in ("passwd", "root/etc/passwd", "fifo"):
            with pytest.raises(FileError):
                s.files.read(path)
        with pytest.raises(FileError):
            s.files.write("root/tmp/x", "x")
        kinds = {e.path: e.type for e in s.files.list("")}
        assert (kinds["passwd"], kinds["root"], kinds["fifo"]) == ("symlink", "symlink", "other")
        s.files.remove("root")  # removes the link, not what it points to
        assert os.path.isdir("/etc")
        # Hostile archives are refused whole, before anything is written.
        for archive in (
            _tar(_member("ok.txt", b"fine"), _member("../escape", b"x")),
            _tar(_member("ok.txt", b"fine"), _member("link", kind=tarfile.SYMTYPE, link="/etc/passwd")),
            _tar(_member("ok.txt", b"fine"), _member("hard", kind=tarfile.LNKTYPE, link="ok.txt")),
            _tar(_member("ok.txt", b"fine"), _member("dev", kind=tarfile.CHRTYPE)),
        ):
            with pytest.raises(FileError):
                s.files.upload(archive)
            assert not s.files.exists("ok.txt")
        with pytest.raises(TypeError):
            s.files.write("x.txt", 42)
        # Cells that break the policy are refused; a flood of output is cut.
        with pytest.raises(PolicyRejected, match="unknown language"):
            s.run_code("x", language="cobol")
        with pytest.raises(PolicyRejected, match="timeout must be"):
            s.run_code("1", timeout=10**6)
        r = s.run_code("import sys\nfor _ in range(4096): sys.stdout.write('x' * 1024)")
        assert r.status == "output_limit" and r.truncated["stdout"], r.to_dict()["status"]
        assert s.run_code("print('ok')").stdout == "ok\n"
    with pytest.raises(SessionClosed):
        s.run_code("1")
    with pytest.raises(SessionClosed):
        s.files.write("x.txt", "x")
    assert issubclass(FileError, SandboxError) and issubclass(SessionClosed, SandboxError)


def test_closing_the_sandbox_closes_its_sessions(backend):
    sb = Sandbox(backend=backend)
    s = sb.session()
    s.run_code("1")
    sb.close()
    assert s.is_closed
    with pytest.raises(SandboxError):
        sb.session()


def test_install_adds_packages_for_the_next_cell(backend, monkeypatch, tmp_path):
    # A package cache of the test's own; the wheels come from PyPI.
    monkeypatch.setenv("VANA_SANDBOX_PACKAGE_DIR", str(tmp_path / "packages"))
    with Sandbox(backend=backend) as sb, sb.session() as s:
        s.run_code("x = 41")
        missing = s.run_code("import tabulate")
        assert missing.error is not None and missing.error.name == "ModuleNotFoundError"
        report = s.install(["tabulate==0.9.0"])
        assert report["installed"] == [{"name": "tabulate", "version": "0.9.0"}]
        r = s.run_code("import tabulate; print(tabulate.__version__, x + 1)")
        assert r.stdout == "0.9.0 42\n", r.to_dict()
        with pytest.raises(PolicyRejected, match="already in this session"):
            s.install(["tabulate==0.8.10"])
        with pytest.raises(PolicyRejected, match="path or URL"):
            s.install(["../evil"])

    async def main():
        async with AsyncSandbox(backend=backend) as sb:
            async with sb.session() as s:
                report = await s.install(["tabulate==0.9.0"])
                assert report["cached"] is True
                r = await s.run_code("import tabulate; print(tabulate.__version__, tabulate.__file__)")
                assert r.stdout == "0.9.0 /opt/vana-packages/python/tabulate/__init__.py\n"

    asyncio.run(main())
