"""The Python API end to end: each language, limits to statuses, async overlap, exceptions,
the JSON round trip."""

import asyncio
import json
import time

import pytest

import vana_sandbox
from vana_sandbox import AsyncSandbox, BackendUnavailable, Execution, Policy, PolicyRejected, Sandbox, SandboxError

HELLO = {
    "python": "print('Hello, World!')",
    "javascript": "console.log('Hello, World!')",
    "bash": "echo 'Hello, World!'",
    "go": 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("Hello, World!")\n}\n',
    "rust": 'fn main() {\n    println!("Hello, World!");\n}\n',
}

RESULT_KEYS = {
    "id", "status", "exit_code", "signal", "output", "error", "stderr", "execution_time",
    "resource_usage", "compile", "truncated", "security_events", "backend", "language",
}


@pytest.fixture(scope="module")
def sb():
    with Sandbox() as s:
        yield s


@pytest.mark.parametrize("language", sorted(HELLO))
def test_each_language_runs(sb, language):
    r = sb.run_code(HELLO[language], language=language)
    assert r.ok, r.to_dict()
    assert r.status == "success"
    assert r.stdout == "Hello, World!\n"
    assert r.exit_code == 0
    assert r.language == language
    assert r.backend == "native"
    assert r.execution_time > 0
    assert r.resource_usage["memory_peak_bytes"] > 0


def test_inputs_files_env_args(sb):
    code = "import sys, os\nprint(sys.stdin.read().split(), open('d.txt').read(), os.environ['K'], sys.argv[1:])"
    r = sb.run_code(code, inputs=["a", "b"], files={"d.txt": "data", "bin.dat": b"\x00\x01"}, env={"K": "v"}, args=["x"])
    assert r.ok, r.to_dict()
    assert r.stdout == "['a', 'b'] data v ['x']\n"


def test_limits_map_to_statuses():
    with Sandbox(memory_mb=64, max_processes=16) as s:
        assert s.run_code("while True: pass", timeout=1).status == "timeout"
        assert s.run_code("a = []\nwhile True: a.append(' ' * 10**6)").status == "memory_limit"
        assert s.run_code("import sys\nsys.stdout.write('x' * (2 << 20))").status == "output_limit"
        r = s.run_code("import sys\nsys.exit(3)")
        assert (r.status, r.exit_code, r.ok) == ("error", 3, False)
        r = s.run_code("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert (r.status, r.signal) == ("killed", 9)
        r = s.run_code("fn main() { let x: u8 = \"no\"; }", language="rust")
        assert r.status == "compile_error" and r.compile["status"] == "error"


def test_policy_from_kwargs_and_files(tmp_path):
    p = Policy(memory_mb=128, timeout_secs=5, name="small")
    assert p.to_dict()["limits"]["memory_mb"] == 128
    toml = tmp_path / "p.toml"
    toml.write_text("name = 'from-toml'\n[limits]\ntimeout_secs = 2\n")
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"name": "from-json", "limits": {"max_processes": 8}}))
    assert Policy.from_file(toml).to_dict()["limits"]["timeout_secs"] == 2
    assert Policy.from_file(js).to_dict()["limits"]["max_processes"] == 8
    with Sandbox(policy=Policy.from_file(toml)) as s:
        assert s.run_code("import time\ntime.sleep(5)").status == "timeout"
        with pytest.raises(PolicyRejected, match="exceeds the maximum"):
            s.run_code("print(1)", timeout=10)
    with pytest.raises(PolicyRejected):
        Policy(memory_mb=0)
    with pytest.raises(TypeError):
        Policy(memroy_mb=1)


def test_exceptions(sb):
    assert issubclass(PolicyRejected, SandboxError) and issubclass(BackendUnavailable, SandboxError)
    with pytest.raises(PolicyRejected, match="unknown language"):
        sb.run_code("x", language="cobol")
    with pytest.raises(PolicyRejected, match="code is empty"):
        sb.run_code("   ")
    with pytest.raises(PolicyRejected, match="network access is disabled"):
        sb.run_code("print(1)", network=True)
    with pytest.raises(BackendUnavailable):
        Sandbox(backend="nonsense")
    with pytest.raises(TypeError):
        Sandbox(memroy_mb=1)
    closed = Sandbox()
    closed.close()
    with pytest.raises(SandboxError):
        closed.run_code("print(1)")


def test_json_round_trip(sb):
    r = sb.run_code("print('round trip')")
    d = r.to_dict()
    assert RESULT_KEYS <= set(d)
    again = Execution(json.loads(json.dumps(d)))
    assert again.to_dict() == d
    assert again.stdout == "round trip\n"
    for key in ("cpu_time", "memory_peak", "disk_usage"):
        assert key in d["resource_usage"]


def test_async_gather_overlaps():
    async def main():
        async with AsyncSandbox(max_concurrency=10) as s:
            t = time.monotonic()
            results = await asyncio.gather(*(s.run_code(f"import time\ntime.sleep(0.5)\nprint({i})") for i in range(10)))
            return time.monotonic() - t, results

    elapsed, results = asyncio.run(main())
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(10)]
    # Ten half-second runs back to back would take 5 s: they must overlap (the GIL is released).
    assert elapsed < 3.0, elapsed


def test_threads_overlap_too(sb):
    import threading

    out = []
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: out.append(sb.run_code("import time; time.sleep(0.5)").status)) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert out == ["success"] * 4
    assert time.monotonic() - start < 1.9


def test_capabilities(sb):
    caps = sb.capabilities()
    names = {l["name"]: l["available"] for l in caps["layers"]}
    assert names["pid_namespace"] and names["seccomp"] and names["cgroup_memory"]
    assert vana_sandbox.__version__


def test_packages(monkeypatch, tmp_path):
    # A package cache of the test's own; the wheel comes from PyPI, then from the cache.
    monkeypatch.setenv("VANA_SANDBOX_PACKAGE_DIR", str(tmp_path / "packages"))
    with Sandbox() as s:
        r = s.run_code("import tabulate; print(tabulate.__version__, tabulate.__file__)", packages=["tabulate==0.9.0"])
        assert r.ok and r.stdout == "0.9.0 /opt/vana-packages/python/tabulate/__init__.py\n", r.to_dict()
        assert r.packages["cached"] is False
        assert r.packages["installed"] == [{"name": "tabulate", "version": "0.9.0"}]
        again = s.run_code("import tabulate", packages=["tabulate==0.9.0"])
        assert again.ok and again.packages["cached"] is True
        with pytest.raises(PolicyRejected, match="path or URL"):
            s.run_code("print(1)", packages=["https://evil.example/x.whl"])
        with pytest.raises(PolicyRejected, match="installer option"):
            s.run_code("print(1)", packages=["--index-url=https://evil.example/simple"])
