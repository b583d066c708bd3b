"""Guarantee 10: casts are fire and forget, with their own budget; failures logged, counted."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trioserver import ServerStopped, call, cast, open_server, server, statistics


@server
class Audit:
    def __init__(self) -> None:
        self.notes: list[tuple[str, float]] = []

    @cast(timeout=2.0)
    async def note(self, text: str, seconds: float = 0.0) -> None:
        await trio.sleep(seconds)
        self.notes.append((text, trio.current_time()))

    @cast
    def broken(self) -> None:
        raise ValueError("bad note")

    @call
    def read(self) -> list[str]:
        return [text for text, _ in self.notes]


async def test_cast_returns_once_queued_before_its_handler_runs(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Audit()) as a:
        await a.note("hello", 1.0)
        assert a.notes == []
        assert statistics(a).queued + statistics(a).running == 1
        assert await a.read() == ["hello"]  # FIFO: the cast ran before this call
        assert a.notes == [("hello", 1.0)]


async def test_cast_cancelled_before_queueing_is_not_queued(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Audit()) as a:
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.note("never")
        assert scope.cancelled_caught
        assert await a.read() == []
        stats = statistics(a)
        assert stats.handled == 1  # only the read ran: a queued cast would have run first
        assert stats.withdrawn == stats.dropped == 0
        assert "note" not in stats.methods


async def test_cast_does_not_inherit_the_casters_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Audit()) as a:
        with trio.move_on_after(0.1):
            await a.note("outlives caster", 1.5)
        await trio.sleep(3.0)
        assert a.notes == [("outlives caster", 1.5)]
        assert statistics(a).timed_out == 0


async def test_cast_exception_is_logged_and_counted_and_server_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioserver")
    async with open_server(Audit()) as a:
        await a.broken()
        assert await a.read() == []
        assert statistics(a).failed == 1
    (record,) = [r for r in caplog.records if r.name == "trioserver"]
    assert record.levelno >= logging.WARNING
    assert "Audit.broken" in record.getMessage()
    assert "bad note" in record.getMessage()


async def test_cast_timeout_is_logged_and_counted(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioserver")
    async with open_server(Audit()) as a:
        await a.note("too slow", 10.0)
        await a.note("fine", 0.0)
        assert await a.read() == ["fine"]
        assert trio.current_time() == 2.0  # cut at its 2 s budget, then the rest ran
        assert statistics(a).timed_out == 1
    (record,) = [r for r in caplog.records if r.name == "trioserver"]
    assert record.levelno >= logging.WARNING
    assert "Audit.note" in record.getMessage()
    assert "2 s" in record.getMessage()


async def test_cast_to_a_stopped_server_raises_server_stopped(
    autojump_clock: trio.abc.Clock,
) -> None:
    audit = Audit()
    with pytest.raises(ServerStopped, match="never started"):
        await audit.note("x")
    async with open_server(audit) as a:
        pass
    with pytest.raises(ServerStopped, match="stopped"):
        await a.note("x")


async def test_a_cast_that_swallows_its_cut_leaves_no_cancellation_for_the_next_handler(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Swallows:
        def __init__(self) -> None:
            self.swallowed = 0

        @cast(timeout=1.0)
        async def stubborn(self) -> None:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                self.swallowed += 1  # returns normally: the cut is swallowed

        @call(timeout=5.0)
        async def nap(self) -> float:
            await trio.sleep(2.0)
            return trio.current_time()

    async with open_server(Swallows()) as s:
        start = trio.current_time()
        await s.stubborn()
        assert await s.nap() == start + 3.0  # not cancelled by the cast's spent scope
        assert s.swallowed == 1
