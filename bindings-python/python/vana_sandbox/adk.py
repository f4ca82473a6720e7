"""Google ADK integration: a code executor and a tool.

``VanaCodeExecutor`` is an ADK ``BaseCodeExecutor``: give it to an ``LlmAgent``
(``code_executor=VanaCodeExecutor(stateful=True)``) and the code blocks the model writes run in a
vana-sandbox. With ``stateful=True`` each ADK session (its ``execution_id``) has a sandbox
session of its own, so a DataFrame loaded in one turn is there in the next. Input files are
written to the workspace; charts (matplotlib figures) and the files named in ``outputs`` come
back as output files, which the flow saves as artifacts.

``execute_code`` is an async tool function (pass it in an agent's ``tools=[...]``): it runs
code, saves charts and output files as artifacts through its ``tool_context``, and returns a
compact dict for the model.

Importing this module never requires google-adk; ``VanaCodeExecutor`` does.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import threading
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Union

from . import AsyncSandbox, Execution, Policy, PolicyRejected, Sandbox, SandboxError, Session

__all__ = ["HAVE_ADK", "VanaCodeExecutor", "execute_code", "file_content"]

#: Languages a session's kernel runs (others run one-shot).
_KERNEL_LANGUAGES = ("python", "javascript", "bash")

#: Workspace files ``execute_code`` returns (and saves as artifacts): what programs write for
#: people to look at.
TOOL_OUTPUTS = ["**/*.png", "**/*.jpg", "**/*.jpeg", "**/*.svg", "**/*.pdf", "**/*.csv", "**/*.html"]


def file_content(content: Union[str, bytes]) -> bytes:
    """The bytes of an ADK ``File``'s content: bytes as they are; text as base64 (ADK's
    convention), or as UTF-8 text when it is not valid base64."""
    if isinstance(content, (bytes, bytearray)):
        return bytes(content)
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        return content.encode("utf-8")


def _failure(r: Execution) -> str:
    """What the model reads when a run failed: its stderr, the exception's traceback, the
    reason, and the status with the exit code."""
    parts: List[str] = []
    stderr = (r.stderr or "").strip()
    if stderr:
        parts.append(stderr)
    exc = r.exception
    if exc is not None and exc.traceback and exc.traceback.strip() not in stderr:
        parts.append(exc.traceback.strip())
    elif exc is not None and not exc.traceback:
        parts.append(str(exc))
    reason = (r.to_dict().get("error") or "").strip()
    if r.status != "error" and reason and reason not in stderr:
        parts.append(reason)
    note = "[vana-sandbox] status: %s, exit code: %s" % (r.status, r.exit_code)
    session = r.to_dict().get("session") or {}
    if session.get("kernel_restarted"):
        note += "; the kernel was restarted: variables and imports of earlier cells are gone"
    parts.append(note)
    return "\n".join(parts)


def _stdout(r: Execution) -> str:
    """stdout, then the value of a trailing expression (what a notebook would show)."""
    out = r.stdout
    for d in r.results:
        if not d.is_figure and d.text is not None:
            if out and not out.endswith("\n"):
                out += "\n"
            out += d.text + "\n"
    return out


def _not_run(status: str, message: str) -> Dict[str, Any]:
    return {"status": status, "stdout": "", "stderr": "", "exit_code": None, "files": [], "error": message}


_tool_lock = threading.Lock()
_tool_sandbox: Optional[AsyncSandbox] = None


def _async_sandbox() -> AsyncSandbox:
    global _tool_sandbox
    with _tool_lock:
        if _tool_sandbox is None:
            _tool_sandbox = AsyncSandbox()
        return _tool_sandbox


async def execute_code(code: str, language: str = "python", timeout: int = 30, tool_context: Any = None) -> dict:
    """Runs code in an isolated sandbox and returns what happened.

    Charts (matplotlib figures) and image, CSV, PDF or HTML files the code writes are saved as
    artifacts of the conversation.

    Args:
        code: The program to run.
        language: One of python, javascript, bash, go, rust.
        timeout: Wall-clock limit in seconds.

    Returns:
        A dict with ``status`` (success, error, compile_error, timeout, memory_limit,
        output_limit, killed, rejected, sandbox_error), ``stdout``, ``stderr``,
        ``exit_code``, ``files`` (names of the charts and files saved as artifacts) and, when
        it failed, ``error``.
    """
    sb = _async_sandbox()
    lang = language.strip().lower()
    try:
        if lang in _KERNEL_LANGUAGES:
            # A fresh session: figures are captured and a trailing expression shows its value.
            async with sb.session() as s:
                r: Execution = await s.run_code(code, lang, timeout=timeout, outputs=TOOL_OUTPUTS)
        else:
            r = await sb.run_code(code, language, timeout=timeout, outputs=TOOL_OUTPUTS)
    except PolicyRejected as e:
        return _not_run("rejected", str(e))
    except SandboxError as e:
        return _not_run("sandbox_error", str(e))
    names: List[str] = []
    blobs = [("figure_%d.png" % n, d.png_bytes, "image/png") for n, d in enumerate((d for d in r.results if d.is_figure), 1)]
    blobs += [(f.path, f.content, f.mime_type) for f in r.files if f.content is not None]
    for name, data, mime in blobs:
        if tool_context is not None and data is not None:
            from google.genai import types

            await tool_context.save_artifact(name, types.Part.from_bytes(data=data, mime_type=mime))
        names.append(name)
    out: Dict[str, Any] = {
        "status": r.status,
        "stdout": _stdout(r),
        "stderr": r.stderr,
        "exit_code": r.exit_code,
        "files": names,
    }
    if not r.ok:
        out["error"] = _failure(r)
    return out


try:  # pragma: no cover - exercised only where google-adk is installed
    from google.adk.code_executors import BaseCodeExecutor as _BaseCodeExecutor
    from google.adk.code_executors.code_execution_utils import CodeExecutionInput, CodeExecutionResult, File
    from pydantic import ConfigDict, PrivateAttr

    HAVE_ADK = True
except ImportError:  # google-adk is optional
    HAVE_ADK = False


# Settings of a local sandbox, which a client's server decides instead.
_LOCAL_ONLY = ("backend", "policy", "memory_mb", "cpus", "disk_mb", "max_processes", "max_output_bytes", "cpu_time_secs")


if HAVE_ADK:

    class VanaCodeExecutor(_BaseCodeExecutor):  # type: ignore[misc,valid-type]
        """An ADK code executor that runs every code block in a vana-sandbox.

        ``backend`` (``native`` or ``docker``), ``policy`` (a :class:`~vana_sandbox.Policy` or
        a policy file's path) and the limits (``memory_mb``, ``cpus``, ``disk_mb``,
        ``max_processes``, ``max_output_bytes``, ``cpu_time_secs``) are those of
        :class:`~vana_sandbox.Sandbox`, which is created with the executor: a host that cannot
        run it fails here, not on every call. ``timeout_seconds`` limits each code block.

        ``stateful=True`` keeps one sandbox session per ADK ``execution_id`` (interpreter state
        and workspace across turns; at most ``max_sessions``, the least recently used closed
        first). ``input_files`` are written at their names (paths inside the workspace). Charts
        come back as ``figure_<n>.png`` output files, and the workspace files matching
        ``outputs`` (globs) under their paths. stderr is set only when a block failed, with its
        status and exit code.

        ``client`` (a :class:`~vana_sandbox.Client` of ``vana-sandbox serve``) runs the blocks
        on the server instead, with its policy and the client's limits (``backend``, ``policy``
        and the limits are then not taken); the executor does not close a client it was given."""

        model_config = ConfigDict(arbitrary_types_allowed=True)

        client: Optional[Any] = None
        backend: str = "native"
        policy: Optional[Any] = None
        language: str = "python"
        outputs: List[str] = []
        max_sessions: int = 16
        memory_mb: Optional[int] = None
        cpus: Optional[float] = None
        disk_mb: Optional[int] = None
        max_processes: Optional[int] = None
        max_output_bytes: Optional[int] = None
        cpu_time_secs: Optional[float] = None

        _sandbox: Any = PrivateAttr(default=None)
        _sessions: Any = PrivateAttr(default_factory=OrderedDict)
        _lock: Any = PrivateAttr(default_factory=threading.Lock)
        _figures: Any = PrivateAttr(default_factory=lambda: itertools.count(1))

        def model_post_init(self, context: Any) -> None:
            super().model_post_init(context)
            if self.client is not None:
                from .client import Client

                if not isinstance(self.client, Client):
                    raise TypeError("client must be a vana_sandbox.Client")
                given = [k for k in _LOCAL_ONLY if getattr(self, k) not in (None, "native")]
                if given:
                    raise TypeError("with a client, the server decides: %s not taken" % ", ".join(given))
                self._sandbox = self.client
                return
            policy = self.policy
            if isinstance(policy, (str, os.PathLike)):
                policy = Policy.from_file(policy)
            elif policy is not None and not isinstance(policy, Policy):
                raise TypeError("policy must be a vana_sandbox.Policy or a policy file's path")
            limits = {
                k: getattr(self, k)
                for k in ("memory_mb", "cpus", "disk_mb", "max_processes", "max_output_bytes", "cpu_time_secs")
                if getattr(self, k) is not None
            }
            self._sandbox = Sandbox(self.backend, policy, **limits)

        def __deepcopy__(self, memo: Any) -> "VanaCodeExecutor":
            # The executor holds live sandboxes and sessions: a copy of an agent shares them.
            return self

        @property
        def sandbox(self) -> Any:
            """The sandbox the code runs in (the client, when it was given one)."""
            return self._sandbox

        def _session(self, execution_id: str) -> "tuple[Session, str]":
            """The session of ``execution_id`` (opened on first use, or again after it was
            closed — then with a note that earlier state is gone)."""
            note = ""
            with self._lock:
                s = self._sessions.get(execution_id)
                if s is not None and s.is_closed:
                    del self._sessions[execution_id]
                    s, note = None, "[vana-sandbox] the session had ended (idle or too old): a new one was started\n"
                if s is None:
                    while len(self._sessions) >= max(1, self.max_sessions):
                        _, old = self._sessions.popitem(last=False)
                        try:
                            old.close()
                        except SandboxError:
                            pass
                    s = self._sandbox.session()
                    self._sessions[execution_id] = s
                self._sessions.move_to_end(execution_id)
                return s, note

        def execute_code(self, invocation_context: Any, code_execution_input: "CodeExecutionInput") -> "CodeExecutionResult":
            files = {f.name: file_content(f.content) for f in code_execution_input.input_files or []}
            timeout = self.timeout_seconds
            note = ""
            try:
                if self.stateful and code_execution_input.execution_id:
                    s, note = self._session(code_execution_input.execution_id)
                    r = s.run_code(code_execution_input.code, self.language, timeout=timeout, files=files, outputs=self.outputs)
                elif self.language in _KERNEL_LANGUAGES:
                    with self._sandbox.session() as s:
                        r = s.run_code(code_execution_input.code, self.language, timeout=timeout, files=files, outputs=self.outputs)
                else:
                    r = self._sandbox.run_code(
                        code_execution_input.code, self.language, timeout=timeout, files=files, outputs=self.outputs
                    )
            except SandboxError as e:
                return CodeExecutionResult(stdout="", stderr="[vana-sandbox] %s: %s" % (type(e).__name__, e), output_files=[])
            output_files = [
                File(name="figure_%d.png" % next(self._figures), content=d.png_bytes, mime_type="image/png")
                for d in r.results
                if d.is_figure
            ]
            output_files += [File(name=f.path, content=f.content, mime_type=f.mime_type) for f in r.files if f.content is not None]
            result = CodeExecutionResult(stdout=note + _stdout(r), stderr="" if r.ok else _failure(r), output_files=output_files)
            if hasattr(result, "exit_code"):  # google-adk's newer CodeExecutionResult has it
                result.exit_code = r.exit_code
            return result

        def close(self) -> None:
            """Closes the sessions and the sandbox."""
            with self._lock:
                sessions = list(self._sessions.values())
                self._sessions.clear()
            for s in sessions:
                try:
                    s.close()
                except SandboxError:
                    pass
            if self.client is None:
                self._sandbox.close()

else:

    class VanaCodeExecutor:  # type: ignore[no-redef]
        """Placeholder: the ADK code executor needs google-adk (``pip install google-adk``)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("VanaCodeExecutor needs google-adk: pip install google-adk")
