"""Handlers that block: thread handlers, abandoned when cut; the loop-block detector; crashes."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import trio
import trio.testing

from trioserver import (
    BlockDetector,
    CallTimeout,
    InvalidServerDefinition,
    ServerCrashed,
    ServerOverloaded,
    call,
    cast,
    open_server,
    server,
    statistics,
)


@server(max_abandoned_threads=1)
class Legacy:
    """A library call that sometimes never returns (the seed's incident), run in threads."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finished = threading.Event()
        self.calls = 0

    @call(timeout=0.5, thread=True)
    def lookup(self, key: str) -> str:
        self.calls += 1
        try:
            self.release.wait(5.0)  # stuck until the test lets it go (bounded)
            return key
        finally:
            self.finished.set()

    @call(timeout=None, thread=True)
    def lookup_unbounded(self, key: str) -> str:
        # no budget, so a MockClock's autojump cannot race the thread to a deadline
        return key

    @call
    def quick(self) -> str:
        return "quick"


async def _until(condition: object, seconds: float = 2.0) -> None:
    """Poll a condition that a worker thread makes true, on the wall clock, briefly."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "worker thread did not finish"
        await trio.to_thread.run_sync(time.sleep, 0.005)


async def test_stuck_thread_handler_times_out_and_the_server_goes_on(
    autojump_clock: trio.abc.Clock,
) -> None:
    legacy = Legacy()
    async with open_server(legacy):
        with pytest.raises(CallTimeout, match=r"Legacy\.lookup .*budget of 0\.5 s"):
            await legacy.lookup("a")
        assert trio.current_time() == 0.5
        assert await legacy.quick() == "quick"  # served at once, thread still stuck
        assert trio.current_time() == 0.5
        stats = statistics(legacy)
        assert (stats.timed_out, stats.abandoned_threads, stats.threads_abandoned) == (1, 1, 1)
        legacy.release.set()
        await trio.to_thread.run_sync(legacy.finished.wait, 2.0)
        await _until(lambda: statistics(legacy).abandoned_threads == 0)
        assert statistics(legacy).threads_abandoned == 1


async def test_too_many_abandoned_threads_are_refused(autojump_clock: trio.abc.Clock) -> None:
    legacy = Legacy()
    async with open_server(legacy):
        with pytest.raises(CallTimeout):
            await legacy.lookup("a")
        with pytest.raises(ServerOverloaded, match="abandoned"):
            await legacy.lookup("b")  # one thread already abandoned: the bound is 1
        legacy.release.set()
        await _until(lambda: statistics(legacy).abandoned_threads == 0)
        assert legacy.calls == 1  # the refused call never ran
        assert await legacy.lookup_unbounded("c") == "c"  # room again


async def test_thread_handler_result_reaches_the_caller(autojump_clock: trio.abc.Clock) -> None:
    legacy = Legacy()
    async with open_server(legacy):
        assert await legacy.lookup_unbounded("k") == "k"
        assert statistics(legacy).abandoned_threads == 0
        assert statistics(legacy).threads_abandoned == 0


def test_thread_true_on_async_handler_is_refused() -> None:
    with pytest.raises(InvalidServerDefinition, match=r"Bad\.handler.*thread=True"):

        class Bad:
            @call(thread=True)
            async def handler(self) -> None:
                pass


@server
class Busy:
    @call
    def block(self, seconds: float) -> None:
        time.sleep(seconds)  # blocks the event loop: what the detector is for

    @call
    def fine(self) -> None:
        pass


async def test_block_detector_reports_handlers_that_hold_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    detector = BlockDetector(threshold=0.02)
    trio.lowlevel.add_instrument(detector)
    try:
        async with open_server(Busy()) as busy:
            await busy.fine()
            await busy.block(0.05)
            stats = statistics(busy)
    finally:
        trio.lowlevel.remove_instrument(detector)
    assert stats.loop_blocks == 1
    assert stats.longest_block >= 0.05
    (record,) = [r for r in caplog.records if "held the event loop" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "Busy.block" in record.getMessage()


@server
class Fragile:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @cast(crash=True)
    def apply(self, entry: str) -> None:
        if entry == "corrupt":
            raise ValueError("corrupt entry")
        self.seen.append(entry)

    @call
    async def read(self) -> list[str]:
        return self.seen

    @call
    async def hold(self) -> None:
        await trio.sleep(1.0)


async def test_a_cast_marked_to_crash_crashes_the_server(autojump_clock: trio.abc.Clock) -> None:
    told: list[BaseException] = []

    async def reader(fragile: Fragile) -> None:
        try:
            await fragile.read()
        except ServerCrashed as exc:
            told.append(exc)

    fragile = Fragile()

    async def scenario() -> None:
        async with open_server(fragile), trio.open_nursery() as nursery:
            nursery.start_soon(fragile.hold)
            await trio.testing.wait_all_tasks_blocked()
            await fragile.apply("ok")
            await fragile.apply("corrupt")
            nursery.start_soon(reader, fragile)  # queued behind the crash
            await trio.sleep_forever()

    with pytest.raises(ValueError, match="corrupt entry"):
        await scenario()
    assert fragile.seen == ["ok"]
    assert len(told) == 1
    assert isinstance(told[0], trio.BrokenResourceError)
    with pytest.raises(ServerCrashed, match="crashed"):
        await fragile.read()
