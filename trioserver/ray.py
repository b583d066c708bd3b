"""Servers hosted in Ray actors: one serialized, time-limited server for a whole Ray cluster.

The extra ``trioserver[ray]`` installs what it needs (Ray). ``await start(Cls, *args)`` runs
``Cls(*args)``'s server inside a Ray actor, under trio on a thread of the actor's own, and
returns a handle typed as the class: ``await handle.method(...)`` sends the request to the
actor, where the server runs handlers one at a time, as a local one does. `connect` gives a
handle to a named server from any process of the cluster.

What travels with a call: its arguments (pickled: copies, not the caller's objects) and the
caller's remaining time (`trio.current_effective_deadline`, as seconds left, since clocks
differ), which bounds the handler together with its own budget. A caller who leaves cancels
its Ray task (`ray.cancel`): a queued request is withdrawn, a running handler cancelled. Ray
may lose a cancellation that overtakes its call, so the caller also withdraws the call by a
token sent with it (an actor call Ray delivers), which refuses it if it has not come yet.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, TypeVarTuple, cast

try:
    import ray
    from ray import exceptions as ray_errors
except ImportError as exc:  # pragma: no cover - the extra is installed for the tests
    raise ImportError(
        "trioserver.ray needs Ray, which is not installed: install the extra with "
        "`pip install 'trioserver[ray]'`"
    ) from exc

import trio

from ._errors import InvalidServerDefinition, NotSendable, ServerCrashed, ServerStopped
from ._ray_caller import INTENDED_EXIT, RemoteServer, unwrap, wait_for
from ._ray_host import Host
from ._spec import SPEC, STATE, ServerSpec
from ._statistics import ServerStatistics

__all__ = [
    "MAX_CONCURRENCY",
    "NotSendable",
    "actor",
    "connect",
    "open_server",
    "start",
    "statistics",
    "stop",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

MAX_CONCURRENCY = 1000
"""The actor's ``max_concurrency`` unless given: how many requests Ray hands the actor at
once. Every one goes straight to the server's own mailbox, where trioserver serializes them
(so `trioserver.ray.statistics` and `stop` never wait behind a handler); Ray cancels a
request (`ray.cancel`) through asyncio, which withdraws it from the mailbox or cuts its
handler. With ``max_concurrency=1`` requests would wait in Ray's queue instead, out of the
server's sight."""

HANDLE_CLASS = "_trioserver_ray_handle"

logger = logging.getLogger("trioserver")

# Ray's API is typed loosely (an actor handle is generic over an unknown class): the actor
# class, its handles and the functions that take them are used through `Any`, here only.
_HOST: Any = ray.remote(Host)
_ray: Any = ray


def _spec_of_class(cls: object) -> ServerSpec:
    spec = getattr(cls, SPEC, None)
    if not isinstance(cls, type) or not isinstance(spec, ServerSpec):
        name = getattr(cls, "__qualname__", type(cls).__qualname__)
        raise InvalidServerDefinition(
            f"{name} is not a server class: give trioserver.ray a class decorated with @server"
        )
    if spec.durable:
        raise InvalidServerDefinition(
            f"{spec.name} has durable casts ({', '.join(spec.durable)}), which trioserver.ray "
            f"does not support: serve it with trioserver.open_server and a store"
        )
    return spec


def _rebuild(cls: type, remote_actor: Any, name: str | None) -> Any:
    return _handle(_spec_of_class(cls), remote_actor, name)


def _handle_repr(handle: Any) -> str:
    remote: RemoteServer = getattr(handle, STATE)
    return f"<{remote.describe()}>"


def _handle_reduce(handle: Any) -> tuple[Any, ...]:
    remote: RemoteServer = getattr(handle, STATE)
    return (_rebuild, (remote.spec.cls, remote.actor, remote.name))


def _handle_class(spec: ServerSpec) -> type:
    """The class of handles to `spec`'s servers in Ray actors: the class's handle methods,
    with the remote server as their state."""
    cls: type | None = spec.cls.__dict__.get(HANDLE_CLASS)
    if cls is None:
        namespace: dict[str, Any] = {
            name: spec.cls.__dict__.get(name) or getattr(spec.cls, name) for name in spec.methods
        }
        namespace[SPEC] = spec
        namespace["__slots__"] = (STATE,)
        namespace["__repr__"] = _handle_repr
        namespace["__reduce__"] = _handle_reduce
        namespace["__module__"] = spec.cls.__module__
        cls = type(f"{spec.cls.__name__}RayHandle", (), namespace)
        setattr(spec.cls, HANDLE_CLASS, cls)
    return cls


def _handle(spec: ServerSpec, remote_actor: Any, name: str | None) -> Any:
    handle_class: Any = _handle_class(spec)
    handle = handle_class.__new__(handle_class)
    setattr(handle, STATE, RemoteServer(spec, remote_actor, name))
    return handle


def _remote(handle: object) -> RemoteServer:
    remote = getattr(handle, STATE, None)
    if not isinstance(remote, RemoteServer):
        raise TypeError(
            f"{handle!r} is not a handle to a server in a Ray actor: get one from "
            f"trioserver.ray.start or trioserver.ray.connect"
        )
    return remote


async def start(
    cls: Callable[[*Ts], T],
    *args: *Ts,
    name: str | None = None,
    max_restarts: int = 0,
    **actor_options: Any,
) -> T:
    """Start ``cls(*args)``'s server in a new Ray actor; return a handle to it.

    The object is made in the actor (the arguments are pickled), and its server runs there
    under trio on a thread of its own, with `trioserver.open_server`: `on_start` has finished
    when this returns. ``await handle.method(...)`` sends the request to the actor and
    returns its reply.

    Args:
      cls: A class decorated with `trioserver.server`, importable by Ray's workers.
      args: Its constructor's positional arguments.
      name: Names the actor in its Ray namespace, for `connect` from other processes.
      max_restarts: How many times Ray restarts the actor when its process dies (or its
        server crashes): each restart makes a fresh object with the same arguments. 0
        (the default) for none; -1 for no limit.
      actor_options: Given to Ray's ``actor.options`` (``namespace``, ``lifetime``,
        ``num_cpus``, ...). ``max_concurrency`` is `MAX_CONCURRENCY` unless given.
        ``max_task_retries`` is refused: Ray would send a request again after a crash, and
        its handler could run twice (as it is, each request runs at most once).

    Returns:
      The handle, typed as the class.

    Cancellation:
      Cancelled before the server started, the actor is killed: no server is left.

    Errors:
      Calls through the handle get, besides the handler's own return value or exception:
      `trioserver.CallTimeout` when the handler is cut at its budget; `trio.Cancelled` at
      the caller's own deadline (the handler is cut there too); `ServerCrashed` when the
      actor died while the request was sent or handled, or is restarting (it may or may
      not have run: Ray cannot say; each request runs at most once); `ServerStopped`
      after `stop`; `NotSendable` (a `TypeError`) when the
      arguments, or the handler's return value or exception, cannot be pickled (or rebuilt
      on the other side).

    Raises:
      InvalidServerDefinition: `cls` is not a server class, or has durable casts.
      ValueError: Ray refused the options (say, `name` is taken in the namespace), or
        ``max_task_retries`` was given.
      ServerCrashed: the actor died before its server started.
      Exception: what the constructor or `on_start` raised, unwrapped.
    """
    spec = _spec_of_class(cls)
    if actor_options.get("max_task_retries", 0):
        raise ValueError(
            f"{spec.name}: trioserver.ray runs each request at most once; Ray's "
            f"max_task_retries would send it again after a crash"
        )
    options: dict[str, Any] = {"max_concurrency": MAX_CONCURRENCY, **actor_options}
    options["max_restarts"] = max_restarts
    if name is not None:
        options["name"] = name
    remote_actor: Any = _HOST.options(**options).remote(cls, args)
    label = f"{spec.name} (starting)"
    try:
        reply = await wait_for(remote_actor.ready.remote())
    except BaseException as error:
        _ray.kill(remote_actor, no_restart=True)
        if isinstance(error, ray_errors.RayError):
            raise ServerCrashed(
                f"{label}: its Ray actor died before its server started: {error}"
            ) from error
        raise
    try:
        unwrap(reply)
    except BaseException:
        _ray.kill(remote_actor, no_restart=True)
        raise
    return cast("T", _handle(spec, remote_actor, name))


def connect(name: str, cls: type[T], *, namespace: str | None = None) -> T:
    """A handle to the server that `start` named `name`, from any process of the cluster.

    This process must be connected to the cluster (``ray.init(address=...)``). Ray looks the
    name up at once (a blocking request to its control store, about a millisecond).

    Args:
      name: The server's actor name.
      cls: Its server class: the handle is typed as it, and its methods are the class's.
      namespace: The actor's Ray namespace; this process's (``ray.init(namespace=...)``)
        if None.

    Returns:
      The handle; calls behave as through the one `start` returned.

    Cancellation:
      Not a checkpoint: a synchronous look-up.

    Raises:
      ServerStopped: no actor of that name is alive in the namespace.
      InvalidServerDefinition: `cls` is not a server class.
      RuntimeError: this process is not connected to a Ray cluster (``ray.init``).
    """
    spec = _spec_of_class(cls)
    if not ray.is_initialized():  # (Ray would start a cluster of its own, without the server)
        raise RuntimeError(
            f"connect({name!r}, {spec.name}) needs this process connected to the Ray cluster "
            f"first: ray.init(address=...)"
        )
    try:
        remote_actor = _ray.get_actor(name, namespace=namespace)
    except ValueError as error:
        raise ServerStopped(
            f"no server named {name!r} runs in the Ray namespace "
            f"{namespace or _ray.get_runtime_context().namespace!r}"
        ) from error
    return cast("T", _handle(spec, remote_actor, name))


async def stop(handle: object) -> None:
    """Stop the server behind `handle` and end its actor (no restart).

    The server stops as leaving `trioserver.open_server` does: the running handler is
    cancelled, it and every queued caller get `ServerStopped`, queued casts are dropped,
    then `on_stop` runs. Then the actor exits. Later calls through any handle to it get
    `ServerStopped`. Stopping a server that stopped already does nothing more. If its actor
    died before or during the stop (a crash, `ray.kill`), Ray may be restarting it: the
    stop ends it for good (`ray.kill`, no restart), and later calls through other handles
    get `ServerCrashed`.

    Cancellation:
      Cancelled while the server stops, the actor is killed at once (`ray.kill`): its
      callers then hear `ServerCrashed`.

    Raises:
      TypeError: `handle` is not a handle from `start` or `connect`.
      Exception: what `on_stop` raised, unwrapped (the actor has exited all the same).
    """
    remote = _remote(handle)
    remote_actor = remote.actor
    if remote.stopped:
        await trio.lowlevel.checkpoint()
        return
    remote.stopped = True
    reply = None
    try:
        reply = await wait_for(remote_actor.stop.remote())
        # Ray's graceful exit: the actor exits once the requests it runs now have replied.
        await wait_for(remote_actor.__ray_terminate__.remote())
    except ray_errors.RayError as error:
        # The actor died, by this exit or before it. Unless by this exit, it crashed or was
        # killed, before the stop or during it, and Ray may be restarting it with a fresh
        # server: end it for good, so that no restart serves again after the stop.
        if INTENDED_EXIT not in str(error):
            _ray.kill(remote_actor, no_restart=True)
    except BaseException:
        _ray.kill(remote_actor, no_restart=True)
        raise
    if reply is not None:
        unwrap(reply)  # `on_stop`'s error, if it raised


@asynccontextmanager
async def open_server(
    cls: Callable[[*Ts], T],
    *args: *Ts,
    name: str | None = None,
    max_restarts: int = 0,
    **actor_options: Any,
) -> AsyncGenerator[T]:
    """`start` a server in a Ray actor for the duration of the block, then `stop` it.

    Args:
      cls, args, name, max_restarts, actor_options: As for `start`.

    Yields:
      The handle, typed as the class.

    Cancellation:
      Leaving the block by any means stops the server (as `stop`).

    Errors:
      An exception from the block comes out unwrapped; else one from `on_stop` does (a
      shadowed `on_stop` error is logged).
    """
    handle = await start(cls, *args, name=name, max_restarts=max_restarts, **actor_options)
    try:
        yield handle
    except BaseException:
        with trio.CancelScope(shield=True):
            try:
                await stop(handle)
            except Exception as shadowed:  # the block's exception comes first
                logger.error("%s.on_stop raised", _remote(handle).spec.name, exc_info=shadowed)
        raise
    with trio.CancelScope(shield=True):
        await stop(handle)


async def statistics(handle: object) -> ServerStatistics:
    """A snapshot of what the server behind `handle` has done, taken in its actor.

    `trioserver.statistics` cannot wait for the actor's reply: it raises `TrioServerError`
    on such a handle, pointing here. After a restart the figures are the new run's.

    Cancellation:
      A cancelled caller leaves at once.

    Raises:
      TypeError: `handle` is not a handle from `start` or `connect`.
      ServerStopped: the server was stopped.
      ServerCrashed: its actor died.
    """
    return await _remote(handle).remote_statistics()


def actor(handle: object) -> Any:
    """The Ray actor handle (``ray.actor.ActorHandle``) that hosts `handle`'s server: for
    Ray's own API (``ray.kill``, placement, ...).

    Raises:
      TypeError: `handle` is not a handle from `start` or `connect`.
    """
    return _remote(handle).actor


NotSendable.__module__ = __name__  # reported where users import it from
