"""The ADK integration: the tool function called plainly, and through ADK where google-adk
is installed (the test script installs it; without it that test fails loudly, unless
VANA_SANDBOX_NO_ADK=1 says google-adk cannot be installed on this host)."""

import importlib
import os
import sys

import pytest

from vana_sandbox import adk


def test_execute_code_plain():
    r = adk.execute_code("print(2 + 2)")
    assert r["status"] == "success", r
    assert r["output"] == "4\n"
    r = adk.execute_code("console.log('js')", language="javascript", timeout=5)
    assert r["output"] == "js\n"
    r = adk.execute_code("while True: pass", timeout=1)
    assert r["status"] == "timeout"
    r = adk.execute_code("x", language="cobol")
    assert r["status"] == "rejected" and "unknown language" in r["error"]


def test_import_never_requires_google_adk(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.adk", None)
    monkeypatch.setitem(sys.modules, "google.adk.code_executors", None)
    mod = importlib.reload(adk)
    assert mod.HAVE_ADK is False
    assert mod.execute_code("print(1)")["output"] == "1\n"
    with pytest.raises(ImportError, match="google-adk"):
        mod.VanaCodeExecutor()
    monkeypatch.undo()
    importlib.reload(adk)


def test_through_adk():
    if os.environ.get("VANA_SANDBOX_NO_ADK") == "1":
        pytest.skip("google-adk cannot be installed on this host (VANA_SANDBOX_NO_ADK=1)")
    from google.adk.code_executors.code_execution_utils import CodeExecutionInput
    from google.adk.tools import FunctionTool

    importlib.reload(adk)
    assert adk.HAVE_ADK
    executor = adk.VanaCodeExecutor()
    result = executor.execute_code(None, CodeExecutionInput(code="print('via adk')"))
    assert result.stdout == "via adk\n"
    assert result.stderr == ""
    failing = executor.execute_code(None, CodeExecutionInput(code="import sys; sys.exit('boom')"))
    assert "boom" in failing.stderr

    tool = FunctionTool(adk.execute_code)
    assert tool.name == "execute_code"
    decl = tool._get_declaration()
    assert decl is not None and "code" in str(decl)
