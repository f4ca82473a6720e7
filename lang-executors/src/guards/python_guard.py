# vana-sandbox Python guard: defence in depth, never the boundary.
# Installs an audit hook that reports sensitive events as JSON lines. `site` runs it through the
# loader (`python_loader.py`) before the program, which is the interpreter's own main script
# (`python3 -I -B -u /workspace/main.py [args...]`, started as `/workspace/.vana/venv/bin/python3`).
import os
import sys

_EVENTS = "/workspace/.vana/events.jsonl"
_WRITE_OK = ("/workspace/", "/tmp/", "/dev/shm/", "/dev/null", "/dev/stdout", "/dev/stderr")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_seen = set()
_fd = []


def _emit(kind, detail):
    key = (kind, detail)
    if key in _seen or len(_seen) >= 100:
        return
    _seen.add(key)
    try:
        import json  # only when there is something to report: keeps start-up cheap

        if not _fd:
            _fd.append(os.open(_EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
        os.write(_fd[0], (json.dumps({"kind": kind, "detail": detail[:300]}) + "\n").encode())
    except Exception:
        pass


_SUBPROCESS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn")
_NETWORK = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg")
_CTYPES = ("ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.addressof")
_TAMPER = ("sys.setprofile", "sys.settrace", "sys.addaudithook")
# Every event the hook looks at: the others (thousands at an import of numpy, most of them
# `object.__getattr__`) leave after one set lookup.
_WATCHED = frozenset(_SUBPROCESS + _NETWORK + _CTYPES + _TAMPER + ("socket.getaddrinfo", "open"))


def _hook(event, args):
    if event not in _WATCHED:
        return
    try:
        if event in _SUBPROCESS:
            _emit("subprocess", "%s %r" % (event, args[0] if args else ""))
        elif event in _NETWORK:
            _emit("network", "%s %r" % (event, args[1] if len(args) > 1 else ""))
        elif event == "socket.getaddrinfo":
            _emit("network", "getaddrinfo %r" % (args[0],))
        elif event in _CTYPES:
            _emit("ctypes", "%s %r" % (event, args[0] if args else ""))
        elif event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(flags, int) and flags & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if writing and isinstance(path, (str, bytes)):
                p = os.path.abspath(os.fsdecode(path))
                if not p.startswith(_WRITE_OK) and p != "/workspace":
                    _emit("write_outside_workspace", p)
        elif event in _TAMPER:
            _emit("tamper", event)
    except Exception:
        pass


sys.addaudithook(_hook)
# The interpreter was started under the name of the run's virtual environment only so that
# `site` would run the guard (`python_loader.py`): give the program the interpreter itself, as
# `python3 main.py` would (this also keeps `site` from reading the environment a second time).
sys.executable = sys._base_executable
sys.prefix, sys.exec_prefix = sys.base_prefix, sys.base_exec_prefix
sys._home = None
# `-I` leaves the program's directory off the path and ignores PYTHONPATH, which points at the
# request's packages: put both where plain Python does (before the standard library).
_dir = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else os.getcwd()
sys.path[0:0] = [_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
