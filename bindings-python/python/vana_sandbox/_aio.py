"""How asyncio awaits the native side: a real future per call, completed from the native
delivery thread through ``loop.call_soon_threadsafe`` (no thread per call). Cancelling the
awaiting task stops the run."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Optional, Set

from ._types import OutputChunk

#: ``start(loop, handler) -> NativeRun``: starts a native operation whose events are
#: ``handler(kind, value)`` on the loop — ``stdout``/``stderr`` chunks, then ``done`` or ``error``.
Starter = Callable[[asyncio.AbstractEventLoop, Callable[[str, Any], None]], Any]

#: Tasks of coroutine callbacks, kept until they end.
_BACKGROUND: Set["asyncio.Future[Any]"] = set()


def _call_back(callback: Callable[[str], Any], text: str) -> None:
    """Calls an output callback on the loop; a coroutine it returns runs as a task."""
    value = callback(text)
    if inspect.isawaitable(value):
        task = asyncio.ensure_future(value)
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


async def call(
    start: Starter,
    on_stdout: Optional[Callable[[str], Any]] = None,
    on_stderr: Optional[Callable[[str], Any]] = None,
) -> Any:
    """Starts a native operation and awaits its value. A callback that raises stops the run
    and its exception is raised once the run has ended."""
    loop = asyncio.get_running_loop()
    fut: "asyncio.Future[Any]" = loop.create_future()
    state: dict = {"run": None, "failed": None}

    def handler(kind: str, value: Any) -> None:
        if kind == "done" or kind == "error":
            if fut.done():
                return
            if state["failed"] is not None:
                fut.set_exception(state["failed"])
            elif kind == "done":
                fut.set_result(value)
            else:
                fut.set_exception(value)
            return
        callback = on_stdout if kind == "stdout" else on_stderr
        if callback is None or state["failed"] is not None:
            return
        try:
            _call_back(callback, value)
        except BaseException as e:  # noqa: BLE001 - raised from the awaiting call
            state["failed"] = e
            if state["run"] is not None:
                state["run"].kill()

    state["run"] = start(loop, handler)
    try:
        return await fut
    except asyncio.CancelledError:
        state["run"].cancel()
        raise


_END = object()


class ExecutionStream:
    """The output of a run as it happens: ``async for chunk in stream`` gives
    :class:`OutputChunk` objects (``stream``, ``data``); once it ends, ``result`` is the run's
    result. ``async with`` stops the run if the block is left early; so does ``aclose()``."""

    def __init__(self, start: Starter, finish: Callable[[str], Any]) -> None:
        self._start = start
        self._finish = finish
        self._queue: Optional["asyncio.Queue[Any]"] = None
        self._run: Any = None
        self._result: Any = None
        self._error: Optional[BaseException] = None
        self._ended = False

    def _begin(self) -> "asyncio.Queue[Any]":
        if self._queue is None:
            queue: "asyncio.Queue[Any]" = asyncio.Queue()
            self._queue = queue

            def handler(kind: str, value: Any) -> None:
                if kind == "done":
                    try:
                        self._result = self._finish(value)
                    except BaseException as e:  # noqa: BLE001 - raised from the iteration
                        self._error = e
                    queue.put_nowait(_END)
                elif kind == "error":
                    self._error = value
                    queue.put_nowait(_END)
                else:
                    queue.put_nowait(OutputChunk(kind, value))

            self._run = self._start(asyncio.get_running_loop(), handler)
        return self._queue

    def __aiter__(self) -> "ExecutionStream":
        return self

    async def __anext__(self) -> OutputChunk:
        if self._ended:
            raise StopAsyncIteration
        queue = self._begin()
        try:
            item = await queue.get()
        except asyncio.CancelledError:
            await self.aclose()
            raise
        if item is _END:
            self._ended = True
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        return item

    @property
    def result(self) -> Any:
        """The run's result, once the stream has ended (``None`` before)."""
        return self._result

    async def wait(self) -> Any:
        """Reads the rest of the output and returns the result."""
        async for _ in self:
            pass
        return self._result

    async def aclose(self) -> None:
        """Stops the run if it is still going."""
        if self._run is not None and not self._ended:
            self._run.cancel()
        self._ended = True

    async def __aenter__(self) -> "ExecutionStream":
        self._begin()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
