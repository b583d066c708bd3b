"""Durable casts' storage: what a store is to a running server, and how a cast is stored.

A store (`SQLiteStore`, `trioserver.postgres.PostgresStore`) is configuration: each run of a
server opens its own `Connection` from it, in a worker thread, and uses it from one thread at
a time. Everything a server asks of its store in one round (casts to insert, runs to mark,
casts to claim, its lease) is one `Batch`, committed in one transaction (`_durable` groups
them). A cast's arguments are stored as JSON (`encode`), checked in the caller.
"""

from __future__ import annotations

import inspect
import json
import math
import typing
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from ._spec import Method

# A cast's life in the store: PENDING (waiting to be claimed) -> RUNNING (claimed by the
# lease holder: in its memory, or waiting out a retry's backoff) -> deleted when its handler
# returned (or DONE, kept while it has an idempotency key), or DEAD after its last attempt.
PENDING = "pending"
RUNNING = "running"
DONE = "done"
DEAD = "dead"


@attrs.frozen
class NewCast:
    """A durable cast to insert."""

    method: str
    payload: str  # JSON: {"args": [...], "kwargs": {...}}
    key: str | None  # its idempotency key: a second insert of the same key stores nothing
    attempts: int


@attrs.frozen
class StoredCast:
    """A stored cast claimed by the lease holder, to run."""

    id: int
    method: str
    payload: str
    failed: int  # runs that failed so far
    attempts: int
    run_after: float  # wall clock (`time.time`): not before then (a retry's backoff)


@attrs.frozen
class DeadCast:
    """A durable cast kept as dead in the store (`Store.dead_casts`): it failed on its last
    attempt, or could not run at all (its handler is gone, or its stored arguments no longer
    fit it).

    `Store.requeue` makes it pending again, with its attempts counted afresh.
    """

    id: int
    """Its number in the store: casts are numbered in commit order."""
    queue: str
    """Its server's queue (the server class's qualified name unless the store says)."""
    method: str
    """The handler's name."""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: str | None
    """Its idempotency key, if it was given one."""
    attempts: int
    """How many runs it was allowed."""
    error: str
    """What its last run raised (or why it could not run), as ``repr``."""
    enqueued_at: float
    """When it was committed, wall clock (`time.time`)."""


@attrs.define
class Batch:
    """One round of a server's work with its store, committed in one transaction, in this order:
    the lease, the marks of finished runs, a claim of pending casts, then new casts."""

    lease: bool = False  # acquire (or renew) the queue's lease
    done: list[int] = attrs.Factory(list[int])
    # id, failed runs, run_after (wall clock), error
    retried: list[tuple[int, int, float, str]] = attrs.Factory(list[tuple[int, int, float, str]])
    dead: list[tuple[int, int, str]] = attrs.Factory(
        list[tuple[int, int, str]]
    )  # id, failed, error
    claim: int = 0  # claim up to this many pending casts (only while holding the lease)
    inserts: list[NewCast] = attrs.Factory(list[NewCast])
    # insert them claimed (RUNNING) if it holds the lease: nothing older is pending (else they
    # are claimed so if this batch's claim takes every pending cast)
    claim_inserts: bool = False
    release: bool = False  # last: give back unfinished claims and the lease

    def __bool__(self) -> bool:
        return bool(
            self.lease
            or self.done
            or self.retried
            or self.dead
            or self.claim
            or self.inserts
            or self.release
        )


@attrs.frozen
class Committed:
    """What a committed `Batch` gave back."""

    holding: bool  # this connection holds the queue's lease
    took_over: bool  # it acquired the lease in this batch (claims left by others are pending)
    claimed: list[StoredCast]
    ids: list[int | None]  # per insert: its number, or None (its key was taken: nothing stored)
    # the inserts were stored claimed (RUNNING): it holds the lease, and nothing older is
    # pending (`Batch.claim_inserts`, or its claim in this batch took every pending cast)
    inserted_claimed: bool = False


class Connection(Protocol):
    """A server run's connection to its store: synchronous, used from one thread at a time."""

    def commit(self, batch: Batch) -> Committed: ...

    def close(self) -> None: ...


class Listener(Protocol):
    """News from other processes (PostgreSQL's LISTEN): casts stored, a lease given back."""

    async def wait(self) -> None: ...

    def close(self) -> None: ...


class Store:
    """Where a server's durable casts are stored: base class of `SQLiteStore` and
    `trioserver.postgres.PostgresStore`.

    A store is configuration and may serve several servers (each has its own queue, named
    after its class unless `queue` is given) and several runs; each run opens its own
    connection. Its methods `dead_casts` and `requeue` work whether or not a server runs.
    """

    lease: float
    queue: str | None
    # the runs of this process on each queue of each database, to tell of news at once
    _watchers: ClassVar[dict[tuple[str, str], set[Callable[[], None]]]] = {}

    def __init__(self, *, queue: str | None, lease: float) -> None:
        if queue is not None and (not isinstance(queue, str) or not queue):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"queue must be a non-empty str or None, not {queue!r}")
        if (
            isinstance(lease, bool)
            or not isinstance(lease, (int, float))  # pyright: ignore[reportUnnecessaryIsInstance]
            or not math.isfinite(lease)
            or lease <= 0
        ):
            raise TypeError(f"lease must be a positive, finite number of seconds, not {lease!r}")
        self.queue = queue
        self.lease = float(lease)

    # -- what a store implements ---------------------------------------------------------

    def connect(self, queue: str, holder: str) -> Connection:
        """Open a connection for `queue` as lease holder `holder` (called in a worker thread)."""
        raise NotImplementedError

    def _place(self) -> str:
        """Which database this is (stores naming the same one share their news)."""
        return f"{type(self).__name__}@{id(self)}"

    def listen(self, queue: str) -> Listener | None:
        """A listener for news from other processes, or None (news come from this one only)."""
        return None

    def _list_dead(self, queue: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _requeue(self, queue: str, ids: list[int] | None) -> int:
        raise NotImplementedError

    # -- the public API --------------------------------------------------------------------

    def queue_of(self, server: type | str) -> str:
        """The queue name of `server` (a server class, or a queue name) in this store."""
        if isinstance(server, str):
            return server
        if self.queue is not None:
            return self.queue
        return server.__qualname__

    async def dead_casts(self, server: type | str) -> list[DeadCast]:
        """The dead casts of `server`'s queue (a server class or a queue name), oldest first.

        Cancellation:
          It reads the store in a worker thread, which is not abandoned: cancelled, it
          raises `trio.Cancelled` once the read is done.

        Errors:
          The database's own errors (``sqlite3.Error``, psycopg's), as they are.
        """
        queue = self.queue_of(server)
        rows = await trio.to_thread.run_sync(self._list_dead, queue)
        found: list[DeadCast] = []
        for id_, method, payload, key, attempts, error, enqueued_at in rows:
            args, kwargs = decode(payload)
            found.append(
                DeadCast(
                    id=id_,
                    queue=queue,
                    method=method,
                    args=tuple(args),
                    kwargs=kwargs,
                    key=key,
                    attempts=attempts,
                    error=error or "",
                    enqueued_at=enqueued_at,
                )
            )
        return found

    async def requeue(self, server: type | str, ids: Iterable[int] | None = None) -> int:
        """Make dead casts of `server`'s queue pending again (all of them, or those numbered
        `ids`), their attempts counted afresh; return how many. A server running on the
        queue in this process, or (PostgreSQL) in another, runs them.

        Cancellation:
          The update runs in a worker thread, which is not abandoned: cancelled, it
          raises `trio.Cancelled` once the update is committed (or not).

        Errors:
          The database's own errors, as they are.
        """
        queue = self.queue_of(server)
        chosen = None if ids is None else [int(i) for i in ids]
        count = await trio.to_thread.run_sync(self._requeue, queue, chosen)
        self._news(queue)
        return count

    def _news(self, queue: str, but: Callable[[], None] | None = None) -> None:
        """Tell the runs on `queue` in this process (`but` one): casts may be pending, or the
        lease free."""
        for wake in list(self._watchers.get((self._place(), queue), ())):
            if wake != but:
                wake()

    def _watch(self, queue: str, wake: Callable[[], None]) -> None:
        self._watchers.setdefault((self._place(), queue), set()).add(wake)

    def _unwatch(self, queue: str, wake: Callable[[], None]) -> None:
        key = (self._place(), queue)
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.discard(wake)
            if not watchers:
                del self._watchers[key]


# -- encoding -----------------------------------------------------------------------------


def encode(method: Method, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> str:
    """`args` and `kwargs` as stored: JSON, or `TypeError` naming the argument that is not
    JSON data (str, int, float, bool, None, list, dict with str keys; no tuple, no NaN)."""
    values = (*args, *kwargs.values()) if kwargs else args
    if any(_problem(value) is not None for value in values):
        _refuse(method, args, kwargs)
    return json.dumps({"args": list(args), "kwargs": kwargs or {}}, separators=(",", ":"))


def _refuse(method: Method, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> None:
    """The `TypeError` of `encode`, naming the first argument (in the handler's parameter
    order) that is not JSON data; only called once one is known to be there."""
    names = _names(method, args, kwargs)
    for name, value in names:
        problem = _problem(value)
        if problem is not None:
            raise TypeError(
                f"{method.label}: argument {name!r} cannot be stored: {problem}. A durable "
                f"cast stores its arguments as JSON (str, int, float, bool, None, lists, and "
                f"dicts with str keys): pass plain data, and rebuild objects in the handler"
            )


def decode(payload: str) -> tuple[list[Any], dict[str, Any]]:
    data = json.loads(payload)
    return list(data["args"]), dict(data["kwargs"])


def _names(
    method: Method, args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> list[tuple[str, Any]]:
    """Each argument with the name of the parameter it binds (the call was bound already)."""
    bound = inspect.signature(method.fn).bind(None, *args, **(kwargs or {}))
    named: list[tuple[str, Any]] = []
    for index, (name, value) in enumerate(bound.arguments.items()):
        if index == 0:
            continue  # self
        param = bound.signature.parameters[name]
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            named.extend((f"*{name}[{i}]", item) for i, item in enumerate(value))
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            named.extend((key, item) for key, item in value.items())
        else:
            named.append((name, value))
    return named


def _problem(value: object, where: str = "") -> str | None:
    """Why `value` is not JSON data that comes back equal, or None."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where or 'it'} is {value!r} (not finite)"
    if isinstance(value, list):
        items = typing.cast("list[object]", value)
        for index, item in enumerate(items):
            problem = _problem(item, f"{where}[{index}]")
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        mapping = typing.cast("dict[object, object]", value)
        for key, item in mapping.items():
            if not isinstance(key, str):
                return f"{where or 'it'} has a key {key!r} that is not a str"
            problem = _problem(item, f"{where}[{key!r}]")
            if problem is not None:
                return problem
        return None
    what = type(value).__name__
    hint = " (a tuple would come back a list: pass a list)" if isinstance(value, tuple) else ""
    return f"{where or 'it'} is a {what}{hint}"
