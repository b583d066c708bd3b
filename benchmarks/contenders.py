"""The servers under test: trioserver and the alternatives a trio user would write instead.

Every trio contender serves the same tiny request, ``bump(n)``: add `n` to a counter and
return it. Each is an async context manager yielding the coroutine function a caller awaits,
so the harness's loop is the same for all of them; a contender that casts yields that and a
coroutine function that returns once the server has done every cast (`CastOpener`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio
from outcome import Error, Outcome, Value
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from trioserver import Instrument, call, open_server, server

Bump = Callable[[int], Awaitable[object]]
Opener = Callable[[], AbstractAsyncContextManager[Bump]]
Settle = Callable[[], Awaitable[object]]
"""Returns once the server has done every request sent to it so far (after casts)."""
CastOpener = Callable[[], AbstractAsyncContextManager[tuple[Bump, Settle]]]

BUDGET = 5.0  # what the seed pattern uses per request; trioserver's default budget too


# -- trioserver -------------------------------------------------------------------------------


@server
class Counter:
    """The server under test: one async handler, one plain one, with the default budget."""

    def __init__(self) -> None:
        self.count = 0

    @call
    async def bump(self, n: int) -> int:
        self.count += n
        return self.count

    @call
    def bump_def(self, n: int) -> int:
        self.count += n
        return self.count

    @call
    async def bump_checkpoint(self, n: int) -> int:
        """A handler that suspends once: its deadline must really be armed."""
        await trio.lowlevel.checkpoint()
        self.count += n
        return self.count


@server
class Idle:
    """A server with one handler, like the hand-written actor: what the memory section opens."""

    def __init__(self) -> None:
        self.count = 0

    @call
    async def bump(self, n: int) -> int:
        self.count += n
        return self.count


@server
class Triple:
    """Three handlers: one that returns at once, a plain ``def``, one that suspends once."""

    def __init__(self) -> None:
        self.count = 0

    @call
    async def bump(self, n: int) -> int:
        self.count += n
        return self.count

    @call
    def bump_def(self, n: int) -> int:
        self.count += n
        return self.count

    @call
    async def bump_checkpoint(self, n: int) -> int:
        await trio.lowlevel.checkpoint()
        self.count += n
        return self.count


async def _repeat(bump: Bump, times: int) -> None:
    for _ in range(times):
        await bump(1)


async def exercise(handle: Triple, calls: int = 3000) -> None:
    """`calls` calls on each of `handle`'s methods: 2/3 by one caller, 1/3 by 10 at once."""
    together = calls // 3
    for bump in (handle.bump, handle.bump_def, handle.bump_checkpoint):
        await _repeat(bump, calls - together)
        async with trio.open_nursery() as nursery:
            for i in range(10):  # queued behind one another
                nursery.start_soon(_repeat, bump, together // 10 + (i < together % 10))


@server
class UnlimitedCounter:
    """The same handlers with ``timeout=None``: no budget at all."""

    def __init__(self) -> None:
        self.count = 0

    @call(timeout=None)
    async def bump(self, n: int) -> int:
        self.count += n
        return self.count

    @call(timeout=None)
    def bump_def(self, n: int) -> int:
        self.count += n
        return self.count

    @call(timeout=None)
    async def bump_checkpoint(self, n: int) -> int:
        await trio.lowlevel.checkpoint()
        self.count += n
        return self.count


def trioserver_opener(
    cls: type[Counter] | type[UnlimitedCounter],
    method: str,
    *,
    instrumented: bool | Callable[[], Instrument] = False,
) -> Opener:
    @asynccontextmanager
    async def opener() -> AsyncGenerator[Bump, None]:
        instruments = instruments_for(instrumented)
        async with open_server(cls(), instruments=instruments) as handle:
            bump: Bump = getattr(handle, method)
            yield bump

    return opener


# -- baselines without a server task ------------------------------------------------------------


class Plain:
    """A plain object: the floor. Its ``bump`` does not even checkpoint."""

    def __init__(self) -> None:
        self.count = 0

    async def bump(self, n: int) -> int:
        self.count += n
        return self.count


@asynccontextmanager
async def direct() -> AsyncGenerator[Bump, None]:
    yield Plain().bump


class Checkpointing:
    """The least any trio call that may switch tasks costs: one bare checkpoint."""

    def __init__(self) -> None:
        self.count = 0

    async def bump(self, n: int) -> int:
        await trio.lowlevel.checkpoint()
        self.count += n
        return self.count


@asynccontextmanager
async def checkpoint_floor() -> AsyncGenerator[Bump, None]:
    yield Checkpointing().bump


class Locked:
    """The shared object guarded by a `trio.Lock`: what ``@call`` on a plain ``def`` replaces."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = trio.Lock()

    async def bump(self, n: int) -> int:
        async with self.lock:
            self.count += n
            return self.count


@asynccontextmanager
async def locked() -> AsyncGenerator[Bump, None]:
    yield Locked().bump


# -- hand-written actors ------------------------------------------------------------------------


class Reply:
    """One request to a hand-written actor, and the slot its answer comes back in."""

    __slots__ = ("done", "error", "n", "result")

    def __init__(self, n: int) -> None:
        self.n = n
        self.done = trio.Event()
        self.result: object = None
        self.error: Exception | None = None

    def unwrap(self) -> object:
        if self.error is not None:
            raise self.error
        return self.result


class Actor:
    """The textbook trio actor: a task reads a memory channel; replies via `trio.Event` + slot."""

    def __init__(self, obj: Plain | None = None) -> None:
        self.obj = Plain() if obj is None else obj
        self.send, self.receive = trio.open_memory_channel[Reply](math.inf)

    async def serve(self) -> None:
        obj = self.obj
        async for request in self.receive:
            try:
                request.result = await obj.bump(request.n)
            except Exception as exc:
                request.error = exc
            request.done.set()

    async def bump(self, n: int) -> object:
        request = Reply(n)
        await self.send.send(request)
        await request.done.wait()
        return request.unwrap()


@asynccontextmanager
async def actor() -> AsyncGenerator[Bump, None]:
    async with trio.open_nursery() as nursery:
        it = Actor()
        nursery.start_soon(it.serve)
        yield it.bump
        nursery.cancel_scope.cancel()


class SeedActor(Actor):
    """The seed's pattern by hand: per request, a nursery, a child task, and `move_on_after`."""

    async def serve(self) -> None:
        async for request in self.receive:
            with trio.move_on_after(BUDGET) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._handle, request)
            if scope.cancelled_caught:
                request.error = trio.TooSlowError(f"bump did not finish within {BUDGET} s")
            request.done.set()

    async def _handle(self, request: Reply) -> None:
        try:
            request.result = await self.obj.bump(request.n)
        except Exception as exc:
            request.error = exc


@asynccontextmanager
async def seed_actor() -> AsyncGenerator[Bump, None]:
    async with trio.open_nursery() as nursery:
        it = SeedActor()
        nursery.start_soon(it.serve)
        yield it.bump
        nursery.cancel_scope.cancel()


@attrs.define(eq=False)
class Parked:
    """A request in the lowest-level mailbox: the parked caller and its argument."""

    n: int
    task: Task
    queued: bool = True


class LowLevelActor:
    """The least a trio mailbox can do: a deque, `reschedule` and `wait_task_rescheduled`;
    running `Plain.bump`, or the `handler` given."""

    def __init__(self, handler: Bump | None = None) -> None:
        self.obj = Plain()
        self.handler = self.obj.bump if handler is None else handler
        self.queue: deque[Parked] = deque()
        self.waiter: Task | None = None

    def _stop_waiting(self, _: Any) -> Abort:
        self.waiter = None
        return Abort.SUCCEEDED

    async def serve(self) -> None:
        handler = self.handler
        queue = self.queue
        while True:
            if not queue:
                self.waiter = current_task()
                await wait_task_rescheduled(self._stop_waiting)
                continue
            request = queue.popleft()
            if not request.queued:
                continue  # its caller left
            request.queued = False
            outcome: Outcome[object]
            try:
                outcome = Value(await handler(request.n))
            except Exception as exc:
                outcome = Error(exc)
            reschedule(request.task, outcome)

    async def bump(self, n: int) -> object:
        request = Parked(n, current_task())
        self.queue.append(request)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            reschedule(waiter)

        def withdraw(_: Any) -> Abort:
            if request.queued:
                request.queued = False
                return Abort.SUCCEEDED
            return Abort.FAILED  # pragma: no cover (its handler runs: it waits for the reply)

        return await wait_task_rescheduled(withdraw)


@asynccontextmanager
async def lowlevel_actor() -> AsyncGenerator[Bump, None]:
    async with trio.open_nursery() as nursery:
        it = LowLevelActor()
        nursery.start_soon(it.serve)
        yield it.bump
        nursery.cancel_scope.cancel()


# -- the registry -------------------------------------------------------------------------------


@attrs.frozen
class Contender:
    name: str
    label: str
    open: Opener | None  # None (and no open_casts): measured without trio (Pykka)
    caller_deadline: float | None = None  # seconds: callers call inside move_on_after(this)
    baseline: str | None = None  # the contender its "x baseline" ratios are to
    open_casts: CastOpener | None = None  # callers cast; the run ends when the server settled


ACTOR = "actor"
LOCK = "trio_lock"
FLOOR = "checkpoint_floor"

ROUNDTRIP: list[Contender] = [
    Contender(
        "trioserver_async",
        "trioserver @call async (budget 5 s)",
        trioserver_opener(Counter, "bump"),
    ),
    Contender(
        "trioserver_def",
        "trioserver @call def (budget 5 s)",
        trioserver_opener(Counter, "bump_def"),
    ),
    Contender("direct", "direct method call (no checkpoint)", direct),
    Contender(LOCK, "trio.Lock-guarded method", locked),
    Contender(FLOOR, "checkpoint floor (await trio.lowlevel.checkpoint())", checkpoint_floor),
    Contender(ACTOR, "hand-written actor (channel + Event)", actor),
    Contender("lowlevel_mailbox", "lowest-level mailbox (deque + reschedule)", lowlevel_actor),
    Contender("seed_by_hand", "seed pattern by hand (nursery + child + move_on_after)", seed_actor),
]

BUDGET_CONTENDERS: list[Contender] = [
    Contender(ACTOR, "hand-written actor (reference)", actor),
    Contender("async_budget", "@call async, budget 5 s", trioserver_opener(Counter, "bump")),
    Contender(
        "async_none", "@call(timeout=None) async", trioserver_opener(UnlimitedCounter, "bump")
    ),
    Contender(
        "async_budget_caller_deadline",
        "@call async, budget 5 s, caller under move_on_after(3600)",
        trioserver_opener(Counter, "bump"),
        caller_deadline=3600.0,
    ),
    Contender(
        "async_budget_instrumented",
        "@call async, budget 5 s, a no-op Instrument installed",
        trioserver_opener(Counter, "bump", instrumented=True),
    ),
    Contender("def_budget", "@call def, budget 5 s", trioserver_opener(Counter, "bump_def")),
    Contender(
        "def_none", "@call(timeout=None) def", trioserver_opener(UnlimitedCounter, "bump_def")
    ),
    Contender(
        "suspending_budget",
        "@call async that checkpoints, budget 5 s",
        trioserver_opener(Counter, "bump_checkpoint"),
    ),
    Contender(
        "suspending_none",
        "@call(timeout=None) async that checkpoints",
        trioserver_opener(UnlimitedCounter, "bump_checkpoint"),
    ),
]


def instruments_for(instrumented: bool | Callable[[], Instrument]) -> list[Instrument]:
    """None, a no-op instrument (its price), or the one `instrumented` makes."""
    if callable(instrumented):
        return [instrumented()]
    return [Instrument()] if instrumented else []
