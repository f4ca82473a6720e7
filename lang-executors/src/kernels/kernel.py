"""vana-sandbox session kernel: runs inside the sandbox for the life of a session.

It keeps Python state between cells (globals, imports, cwd), runs Bash cells with a persistent
working directory and exported environment, and hands JavaScript cells to a Node kernel it starts
on first use. It talks to the host over its standard input (requests) and the standard output it
was started with (replies), one JSON object per line. Everything the cells write to file
descriptors 1 and 2 — also from subprocesses — is captured through pipes and sent as `stdout` and
`stderr` replies of the running cell.

This program runs with the program's rights inside the sandbox: what it reports (errors, values,
exit codes) is the program's word. Time, memory and output limits are the host's to enforce.
"""

import ast
import base64
import importlib
import io
import json
import linecache
import os
import queue
import resource
import secrets
import signal
import subprocess
import sys
import threading
import traceback

PROTO = os.fdopen(os.dup(1), "wb", buffering=0)
PROTO_LOCK = threading.Lock()
CHUNK = 65536
# Variables of a Bash cell's environment that describe the shell, not the session.
SHELL_VARS = {"PWD", "OLDPWD", "SHLVL", "_", "VANA_STATE"}
# `-I` ignores PYTHONPATH; it points at the session's packages (a read-only directory the host
# adds to while the session lives), so put it where plain Python would: before the library.
_STDLIB = next((i for i, p in enumerate(sys.path) if p.startswith(sys.base_prefix)), len(sys.path))
sys.path[_STDLIB:_STDLIB] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def send(msg):
    line = json.dumps(msg, ensure_ascii=False).encode("utf-8", "replace") + b"\n"
    with PROTO_LOCK:
        PROTO.write(line)


class Capture:
    """Forwards what is written to a file descriptor as replies of the current cell."""

    def __init__(self, fd, stream):
        self.stream = stream
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)
        self.r = r
        self.cell = None
        self.token = None
        self.drained = threading.Event()
        threading.Thread(target=self.pump, daemon=True).start()

    def forward(self, data):
        if data and self.cell is not None:
            send({"ev": self.stream, "id": self.cell, "data": data.decode("utf-8", "replace")})

    def pump(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self.r, CHUNK)
            except InterruptedError:
                continue
            if not chunk:
                return
            buf += chunk
            while True:
                token = self.token
                i = buf.find(token) if token else -1
                if i >= 0:
                    self.forward(buf[:i])
                    buf = buf[i + len(token):]
                    self.token = None
                    self.drained.set()
                    continue
                keep = 0
                if token:
                    for n in range(min(len(token) - 1, len(buf)), 0, -1):
                        if token.startswith(buf[-n:]):
                            keep = n
                            break
                self.forward(buf[: len(buf) - keep])
                buf = buf[len(buf) - keep:]
                break

    def drain(self, fd):
        """Waits until everything written to `fd` before this call has been forwarded."""
        self.drained.clear()
        token = b"\0vana-" + secrets.token_hex(8).encode() + b"\0"
        self.token = token
        try:
            os.write(fd, token)
        except OSError:
            return
        self.drained.wait(2.0)


class Kernel:
    def __init__(self, config):
        self.globals = {"__name__": "__main__", "__builtins__": __builtins__}
        self.bash = config.get("bash", ["/bin/bash"])
        self.node_argv = config.get("javascript")
        self.node = None
        self.env = dict(os.environ)
        self.current = None
        # Interrupts that came before their cell started (it is skipped when it does).
        self.early_interrupts = set()
        self.lock = threading.Lock()
        self.child = None
        os.environ.setdefault("MPLBACKEND", "Agg")
        sys.stdout.flush()
        sys.stderr.flush()
        self.out = Capture(1, "stdout")
        self.err = Capture(2, "stderr")

    # ------------------------------------------------------------------ cells
    @staticmethod
    def cpu():
        usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def interrupt(self, cell):
        """Interrupts `cell`: now if it runs, or as soon as it starts (from the reader thread)."""
        with self.lock:
            if self.current is None or cell != self.current:
                if len(self.early_interrupts) > 64:
                    self.early_interrupts.clear()
                self.early_interrupts.add(cell)
                return
            if self.child is not None:
                try:
                    os.killpg(self.child.pid, signal.SIGINT)
                except OSError:
                    pass
            # A real signal: it also ends a blocking call (sleep, read) in the cell.
            os.kill(os.getpid(), signal.SIGINT)

    def run(self, req):
        cell = req.get("id")
        cpu_before = self.cpu()
        self.out.cell = self.err.cell = cell
        with self.lock:
            self.current = cell
            early = cell in self.early_interrupts
            self.early_interrupts.discard(cell)
        status = {"exit": 0}
        try:
            lang = req.get("lang", "python")
            if early:
                raise KeyboardInterrupt
            if lang == "python":
                self.python(cell, req.get("code", ""), status)
            elif lang == "bash":
                self.run_bash(cell, req.get("code", ""), status)
            elif lang == "javascript":
                self.javascript(cell, req.get("code", ""), status)
            else:
                self.error(cell, "ValueError", "no kernel for language %r" % lang, "", status)
        except KeyboardInterrupt:
            self.error(cell, "KeyboardInterrupt", "interrupted", "", status)
        finally:
            with self.lock:
                self.current = None
            for f in (sys.stdout, sys.stderr):
                try:
                    f.flush()
                except Exception:
                    pass
            self.out.drain(1)
            self.err.drain(2)
            send({"ev": "done", "id": cell, "exit": status["exit"], "cwd": os.getcwd(),
                  "cpu": max(0.0, self.cpu() - cpu_before)})
            self.out.cell = self.err.cell = None

    def error(self, cell, name, value, tb, status):
        status["exit"] = 1
        send({"ev": "error", "id": cell, "name": name, "value": value, "traceback": tb})

    def display(self, cell, value):
        data = {}
        try:
            data["text/plain"] = repr(value)
        except Exception as e:  # a broken __repr__ is the program's business
            data["text/plain"] = "<unrepresentable: %s>" % e
        png = getattr(value, "_repr_png_", None)
        if callable(png):
            try:
                raw = png()
                if isinstance(raw, bytes):
                    data["image/png"] = base64.b64encode(raw).decode()
            except Exception:
                pass
        send({"ev": "display", "id": cell, "data": data})

    def figures(self, cell):
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None:
            return
        try:
            for num in plt.get_fignums():
                buf = io.BytesIO()
                plt.figure(num).savefig(buf, format="png")
                send({"ev": "display", "id": cell,
                      "data": {"image/png": base64.b64encode(buf.getvalue()).decode(),
                               "text/plain": "<Figure %d>" % num}})
            plt.close("all")
        except Exception as e:
            send({"ev": "stderr", "id": cell, "data": "vana: a figure could not be saved: %s\n" % e})

    def python(self, cell, code, status):
        # Tracebacks quote the cell's lines, as a notebook's do.
        linecache.cache["<cell>"] = (len(code), None, code.splitlines(True), "<cell>")
        # Packages installed since the last cell appear in directories already on sys.path.
        importlib.invalidate_caches()
        try:
            tree = ast.parse(code, "<cell>", "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, "<cell>", "exec"), self.globals)
            if last is not None:
                value = eval(compile(last, "<cell>", "eval"), self.globals)
                if value is not None:
                    self.globals["_"] = value
                    self.display(cell, value)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # SystemExit too: the session goes on
            tb = traceback.format_exception(type(e), e, e.__traceback__)
            # Frames of the kernel itself are not the user's.
            tb = [t for t in tb if "vana-kernel" not in t and __file__ not in t]
            self.error(cell, type(e).__name__, str(e), "".join(tb), status)
        finally:
            self.figures(cell)

    def run_bash(self, cell, code, status):
        state = "/tmp/.vana-bash-%s" % secrets.token_hex(6)
        script = (
            'trap \'printf "%s\\0" "$PWD" > "$VANA_STATE"; env -0 >> "$VANA_STATE"\' EXIT\n'
            + code + "\n"
        )
        env = dict(self.env)
        env["VANA_STATE"] = state
        try:
            self.child = subprocess.Popen(
                self.bash + ["-c", script], env=env, cwd=os.getcwd(),
                stdin=subprocess.DEVNULL, start_new_session=True)
            status["exit"] = self.child.wait()
        except KeyboardInterrupt:
            self.stop_child()
            raise
        finally:
            self.child = None
        try:
            with open(state, "rb") as f:
                parts = f.read().split(b"\0")
            os.unlink(state)
            cwd = parts[0].decode("utf-8", "replace")
            env = {}
            for kv in parts[1:]:
                k, sep, v = kv.decode("utf-8", "replace").partition("=")
                if sep and k not in SHELL_VARS:
                    env[k] = v
            self.env = env
            if os.path.isdir(cwd):
                os.chdir(cwd)
        except OSError:
            pass  # the cell ended before its trap ran (killed): state stays as it was

    def stop_child(self):
        child = self.child
        if child is not None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except OSError:
                pass
            child.wait()

    def javascript(self, cell, code, status):
        if not self.node_argv:
            self.error(cell, "ValueError", "no JavaScript kernel in this sandbox", "", status)
            return
        if self.node is None or self.node.poll() is not None:
            r, w = os.pipe()
            self.node = subprocess.Popen(
                self.node_argv, stdin=subprocess.PIPE, pass_fds=(w,), cwd=os.getcwd(),
                env=dict(self.env, VANA_REPLY_FD=str(w)), start_new_session=True)
            os.close(w)
            self.node_replies = os.fdopen(r, "rb")
        self.child = self.node
        try:
            self.node.stdin.write(json.dumps({"id": cell, "code": code}).encode() + b"\n")
            self.node.stdin.flush()
            while True:
                line = self.node_replies.readline()
                if not line:
                    self.error(cell, "KernelDied", "the JavaScript kernel exited", "", status)
                    self.node = None
                    return
                msg = json.loads(line)
                if msg.get("ev") == "done":
                    if msg.get("error"):
                        e = msg["error"]
                        self.error(cell, e.get("name", "Error"), e.get("value", ""),
                                   e.get("traceback", ""), status)
                    elif msg.get("value") is not None:
                        send({"ev": "display", "id": cell, "data": {"text/plain": msg["value"]}})
                    return
        except KeyboardInterrupt:
            self.stop_child()
            self.node = None
            raise
        finally:
            self.child = None


def main():
    requests = queue.Queue()
    config = json.loads(sys.stdin.readline() or "{}")
    kernel = Kernel(config)

    def reader():
        for line in sys.stdin:
            try:
                req = json.loads(line)
            except ValueError:
                continue
            if req.get("op") == "interrupt":
                kernel.interrupt(req.get("id"))
            else:
                requests.put(req)
        requests.put(None)

    threading.Thread(target=reader, daemon=True).start()
    send({"ev": "ready", "pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        try:
            req = requests.get()
        except KeyboardInterrupt:
            continue  # an interrupt that came between cells
        if req is None:
            return
        if req.get("op") == "run":
            try:
                kernel.run(req)
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
