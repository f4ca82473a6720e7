"""Sessions: one sandbox across calls, as agents and notebooks use it.

>>> from vana_sandbox import Sandbox
>>> with Sandbox() as sb, sb.session() as s:
...     s.run_code("x = 6 * 7")
...     s.run_code("x").text
'42'

A session keeps interpreter state between cells (Python globals and imports, Node's context,
Bash's working directory and exported variables), a workspace (``files``) and its limits
(memory, disk, processes) for its whole life; each cell has its own time and output limits. The
shape is E2B's: ``run_code``, ``files.write/read/list/remove``, ``commands.run``, ``kill``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Mapping, Optional, Sequence, Union, overload

from . import _aio
from ._types import CellExecution, EntryInfo, _entries, _execution, _files

if TYPE_CHECKING:  # pragma: no cover
    from . import AsyncSandbox, Sandbox

__all__ = ["AsyncSession", "Session"]

OutputCallback = Callable[[str], Any]


def _cell_request(
    code: str,
    language: str,
    timeout: Optional[float],
    env: Optional[Mapping[str, str]],
    files: Any,
    outputs: Optional[Sequence[str]],
) -> str:
    req: Dict[str, Any] = {"language": language, "code": code}
    if timeout is not None:
        req["timeout"] = timeout
    if env:
        req["env"] = dict(env)
    if files:
        req["files"] = _files(files)
    if outputs:
        req["outputs"] = list(outputs)
    return json.dumps(req)


def _content(data: Union[str, bytes, bytearray, memoryview]) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError("file content must be str or bytes, not %s" % type(data).__name__)


def _decode(data: bytes, format: str) -> Union[str, bytes]:
    if format == "bytes":
        return data
    if format == "text":
        return data.decode("utf-8")
    raise ValueError("format must be 'text' or 'bytes'")


class Files:
    """A session's workspace. Paths are relative to it (``data/in.csv``); absolute paths,
    ``..`` and links out of it are refused with :class:`FileError`, as are FIFOs and devices."""

    def __init__(self, native: Any) -> None:
        self._native = native

    def write(self, path: str, data: Union[str, bytes]) -> None:
        """Writes ``data`` (text as UTF-8) at ``path``, creating parent directories."""
        self._native.files("write", path, _content(data))

    @overload
    def read(self, path: str, format: Literal["text"] = ...) -> str: ...
    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    def read(self, path: str, format: str = "text") -> Union[str, bytes]:
        """Reads the regular file at ``path`` (at most 64 MiB): text (UTF-8) by default,
        ``format="bytes"`` for bytes."""
        return _decode(self._native.files("read", path), format)

    def list(self, path: str = "") -> List[EntryInfo]:
        """The entries under ``path`` (``""``: the whole workspace), recursively."""
        return _entries(self._native.files("list", path))

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists in the workspace (a link counts; it is not followed)."""
        parent = path.rsplit("/", 1)[0] if "/" in path.strip("/") else ""
        try:
            return any(e.path == path.strip("/") for e in self.list(parent))
        except Exception:  # noqa: BLE001 - a missing parent
            return False

    def remove(self, path: str) -> None:
        """Removes a file, a link (not what it points to) or a directory tree."""
        self._native.files("remove", path)

    def download(self, path: str = "") -> bytes:
        """The directory ``path`` (``""``: the workspace) as a tar archive of its regular files
        and directories (links are left out), at most 64 MiB of content."""
        return self._native.files("download", path)

    def upload(self, archive: bytes) -> int:
        """Unpacks a tar archive into the workspace and returns how many files it held. Refused
        whole, before anything is written, when an entry is a link or a device, leaves the
        workspace, or the archive holds more than 10,000 entries or more than the disk limit."""
        return self._native.files("upload", "", _content(archive))


class Commands:
    """Shell commands in a session: a Bash cell whose working directory and exported
    variables persist between commands."""

    def __init__(self, session: "Session") -> None:
        self._session = session

    def run(
        self,
        cmd: str,
        *,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> CellExecution:
        """Runs ``cmd`` with Bash and returns its result (``exit_code``, ``stdout``,
        ``stderr``); a non-zero exit is a result with status ``error``, not an exception."""
        return self._session.run_code(cmd, "bash", on_stdout=on_stdout, on_stderr=on_stderr, timeout=timeout, env=env)


class Session:
    """One sandbox across calls (from :meth:`Sandbox.session`); a context manager that closes
    it. Ends with :meth:`close` or :meth:`kill`, after the policy's idle timeout or lifetime,
    or when its sandbox is closed."""

    def __init__(self, sandbox: "Sandbox", native: Any, timeout: Optional[float] = None) -> None:
        self._sandbox = sandbox
        self._native = native
        self._timeout = timeout
        #: The workspace: ``write``, ``read``, ``list``, ``exists``, ``remove``, ``download``,
        #: ``upload``.
        self.files = Files(native)
        #: Shell commands: ``commands.run("ls -la")``.
        self.commands = Commands(self)

    @property
    def id(self) -> str:
        """The session's id."""
        return self._native.id

    @property
    def is_closed(self) -> bool:
        """Whether the session is closed."""
        return self._native.closed

    def is_running(self) -> bool:
        """Whether the session is still open (E2B's name)."""
        return not self._native.closed

    def run_code(
        self,
        code: str,
        language: str = "python",
        *,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        files: Any = None,
        outputs: Optional[Sequence[str]] = None,
    ) -> CellExecution:
        """Runs a cell of ``code`` (``python``, ``javascript`` or ``bash``) in the session and
        returns its :class:`CellExecution`. ``on_stdout``/``on_stderr`` receive output chunks
        (str) on this thread as they come; ``timeout`` (seconds) limits this cell; ``files`` are
        placed first; ``outputs`` (globs) name workspace files to return.

        A cell past its time or output limit is interrupted; a kernel that does not stop within
        a second is restarted (``kernel_restarted``). Ctrl-C, a raising callback or
        :meth:`interrupt` stops the cell. Raises :class:`PolicyRejected` when the cell breaks
        the policy and :class:`SessionClosed` once the session is closed."""
        request = _cell_request(code, language, timeout if timeout is not None else self._timeout, env, files, outputs)
        return _execution(self._native.run(request, on_stdout, on_stderr), CellExecution)

    def install(self, packages: Sequence[str], language: str = "python") -> Dict[str, Any]:
        """Adds ``packages`` (PyPI names for ``python``, npm names for ``javascript``) to the
        session's read-only package set; the next cell imports them, the kernel keeps its state.
        They are fetched on the host (wheels only, npm without scripts) and cached, as for
        ``Sandbox.run_code(packages=...)``. Returns the packages report (``installed``,
        ``cached``, ``size_bytes``, ...). Raises :class:`PolicyRejected` for a name the policy
        refuses, a package with no wheel, or one the session has at another version."""
        return json.loads(self._native.install(language, [str(p) for p in packages]))

    def interrupt(self) -> None:
        """Stops the running cell, if any (its result says ``killed``); the session stays open
        with its state (unless the kernel had to be restarted)."""
        self._native.interrupt()

    def kill(self) -> None:
        """Stops whatever runs and closes the session (E2B's name for it)."""
        self._native.interrupt()
        self.close()

    def close(self) -> None:
        """Closes the session: its kernel is stopped and its sandbox destroyed. Closing again
        does nothing."""
        self._sandbox._sessions.discard(self)
        self._native.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Session(id=%r, closed=%r)" % (self.id, self.is_closed)


class AsyncFiles:
    """The asyncio twin of :class:`Files`."""

    def __init__(self, native: Any) -> None:
        self._native = native

    async def _op(self, op: str, path: str = "", data: Optional[bytes] = None) -> Any:
        return await _aio.call(lambda loop, h: self._native.start_files(op, loop, h, path, data))

    async def write(self, path: str, data: Union[str, bytes]) -> None:
        """Like :meth:`Files.write`."""
        await self._op("write", path, _content(data))

    async def read(self, path: str, format: str = "text") -> Union[str, bytes]:
        """Like :meth:`Files.read`."""
        return _decode(await self._op("read", path), format)

    async def list(self, path: str = "") -> List[EntryInfo]:
        """Like :meth:`Files.list`."""
        return _entries(await self._op("list", path))

    async def exists(self, path: str) -> bool:
        """Like :meth:`Files.exists`."""
        parent = path.rsplit("/", 1)[0] if "/" in path.strip("/") else ""
        try:
            return any(e.path == path.strip("/") for e in await self.list(parent))
        except Exception:  # noqa: BLE001 - a missing parent
            return False

    async def remove(self, path: str) -> None:
        """Like :meth:`Files.remove`."""
        await self._op("remove", path)

    async def download(self, path: str = "") -> bytes:
        """Like :meth:`Files.download`."""
        return await self._op("download", path)

    async def upload(self, archive: bytes) -> int:
        """Like :meth:`Files.upload`."""
        return await self._op("upload", "", _content(archive))


class AsyncCommands:
    """The asyncio twin of :class:`Commands`."""

    def __init__(self, session: "AsyncSession") -> None:
        self._session = session

    async def run(
        self,
        cmd: str,
        *,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> CellExecution:
        """Like :meth:`Commands.run`."""
        return await self._session.run_code(cmd, "bash", on_stdout=on_stdout, on_stderr=on_stderr, timeout=timeout, env=env)


class AsyncSession:
    """The asyncio twin of :class:`Session` (from :meth:`AsyncSandbox.session`): ``async with``
    closes it. Cancelling a task that awaits a cell stops that cell (within a second, its slot
    freed); the session goes on."""

    def __init__(self, sandbox: "AsyncSandbox", native: Any, timeout: Optional[float] = None) -> None:
        self._sandbox = sandbox
        self._native = native
        self._timeout = timeout
        #: The workspace (awaitable methods).
        self.files = AsyncFiles(native)
        #: Shell commands: ``await commands.run("ls -la")``.
        self.commands = AsyncCommands(self)

    @property
    def id(self) -> str:
        """The session's id."""
        return self._native.id

    @property
    def is_closed(self) -> bool:
        """Whether the session is closed."""
        return self._native.closed

    def is_running(self) -> bool:
        """Whether the session is still open."""
        return not self._native.closed

    async def run_code(
        self,
        code: str,
        language: str = "python",
        *,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        files: Any = None,
        outputs: Optional[Sequence[str]] = None,
    ) -> CellExecution:
        """Like :meth:`Session.run_code`; callbacks run on the event loop (a coroutine
        function's coroutines are scheduled as tasks)."""
        request = _cell_request(code, language, timeout if timeout is not None else self._timeout, env, files, outputs)
        stream = on_stdout is not None or on_stderr is not None
        raw = await _aio.call(lambda loop, h: self._native.start(request, loop, h, stream), on_stdout, on_stderr)
        return _execution(raw, CellExecution)

    def stream(
        self,
        code: str,
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        files: Any = None,
        outputs: Optional[Sequence[str]] = None,
    ) -> _aio.ExecutionStream:
        """Runs a cell and gives its output as it happens: ``async for chunk in
        s.stream(code)``; ``.result`` is the :class:`CellExecution` once it has ended."""
        request = _cell_request(code, language, timeout if timeout is not None else self._timeout, env, files, outputs)
        return _aio.ExecutionStream(
            lambda loop, h: self._native.start(request, loop, h, True), lambda raw: _execution(raw, CellExecution)
        )

    async def install(self, packages: Sequence[str], language: str = "python") -> Dict[str, Any]:
        """Like :meth:`Session.install`."""
        names = [str(p) for p in packages]
        raw = await _aio.call(lambda loop, h: self._native.start_install(language, names, loop, h))
        return json.loads(raw)

    def interrupt(self) -> None:
        """Like :meth:`Session.interrupt` (never blocks)."""
        self._native.interrupt()

    async def kill(self) -> None:
        """Stops whatever runs and closes the session."""
        self._native.interrupt()
        await self.close()

    async def close(self) -> None:
        """Closes the session (see :meth:`Session.close`)."""
        self._sandbox._sessions.discard(self)
        await _aio.call(self._native.start_close)

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return "AsyncSession(id=%r, closed=%r)" % (self.id, self.is_closed)
