# vana-sandbox Python guard, loader. The program is the interpreter's own main script; the
# interpreter is started under the name of a virtual environment made for the run
# (`/workspace/.vana/venv`: a `pyvenv.cfg` and a `.pth` line that runs this file, nothing else),
# so `site` runs this before the program. It runs the guard from its bytecode when the bytecode was
# made for this interpreter (the host compiles it once, see `python_guard.rs`), else from its
# source. A guard that cannot start stops the interpreter before the program runs.
try:
    import marshal
    from _frozen_importlib_external import MAGIC_NUMBER

    _here = __file__.rpartition("/")[0]
    _code = None
    try:
        with open(_here + "/guard_main.py.bin", "rb") as _f:
            _data = _f.read()
        if _data[:4] == MAGIC_NUMBER:
            _code = marshal.loads(memoryview(_data)[4:])
    except (OSError, EOFError, ValueError, TypeError):
        pass
    if _code is None:
        with open(_here + "/guard_main.py", "rb") as _f:
            _code = _f.read()
    exec(_code, {"__name__": "__vana_guard__", "__builtins__": __builtins__})
except BaseException as _e:
    import os

    os.write(2, ("vana-sandbox: the Python guard did not start: %r\n" % (_e,)).encode())
    os._exit(70)
