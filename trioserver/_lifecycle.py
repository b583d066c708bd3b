"""Starting and stopping a server: `open_server` and `serve`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import NoReturn, TypeVar

import trio

from ._errors import TrioServerError
from ._instrument import Instrument
from ._loop import spawn, stop
from ._runtime import Runtime
from ._spec import STATE, spec_of

T = TypeVar("T")

logger = logging.getLogger("trioserver")


def open_server(
    obj: T, *, instruments: Iterable[Instrument] = ()
) -> AbstractAsyncContextManager[T]:
    """Run `obj`'s server for the duration of the block; yield its handle.

    The handle is `obj` itself: ``await handle.method(...)`` goes through the
    server. `on_start` (if any) has finished before the block begins.

    Args:
      obj: An instance of a class decorated with `server`.
      instruments: Instruments for this server alone (see `add_instrument` for all).

    Yields:
      The handle, typed as `obj`'s class.

    Cancellation:
      Leaving the block, by any means, stops the server at once: the running
      handler is cancelled; it and every queued caller get `ServerStopped`;
      queued casts are dropped (logged and counted); then `on_stop` runs,
      shielded, within the server's default timeout.

    Errors:
      An exception from the block, from `on_start`, or from `on_stop` comes
      out unwrapped (in that order of precedence; a shadowed `on_stop` error
      is logged). A `KeyboardInterrupt` or `SystemExit` raised by a handler
      stops the server, cancels the block and comes out instead.

    Raises:
      InvalidServerDefinition: `obj`'s class is not a server.
      TrioServerError: `obj` is already running.
    """
    return _Serving(obj, tuple(instruments))


class _Serving(AbstractAsyncContextManager[T]):
    """`open_server`'s context manager: the server's nursery, and the run in it.

    A class rather than a generator: servers may be many, and each keeps this while it runs.
    Errors are raised outside the nursery, so that they come out unwrapped.
    """

    __slots__ = ("_instruments", "_nursery", "_obj", "_runtime")

    def __init__(self, obj: T, instruments: tuple[Instrument, ...]) -> None:
        self._obj = obj
        self._instruments = instruments

    async def __aenter__(self) -> T:
        obj = self._obj
        spec = spec_of(obj)
        if isinstance(obj.__dict__.get(STATE), Runtime):
            raise TrioServerError(
                f"this {spec.name} is running already; a server runs once at a time"
            )
        self._nursery = trio.open_nursery()
        nursery = await self._nursery.__aenter__()
        runtime = self._runtime = Runtime(spec, obj, nursery, self._instruments)
        obj.__dict__[STATE] = runtime
        started = runtime.started
        assert started is not None
        spawn(runtime)
        try:
            await started.wait()
        except BaseException as exc:
            await self._close(exc)
            raise
        if runtime.start_error is not None:
            await self._close(None)
        return obj

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        await self._close(exc)
        return False  # the block's own exception goes on as it is

    async def _close(self, failure: BaseException | None) -> None:
        """Stop the server, wait for its task, then raise what must come out (unwrapped)."""
        runtime = self._runtime
        stop(runtime, "it was stopped")
        await self._nursery.__aexit__(None, None, None)
        if runtime.stop_error is not None and (runtime.fatal or runtime.start_error or failure):
            logger.error("%s.on_stop raised", runtime.spec.name, exc_info=runtime.stop_error)
        error = runtime.fatal or runtime.start_error or failure or runtime.stop_error
        if error is not None and error is not failure:
            raise error


async def serve(
    obj: T,
    *,
    instruments: Iterable[Instrument] = (),
    task_status: trio.TaskStatus[T] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run `obj`'s server until cancelled: ``handle = await nursery.start(serve, obj)``.

    Args:
      obj: An instance of a class decorated with `server`.
      instruments: Instruments for this server alone.
      task_status: Given the handle once `on_start` has finished.

    Cancellation:
      Cancelling it stops the server as leaving `open_server` does.

    Errors:
      As `open_server`: errors from `on_start`, `on_stop`, or a fatal
      `KeyboardInterrupt`/`SystemExit` in a handler come out unwrapped.
    """
    async with open_server(obj, instruments=instruments) as handle:
        task_status.started(handle)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover
