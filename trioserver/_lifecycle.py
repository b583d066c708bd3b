"""Starting and stopping a server: `open_server` and `serve`."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable
from contextlib import asynccontextmanager
from typing import NoReturn, TypeVar

import trio

from ._errors import TrioServerError
from ._instrument import Instrument
from ._runtime import Runtime
from ._server import STATE, spec_of

T = TypeVar("T")

logger = logging.getLogger("trioserver")


@asynccontextmanager
async def open_server(obj: T, *, instruments: Iterable[Instrument] = ()) -> AsyncGenerator[T]:
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
    spec = spec_of(obj)
    if isinstance(obj.__dict__.get(STATE), Runtime):
        raise TrioServerError(f"this {spec.name} is running already; a server runs once at a time")
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        runtime = Runtime(spec, obj, nursery, tuple(instruments))
        obj.__dict__[STATE] = runtime
        runtime.spawn()
        try:
            await runtime.started.wait()
            if runtime.start_error is None:
                yield obj
        except BaseException as exc:  # re-raised below, outside the nursery: unwrapped
            failure = exc
        finally:
            runtime.stop("it was stopped")
    if runtime.stop_error is not None and (runtime.fatal or runtime.start_error or failure):
        logger.error("%s.on_stop raised", spec.name, exc_info=runtime.stop_error)
    error = runtime.fatal or runtime.start_error or failure or runtime.stop_error
    if error is not None:
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
