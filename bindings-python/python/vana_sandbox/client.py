"""A client of ``vana-sandbox serve``: the local :class:`~vana_sandbox.Sandbox`'s ``run_code``
over HTTP, plus sessions and streaming, so that an agent switches with one argument.

>>> from vana_sandbox import Client
>>> with Client("unix:///run/vana.sock") as sb:            # or "https://host:8080", api_key=...
...     sb.run_code("print(6 * 7)").stdout
'42\\n'

Only the standard library: ``http.client`` over a Unix socket or TCP (TLS for ``https://``).
A request refused by a full queue or a quota (429) is retried after its ``Retry-After``, up to
``retries`` times; other HTTP errors raise :class:`ServerError` with the server's ``code``.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import CellExecution, Execution, PolicyRejected, SandboxError, _files, _request_json
from .session import _cell_request

__all__ = ["Client", "RemoteSession", "ServerError"]

Callback = Optional[Callable[[str], Any]]


class ServerError(SandboxError):
    """An HTTP error answer: ``status`` (401, 404, 413, 429, ...) and the server's ``code``
    (``invalid_api_key``, ``not_found``, ``quota_exceeded``, ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def _result(data: Dict[str, Any], kind: type = Execution) -> Execution:
    """An Execution (``kind``: a session's cells are CellExecutions), or the local mode's
    exceptions for ``rejected`` and ``sandbox_error``."""
    if data.get("status") == "rejected":
        raise PolicyRejected(data.get("error") or "rejected")
    if data.get("status") == "sandbox_error":
        raise SandboxError(data.get("error") or "sandbox error")
    return kind(data)


class Client:
    """The sandbox service at ``url``: ``unix:///path/to.sock``, ``http://host:port`` or
    ``https://host:port`` (``cafile`` for a private CA). ``api_key`` is sent as a bearer token;
    ``limits`` (``memory_mb``, ``cpus``, ...) go with every run, as for a local Sandbox."""

    def __init__(
        self,
        url: str = "unix:///run/vana.sock",
        api_key: Optional[str] = None,
        *,
        timeout: Optional[float] = 600.0,
        retries: int = 8,
        cafile: Optional[str] = None,
        affinity: Optional[str] = None,
        **limits: Any,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "unix":
            self._unix: Optional[str] = parsed.path or parsed.netloc
            self._host: Optional[Tuple[str, int]] = None
        elif parsed.scheme in ("http", "https"):
            self._unix = None
            self._host = (parsed.hostname or "localhost", parsed.port or (443 if parsed.scheme == "https" else 80))
        else:
            raise ValueError(f"unsupported URL {url!r}: use unix:///path, http://host:port or https://host:port")
        self._tls = ssl.create_default_context(cafile=cafile) if parsed.scheme == "https" else None
        self._key = api_key
        self._timeout = timeout
        self._retries = retries
        self._affinity = affinity
        self._limits = dict(limits)
        self._closed = False

    # -- HTTP ---------------------------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        if self._unix is not None:
            return _UnixConnection(self._unix, self._timeout)
        assert self._host is not None
        if self._tls is not None:
            return http.client.HTTPSConnection(self._host[0], self._host[1], timeout=self._timeout, context=self._tls)
        return http.client.HTTPConnection(self._host[0], self._host[1], timeout=self._timeout)

    def _headers(self, affinity: Optional[str], content_type: str) -> Dict[str, str]:
        h = {"Content-Type": content_type, "Connection": "close"}
        if self._key:
            h["Authorization"] = f"Bearer {self._key}"
        if affinity or self._affinity:
            h["X-Vana-Affinity"] = affinity or self._affinity or ""
        return h

    def _open(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        *,
        affinity: Optional[str] = None,
        content_type: str = "application/json",
    ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The response (its head read), after retrying 429s; raises ServerError otherwise."""
        if self._closed:
            raise SandboxError("the client is closed")
        for attempt in range(self._retries + 1):
            conn = self._connect()
            conn.request(method, path, body=body, headers=self._headers(affinity, content_type))
            resp = conn.getresponse()
            if resp.status < 400:
                return conn, resp
            raw = resp.read()
            conn.close()
            try:
                err = json.loads(raw)["error"]
                code, message = err["code"], err["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", raw.decode("utf-8", "replace")
            if resp.status == 429 and attempt < self._retries:
                time.sleep(float(resp.getheader("Retry-After") or 1))
                continue
            raise ServerError(resp.status, code, message)
        raise SandboxError("unreachable")  # pragma: no cover

    def _call(self, method: str, path: str, body: Optional[bytes] = None, **kw: Any) -> bytes:
        conn, resp = self._open(method, path, body, **kw)
        try:
            return resp.read()
        finally:
            conn.close()

    def _json(self, method: str, path: str, payload: Any = None, **kw: Any) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        raw = self._call(method, path, body, **kw)
        return json.loads(raw) if raw else None

    def _run(
        self,
        path: str,
        request: Dict[str, Any],
        on_stdout: Callback,
        on_stderr: Callback,
        affinity: Optional[str],
        kind: type = Execution,
    ) -> Execution:
        if on_stdout is None and on_stderr is None:
            return _result(self._json("POST", path, request, affinity=affinity), kind)
        conn, resp = self._open("POST", path + "?stream=true", json.dumps(request).encode(), affinity=affinity)
        try:
            for event, data in _events(resp):
                if event == "chunk":
                    cb = on_stdout if data.get("stream") == "stdout" else on_stderr
                    if cb is not None:
                        cb(data.get("text", ""))
                elif event == "result":
                    return _result(data, kind)
                elif event == "error":
                    err = data.get("error", {})
                    raise ServerError(503 if err.get("code") == "shutting_down" else 500, err.get("code", "error"), err.get("message", ""))
        finally:
            conn.close()
        raise SandboxError("the stream ended without a result")

    # -- the local Sandbox's surface ------------------------------------------------------------

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
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        *,
        outputs: Optional[Sequence[str]] = None,
        packages: Optional[Sequence[str]] = None,
    ) -> Execution:
        """Runs ``code`` on the server, as :meth:`Sandbox.run_code` does locally (the same
        Execution, the same exceptions). ``on_stdout``/``on_stderr`` receive output as it comes
        (the run is streamed)."""
        # The local sandboxes' request builder: one wire format.
        raw = _request_json(
            self._limits,
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
        return self._run("/v1/executions", json.loads(raw), on_stdout, on_stderr, None)

    def session(self, *, affinity: Optional[str] = None, env: Optional[Mapping[str, str]] = None, files: Any = None, **limits: Any) -> "RemoteSession":
        """Opens a session on the server (a sandbox that keeps interpreter state and files
        between cells). ``affinity``: the key a cluster's ingress hashes to keep the session's
        calls on its pod (``X-Vana-Affinity``; default: the client's)."""
        opts: Dict[str, Any] = {}
        lim = {**self._limits, **limits}
        if lim:
            opts["limits"] = lim
        if env:
            opts["env"] = dict(env)
        if files:
            opts["files"] = _files(files)
        data = self._json("POST", "/v1/sessions", opts, affinity=affinity)
        return RemoteSession(self, data["id"], affinity or self._affinity)

    def metrics_text(self) -> str:
        """The server's Prometheus text (``GET /metrics``)."""
        return self._call("GET", "/metrics").decode()

    def ready(self) -> Dict[str, Any]:
        """``GET /readyz``: ``{"ready": bool, "reasons": [...], ...}`` (never raises for 503)."""
        conn = self._connect()
        try:
            conn.request("GET", "/readyz", headers=self._headers(None, "application/json"))
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def close(self) -> None:
        """Refuses further calls (the server keeps nothing of a client; sessions are closed
        with their own ``close``)."""
        self._closed = True

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _events(resp: http.client.HTTPResponse) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """Server-sent events: (name, JSON data)."""
    event, data = "", []
    while True:
        line = resp.readline()
        if not line:
            return
        text = line.decode("utf-8").rstrip("\r\n")
        if not text:
            if event:
                yield event, json.loads("".join(data) or "null") or {}
            event, data = "", []
        elif text.startswith("event:"):
            event = text[6:].strip()
        elif text.startswith("data:"):
            data.append(text[5:].strip())


class _RemoteFiles:
    """A remote session's workspace: ``write``, ``read``, ``list``, ``remove``."""

    def __init__(self, session: "RemoteSession") -> None:
        self._s = session

    def _path(self, path: str) -> str:
        return f"{self._s._base}/files/{urllib.parse.quote(path.lstrip('/'))}"

    def write(self, path: str, content: Union[str, bytes]) -> None:
        data = content.encode() if isinstance(content, str) else bytes(content)
        self._s._client._call("PUT", self._path(path), data, affinity=self._s._affinity, content_type="application/octet-stream")

    def read(self, path: str) -> bytes:
        return self._s._client._call("GET", self._path(path), affinity=self._s._affinity)

    def list(self, path: str = "") -> List[Dict[str, Any]]:
        q = f"?dir={urllib.parse.quote(path)}" if path else ""
        return self._s._client._json("GET", f"{self._s._base}/files{q}", affinity=self._s._affinity)["files"]

    def remove(self, path: str) -> None:
        self._s._client._call("DELETE", self._path(path), affinity=self._s._affinity)


class _RemoteCommands:
    def __init__(self, session: "RemoteSession") -> None:
        self._s = session

    def run(self, command: str, timeout: Optional[float] = None, on_stdout: Callback = None, on_stderr: Callback = None) -> Execution:
        """A shell command line (Bash cell: the working directory and exported variables
        persist)."""
        return self._s.run_code(command, language="bash", timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr)


class RemoteSession:
    """A session on the server: ``run_code`` cells that keep state, ``files``, ``commands``,
    ``kill``, ``close`` (also as a context manager)."""

    def __init__(self, client: Client, session_id: str, affinity: Optional[str]) -> None:
        self._client = client
        self.id = session_id
        self._affinity = affinity
        self._base = f"/v1/sessions/{urllib.parse.quote(session_id)}"
        self.files = _RemoteFiles(self)
        self.commands = _RemoteCommands(self)
        self._closed = False

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called (the server may also end an idle session; the next
        call then raises :class:`ServerError` 404)."""
        return self._closed

    def run_code(
        self,
        code: str,
        language: str = "python",
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        *,
        files: Any = None,
        outputs: Optional[Sequence[str]] = None,
    ) -> CellExecution:
        """Runs a cell, as :meth:`Session.run_code` does locally: the value of a trailing
        expression and charts are in ``.results``, an exception in ``.error``; ``files`` are
        placed first, ``outputs`` (globs) name workspace files to return."""
        req = json.loads(_cell_request(code, language, timeout, env, files, outputs))
        return self._client._run(f"{self._base}/run", req, on_stdout, on_stderr, self._affinity, CellExecution)

    def kill(self) -> None:
        """Stops the running cell."""
        self._client._call("POST", f"{self._base}/kill", affinity=self._affinity)

    def close(self) -> None:
        """Closes the session: its sandbox is destroyed on the server."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client._call("DELETE", self._base, affinity=self._affinity)
        except ServerError as e:
            if e.status != 404:
                raise

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
