"""Guarantee 13: statistics(handle) is a frozen snapshot; every request ends in one counter."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from trioserver import (
    CallTimeout,
    InvalidServerDefinition,
    ServerStatistics,
    call,
    cast,
    open_server,
    serve,
    server,
    statistics,
)

WITHIN = 0.01
"""The relative error of `p50` and `p99` that `Timing` promises."""


@server(admission=False)  # admission has its own tests: here every request is admitted
class Counted:
    @call(timeout=1.0)
    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    @call
    def fail(self) -> None:
        raise ValueError


async def test_statistics_count_each_ending_once(autojump_clock: trio.abc.Clock) -> None:
    c = Counted()
    assert statistics(c) == ServerStatistics()  # never started: zeros
    async with open_server(c), trio.open_nursery() as nursery:
        await c.sleep(0.1)  # handled
        with pytest.raises(ValueError, match=r"^$"):
            await c.fail()  # failed
        with pytest.raises(CallTimeout):
            await c.sleep(5.0)  # timed_out
        with trio.CancelScope() as scope:  # cancelled: the caller left while it ran
            nursery.start_soon(_cancel_after, scope, 0.5)
            await c.sleep(0.9)
        nursery.start_soon(c.sleep, 0.8)  # keeps the server busy...
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.2):
            await c.sleep(0.1)  # ...so this one is withdrawn
        running = statistics(c)
        assert (running.running, running.queued) == (1, 0)
        for _ in range(3):
            nursery.start_soon(c.sleep, 0.1)
        await trio.testing.wait_all_tasks_blocked()
        busy = statistics(c)
        assert (busy.running, busy.queued, busy.peak_queued) == (1, 3, 3)
    final = statistics(c)
    assert attrs.evolve(final, methods={}) == ServerStatistics(
        queued=0,
        running=0,
        peak_queued=3,
        withdrawn=1,
        shed=0,
        dropped=0,
        handled=5,
        failed=1,
        timed_out=1,
        cancelled=1,
    )
    assert set(final.methods) == {"sleep", "fail"}
    sleep = final.methods["sleep"]
    assert sleep.queue_wait.count == 7  # every started request; the withdrawn one is not
    assert sleep.service.count == 7
    # service times: 0.1, 1.0 (cut), 0.5 (caller left), 0.8 and three of 0.1
    assert sleep.service.max == pytest.approx(1.0)
    assert sleep.service.p50 == pytest.approx(0.1, rel=WITHIN)
    assert sleep.service.p99 == pytest.approx(1.0, rel=WITHIN)
    assert sleep.service.mean == pytest.approx((0.1 + 1.0 + 0.5 + 0.8 + 3 * 0.1) / 7)
    # the last three queued 0.2 s into the 0.8 s call: they waited 0.6, 0.7 and 0.8 s; the
    # other four never queued and waited 0.0
    assert sleep.queue_wait.max == pytest.approx(0.8)
    assert sleep.queue_wait.p50 == 0.0
    assert sleep.queue_wait.p99 == pytest.approx(0.8, rel=WITHIN)


async def _cancel_after(scope: trio.CancelScope, seconds: float) -> None:
    await trio.sleep(seconds)
    scope.cancel()


def test_statistics_are_frozen() -> None:
    stats = ServerStatistics()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.handled = 1  # type: ignore[misc]


def test_statistics_of_a_non_server_is_refused() -> None:
    with pytest.raises(InvalidServerDefinition, match="not a server"):
        statistics(object())


@server
class Noting:
    @cast
    async def note(self) -> None:
        await trio.sleep(1)


def test_running_is_zero_once_a_stop_has_cut_a_running_cast() -> None:
    # Whether the server's task or `serve`'s task sees the cancellation first depends on
    # trio's scheduling: both orders must leave nothing running. 30 runs meet both.
    async def main() -> int:
        noting = Noting()
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, noting)
            await trio.sleep(0.5)
            await noting.note()
            await trio.sleep(0.5)  # the cast's handler is running
            nursery.cancel_scope.cancel()
        stats = statistics(noting)
        assert stats.cancelled == 1
        return stats.running

    runs = [trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) for _ in range(30)]
    assert runs == [0] * 30
