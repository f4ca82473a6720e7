# vana-sandbox Python guard: defence in depth, never the boundary.
# Installs an audit hook that reports sensitive events as JSON lines and prepares the program
# (`_main`, `_code`), which the loader (`python_loader.py`, run as
# `python3 -I /workspace/.vana/guard.py /workspace/main.py [args...]`) then runs.
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
if len(sys.argv) < 2:
    sys.exit("guard: no program given")
sys.argv = sys.argv[1:]
_path = sys.argv[0]
sys.path.insert(0, os.path.dirname(os.path.abspath(_path)))
# `-I` ignores PYTHONPATH; it points at the request's packages: honour it as plain Python does
# (after the program's directory, before the standard library).
sys.path[1:1] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
# Run the program as __main__ in a fresh module (what `python3 main.py` does), without runpy's
# imports on the start-up path.
_main = type(sys)("__main__")
_main.__file__ = _path
_main.__builtins__ = __builtins__
sys.modules["__main__"] = _main
with open(_path, "rb") as _f:
    _code = compile(_f.read(), _path, "exec")
del _f
