"""Guarantee 14: guarded calls, ``@call(when=predicate)``, on virtual time (exact times)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trioserver import (
    CallTimeout,
    DeadlockError,
    ServerStopped,
    call,
    cast,
    open_server,
    server,
    statistics,
)

from .expect import refused
from .tasks import cancel_at


@server
class Pool:
    """A pool of connections: `acquire` waits, in the mailbox, for a free one."""

    def __init__(self, size: int = 1) -> None:
        self.free = list(range(size))
        self.log: list[tuple[str, float]] = []
        self.evaluated = 0
        self.guard_tasks: list[trio.lowlevel.Task] = []
        self.handler_tasks: list[trio.lowlevel.Task] = []

    def has_free(self) -> bool:
        self.evaluated += 1
        self.guard_tasks.append(trio.lowlevel.current_task())
        return bool(self.free)

    @call(when=has_free, timeout=1.0)
    async def acquire(self, who: str = "", hold: float = 0.0) -> int:
        self.handler_tasks.append(trio.lowlevel.current_task())
        self.log.append((f"acquire {who}", trio.current_time()))
        await trio.sleep(hold)
        return self.free.pop(0)

    @call
    async def release(self, conn: int) -> None:
        self.log.append((f"release {conn}", trio.current_time()))
        self.free.append(conn)

    @call
    async def work(self, seconds: float) -> str:
        await trio.sleep(seconds)
        self.log.append(("work", trio.current_time()))
        return "worked"

    @call
    async def acquire_inline(self) -> int:
        return await self.acquire("inline")


async def _later(seconds: float, fn: Any, *args: Any) -> None:
    await trio.sleep(seconds)
    await fn(*args)


async def test_a_false_guard_waits_without_holding_the_server(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = Pool(size=0)
    async with open_server(pool) as handle, trio.open_nursery() as nursery:
        nursery.start_soon(handle.acquire, "a")
        await trio.testing.wait_all_tasks_blocked()
        assert await handle.work(2.0) == "worked"  # behind it, it runs: nothing is held
        assert trio.current_time() == 2.0
        assert statistics(handle).waiting_on_guard == 1
        assert statistics(handle).queued == 1
        assert statistics(handle).running == 0
        await handle.release(7)
    assert pool.log == [("work", 2.0), ("release 7", 2.0), ("acquire a", 2.0)]


async def test_a_true_guard_starts_at_once(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(size=1)
    async with open_server(pool) as handle:
        assert await handle.acquire("a") == 0
        assert trio.current_time() == 0.0
        assert statistics(handle).guard_evaluations == 1


async def test_a_waiting_guard_starts_when_a_handler_makes_it_true(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = Pool(size=0)
    async with open_server(pool) as handle, trio.open_nursery() as nursery:
        got: list[tuple[int, float]] = []

        async def acquire() -> None:
            got.append((await handle.acquire("a"), trio.current_time()))

        nursery.start_soon(acquire)
        nursery.start_soon(_later, 3.0, handle.release, 5)
    assert got == [(5, 3.0)]


async def test_the_oldest_waiting_guard_starts_first(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(size=0)
    async with open_server(pool) as handle, trio.open_nursery() as nursery:
        for who in "abc":
            nursery.start_soon(handle.acquire, who)
            await trio.testing.wait_all_tasks_blocked()
        await handle.release(1)
        await trio.testing.wait_all_tasks_blocked()
        await handle.release(2)
        await trio.testing.wait_all_tasks_blocked()
        await handle.release(3)
    assert [entry for entry, _ in pool.log if entry.startswith("acquire")] == [
        "acquire a",
        "acquire b",
        "acquire c",
    ]


async def test_a_guard_that_holds_comes_before_younger_unguarded_requests(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = Pool(size=0)
    async with open_server(pool) as handle, trio.open_nursery() as nursery:
        nursery.start_soon(handle.acquire, "old")  # waits on its guard
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(handle.work, 1.0)  # holds the server until 1.0
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(handle.release, 9)  # queued behind work
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(handle.work, 0.0)  # queued behind release
        await trio.testing.wait_all_tasks_blocked()
    # release made the guard true; the old acquire starts before the younger work
    assert pool.log == [("work", 1.0), ("release 9", 1.0), ("acquire old", 1.0), ("work", 1.0)]


async def test_guards_are_evaluated_in_the_servers_turn_never_polled(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = Pool(size=0)
    async with open_server(pool) as handle, trio.open_nursery() as nursery:
        nursery.start_soon(handle.acquire, "a")
        await trio.testing.wait_all_tasks_blocked()
        assert pool.evaluated == 1  # on arrival
        await trio.sleep(100.0)  # nothing happens to the server: nothing is evaluated
        assert pool.evaluated == 1
        await handle.work(0.0)  # a handler ended: evaluated again (once per method)
        assert pool.evaluated == 2
        await handle.release(1)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.evaluated == 3
        assert statistics(handle).guard_evaluations == 3
        server_tasks = set(pool.guard_tasks) | set(pool.handler_tasks)
    assert len(server_tasks) == 1  # guards run in the server's task, as its handlers do
    assert trio.lowlevel.current_task() not in server_tasks


async def test_a_waiting_guard_is_withdrawn_at_its_callers_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = Pool(size=0)
    async with open_server(pool) as handle:
        with trio.move_on_after(2.5) as scope:
            await handle.acquire("late")
        assert scope.cancelled_caught
        assert trio.current_time() == 2.5
        stats = statistics(handle)
        assert (stats.withdrawn, stats.waiting_on_guard, stats.queued) == (1, 0, 0)
        await handle.release(1)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.free == [1]  # the withdrawn acquire never started
    assert not any(entry.startswith("acquire") for entry, _ in pool.log)


async def test_a_waiting_guard_is_withdrawn_when_its_caller_is_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = Pool(size=0)
    async with open_server(pool) as handle, trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_at, 1.5, scope)
            await handle.acquire("gone")
        assert scope.cancelled_caught
        assert trio.current_time() == 1.5
        assert statistics(handle).withdrawn == 1
        assert statistics(handle).waiting_on_guard == 0


async def test_the_budget_starts_when_the_handler_starts(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(size=0)  # acquire's budget: 1 s
    async with open_server(pool) as handle, trio.open_nursery() as nursery:
        nursery.start_soon(_later, 5.0, handle.release, 3)
        assert await handle.acquire("patient", 0.75) == 3  # waited 5 s, then ran 0.75 s
        assert trio.current_time() == 5.75
        nursery.start_soon(_later, 1.0, handle.release, 4)
        with pytest.raises(CallTimeout):
            await handle.acquire("slow", 2.0)  # its handler is cut 1 s after it started
        assert trio.current_time() == 2.0 + 5.75


async def test_stopping_tells_a_waiting_guard(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(size=0)
    errors: list[BaseException] = []

    async def acquire(handle: Pool) -> None:
        try:
            await handle.acquire("stopped")
        except ServerStopped as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        async with open_server(pool) as handle:
            nursery.start_soon(acquire, handle)
            await trio.sleep(1.0)
        assert statistics(handle).dropped == 1
    assert len(errors) == 1
    assert "before this call started" in str(errors[0])


@server
class Picky:
    def __init__(self) -> None:
        self.error = ValueError("no")
        self.ok = False

    def check(self) -> bool:
        if not self.ok:
            raise self.error
        return True

    @call(when=check)
    def go(self) -> str:
        return "went"

    @call
    def fix(self) -> None:
        self.ok = True


async def test_a_guard_that_raises_gives_its_caller_that_exception(
    autojump_clock: trio.abc.Clock,
) -> None:
    picky = Picky()
    async with open_server(picky) as handle:
        with pytest.raises(ValueError, match="no") as info:
            await handle.go()
        assert info.value is picky.error
        assert statistics(handle).failed == 1
        await handle.fix()  # the server goes on
        assert await handle.go() == "went"


async def test_an_inline_self_call_whose_guard_is_false_is_a_deadlock(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = Pool(size=0)
    async with open_server(pool) as handle:
        with pytest.raises(DeadlockError, match=r"Pool\.acquire"):
            await handle.acquire_inline()
        assert trio.current_time() == 0.0
        await handle.release(2)
        assert await handle.acquire_inline() == 2  # a true guard: it runs inline


async def test_an_idle_server_with_a_waiting_guard_serves_casts_and_calls(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Gate:
        def __init__(self) -> None:
            self.open = False

        @call(when=lambda self: self.open)
        def pass_(self) -> float:
            return trio.current_time()

        @cast
        def unlock(self) -> None:
            self.open = True

    async with open_server(Gate()) as gate, trio.open_nursery() as nursery:
        passed: list[float] = []

        async def pass_() -> None:
            passed.append(await gate.pass_())

        nursery.start_soon(pass_)
        await trio.sleep(4.0)
        await gate.unlock()
    assert passed == [4.0]


# -- definitions ------------------------------------------------------------------------


def test_an_async_guard_is_refused() -> None:
    async def ready(self: object) -> bool:
        return True

    with refused("C.f", "async"):

        class C:
            @call(when=ready)  # type: ignore[arg-type]
            def f(self) -> None: ...


def test_a_guard_that_is_not_callable_is_refused() -> None:
    with refused("C.f", "when="):

        class C:
            @call(when=True)  # type: ignore[arg-type]
            def f(self) -> None: ...


def test_a_guard_that_cannot_take_the_server_object_is_refused() -> None:
    with refused("C.f", "server object"):

        class C:
            @call(when=lambda: True)  # type: ignore[arg-type]
            def f(self) -> None: ...


def test_a_guard_on_a_cast_is_refused() -> None:
    with refused("C.f", "cast"):

        class C:
            @cast(when=lambda self: True)  # type: ignore[call-overload]
            def f(self) -> None: ...
