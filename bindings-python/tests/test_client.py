"""``vana_sandbox.Client`` against a real ``vana-sandbox serve`` (on a Unix socket, no keys; and
on 127.0.0.1 with a key), with the local ``Sandbox``'s tests parametrised over both modes, and
what only the server has: sessions, files, streaming callbacks, HTTP errors."""

import pathlib
import tempfile
import time

import pytest

from conftest import _Server
from vana_sandbox import Client, PolicyRejected, Sandbox, ServerError


@pytest.fixture(scope="module", params=["local", "remote"])
def sb(request, unix_server):
    """The same surface, local and remote."""
    if request.param == "local":
        with Sandbox() as s:
            yield s
    else:
        with Client(unix_server) as c:
            yield c


def test_run_code(sb):
    r = sb.run_code("print(6 * 7)")
    assert r.ok and r.stdout == "42\n" and r.exit_code == 0
    assert r.backend == "native"


def test_errors_and_inputs(sb):
    r = sb.run_code("import sys\nprint(input())\nsys.exit(3)", inputs=["hello"])
    assert r.status == "error" and r.exit_code == 3 and r.stdout == "hello\n"
    r = sb.run_code("echo $A $1", language="bash", env={"A": "x"}, args=["y"])
    assert r.stdout == "x y\n"
    r = sb.run_code("print(open('d.txt').read())", files={"d.txt": "data"})
    assert r.stdout == "data\n"


def test_limits_and_rejections(sb):
    assert sb.run_code("import time\ntime.sleep(5)", timeout=0.5).status == "timeout"
    with pytest.raises(PolicyRejected):
        sb.run_code("x", language="cobol")
    with pytest.raises(PolicyRejected):
        sb.run_code("print(1)", timeout=10_000)


def test_streaming_callbacks(unix_server):
    out, err, seen = [], [], []
    c = Client(unix_server)
    t0 = time.time()
    r = c.run_code(
        "import sys, time\nprint('a', flush=True)\nprint('e', file=sys.stderr, flush=True)\ntime.sleep(1.5)\nprint('b')",
        on_stdout=lambda t: (out.append(t), seen.append(time.time() - t0)),
        on_stderr=err.append,
    )
    assert r.ok and "".join(out) == "a\nb\n" and "".join(err) == "e\n"
    assert seen[0] < 1.2, seen  # the first chunk came before the run ended


def test_sessions_and_files(unix_server):
    c = Client(unix_server)
    with c.session() as s:
        assert s.run_code("x = 41").ok
        r = s.run_code("x + 1")
        assert r.results[0].text == "42"
        s.files.write("in/data.txt", "payload")
        assert s.files.read("in/data.txt") == b"payload"
        assert any(f["path"] == "in/data.txt" for f in s.files.list("in"))
        assert s.commands.run("cat in/data.txt").stdout == "payload"
        # A cell as local sessions have it: files in, outputs back, the exception named.
        r = s.run_code("open('out.csv', 'w').write(open('cfg.txt').read())", files={"cfg.txt": "a,b\n"}, outputs=["*.csv"])
        assert [(f.path, f.content) for f in r.files] == [("out.csv", b"a,b\n")], r.to_dict()
        r = s.run_code("1 / 0")
        assert r.status == "error" and r.error is not None and r.error.name == "ZeroDivisionError"
        assert not s.is_closed
        s.files.remove("in/data.txt")
        with pytest.raises(ServerError) as e:
            s.files.read("in/data.txt")
        assert e.value.status == 404 and e.value.code == "file_not_found"
        sid = s.id
    assert s.is_closed
    with pytest.raises(ServerError) as e:
        c._json("GET", f"/v1/sessions/{sid}")
    assert e.value.status == 404


def test_keys_over_tcp():
    import hashlib

    key = "py-client-key-0123456789"
    with tempfile.TemporaryDirectory() as d:
        cfg = pathlib.Path(d, "server.toml")
        cfg.write_text(
            '[server]\nlisten = "tcp:127.0.0.1:0"\n'
            f'[[tenant]]\nname = "py"\nkeys = [{{ sha256 = "{hashlib.sha256(key.encode()).hexdigest()}" }}]\n'
        )
        s = _Server(["--config", str(cfg)])
        url = "http://" + s.addr[len("tcp:"):]
        try:
            deadline = time.time() + 30
            while not Client(url).ready()["ready"]:
                assert time.time() < deadline
                time.sleep(0.05)
            assert Client(url, api_key=key).run_code("print('tcp')").stdout == "tcp\n"
            with pytest.raises(ServerError) as e:
                Client(url, api_key="wrong").run_code("print(1)")
            assert (e.value.status, e.value.code) == (401, "invalid_api_key")
            with pytest.raises(ServerError) as e:
                Client(url).run_code("print(1)")
            assert e.value.code == "missing_api_key"
            assert 'tenant="py"' in Client(url, api_key=key).metrics_text()
        finally:
            s.stop()
