"""Google ADK integration: a tool function and a code executor.

``execute_code`` is a plain function, ready to wrap as an ADK ``FunctionTool`` (or to pass in an
agent's ``tools=[...]``). ``VanaCodeExecutor`` follows ADK's ``BaseCodeExecutor`` contract when
google-adk is installed. Importing this module never requires google-adk.
"""

from __future__ import annotations

import base64
import threading
from typing import Any, Dict, Optional

from . import PolicyRejected, Sandbox, SandboxError

__all__ = ["VanaCodeExecutor", "execute_code", "HAVE_ADK"]

_lock = threading.Lock()
_shared: Optional[Sandbox] = None


def _sandbox() -> Sandbox:
    global _shared
    with _lock:
        if _shared is None:
            _shared = Sandbox()
        return _shared


def _not_run(status: str, message: str, language: str) -> Dict[str, Any]:
    return {
        "status": status,
        "output": "",
        "stderr": "",
        "error": message,
        "exit_code": None,
        "execution_time": 0.0,
        "language": language,
    }


def execute_code(code: str, language: str = "python", timeout: int = 30) -> dict:
    """Runs code in an isolated sandbox and returns what happened.

    Args:
        code: The program to run.
        language: One of python, javascript, bash, go, rust (or auto).
        timeout: Wall-clock limit in seconds.

    Returns:
        A dict with ``status`` (success, error, compile_error, timeout, memory_limit,
        output_limit, killed, rejected, sandbox_error), ``output`` (stdout), ``stderr``,
        ``error``, ``exit_code``, ``execution_time`` and ``resource_usage``.
    """
    try:
        return _sandbox().run_code(code, language=language, timeout=timeout).to_dict()
    except PolicyRejected as e:
        return _not_run("rejected", str(e), language)
    except SandboxError as e:
        return _not_run("sandbox_error", str(e), language)


try:  # pragma: no cover - exercised only where google-adk is installed
    from google.adk.code_executors import BaseCodeExecutor as _BaseCodeExecutor
    from google.adk.code_executors.code_execution_utils import CodeExecutionInput, CodeExecutionResult

    HAVE_ADK = True
except ImportError:  # google-adk is optional
    HAVE_ADK = False


if HAVE_ADK:

    class VanaCodeExecutor(_BaseCodeExecutor):  # type: ignore[misc,valid-type]
        """An ADK code executor that runs every code block in a vana-sandbox."""

        language: str = "python"
        timeout: int = 30

        def execute_code(self, invocation_context: Any, code_execution_input: "CodeExecutionInput") -> "CodeExecutionResult":
            files = {}
            for f in getattr(code_execution_input, "input_files", None) or []:
                content = f.content
                if isinstance(content, str):
                    try:
                        content = base64.b64decode(content, validate=True)
                    except Exception:
                        content = content.encode()
                files[f.name] = content
            try:
                r = _sandbox().run_code(code_execution_input.code, language=self.language, timeout=self.timeout, files=files or None)
                stderr = r.stderr if r.ok else (r.stderr or r.error or r.status)
                return CodeExecutionResult(stdout=r.stdout, stderr=stderr, output_files=[])
            except SandboxError as e:
                return CodeExecutionResult(stdout="", stderr=str(e), output_files=[])

else:

    class VanaCodeExecutor:  # type: ignore[no-redef]
        """Placeholder: the ADK code executor needs google-adk (``pip install google-adk``)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("VanaCodeExecutor needs google-adk: pip install google-adk")
