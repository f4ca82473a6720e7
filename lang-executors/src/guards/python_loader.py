# vana-sandbox Python guard, loader: runs the guard from its bytecode when the bytecode was made
# for this interpreter (the host compiles it once, see `python_guard.rs`), else from its source,
# then runs the program the guard prepared.
import marshal
from _frozen_importlib_external import MAGIC_NUMBER as _magic


def _guard(path):
    try:
        with open(path + ".bin", "rb") as f:
            data = f.read()
        if data[:4] == _magic:
            return marshal.loads(memoryview(data)[4:])
    except (OSError, EOFError, ValueError, TypeError):
        pass
    with open(path, "rb") as f:
        return compile(f.read(), path, "exec", dont_inherit=True)


_g = {"__name__": "__vana_guard__", "__builtins__": __builtins__}
exec(_guard(__file__.rpartition("/")[0] + "/guard_main.py"), _g)
del _guard, marshal
exec(_g["_code"], _g["_main"].__dict__)
