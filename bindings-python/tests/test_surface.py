"""The Python surface is checked against its one source, the Rust core: every field of the JSON
result is a property of ``Execution`` and every field of a finding one of ``Finding`` (at run
time and in the ``.pyi``); the limit keywords of ``Sandbox``/``AsyncSandbox`` (in the stubs) are
the core's limits table, after the observability keywords, which the stubs and the code name
alike; every public name and method (sessions, files, commands, results, streams) is in the
stubs; the ADK executor takes the core's limits."""

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


PUBLIC_CLASSES = {
    "Sandbox": vana_sandbox.Sandbox,
    "AsyncSandbox": vana_sandbox.AsyncSandbox,
    "Finding": vana_sandbox.Finding,
    "Execution": vana_sandbox.Execution,
    "CellExecution": vana_sandbox.CellExecution,
    "Policy": vana_sandbox.Policy,
    "Session": vana_sandbox.Session,
    "AsyncSession": vana_sandbox.AsyncSession,
    "Files": vana_sandbox.session.Files,
    "AsyncFiles": vana_sandbox.session.AsyncFiles,
    "Commands": vana_sandbox.session.Commands,
    "AsyncCommands": vana_sandbox.session.AsyncCommands,
    "ExecutionStream": vana_sandbox.ExecutionStream,
    "ExecutionError": vana_sandbox.ExecutionError,
    "DisplayData": vana_sandbox.DisplayData,
    "OutputFile": vana_sandbox.OutputFile,
}

DUNDERS = ("__enter__", "__exit__", "__aenter__", "__aexit__", "__aiter__", "__anext__")


def test_public_methods_are_in_the_stubs():
    for name, cls in PUBLIC_CLASSES.items():
        stub_class = _stub_class(name)
        stub = {f.name for f in stub_class.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
        stub |= {t.target.id for t in stub_class.body if isinstance(t, ast.AnnAssign)}
        code = {n for n in vars(cls) if (not n.startswith("_") or n in DUNDERS) and n not in ("__slots__",)}
        if "__slots__" in vars(cls):
            code |= {n for n in cls.__slots__ if not n.startswith("_")}
        assert code <= stub, (name, sorted(code - stub))
        # Async twins stay async in the stubs, and sync ones sync.
        for f in stub_class.body:
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.name in vars(cls) and callable(vars(cls)[f.name]):
                assert isinstance(f, ast.AsyncFunctionDef) == inspect.iscoroutinefunction(vars(cls)[f.name]), (name, f.name)


def test_every_exported_name_is_in_the_stubs():
    tree = ast.parse((PKG / "__init__.pyi").read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    stubbed |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    stubbed |= {t.target.id for t in tree.body if isinstance(t, ast.AnnAssign)}
    # Explicit re-exports (`from .client import Client as Client`).
    stubbed |= {a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names if a.asname == a.name}
    missing = [n for n in vana_sandbox.__all__ if n not in stubbed]
    assert not missing, missing
    for exc in ("FileError", "SessionClosed", "SandboxBusy", "PolicyRejected", "BackendUnavailable"):
        assert issubclass(getattr(vana_sandbox, exc), vana_sandbox.SandboxError)


def test_cell_execution_properties_are_in_the_stubs():
    runtime = {n for n, v in vars(vana_sandbox.CellExecution).items() if isinstance(v, property)}
    assert runtime == {"error", "text", "kernel_restarted", "cell"}
    assert _stub_properties("CellExecution") == runtime


def test_the_adk_executor_takes_the_cores_limits():
    from vana_sandbox import adk

    if not adk.HAVE_ADK:
        return  # test_adk.py fails loudly when google-adk is missing
    fields = set(adk.VanaCodeExecutor.model_fields)
    assert set(_native.LIMIT_KEYS) <= fields
    assert {"backend", "policy", "stateful", "timeout_seconds", "outputs"} <= fields


def test_the_readme_shows_the_examples_as_they_are():
    """The README's Python session and ADK examples are the example files that test.sh runs."""
    root = pathlib.Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    for name in ("session.py", "adk_agent.py"):
        source = (root / "bindings-python" / "examples" / name).read_text()
        body = ast.get_docstring(ast.parse(source))
        code = source.split('"""', 2)[2].strip()
        assert body, name
        marker = "This is `bindings-python/examples/%s`" % name
        assert marker in readme, name
        block = readme.split(marker, 1)[1].split("```python\n", 1)[1].split("```\n", 1)[0]
        assert block.strip() == code, name
