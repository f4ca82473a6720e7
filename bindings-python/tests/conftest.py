import json
import os
import pathlib
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def pytest_configure(config):
    # The native backend needs root; CI runs as root. Fail loudly instead of skipping.
    if os.geteuid() != 0:
        raise pytest.UsageError("the vana-sandbox tests need root (the native backend creates namespaces and cgroups)")


def _binary() -> str:
    """The `vana-sandbox` CLI: $VANA_SANDBOX_BIN, else the workspace's debug build."""
    if os.environ.get("VANA_SANDBOX_BIN"):
        return os.environ["VANA_SANDBOX_BIN"]
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT, check=True, capture_output=True, text=True
    )
    target = json.loads(meta.stdout)["target_directory"]
    subprocess.run(["cargo", "build", "-q", "-p", "vana-sandbox", "--bin", "vana-sandbox"], cwd=ROOT, check=True)
    return os.path.join(target, "debug", "vana-sandbox")


class _Server:
    def __init__(self, args):
        self.proc = subprocess.Popen([_binary(), "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {line} {self.proc.stderr.read()}")
        self.addr = line[len("listening on "):].strip()

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(timeout=60) == 0, self.proc.stderr.read()


@pytest.fixture(scope="module")
def unix_server():
    """A `vana-sandbox serve` on a Unix socket (no keys) for the module's tests; its URL."""
    from vana_sandbox import Client

    with tempfile.TemporaryDirectory() as d:
        s = _Server(["--listen", f"unix:{d}/vana.sock"])
        url = "unix://" + s.addr[len("unix:"):]
        deadline = time.time() + 30
        while not Client(url).ready()["ready"]:
            assert time.time() < deadline, "the server never got ready"
            time.sleep(0.05)
        yield url
        s.stop()
