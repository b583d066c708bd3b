"""Cleanup calls and casts: sent from a cancelled task's ``finally`` (``cleanup=True``)."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from trioserver import (
    InvalidServerDefinition,
    ServerStopped,
    call,
    cast,
    open_server,
    server,
    statistics,
)


def make_pool(cleanup: bool) -> type:
    @server
    class Pool:
        def __init__(self, size: int) -> None:
            self.free = list(range(size))

        @call(when=lambda self: bool(self.free))
        def acquire(self) -> int:
            return self.free.pop()

        @call(cleanup=cleanup)
        async def release(self, conn: int) -> int:
            await trio.sleep(0.01)  # returning a connection takes a moment
            self.free.append(conn)
            return len(self.free)

    return Pool


async def holders(pool: object, count: int) -> None:
    async def hold() -> None:
        conn = await pool.acquire()  # type: ignore[attr-defined]
        try:
            await trio.sleep(10.0)  # cancelled while it holds the connection
        finally:
            await pool.release(conn)  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(hold)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()  # holders and waiters alike


async def test_a_plain_release_from_a_cancelled_holder_is_lost(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The problem: trio's rule (an operation that raises Cancelled did not happen).
    async with open_server(make_pool(cleanup=False)(3)) as pool:
        await holders(pool, 4)
        assert pool.free == []  # 3 holders cancelled in `finally`: 3 connections leaked
        assert statistics(pool).methods.get("release") is None


async def test_a_cleanup_release_from_a_cancelled_holder_is_done(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(make_pool(cleanup=True)(3)) as pool:
        await holders(pool, 4)
        assert sorted(pool.free) == [0, 1, 2]
        assert statistics(pool).handled == 3 + 3  # 3 acquired, 3 released


async def test_a_cleanup_call_returns_its_value_then_the_cancellation_comes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(make_pool(cleanup=True)(1)) as pool:
        conn = await pool.acquire()
        after: list[str] = []
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(1.0)
            finally:
                assert await pool.release(conn) == 1  # sent, and its reply awaited
                after.append("released")
                await trio.lowlevel.checkpoint()  # the next checkpoint raises the cancellation
                after.append("not reached")
        assert scope.cancelled_caught
        assert after == ["released"]


async def test_a_cleanup_call_waits_its_turn_and_is_not_withdrawn(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Busy:
        def __init__(self) -> None:
            self.log: list[str] = []

        @call(timeout=None)
        async def work(self, seconds: float) -> None:
            await trio.sleep(seconds)
            self.log.append("work")

        @call(cleanup=True)
        def undo(self, what: str) -> None:
            self.log.append(f"undo {what}")

    async with open_server(Busy()) as busy, trio.open_nursery() as nursery:
        nursery.start_soon(busy.work, 5.0)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1.0):  # its deadline passes while its cleanup waits
            try:
                await trio.sleep(2.0)
            finally:
                await busy.undo("x")
                assert trio.current_time() == 5.0  # after the busy handler, not cut at 1 s
    assert busy.log == ["work", "undo x"]
    assert statistics(busy).withdrawn == 0


async def test_a_cleanup_call_to_a_stopping_server_hears_server_stopped(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Slow:
        @call(timeout=None)
        async def work(self) -> None:
            await trio.sleep(10.0)

        @call(cleanup=True)
        def undo(self) -> None:
            pass

    outcomes: list[str] = []

    async def worker(slow: Slow) -> None:
        with pytest.raises(ServerStopped):
            await slow.work()

    async def cleaner(slow: Slow) -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(1.0)
            finally:
                try:
                    await slow.undo()
                except ServerStopped:
                    outcomes.append("stopped")

    async with trio.open_nursery() as nursery, open_server(Slow()) as slow:
        nursery.start_soon(worker, slow)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(cleaner, slow)
        await trio.testing.wait_all_tasks_blocked()
        # leaving the block stopped the server with undo still queued
    assert outcomes == ["stopped"]


def make_mailer(cleanup: bool) -> type:
    @server
    class Mailer:
        def __init__(self) -> None:
            self.sent: list[str] = []

        @cast(cleanup=cleanup)
        async def send(self, to: str) -> None:
            await trio.sleep(0.5)
            self.sent.append(to)

    return Mailer


@pytest.mark.parametrize("cleanup", [False, True])
async def test_a_cast_from_a_cancelled_tasks_finally(
    autojump_clock: trio.abc.Clock, cleanup: bool
) -> None:
    async with open_server(make_mailer(cleanup)()) as mailer:
        returned: list[bool] = []
        with trio.move_on_after(1.0):
            try:
                await trio.sleep(5.0)  # signing up; cancelled at its deadline
            finally:
                try:
                    await mailer.send("welcome@example.com")
                    returned.append(True)
                except trio.Cancelled:
                    returned.append(False)
                    raise
        await trio.sleep(1.0)
    # a plain cast from a cancelled task raises Cancelled and queues nothing (trio's rule);
    # a cleanup cast is queued, and its await returns
    assert returned == [cleanup]
    assert mailer.sent == (["welcome@example.com"] if cleanup else [])


def test_cleanup_must_be_a_bool() -> None:
    with pytest.raises(InvalidServerDefinition, match=r"Bad\.undo.*cleanup must be True or"):

        @server
        class Bad:
            @call(cleanup="yes")  # type: ignore[call-overload]
            def undo(self) -> None:
                pass
