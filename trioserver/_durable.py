"""Durable casts at run time (guarantee 17): stored in group commits, run at least once.

``await handle.method(...)`` on a durable cast comes here (`durable_cast`): its arguments
are encoded in the caller, the cast joins the next round of its server's `Durable` and
the caller waits until that round is committed. One task per server run (``trioserver:
<Server> store``) does the rounds: everything that arrived since the last commit (new
casts, finished runs to mark, a claim of stored casts, the lease's renewal) is one `Batch`
committed in one transaction in a worker thread, one at a time.

The run holding its queue's lease runs the stored casts: in commit order, through the
mailbox as casts (`StoredRequest`); a run's end comes back to `Durable.ended`, which marks
it done, or retries it after a backoff, or keeps it as dead after its last attempt. A cast
stored while the holder has claimed everything before it goes straight into its mailbox
(stored already claimed); otherwise the holder claims stored casts by chunks, oldest first.
At start the first chunk is claimed and queued before the handle is given out: stored casts
run before new requests. At stop, unfinished claims are given back (pending) with the lease.
"""

from __future__ import annotations

import heapq
import inspect
import logging
import math
import random
import time
import uuid
from threading import get_ident
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import checkpoint_if_cancelled

from ._caller import outside
from ._errors import ServerStopped, StoreError
from ._instrument import CallInfo, Hook
from ._loop import wake
from ._request import StoredRequest
from ._store import (
    Batch,
    Committed,
    Connection,
    Listener,
    NewCast,
    Store,
    StoredCast,
    decode,
    encode,
)

if TYPE_CHECKING:
    from ._spec import Method
    from ._state import ServerState

logger = logging.getLogger("trioserver")

CHUNK = 256
"""Stored casts claimed at a time; more are claimed when fewer than half are left to run."""

RETRY_STORE = 1.0
"""Seconds before a round that failed (the store raised) is tried again."""


class _Round:
    """The callers whose casts are in the next commit: they wait for it together."""

    __slots__ = ("committed", "error", "ids")

    def __init__(self) -> None:
        self.committed = trio.Event()
        self.ids: list[int | None] = []
        self.error: BaseException | None = None


class Durable:
    """A server run's durable casts: its store connection, its rounds, its stored casts."""

    def __init__(self, state: ServerState, store: Store) -> None:
        self.state = state
        self.store = store
        self.queue = store.queue_of(state.spec.cls)
        self.holder = uuid.uuid4().hex
        self.connection: Connection | None = None
        self.listener: Listener | None = None
        self.batch = Batch()
        self.round = _Round()
        self.woken = trio.Event()
        self.holding = False  # this run holds the queue's lease: it runs the stored casts
        self.caught_up = False  # every stored cast of the queue is claimed by this run
        self.told = 0  # news heard (`news`): a claim sent before the last of them is stale
        self.closing = False
        self.closed = trio.Event()
        self.renew_at = -math.inf  # when to renew (or try to take) the lease, trio's clock
        self.later: list[tuple[float, int, StoredCast]] = []  # retries waiting out a backoff
        self.in_memory = 0  # stored casts queued or running in this run
        self.begun = False  # the server started: stored casts go into its mailbox
        self.first: list[StoredCast] = []  # claimed before it started, in order
        self.signatures: dict[str, inspect.Signature] = {}  # by method name (`_signature`)
        # what `statistics` shows
        self.stored = 0  # casts committed by this run's callers
        self.retried = 0  # runs that failed and will be retried
        self.dead = 0  # casts kept as dead by this run

    # -- opening and closing ------------------------------------------------------------------

    async def open(self) -> None:
        """Before the server starts: connect, take the lease if it is free, and queue the first
        stored casts (they run before any new request)."""
        self.connection = await trio.to_thread.run_sync(self.store.connect, self.queue, self.holder)
        try:
            await self._round(Batch(lease=True, claim=CHUNK))
        except BaseException:
            connection, self.connection = self.connection, None
            await trio.to_thread.run_sync(connection.close)
            raise

    def go(self) -> None:
        """The server has started (`on_start` ended): queue the stored casts claimed so far, in
        order, before any new request can come."""
        self.begun = True
        first, self.first = self.first, []
        for row in first:
            self._queue(row)

    async def abandon(self) -> None:
        """The server failed to start: give back the claims and the lease, and close."""
        with trio.CancelScope(shield=True):
            await self._last_round()

    def begin(self, nursery: trio.Nursery) -> None:
        """Start the rounds in `nursery` (and the listener, if any)."""
        name = self.state.spec.name
        nursery.start_soon(self._rounds, name=f"trioserver: {name} store")
        self.listener = self.store.listen(self.queue)
        if self.listener is not None:
            nursery.start_soon(self._listen, self.listener, name=f"trioserver: {name} listener")
        self.store._watch(self.queue, self.news)  # pyright: ignore[reportPrivateUsage]

    def running(self) -> int:
        """Stored casts claimed and not finished: queued, running, or waiting to be retried."""
        return self.in_memory + len(self.later)

    def close(self) -> None:
        """The server is stopping: the last round commits what is left and gives back the
        unfinished claims and the lease."""
        self.closing = True
        self.woken.set()

    def news(self) -> None:
        """Casts may be pending that this run has not claimed (stored elsewhere, requeued), or
        the lease was given back: claim them, or try to take the lease, now."""
        if get_ident() != self.state.thread:
            return  # (told from another thread's trio run: it looks at its next renewal)
        self.told += 1
        self.caught_up = False
        if not self.holding:
            self.renew_at = -math.inf
        self.woken.set()

    async def _listen(self, listener: Listener) -> None:
        try:
            while not self.closing:
                await listener.wait()
                self.news()
        finally:
            listener.close()

    # -- the rounds -----------------------------------------------------------------------------

    async def _rounds(self) -> None:
        try:
            while not self.closing:
                wake_at = min(self.renew_at, self.later[0][0] if self.later else math.inf)
                if not self.batch and trio.current_time() < wake_at:
                    with trio.move_on_at(wake_at):
                        await self.woken.wait()
                self.woken = trio.Event()
                if self.closing:
                    break
                now = trio.current_time()
                while self.later and self.later[0][0] <= now:
                    self._queue(heapq.heappop(self.later)[2])
                if now >= self.renew_at:
                    self.batch.lease = True
                    self.caught_up = False  # (another process may have stored casts: look)
                if self.holding and not self.caught_up and self.in_memory < CHUNK // 2:
                    self.batch.claim = CHUNK
                if self.batch:
                    batch, self.batch = self.batch, Batch()
                    try:
                        await self._round(batch)
                    except Exception:
                        await trio.sleep(RETRY_STORE)
        finally:
            with trio.CancelScope(shield=True):
                await self._last_round()

    async def _last_round(self) -> None:
        self.closing = True
        self.later.clear()  # (claimed: the last round gives them back, with their run_after)
        self.store._unwatch(self.queue, self.news)  # pyright: ignore[reportPrivateUsage]
        batch, self.batch = self.batch, Batch()
        batch.release = True
        try:
            await self._round(batch)
        except Exception:
            pass  # (logged; its callers were told)
        else:
            self.store._news(self.queue)  # pyright: ignore[reportPrivateUsage]
        finally:
            connection, self.connection = self.connection, None
            if connection is not None:
                await trio.to_thread.run_sync(connection.close)
            self.closed.set()

    async def _round(self, batch: Batch) -> None:
        """Commit `batch` (with the casts waiting in `self.round`), then act on what it gave."""
        waiting, self.round = self.round, _Round()
        batch.claim_inserts = self.holding and self.caught_up
        connection = self.connection
        assert connection is not None
        told = self.told
        try:
            committed = await _commit(connection, batch)
        except Exception as exc:
            logger.error(
                "%s: the store failed to commit (%d casts, %d marks): %r",
                self.state.spec.name,
                len(batch.inserts),
                len(batch.done) + len(batch.retried) + len(batch.dead),
                exc,
                exc_info=exc,
            )
            waiting.error = exc
            waiting.committed.set()
            self._keep_marks(batch)
            raise
        self._committed(batch, committed, stale=self.told != told)
        waiting.ids = committed.ids
        waiting.committed.set()

    def _keep_marks(self, batch: Batch) -> None:
        """A failed round's marks go into the next one (its new casts were refused)."""
        self.batch.done[:0] = batch.done
        self.batch.retried[:0] = batch.retried
        self.batch.dead[:0] = batch.dead
        self.batch.lease = True

    def _committed(self, batch: Batch, committed: Committed, stale: bool = False) -> None:
        """Act on a committed round; `stale`: news came while it was in flight (its claim,
        sent before them, cannot say that this run has claimed everything)."""
        was_holding = self.holding
        self.holding = committed.holding
        if batch.lease:
            self.renew_at = trio.current_time() + self.store.lease / 3
        name = self.state.spec.name
        if was_holding and not committed.holding and not batch.release:
            logger.error(
                "%s lost its lease on the queue %r (not renewed in time): another run took "
                "it over; casts this run still holds may run twice",
                name,
                self.queue,
            )
        if committed.took_over:
            self.caught_up = False
        if batch.claim and committed.holding:
            if len(committed.claimed) < batch.claim and not stale:
                self.caught_up = True
            for row in committed.claimed:
                self._queue(row)
        pending = False
        for new, number in zip(batch.inserts, committed.ids, strict=True):
            if number is None:
                continue  # its key was stored already
            self.stored += 1
            if "cast_stored" in self.state.instruments.listeners.hooked:
                self._notify("cast_stored", new.method, number, None)
            if committed.inserted_claimed:
                row = StoredCast(number, new.method, new.payload, 0, new.attempts, 0.0)
                self._queue(row, bound=True)
            elif committed.holding:
                self.caught_up = False  # stored pending: claim it next round
                self.woken.set()
            else:
                pending = True
        if pending:  # stored for the lease holder: tell it, if it runs in this process
            self.store._news(self.queue, self.news)  # pyright: ignore[reportPrivateUsage]
        if self.holding and not self.caught_up:
            self.woken.set()

    # -- running stored casts ---------------------------------------------------------------

    def _queue(self, row: StoredCast, bound: bool = False) -> None:
        """Queue `row` in the server's mailbox (or wait out its backoff first). `bound`: its
        arguments were bound to this handler's parameters by its caller in this run (a cast
        this run just stored), so they fit: only stored casts of other runs are checked."""
        state = self.state
        if state.stopping:
            return  # it stays claimed; the last round gives it back
        if not self.begun:
            self.first.append(row)
            return
        wait = row.run_after - time.time()
        if wait > 0:
            self._later(row, wait)
            return
        method = state.spec.methods.get(row.method)
        if method is None or method.kind != "cast":
            self._dead(row, row.failed, f"{state.spec.name} has no cast {row.method!r}")
            return
        try:
            args, kwargs = decode(row.payload)
            if not bound:
                self._signature(method).bind(None, *args, **kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            self._dead(row, row.failed, f"its stored arguments no longer fit: {exc!r}")
            return
        state.numbered += 1
        request = StoredRequest(
            method, tuple(args), kwargs or None, None, math.inf, state, state.now(), 0.0,
            state.numbered, state.instruments.listeners,
        )  # fmt: skip
        request.waiting = False
        request.row = row
        request.runner = self
        self.in_memory += 1
        state.mailbox.put(request)
        wake(state)
        if "call_queued" in request.heard.hooked:
            state.emit("call_queued", request)

    def _signature(self, method: Method) -> inspect.Signature:
        """`method`'s handler's signature, which stored arguments must bind (`TypeError` if
        they no longer fit: its code changed); computed once a run."""
        signature = self.signatures.get(method.name)
        if signature is None:
            signature = self.signatures[method.name] = inspect.signature(method.fn)
        return signature

    def _later(self, row: StoredCast, wait: float) -> None:
        heapq.heappush(self.later, (trio.current_time() + wait, row.id, row))
        self.woken.set()

    def ended(self, request: StoredRequest, error: BaseException | None, stopped: bool) -> None:
        """A stored cast's run ended (in the server's task): mark it, or retry it."""
        self.in_memory -= 1
        row: StoredCast = request.row
        if stopped:
            return  # cut by the stop: it stays stored, and runs at the next start
        if error is None:
            self.batch.done.append(row.id)
        else:
            failed = row.failed + 1
            if failed >= row.attempts:
                self._dead(row, failed, repr(error))
            else:
                method = request.method
                assert method.durable is not None
                wait = min(
                    method.durable.backoff * 2 ** (failed - 1), method.durable.max_backoff
                ) * random.uniform(0.5, 1.0)
                logger.warning(
                    "durable cast %s (#%d) failed on attempt %d of %d: %r; retried in %.3g s",
                    method.label,
                    row.id,
                    failed,
                    row.attempts,
                    error,
                    wait,
                )
                self.retried += 1
                if "cast_retried" in self.state.instruments.listeners.hooked:
                    self._notify("cast_retried", row.method, row.id, repr(error))
                after = time.time() + wait
                self.batch.retried.append((row.id, failed, after, repr(error)))
                # (its wait is on trio's clock while this run lives; `after` is for a later run)
                self._later(
                    StoredCast(row.id, row.method, row.payload, failed, row.attempts, 0.0), wait
                )
        self.woken.set()

    def _dead(self, row: StoredCast, failed: int, error: str) -> None:
        self.dead += 1
        logger.error(
            "durable cast %s.%s (#%d) is dead (%s): %s; it stays in the store "
            "(Store.dead_casts, Store.requeue)",
            self.state.spec.name,
            row.method,
            row.id,
            f"after {failed} attempts" if failed else "it cannot run",
            error,
        )
        self.batch.dead.append((row.id, failed, error))
        if "cast_dead" in self.state.instruments.listeners.hooked:
            self._notify("cast_dead", row.method, row.id, error)
        self.woken.set()

    def _notify(self, hook: Hook, method: str, number: int, reason: str | None) -> None:
        state = self.state
        now = state.now()
        info = CallInfo(
            server=state.spec.name,
            method=f"{state.spec.name}.{method}",
            kind="cast",
            number=number,
            queued_at=now,
            ended_at=None if hook == "cast_stored" else now,
            reason=reason,
            stored_as=number,
            server_id=id(state.obj),
        )
        state.notify(hook, info, state.instruments.listeners)


async def _commit(connection: Connection, batch: Batch) -> Committed:
    """Commit `batch` in a worker thread, shielded: its callers wait for its answer, and
    what it committed must be acted on even if the store's task is being cancelled."""
    with trio.CancelScope(shield=True):
        return await trio.to_thread.run_sync(connection.commit, batch)
    raise AssertionError("unreachable: a shielded scope does not catch")  # pragma: no cover


async def durable_cast(
    state: ServerState, method: Method, args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> None:
    """``await handle.method(...)`` on a durable cast: store it; return once committed."""
    durability = method.durable
    assert durability is not None
    if get_ident() != state.thread:
        raise outside(state, method)
    payload = encode(method, args, kwargs)
    key: str | None = None
    if durability.key is not None:
        found = durability.key(*args, **(kwargs or {}))
        if found is not None and not isinstance(found, str):
            raise TypeError(
                f"{method.label}: its key= function returned {found!r}; an idempotency key "
                f"is a str (or None: no key)"
            )
        key = found
    await checkpoint_if_cancelled()  # Cancelled: not stored
    durable = state.durable
    if state.stopping or not isinstance(durable, Durable) or durable.closing:
        raise ServerStopped(f"{method.label}: {state.spec.name} is not running: it was stopped")
    waiting = durable.round
    durable.batch.inserts.append(NewCast(method.name, payload, key, durability.attempts))
    durable.woken.set()
    await waiting.committed.wait()  # (cancelled here: the cast may be stored or not)
    if waiting.error is not None:
        raise StoreError(
            f"{method.label}: the store failed to commit it ({waiting.error!r}); it may or "
            f"may not be stored"
        ) from waiting.error
