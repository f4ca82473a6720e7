"""Results and what they carry: :class:`Execution` (one run), :class:`CellExecution` (a session's
cell), rich outputs, output files, exceptions, output chunks, file listings."""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

from . import _native

#: Extra documentation for the result's wire fields (the fields themselves come from the core).
_FIELD_DOCS = {
    "id": "The execution id.",
    "status": "``success``, ``error``, ``compile_error``, ``timeout``, ``memory_limit``, "
    "``output_limit``, ``killed``, ``rejected`` or ``sandbox_error``.",
    "exit_code": "The exit status, when the program exited.",
    "signal": "The signal that killed the program, if one did.",
    "output": "The program's standard output (cut at the output limit).",
    "error": "stderr for ``success``/``error``, otherwise the reason for the status.",
    "stderr": "The program's standard error (cut at the output limit).",
    "execution_time": "Wall-clock seconds of the run step.",
    "resource_usage": "``cpu_time``, ``memory_peak(_bytes)``, ``disk_usage(_bytes)``, ``processes_peak``.",
    "compile": "The compile step (Go, Rust): status, output, error, time, usage, ``cached``.",
    "truncated": "Which of stdout and stderr were cut at the output limit.",
    "security_events": "Limit hits, degraded layers, language-guard reports.",
    "backend": "The backend that ran it (``none`` when nothing ran).",
    "language": "The canonical language name.",
    "policy_fingerprint": "SHA-256 fingerprint of the effective policy.",
    "packages": "The packages asked for: ``installed`` (every name and version, dependencies "
    "included), ``cached``, ``size_bytes``, ``index``, ``prepare_time``.",
    "network": "What the egress proxy allowed and refused (runs with network access).",
    "session": "The session and cell this ran as: ``id``, ``cell``, ``kernel_restarted``.",
}


class ExecutionError:
    """An error of a run, in the shape notebook users know: ``name`` (``ZeroDivisionError``,
    ``TimeoutError``), ``value`` (its message) and ``traceback`` (text; empty when the error is
    not an exception of the program, e.g. a timeout)."""

    __slots__ = ("name", "value", "traceback")

    def __init__(self, name: str, value: str, traceback: str = "") -> None:
        self.name = name
        self.value = value
        self.traceback = traceback

    def to_dict(self) -> Dict[str, str]:
        """``name``, ``value`` and ``traceback`` as a dict."""
        return {"name": self.name, "value": self.value, "traceback": self.traceback}

    def __str__(self) -> str:
        return "%s: %s" % (self.name, self.value) if self.value else self.name

    def __repr__(self) -> str:
        return "ExecutionError(name=%r, value=%r)" % (self.name, self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExecutionError) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


_FIGURE = re.compile(r"^<Figure \d+>$")


class DisplayData:
    """One rich output of a cell (like a notebook's display data): the value of a trailing
    expression, or a matplotlib figure. ``data`` maps media types to content (text as is,
    binary formats base64)."""

    __slots__ = ("data",)

    def __init__(self, data: Dict[str, str]) -> None:
        self.data = dict(data)

    @property
    def text(self) -> Optional[str]:
        """The ``text/plain`` form (a value's ``repr``; ``<Figure 1>`` for a figure)."""
        return self.data.get("text/plain")

    @property
    def png(self) -> Optional[str]:
        """The ``image/png`` form, base64 (as E2B gives it); ``png_bytes`` decodes it."""
        return self.data.get("image/png")

    @property
    def png_bytes(self) -> Optional[bytes]:
        """The ``image/png`` form as bytes."""
        png = self.png
        return base64.b64decode(png) if png is not None else None

    @property
    def is_figure(self) -> bool:
        """Whether this is a matplotlib figure the kernel saved at the end of the cell."""
        return self.png is not None and bool(_FIGURE.match(self.text or ""))

    def formats(self) -> List[str]:
        """The media types present."""
        return sorted(self.data)

    def to_dict(self) -> Dict[str, str]:
        """Media type → content."""
        return dict(self.data)

    def __repr__(self) -> str:
        return "DisplayData(formats=%r, text=%r)" % (self.formats(), (self.text or "")[:80])


class OutputFile:
    """A workspace file returned with a result (named in ``outputs``): ``path``, ``size``,
    ``mime_type`` and ``content`` (bytes; ``None`` when the file was over the size cap)."""

    __slots__ = ("path", "size", "mime_type", "content_base64")

    def __init__(self, path: str, size: int, mime_type: str, content_base64: Optional[str] = None) -> None:
        self.path = path
        self.size = size
        self.mime_type = mime_type
        self.content_base64 = content_base64

    @property
    def name(self) -> str:
        """The file's name (the last part of its path)."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def content(self) -> Optional[bytes]:
        """The content (``None`` when it was over the size cap)."""
        return base64.b64decode(self.content_base64) if self.content_base64 is not None else None

    def to_dict(self) -> Dict[str, Any]:
        """The wire form."""
        d: Dict[str, Any] = {"path": self.path, "size": self.size, "mime_type": self.mime_type}
        if self.content_base64 is not None:
            d["content_base64"] = self.content_base64
        return d

    def __repr__(self) -> str:
        return "OutputFile(path=%r, size=%r, mime_type=%r)" % (self.path, self.size, self.mime_type)


class OutputChunk(NamedTuple):
    """A piece of a run's output as it happened: ``stream`` is ``"stdout"`` or ``"stderr"``."""

    stream: str
    data: str


class EntryInfo(NamedTuple):
    """One entry of a session's workspace listing: ``path`` (relative to the workspace),
    ``name``, ``type`` (``file``, ``dir``, ``symlink`` or ``other``) and ``size`` (apparent,
    in bytes). Links are listed, never followed."""

    path: str
    name: str
    type: str
    size: int


def _field(name: str) -> property:
    def get(self: "Execution") -> Any:
        return self._d.get(name)

    get.__name__ = name
    get.__doc__ = _FIELD_DOCS.get(name, "The result's ``%s`` field." % name)
    return property(get)


class Execution:
    """The result of one run: one property per field of the JSON result (from the core's list,
    ``_native.RESULT_FIELDS``), plus ``stdout`` (an alias of ``output``) and ``ok``.
    ``results``, ``files`` and ``exception`` come as objects (:class:`DisplayData`,
    :class:`OutputFile`, :class:`ExecutionError`). ``to_dict()`` gives exactly the JSON
    result's keys."""

    __slots__ = ("_d",)

    def __init__(self, data: Dict[str, Any]) -> None:
        self._d = data

    @property
    def ok(self) -> bool:
        """True when the program ran and exited with status 0."""
        return self._d["status"] == "success"

    @property
    def stdout(self) -> str:
        """The program's standard output (the ``output`` field)."""
        return self._d.get("output", "")

    @property
    def results(self) -> List[DisplayData]:
        """Rich outputs of a session's cell: the value of a trailing expression, figures as
        PNG (empty for one-shot runs)."""
        return [DisplayData(d) for d in self._d.get("results") or []]

    @property
    def files(self) -> List[OutputFile]:
        """The workspace files the run named in ``outputs``."""
        return [
            OutputFile(f["path"], f["size"], f["mime_type"], f.get("content_base64")) for f in self._d.get("files") or []
        ]

    @property
    def exception(self) -> Optional[ExecutionError]:
        """The exception a session's cell raised (as its kernel reported it), or ``None``."""
        e = self._d.get("exception")
        return ExecutionError(e["name"], e["value"], e.get("traceback", "")) if e else None

    def to_dict(self) -> Dict[str, Any]:
        """The result as a dict with the JSON result's keys."""
        return dict(self._d)

    def __repr__(self) -> str:
        return "%s(status=%r, exit_code=%r, stdout=%r)" % (type(self).__name__, self.status, self.exit_code, self.stdout[:80])


for _name in _native.RESULT_FIELDS:
    if _name not in vars(Execution):
        setattr(Execution, _name, _field(_name))
del _name

#: What ``CellExecution.error`` names a failure that is not an exception of the program.
_STATUS_ERRORS = {
    "error": "Error",
    "timeout": "TimeoutError",
    "memory_limit": "MemoryError",
    "output_limit": "OutputLimitError",
    "killed": "Killed",
    "compile_error": "CompileError",
}


class CellExecution(Execution):
    """The result of a session's cell (or command), shaped like a notebook's execution:
    ``stdout``, ``stderr``, ``results`` (rich outputs), ``error`` (an :class:`ExecutionError`,
    ``None`` when the cell succeeded — a warning on stderr does not make it fail), ``files``,
    ``status``, ``exit_code``, ``text`` (the trailing expression's value), and whether the
    kernel had to be restarted (``kernel_restarted``: interpreter state was lost).
    ``to_dict()["error"]`` keeps the wire field (stderr or the reason)."""

    __slots__ = ()

    @property
    def error(self) -> Optional[ExecutionError]:  # type: ignore[override]
        """What went wrong; ``None`` when the cell succeeded. A cell that raised gives its
        exception (name, value, traceback); a non-zero exit without one gives ``Error`` and
        the exit code; a cell the sandbox stopped gives its status — ``TimeoutError``,
        ``MemoryError``, ``OutputLimitError``, ``Killed`` — with the reason as ``value`` (and
        the traceback where the cell was interrupted)."""
        status = self._d["status"]
        if status == "success":
            return None
        exc = self.exception
        if status == "error" and exc is not None:
            return exc
        reason = (self._d.get("error") or "").strip()
        if status == "error" and self._d.get("exit_code") is not None:
            reason = reason or "exit code %d" % self._d["exit_code"]
        return ExecutionError(_STATUS_ERRORS.get(status, status), reason, exc.traceback if exc else "")

    @property
    def text(self) -> Optional[str]:
        """The ``text/plain`` value of the cell's trailing expression, if it had one."""
        for r in self.results:
            if not r.is_figure:
                return r.text
        return None

    @property
    def kernel_restarted(self) -> bool:
        """The kernel was restarted after this cell (timeout, memory, crash): state is lost."""
        return bool((self._d.get("session") or {}).get("kernel_restarted"))

    @property
    def cell(self) -> Optional[int]:
        """The cell's number in its session (from 1)."""
        return (self._d.get("session") or {}).get("cell")


def _execution(raw: str, cls: type = Execution) -> Any:
    """A result from its JSON; a ``rejected`` result raises :class:`PolicyRejected` and a
    ``sandbox_error`` one :class:`SandboxError` (nothing useful ran)."""
    data = json.loads(raw)
    if data["status"] == "rejected":
        raise _native.PolicyRejected(data.get("error") or "rejected")
    if data["status"] == "sandbox_error":
        raise _native.SandboxError(data.get("error") or "sandbox error")
    return cls(data)


def _entries(raw: str) -> List[EntryInfo]:
    return [EntryInfo(e["path"], e["path"].rsplit("/", 1)[-1], e["kind"], e["size"]) for e in json.loads(raw)]


def _files(files: Optional[Union[Mapping[str, Union[str, bytes]], Sequence[Mapping[str, str]]]]) -> List[Dict[str, str]]:
    if not files:
        return []
    if isinstance(files, Mapping):
        out = []
        for path, content in files.items():
            if isinstance(content, bytes):
                out.append({"path": path, "content_base64": base64.b64encode(content).decode()})
            else:
                out.append({"path": path, "content": content})
        return out
    return [dict(f) for f in files]
