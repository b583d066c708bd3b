"""Starting and stopping a server: `open_server`, `serve` and `start_server`."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TypeVar

import trio

from ._durable import Durable
from ._errors import StoreError, TrioServerError
from ._instrument import Instrument
from ._loop import run, spawn, stop
from ._runtime import Runtime
from ._spec import STATE, ServerSpec, spec_of
from ._state import ServerState
from ._store import Store

T = TypeVar("T")


def open_server(
    obj: T, *, instruments: Iterable[Instrument] = (), store: Store | None = None
) -> AbstractAsyncContextManager[T]:
    """Run `obj`'s server for the duration of the block; yield its handle.

    The handle is `obj` itself: ``await handle.method(...)`` goes through the
    server. `on_start` (if any) has finished before the block begins.

    Args:
      obj: An instance of a class decorated with `server`.
      instruments: Instruments for this server alone (see `add_instrument` for all).
      store: Where its durable casts are stored (`SQLiteStore`,
        `trioserver.postgres.PostgresStore`); needed if it has any. Stored casts left by
        earlier runs are queued before the block begins, ahead of any new request.

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
      StoreError: its class has durable casts and no `store` was given.
      TypeError: `store` is not a store.
    """
    return _Serving(obj, tuple(instruments), store)


def _store_for(spec: ServerSpec, store: object) -> Store | None:
    """The store a run of `spec`'s server uses, checked before anything starts."""
    if store is not None and not isinstance(store, Store):
        raise TypeError(
            f"store must be a trioserver store (SQLiteStore, postgres.PostgresStore), "
            f"not {type(store).__name__}"
        )
    if store is None and spec.durable:
        raise StoreError(
            f"{spec.name} has durable casts ({', '.join(spec.durable)}) and no store: open "
            f"it with one, open_server(obj, store=trioserver.SQLiteStore('casts.db'))"
        )
    return store


def _not_running(obj: object) -> ServerSpec:
    """`obj`'s server spec, if it is not running already."""
    spec = spec_of(obj)
    if isinstance(obj.__dict__.get(STATE), Runtime):
        raise TrioServerError(f"this {spec.name} is running already; a server runs once at a time")
    return spec


class _Serving(AbstractAsyncContextManager[T]):
    """`open_server`'s context manager: the server's nursery, and the run in it.

    A class rather than a generator: servers may be many, and each keeps this while it runs.
    Errors are raised outside the nursery, so that they come out unwrapped.
    """

    __slots__ = ("_instruments", "_nursery", "_obj", "_runtime", "_store")

    def __init__(self, obj: T, instruments: tuple[Instrument, ...], store: Store | None) -> None:
        self._obj = obj
        self._instruments = instruments
        self._store = store

    async def __aenter__(self) -> T:
        obj = self._obj
        spec = _not_running(obj)
        store = _store_for(spec, self._store)
        self._nursery = trio.open_nursery()
        nursery = await self._nursery.__aenter__()
        runtime = self._runtime = Runtime(spec, obj, nursery, self._instruments)
        durable = None
        if store is not None:
            durable = runtime.durable = Durable(runtime, store)
            try:
                await durable.open()  # stored casts are claimed now, queued once it started
            except BaseException:
                await self._nursery.__aexit__(None, None, None)
                raise
            durable.begin(nursery)
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
        if durable is not None:
            durable.go()
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
        error = runtime.what_stopped_it(failure)
        if error is not None:
            raise error


async def serve(
    obj: T,
    *,
    instruments: Iterable[Instrument] = (),
    store: Store | None = None,
    task_status: trio.TaskStatus[T] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `obj`'s server in a nursery until it is cancelled: ``handle = await
    nursery.start(serve, obj)``.

    Started so, the server lives in `nursery` and keeps no task while it is idle (servers
    may be many): one task per nursery, whatever the number of servers, waits for the
    nursery's cancellation to stop them. Awaited directly (``await serve(obj)``), it runs
    the server until cancelled.

    Args:
      obj: An instance of a class decorated with `server`.
      instruments: Instruments for this server alone.
      store: Where its durable casts are stored, as for `open_server`.
      task_status: Given the handle once `on_start` has finished.

    Cancellation:
      Cancelling the nursery (or, awaited directly, the call) stops the server as leaving
      `open_server` does.

    Errors:
      As `open_server`: an error from `on_start` comes out of ``nursery.start``; one from
      `on_stop`, or a fatal `KeyboardInterrupt`/`SystemExit` in a handler, comes out of
      the nursery (directly awaited: out of the call).
    """
    if task_status is trio.TASK_STATUS_IGNORED:
        async with open_server(obj, instruments=instruments, store=store):
            await trio.sleep_forever()
    spec = _not_running(obj)
    runtime = Runtime(spec, obj, None, tuple(instruments))
    durable = None
    checked = _store_for(spec, store)
    if checked is not None:
        durable = runtime.durable = Durable(runtime, checked)
        await durable.open()  # stored casts are claimed now, queued once it started
    obj.__dict__[STATE] = runtime
    await run(runtime)  # on_start, in this task; it ends idle (there is no request yet)
    if runtime.start_error is not None:
        if durable is not None:
            await durable.abandon()
        raise runtime.start_error
    task_status.started(obj)
    nursery = trio.lowlevel.current_task().parent_nursery  # `nursery.start`'s, now
    assert nursery is not None
    runtime.nursery = nursery
    if durable is not None:
        durable.begin(nursery)
        # (the server's contextvars are this task's, entered while it runs: a task started
        # now to run the stored casts takes a copy)
        runtime.context = runtime.context.copy()
        durable.go()
    keepers = _keepers()
    keeper = keepers.get(nursery)
    if keeper is None:
        keeper = keepers[nursery] = set()
        nursery.start_soon(_keep, nursery, keeper, name="trioserver: keeper")
    keeper.add(runtime)
    runtime.keeper = keeper


async def start_server(
    nursery: trio.Nursery,
    obj: T,
    *,
    instruments: Iterable[Instrument] = (),
    store: Store | None = None,
) -> T:
    """Start `obj`'s server in `nursery`, as ``await nursery.start(serve, obj)``, and return its
    handle typed as `obj`'s class (trio types `trio.Nursery.start` as returning ``Any``).

    Args:
      nursery: Where the server lives; cancelling it stops the server.
      obj: An instance of a class decorated with `server`.
      instruments: Instruments for this server alone.
      store: Where its durable casts are stored, as for `open_server`.

    Returns:
      The handle, once `on_start` has finished.

    Errors:
      As `serve` started with ``nursery.start``.
    """
    handle: T = await nursery.start(
        functools.partial(serve, obj, instruments=instruments, store=store)
    )
    return handle


_KEEPERS: trio.lowlevel.RunVar[dict[trio.Nursery, set[ServerState]]] = trio.lowlevel.RunVar(
    "trioserver.keepers"
)


def _keepers() -> dict[trio.Nursery, set[ServerState]]:
    """The servers `serve` started in each nursery of this run that has a keeper."""
    try:
        return _KEEPERS.get()
    except LookupError:
        found: dict[trio.Nursery, set[ServerState]] = {}
        _KEEPERS.set(found)
        return found


async def _keep(nursery: trio.Nursery, servers: set[ServerState]) -> None:
    """The one task a nursery keeps for the servers `serve` started in it: when the nursery
    is cancelled, stop them (those with a task of their own also see it there)."""
    try:
        await trio.sleep_forever()
    finally:
        del _keepers()[nursery]
        for state in list(servers):
            stop(state, "its nursery was cancelled")
