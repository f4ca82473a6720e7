"""The Python surface is checked against its one source, the Rust core: every field of the JSON
result is a property of ``Execution`` and every field of a finding one of ``Finding`` (at run
time and in the ``.pyi``); the limit keywords of ``Sandbox``/``AsyncSandbox`` (in the stubs) are
the core's limits table, after the observability keywords, which the stubs and the code name
alike."""

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


def _stub_properties(cls):
    return {
        f.name
        for f in _stub_class(cls).body
        if isinstance(f, ast.FunctionDef) and any(getattr(d, "id", None) == "property" for d in f.decorator_list)
    }


def test_finding_has_every_finding_field():
    fields = set(_native.FINDING_FIELDS)
    assert {"rule", "severity", "run_id", "explanation", "evidence"} <= fields
    runtime = {n for n, v in inspect.getmembers(vana_sandbox.Finding) if isinstance(v, property)}
    assert runtime == fields
    assert _stub_properties("Finding") == runtime


#: Keyword-only arguments of ``Sandbox``/``AsyncSandbox`` before the limits.
OBSERVABILITY_KEYWORDS = ["audit_log", "audit_hmac_key_file", "threat_rules", "on_finding"]


def test_limit_keywords_are_the_cores():
    assert vana_sandbox._LIMIT_KEYS == tuple(_native.LIMIT_KEYS)
    for cls in ("Sandbox", "AsyncSandbox"):
        init = next(f for f in _stub_class(cls).body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
        kwonly = [a.arg for a in init.args.kwonlyargs]
        assert kwonly == OBSERVABILITY_KEYWORDS + list(_native.LIMIT_KEYS), cls
        # The code takes the same keywords (the limits through **limits) and the same positionals.
        sig = inspect.signature(getattr(vana_sandbox, cls).__init__)
        code_kwonly = [n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY]
        assert code_kwonly == OBSERVABILITY_KEYWORDS, cls
        positional = [n for n, p in sig.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == ["self"] + [a.arg for a in init.args.args[1:]], cls


def test_public_methods_are_in_the_stubs():
    for cls in ("Sandbox", "AsyncSandbox", "Finding", "Execution", "Policy"):
        stub = {f.name for f in _stub_class(cls).body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
        code = {n for n in vars(getattr(vana_sandbox, cls)) if not n.startswith("_") or n in ("__enter__", "__exit__", "__aenter__", "__aexit__", "__init__")}
        assert code <= stub, (cls, sorted(code - stub))
