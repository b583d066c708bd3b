"""The hand-back: a caller waiting for a reply goes on in its server's step.

When the server's task ends a handler (one that suspended, or one taken from the mailbox)
and the caller waits for the reply, the caller is stepped on with it inside the server's
step, once a step (`_handoff.answer_here`), instead of in the scheduler's next pass. These
tests cover what is particular to it: the caller takes no step of its own; whatever it
does next (end, raise, stop the server, call again, wait, yield a foreign message) happens
as it would in a step of its own; and a caller calling in a loop never keeps other tasks
from running. Off the private path (``TRIOSERVER_PRIVATE=0``) every caller is woken for
its own step, and the same tests check the same outcomes.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest
import trio
import trio.testing
from outcome import Value

from trioserver import BlockDetector, _private, call, open_server, server, statistics

from .tasks import Foreign, StepCounter

needs_handback = pytest.mark.skipif(
    not _private.ENABLED, reason="hand-back disabled (TRIOSERVER_PRIVATE=0 or an untested trio)"
)


@server(admission=False)
class Ticker:
    def __init__(self) -> None:
        self.count = 0

    @call
    async def tick(self) -> int:
        await trio.lowlevel.checkpoint()  # suspends: the server's task ends it in its own step
        self.count += 1
        return self.count

    @call(timeout=10.0)
    async def hold(self, free: trio.Event) -> None:
        await free.wait()

    @call
    def bump(self) -> int:
        self.count += 1
        return self.count


async def _caller_steps(ticker: Ticker) -> int:
    """Ten calls of `Ticker.tick` from a task of their own: how many steps that task took."""
    counter = StepCounter("caller")
    got: list[int] = []

    async def caller() -> None:
        for _ in range(10):
            got.append(await ticker.tick())

    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, name="caller")
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert got == [got[0] + i for i in range(10)]
    return counter.steps


@needs_handback
async def test_a_waiting_caller_goes_on_in_the_servers_step(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Ticker()) as ticker:
        # its first step makes the first call; each reply steps it on to the next call
        assert await _caller_steps(ticker) == 1
        assert statistics(ticker).handled == 10


@needs_handback
async def test_no_hand_back_while_a_block_detector_times_steps(
    autojump_clock: trio.abc.Clock,
) -> None:
    detector = BlockDetector()
    async with open_server(Ticker()) as ticker:
        trio.lowlevel.add_instrument(detector)
        try:
            assert await _caller_steps(ticker) >= 10  # woken for each reply
        finally:
            trio.lowlevel.remove_instrument(detector)  # (during a step it timed)
        assert await _caller_steps(ticker) == 1  # removed: on again


async def test_callers_that_end_or_raise_right_after_the_reply(
    autojump_clock: trio.abc.Clock,
) -> None:
    got: list[int] = []

    async def once(ticker: Ticker) -> None:
        got.append(await ticker.tick())

    async def fails(ticker: Ticker) -> None:
        await ticker.tick()
        raise ValueError("after the reply")

    async with open_server(Ticker()) as ticker:
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(once, ticker)
        assert sorted(got) == [1, 2, 3, 4, 5]
        with pytest.RaisesGroup(ValueError) as caught:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fails, ticker)
        (error,) = caught.value.exceptions
        frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
        assert frames[0] == "fails"  # the task's own frames only, as trio reports them
        assert statistics(ticker).handled == 6


async def test_a_caller_that_detaches_its_coroutine_right_after_the_reply(
    autojump_clock: trio.abc.Clock,
) -> None:
    detached: list[Any] = []

    async def detaching(ticker: Ticker) -> None:
        await ticker.tick()
        detached.append(trio.lowlevel.current_task().coro)
        await trio.lowlevel.permanently_detach_coroutine_object(Value("detached"))

    async with open_server(Ticker()) as ticker:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(detaching, ticker)
            nursery.start_soon(detaching, ticker)
        assert len(detached) == 2  # both tasks ended; their coroutines are no longer trio's
        assert statistics(ticker).handled == 2
    for coro in detached:
        coro.close()


async def test_a_caller_that_stops_its_server_right_after_the_reply(
    autojump_clock: trio.abc.Clock,
) -> None:
    ticker = Ticker()
    async with open_server(ticker) as handle:
        assert await handle.tick() == 1
        assert await handle.tick() == 2  # (answered in the server's step: the stop comes there)
    assert statistics(handle).handled == 2
    assert statistics(handle).running == 0


async def test_what_a_caller_awaits_after_the_reply_is_applied_as_trio_would(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Ticker()) as ticker:
        await ticker.tick()
        await trio.lowlevel.cancel_shielded_checkpoint()  # a schedule point
        await ticker.tick()
        began = trio.current_time()
        with trio.move_on_after(0) as scope:  # a cancellation pending as it waits
            await trio.sleep(10)
        assert scope.cancelled_caught
        assert trio.current_time() == began
        await ticker.tick()
        with pytest.raises(TypeError, match="unrecognized yield message"):
            await Foreign()
        assert await ticker.tick() == 4


async def test_a_caller_calling_in_a_loop_lets_other_tasks_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    ticks = 0
    seen: list[int] = []
    free, done = trio.Event(), trio.Event()

    async def other() -> None:
        nonlocal ticks
        while True:
            await trio.lowlevel.checkpoint()
            ticks += 1

    async def bump_in_a_loop(ticker: Ticker) -> None:
        for _ in range(200):  # the first one queued behind `hold`; the rest may be too
            await ticker.bump()
            seen.append(ticks)
        done.set()

    async with open_server(Ticker()) as ticker, trio.open_nursery() as nursery:
        nursery.start_soon(ticker.hold, free)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(bump_in_a_loop, ticker)
        await trio.testing.wait_all_tasks_blocked()
        assert statistics(ticker).queued == 1
        nursery.start_soon(other)
        free.set()
        await done.wait()
        nursery.cancel_scope.cancel()
    assert ticker.count == 200
    assert seen[-1] - seen[0] >= 100  # the other task ran between the calls
