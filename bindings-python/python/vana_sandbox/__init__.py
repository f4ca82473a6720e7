"""vana-sandbox: run untrusted code in real isolation from Python.

>>> from vana_sandbox import Sandbox
>>> with Sandbox() as sb:
...     result = sb.run_code("print(6 * 7)")
...     result.stdout
'42\\n'

Each run gets fresh Linux namespaces, a read-only root, a size-limited workspace, a cgroup with
memory/CPU/process limits, an unprivileged user, seccomp and Landlock (the ``native`` backend,
which needs root). The GIL is released while a sandbox runs, so threads and ``AsyncSandbox``
overlap; ``AsyncSandbox`` awaits real futures (no thread per call).

Sessions keep one sandbox across calls — interpreter state, a workspace, rich results such as
matplotlib charts — in the shape E2B users know: ``with sb.session() as s: s.run_code(...)``,
``s.files.write/read/list/remove``, ``s.commands.run("ls -la")``. Output streams to
``on_stdout``/``on_stderr`` as it comes (and ``async for chunk in sb.stream(...)``); cancelling a
task, Ctrl-C or ``sb.kill()`` stops a run within a second.

Observability: ``sb.metrics()`` is a dict of every metric; ``Sandbox(audit_log="dir")`` writes a
hash-chained audit log (``verify_audit_log("dir")`` checks it); ``on_finding=callable`` receives
the threat detector's :class:`Finding` objects on a background thread.
"""

from __future__ import annotations

import asyncio
import atexit
import glob
import inspect
import json
import os
import weakref
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Union

from . import _aio, _native
from ._aio import ExecutionStream
from .session import AsyncSession, Session
from ._types import (
    CellExecution,
    DisplayData,
    EntryInfo,
    Execution,
    ExecutionError,
    OutputChunk,
    OutputFile,
    _execution,
    _files,
)

__all__ = [
    "AsyncSandbox",
    "AsyncSession",
    "BackendUnavailable",
    "CellExecution",
    "DisplayData",
    "EntryInfo",
    "Execution",
    "ExecutionError",
    "ExecutionStream",
    "FileError",
    "Finding",
    "OutputChunk",
    "OutputFile",
    "Policy",
    "PolicyRejected",
    "Sandbox",
    "SandboxBusy",
    "SandboxError",
    "Session",
    "SessionClosed",
    "__version__",
    "verify_audit_log",
]

__version__ = "0.1.0"

#: The sandbox itself failed (a ``sandbox_error`` result, ...).
SandboxError = _native.SandboxError
#: The request broke the policy or validation; nothing ran.
PolicyRejected = _native.PolicyRejected
#: The backend cannot run on this host (not root, no Docker, ...).
BackendUnavailable = _native.BackendUnavailable
#: A workspace file operation was refused or failed: a path out of the workspace (absolute,
#: ``..``, through a link), a FIFO or device, a missing or oversized file, a hostile archive.
FileError = _native.FileError
#: The session is closed (by ``close``/``kill``, its idle timeout or its lifetime).
SessionClosed = _native.SessionClosed
#: As many runs are queued, or sessions open, as the sandbox allows; try again later.
SandboxBusy = _native.SandboxBusy

#: Limit keywords ``Sandbox`` accepts: the core's limits table (the timeout is a per-run argument).
_LIMIT_KEYS = tuple(_native.LIMIT_KEYS)

OutputCallback = Callable[[str], Any]

#: Extra documentation for a finding's wire fields (the fields themselves come from the core).
_FINDING_DOCS = {
    "rule": "The rule's id (``reverse_shell``, ``seccomp_kill``, ...).",
    "severity": "``info``, ``low``, ``medium``, ``high`` or ``critical``.",
    "summary": "What the rule looks for, in words.",
    "run_id": "The run it is about (``None`` for a pattern across a tenant's runs).",
    "tenant": "The tenant the host vouched for, if any.",
    "language": "The run's language, when known.",
    "explanation": "Which rule matched which code line or event, in words.",
    "evidence": "What matched: code lines, security events, limits (at most 10).",
}


class Finding:
    """A finding of the threat detector: one property per field (from the core's list,
    ``_native.FINDING_FIELDS``). ``to_dict()`` gives exactly those keys."""

    __slots__ = ("_d",)

    def __init__(self, data: Dict[str, Any]) -> None:
        self._d = data

    def to_dict(self) -> Dict[str, Any]:
        """The finding as a dict."""
        return dict(self._d)

    def __repr__(self) -> str:
        return "Finding(rule=%r, severity=%r, run_id=%r)" % (self.rule, self.severity, self.run_id)


def _finding_field(name: str) -> property:
    def get(self: "Finding") -> Any:
        return self._d.get(name)

    get.__name__ = name
    get.__doc__ = _FINDING_DOCS.get(name, "The finding's ``%s`` field." % name)
    return property(get)


for _name in _native.FINDING_FIELDS:
    setattr(Finding, _name, _finding_field(_name))
del _name


def _deliver(callback: Callable[[Finding], Any]) -> Callable[[str], None]:
    """What the native side calls (on its findings thread, with the GIL): JSON in, a Finding to
    the user's callable. An exception goes to ``sys.unraisablehook``, like other errors that
    have nobody to raise to."""

    def deliver(raw: str) -> None:
        callback(Finding(json.loads(raw)))

    return deliver


def verify_audit_log(
    path: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]],
    hmac_key_file: Optional[Union[str, "os.PathLike[str]"]] = None,
    allow_open: bool = False,
) -> Dict[str, Any]:
    """Checks an audit log's hash chain: ``path`` is the log's directory (its ``audit-*.jsonl``
    files are taken in order) or the files, oldest first. Returns the report: ``ok``, ``lines``,
    ``closed``, ``last_hash``, and ``problem`` (``kind``, ``file``, ``line``, ``message``) when
    it is broken. ``allow_open`` accepts a log still being written."""
    if isinstance(path, (str, os.PathLike)):
        p = os.fspath(path)
        files = sorted(glob.glob(os.path.join(glob.escape(p), "audit-*.jsonl"))) if os.path.isdir(p) else [p]
    else:
        files = [os.fspath(f) for f in path]
    if not files:
        raise SandboxError("no audit files in %s" % os.fspath(path) if isinstance(path, (str, os.PathLike)) else "no audit files given")
    key = os.fspath(hmac_key_file) if hmac_key_file is not None else None
    return json.loads(_native.verify_audit(files, key, allow_open))


#: Sandboxes whose observability is closed at interpreter exit (the audit log's last line, the
#: last findings), while the interpreter can still run callbacks.
_LIVE: "weakref.WeakSet[Sandbox]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sb in list(_LIVE):
        sb.close()


class Policy:
    """A sandbox policy: the most a request may use (a request can only tighten it).

    Keyword arguments set limits (``memory_mb``, ``cpus``, ``disk_mb``, ``max_processes``,
    ``max_output_bytes``, ``timeout_secs``, ``cpu_time_secs``) and ``name``, ``languages``,
    ``require``, ``network_enabled``, ``network_allow``, ``guards`` (a dict), ``compile`` (a dict).
    """

    def __init__(self, **kwargs: Any) -> None:
        data = json.loads(_native.default_policy())
        limits = data["limits"]
        for key in list(kwargs):
            if key in limits or key == "cpu_time_secs":
                limits[key] = kwargs.pop(key)
        for key in ("name", "languages", "require"):
            if key in kwargs:
                data[key] = kwargs.pop(key)
        if "network_enabled" in kwargs:
            data["network"]["enabled"] = kwargs.pop("network_enabled")
        if "network_allow" in kwargs:
            data["network"]["allow"] = list(kwargs.pop("network_allow"))
        for section in ("guards", "compile"):
            if section in kwargs:
                data[section].update(kwargs.pop(section))
        if kwargs:
            raise TypeError("unknown policy settings: %s" % ", ".join(sorted(kwargs)))
        self._json = _native.load_policy(json.dumps(data), "json")
        self._source = "python:Policy"

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"]) -> "Policy":
        """Loads a ``.toml`` or ``.json`` policy file (anything else is read as TOML)."""
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        policy = cls.__new__(cls)
        policy._json = _native.load_policy(text, "json" if path.endswith(".json") else "toml")
        policy._source = path
        return policy

    def to_dict(self) -> Dict[str, Any]:
        """The effective policy (every field, defaults filled in)."""
        return json.loads(self._json)

    def __repr__(self) -> str:
        d = self.to_dict()
        return "Policy(name=%r, limits=%r)" % (d.get("name"), d.get("limits"))


def _path(p: Optional[Union[str, "os.PathLike[str]"]]) -> Optional[str]:
    return os.fspath(p) if p is not None else None




def _request_json(
    limits: Dict[str, Any],
    code: str,
    language: str,
    *,
    timeout: Optional[float] = None,
    inputs: Optional[Sequence[str]] = None,
    files: Any = None,
    env: Optional[Mapping[str, str]] = None,
    network: Optional[Union[bool, Sequence[str]]] = None,
    args: Optional[Sequence[str]] = None,
    stdin: Optional[str] = None,
    outputs: Optional[Sequence[str]] = None,
    packages: Optional[Sequence[str]] = None,
) -> str:
    """The request JSON of a one-shot run (the engine's contract), for the local sandboxes and
    the server's client alike."""
    req: Dict[str, Any] = {"language": language, "code": code}
    if timeout is not None:
        req["timeout"] = timeout
    if inputs is not None:
        req["inputs"] = [str(i) for i in inputs]
    if stdin is not None:
        req["stdin"] = stdin
    if files:
        req["files"] = _files(files)
    if env:
        req["env"] = dict(env)
    if args:
        req["args"] = [str(a) for a in args]
    if network is True:
        req["network_access"] = True
    elif network:
        req["network"] = {"allow": list(network)}
    if outputs:
        req["outputs"] = list(outputs)
    if packages:
        req["packages"] = [str(p) for p in packages]
    if limits:
        req["limits"] = dict(limits)
    return json.dumps(req)


def _session_options(
    limits: Dict[str, Any],
    env: Optional[Mapping[str, str]],
    files: Any,
    network: Optional[Union[bool, Sequence[str]]],
    id: Optional[str],
) -> str:
    opts: Dict[str, Any] = {}
    if id is not None:
        opts["id"] = id
    if limits:
        opts["limits"] = dict(limits)
    if env:
        opts["env"] = dict(env)
    if files:
        opts["files"] = _files(files)
    if network is True:
        opts["network_access"] = True
    elif network:
        opts["network"] = {"allow": list(network)}
    return json.dumps(opts)


class Sandbox:
    """Runs code in isolated sandboxes. Usable as a context manager.

    ``backend``: ``"native"`` (default; Linux namespaces, needs root) or ``"docker"`` (hardened
    containers; ``runtime="runsc"`` for gVisor, ``pool_size`` warm containers kept ahead).
    ``policy``: a :class:`Policy` (default: 1 CPU, 512 MB, 100 MB disk, 30 s, no network).
    ``max_concurrency``: runs at once (default: the number of CPUs).

    Observability (metrics are always kept: :meth:`metrics`):
    ``audit_log``: a directory for a hash-chained audit log of every run, rejection, security
    event and finding (``audit_hmac_key_file`` seals it with a key; :func:`verify_audit_log`
    checks it). ``on_finding``: a callable that receives each :class:`Finding` of the threat
    detector, on a background thread (it never delays a run; keep it short, hand long work
    elsewhere). ``threat_rules``: a rules file over the built-in ones. The detector runs when any
    of these three is given.

    Other keyword arguments are limits applied to every run and session (``memory_mb``,
    ``cpus``, ``disk_mb``, ``max_processes``, ``max_output_bytes``, ``cpu_time_secs``); they may
    only tighten the policy.
    """

    def __init__(
        self,
        backend: str = "native",
        policy: Optional[Policy] = None,
        max_concurrency: Optional[int] = None,
        runtime: Optional[str] = None,
        pool_size: int = 0,
        *,
        audit_log: Optional[Union[str, "os.PathLike[str]"]] = None,
        audit_hmac_key_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        threat_rules: Optional[Union[str, "os.PathLike[str]"]] = None,
        on_finding: Optional[Callable[[Finding], Any]] = None,
        **limits: Any,
    ) -> None:
        unknown = set(limits) - set(_LIMIT_KEYS)
        if unknown:
            raise TypeError("unknown limits: %s" % ", ".join(sorted(unknown)))
        if on_finding is not None and not callable(on_finding):
            raise TypeError("on_finding must be callable")
        self._limits = {k: v for k, v in limits.items() if v is not None}
        self._closed = False
        self._sessions: "weakref.WeakSet[Session]" = weakref.WeakSet()
        options = {
            "backend": backend,
            "policy_json": policy._json if policy else None,
            "policy_source": policy._source if policy else "default",
            "max_concurrency": max_concurrency,
            "runtime": runtime,
            "pool_size": pool_size,
            "audit_log": _path(audit_log),
            "audit_hmac_key_file": _path(audit_hmac_key_file),
            "threat_rules": _path(threat_rules),
        }
        self._engine = _native.NativeEngine(
            json.dumps(options), _deliver(on_finding) if on_finding is not None else None
        )
        _LIVE.add(self)

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self._engine.backend

    @property
    def running(self) -> int:
        """Runs executing now (each holds one of the ``max_concurrency`` slots)."""
        return self._engine.running

    @property
    def queued(self) -> int:
        """Runs waiting for a slot now."""
        return self._engine.queued

    def capabilities(self) -> Dict[str, Any]:
        """The isolation layers the backend enforces on this host."""
        return json.loads(self._engine.capabilities())

    def metrics(self) -> Dict[str, float]:
        """Every metric now, as ``{"name{label=\\"value\\",...}": value}`` (histograms as
        ``_count`` and ``_sum``): runs by status, language and backend, durations, queue,
        limit hits, security events, findings, audit records. See docs/OBSERVABILITY.md."""
        return dict(self._engine.metrics())

    def metrics_text(self) -> str:
        """Every metric now in the Prometheus text exposition format (for a ``/metrics``
        endpoint of your own)."""
        return self._engine.metrics_text()

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until every run so far has been judged by the threat detector, its findings
        handed to ``on_finding`` and the audit log written (or ``timeout`` seconds pass).
        Returns True when all of it was."""
        return self._engine.flush(timeout)

    @property
    def audit_files(self) -> List[str]:
        """The audit log's files in chain order (empty without ``audit_log``)."""
        return [os.fspath(p) for p in self._engine.audit_files()]

    @property
    def findings_dropped(self) -> int:
        """Findings ``on_finding`` missed because it was slower than they came."""
        return self._engine.findings_dropped

    def _request(self, code: str, language: str, **options: Any) -> str:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        return _request_json(self._limits, code, language, **options)

    def run_code(
        self,
        code: str,
        language: str = "python",
        timeout: Optional[float] = None,
        inputs: Optional[Sequence[str]] = None,
        files: Any = None,
        env: Optional[Mapping[str, str]] = None,
        network: Optional[Union[bool, Sequence[str]]] = None,
        args: Optional[Sequence[str]] = None,
        stdin: Optional[str] = None,
        *,
        outputs: Optional[Sequence[str]] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        packages: Optional[Sequence[str]] = None,
    ) -> Execution:
        """Runs ``code`` in a fresh sandbox and returns its :class:`Execution`.

        ``packages`` (``["numpy", "requests==2.32.3"]``, npm names for JavaScript) are fetched
        on the host (Python wheels only, npm without install scripts), cached, and mounted
        read-only; the program needs no network for them. ``Execution.packages`` says what was
        installed.

        ``outputs`` (globs) name workspace files to return (``result.files``);
        ``on_stdout``/``on_stderr`` receive output chunks (str) on this thread as they come.
        Ctrl-C, a raising callback or :meth:`kill` stops the run.

        Raises :class:`PolicyRejected` when the request breaks the policy or validation (nothing
        ran) and :class:`SandboxError` when the sandbox itself fails. Every other outcome —
        non-zero exit, timeout, memory or output limit, a kill — is an Execution with that status.
        """
        request = self._request(
            code,
            language,
            timeout=timeout,
            inputs=inputs,
            files=files,
            env=env,
            network=network,
            args=args,
            stdin=stdin,
            outputs=outputs,
            packages=packages,
        )
        return _execution(self._engine.run(request, on_stdout, on_stderr))

    def session(
        self,
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        files: Any = None,
        network: Optional[Union[bool, Sequence[str]]] = None,
        id: Optional[str] = None,
    ) -> Session:
        """Opens a :class:`Session`: one sandbox across calls, with interpreter state and a
        workspace (a context manager that closes it). ``timeout``: each cell's default limit in
        seconds; ``env``: the kernel's environment; ``files``: placed in the workspace first;
        ``network``: ``True`` or an allowlist, within the policy. The sandbox's limits hold for
        the session's whole life. Raises :class:`SandboxBusy` when the sandbox has as many
        sessions open as it allows."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        native = self._engine.open_session(_session_options(self._limits, env, files, network, id))
        s = Session(self, native, timeout)
        self._sessions.add(s)
        return s

    def kill(self) -> int:
        """Stops every run in flight — one-shot runs and sessions' cells, from any thread —
        each returning a ``killed`` result; returns how many there were. Never blocks; the
        sandbox and its sessions stay open."""
        return self._engine.kill()

    def close(self) -> None:
        """Refuses further runs, closes the sessions still open, delivers the last findings and
        closes the audit log. Called at interpreter exit for sandboxes still open."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        for s in list(self._sessions):
            try:
                s.close()
            except SandboxError:
                pass
        self._engine.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _SessionOpening:
    """What :meth:`AsyncSandbox.session` returns: ``await`` it, or ``async with`` it."""

    def __init__(self, sandbox: "AsyncSandbox", options: str, timeout: Optional[float]) -> None:
        self._sandbox = sandbox
        self._options = options
        self._timeout = timeout
        self._session: Optional[AsyncSession] = None

    async def _open(self) -> AsyncSession:
        engine = self._sandbox._sync._engine
        native = await _aio.call(lambda loop, h: engine.start_session(self._options, loop, h))
        s = AsyncSession(self._sandbox, native, self._timeout)
        self._sandbox._sessions.add(s)
        return s

    def __await__(self) -> Any:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncSession:
        self._session = await self._open()
        return self._session

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close()


class AsyncSandbox:
    """The asyncio twin of :class:`Sandbox`: ``await sb.run_code(...)``. Each call is a real
    future completed from the native side (no thread per call); runs overlap, at most
    ``max_concurrency`` at once. Cancelling the task that awaits a run stops it within a second
    and frees its slot. Takes the same keywords; ``on_finding`` may also be a coroutine
    function, which is scheduled on the event loop the sandbox runs in."""

    def __init__(
        self,
        backend: str = "native",
        policy: Optional[Policy] = None,
        max_concurrency: Optional[int] = None,
        runtime: Optional[str] = None,
        pool_size: int = 0,
        *,
        audit_log: Optional[Union[str, "os.PathLike[str]"]] = None,
        audit_hmac_key_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        threat_rules: Optional[Union[str, "os.PathLike[str]"]] = None,
        on_finding: Optional[Callable[[Finding], Any]] = None,
        **limits: Any,
    ) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._sessions: "weakref.WeakSet[AsyncSession]" = weakref.WeakSet()
        callback = on_finding
        if on_finding is not None and inspect.iscoroutinefunction(on_finding):
            callback = self._scheduler(on_finding)
        self._sync = Sandbox(
            backend,
            policy,
            max_concurrency,
            runtime,
            pool_size,
            audit_log=audit_log,
            audit_hmac_key_file=audit_hmac_key_file,
            threat_rules=threat_rules,
            on_finding=callback,
            **limits,
        )

    def _scheduler(self, coroutine: Callable[[Finding], Awaitable[Any]]) -> Callable[[Finding], None]:
        def schedule(finding: Finding) -> None:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(coroutine(finding), loop)

        return schedule

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self._sync.backend

    @property
    def running(self) -> int:
        """Like :attr:`Sandbox.running`."""
        return self._sync.running

    @property
    def queued(self) -> int:
        """Like :attr:`Sandbox.queued`."""
        return self._sync.queued

    def capabilities(self) -> Dict[str, Any]:
        """Like :meth:`Sandbox.capabilities`."""
        return self._sync.capabilities()

    async def run_code(
        self,
        code: str,
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        inputs: Optional[Sequence[str]] = None,
        files: Any = None,
        env: Optional[Mapping[str, str]] = None,
        network: Optional[Union[bool, Sequence[str]]] = None,
        args: Optional[Sequence[str]] = None,
        stdin: Optional[str] = None,
        outputs: Optional[Sequence[str]] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        packages: Optional[Sequence[str]] = None,
    ) -> Execution:
        """Like :meth:`Sandbox.run_code`, without blocking the event loop; callbacks run on
        the loop (a coroutine function's coroutines are scheduled as tasks)."""
        self._loop = asyncio.get_running_loop()
        request = self._sync._request(
            code,
            language,
            timeout=timeout,
            inputs=inputs,
            files=files,
            env=env,
            network=network,
            args=args,
            stdin=stdin,
            outputs=outputs,
            packages=packages,
        )
        stream = on_stdout is not None or on_stderr is not None
        engine = self._sync._engine
        raw = await _aio.call(lambda loop, h: engine.start(request, loop, h, stream), on_stdout, on_stderr)
        return _execution(raw)

    def stream(
        self,
        code: str,
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        inputs: Optional[Sequence[str]] = None,
        files: Any = None,
        env: Optional[Mapping[str, str]] = None,
        network: Optional[Union[bool, Sequence[str]]] = None,
        args: Optional[Sequence[str]] = None,
        stdin: Optional[str] = None,
        outputs: Optional[Sequence[str]] = None,
        packages: Optional[Sequence[str]] = None,
    ) -> ExecutionStream:
        """Runs ``code`` and gives its output as it happens: ``async for chunk in
        sb.stream(code)`` yields :class:`OutputChunk` objects (``stream``, ``data``); once it
        ends, ``.result`` is the :class:`Execution`. Leaving an ``async with`` block early
        stops the run."""
        request = self._sync._request(
            code,
            language,
            timeout=timeout,
            inputs=inputs,
            files=files,
            env=env,
            network=network,
            args=args,
            stdin=stdin,
            outputs=outputs,
            packages=packages,
        )
        engine = self._sync._engine
        return ExecutionStream(lambda loop, h: engine.start(request, loop, h, True), _execution)

    def session(
        self,
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        files: Any = None,
        network: Optional[Union[bool, Sequence[str]]] = None,
        id: Optional[str] = None,
    ) -> _SessionOpening:
        """Opens an :class:`AsyncSession` (see :meth:`Sandbox.session`): ``async with
        sb.session() as s`` (closed at the end), or ``s = await sb.session()``."""
        if self._sync._closed:
            raise SandboxError("the sandbox is closed")
        options = _session_options(self._sync._limits, env, files, network, id)
        return _SessionOpening(self, options, timeout)

    def kill(self) -> int:
        """Like :meth:`Sandbox.kill` (never blocks)."""
        return self._sync.kill()

    def metrics(self) -> Dict[str, float]:
        """Like :meth:`Sandbox.metrics` (reading them never blocks)."""
        return self._sync.metrics()

    def metrics_text(self) -> str:
        """Like :meth:`Sandbox.metrics_text`."""
        return self._sync.metrics_text()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Like :meth:`Sandbox.flush`, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._sync.flush, timeout)

    @property
    def audit_files(self) -> List[str]:
        """Like :attr:`Sandbox.audit_files`."""
        return self._sync.audit_files

    async def close(self) -> None:
        """Closes the sessions still open, refuses further runs, delivers the last findings and
        closes the audit log."""
        for s in list(self._sessions):
            try:
                await s.close()
            except SandboxError:
                pass
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._sync.close)

    async def __aenter__(self) -> "AsyncSandbox":
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


# The client of `vana-sandbox serve` (the same run_code, over HTTP); last, as it builds on the above.
from .client import Client, RemoteSession, ServerError  # noqa: E402

__all__ += ["Client", "RemoteSession", "ServerError"]
