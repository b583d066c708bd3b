"""Guarantees 1 and 2: one handler at a time, FIFO, and self-calls that cannot deadlock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioserver import DeadlockError, call, open_server, server, statistics

from .servers import Recorder


async def test_at_most_one_handler_runs_at_any_moment(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Recorder()) as rec, trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(rec.work, f"c{i}", 1.0)
        nursery.start_soon(rec.note, "cast")
    assert rec.peak_running == 1
    assert trio.current_time() == pytest.approx(5.0)


async def test_requests_start_in_arrival_order(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Recorder()) as rec, trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(rec.work, f"c{i}", 0.5)
            await trio.testing.wait_all_tasks_blocked()  # c{i} is queued before c{i+1} arrives
    starts = [entry for entry in rec.log if entry.startswith("start")]
    assert starts == [f"start c{i}" for i in range(6)]


@server
class SelfCaller:
    def __init__(self) -> None:
        self.value = 0

    @call(timeout=2.0)
    async def outer(self) -> tuple[int, float]:
        await trio.sleep(0.5)
        inner = await self.inner()  # from the handler's own task: runs inline
        return inner, trio.current_effective_deadline()

    @call(timeout=10.0)
    def inner(self) -> int:
        self.value += 1
        return self.value

    @call(timeout=2.0)
    async def spawn_and_call(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.inner)  # from a task the handler started


async def test_self_call_from_handler_runs_inline_inside_outer_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(SelfCaller()) as s:
        start = trio.current_time()
        with trio.fail_after(5.0):  # no deadlock, no queueing behind itself
            value, deadline = await s.outer()
        assert value == 1
        assert deadline == pytest.approx(start + 2.0)  # the outer budget, not inner's 10 s
        assert statistics(s).handled == 1  # the inline call is part of outer, not a request


async def test_self_call_from_task_started_by_handler_raises_deadlock_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(SelfCaller()) as s:
        start = trio.current_time()
        with pytest.raises(ExceptionGroup) as info:
            await s.spawn_and_call()
        assert trio.current_time() == start  # refused at once, not after a timeout
        (error,) = info.value.exceptions
        assert isinstance(error, DeadlockError)
        assert "SelfCaller.inner" in str(error)
        assert "SelfCaller.spawn_and_call" in str(error)
        assert s.value == 0
