"""The Python surface is checked against its one source, the Rust core: every field of the JSON
result is a property of ``Execution`` (at run time and in the ``.pyi``), and the limit keywords of
``Sandbox``/``AsyncSandbox`` (in the stubs) are the core's limits table."""

import ast
import inspect
import pathlib

import vana_sandbox
from vana_sandbox import _native

PKG = pathlib.Path(vana_sandbox.__file__).parent


def _stub_class(name):
    tree = ast.parse((PKG / "__init__.pyi").read_text())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def test_execution_has_every_result_field():
    fields = set(_native.RESULT_FIELDS)
    assert {"status", "output", "error", "execution_time", "resource_usage"} <= fields
    runtime = {n for n, v in inspect.getmembers(vana_sandbox.Execution) if isinstance(v, property)}
    assert fields | {"ok", "stdout"} == runtime
    stub = {
        f.name
        for f in _stub_class("Execution").body
        if isinstance(f, ast.FunctionDef) and any(getattr(d, "id", None) == "property" for d in f.decorator_list)
    }
    assert stub == runtime


def test_limit_keywords_are_the_cores():
    assert vana_sandbox._LIMIT_KEYS == tuple(_native.LIMIT_KEYS)
    for cls in ("Sandbox", "AsyncSandbox"):
        init = next(f for f in _stub_class(cls).body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
        kwonly = [a.arg for a in init.args.kwonlyargs]
        assert kwonly == list(_native.LIMIT_KEYS), cls
