"""Guarantee 13: statistics(handle) is a frozen snapshot; every request ends in one counter."""

from __future__ import annotations

import math
import random
import sys
from fractions import Fraction

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trioserver import (
    CallTimeout,
    InvalidServerDefinition,
    ServerStatistics,
    Timing,
    call,
    cast,
    open_server,
    serve,
    server,
    statistics,
)
from trioserver._statistics import RELATIVE_ERROR, TimingRecorder

WITHIN = RELATIVE_ERROR
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


def _recorded(samples: list[float]) -> Timing:
    recorder = TimingRecorder()
    for seconds in samples:
        recorder.add(seconds)
    return recorder.snapshot()


def _exact(samples: list[float], q: Fraction) -> float:
    """The nearest-rank percentile: the sample of rank ceil(q * n), counting from 1."""
    return sorted(samples)[math.ceil(q * len(samples)) - 1]


def test_percentiles_of_samples_that_are_all_zero_are_exactly_zero() -> None:
    assert _recorded([0.0] * 5) == Timing(count=5, mean=0.0, p50=0.0, p99=0.0, max=0.0)


def test_a_duration_that_never_varies_is_reported_exactly() -> None:
    assert _recorded([0.0123]) == Timing(count=1, mean=0.0123, p50=0.0123, p99=0.0123, max=0.0123)
    # 300 samples widen the count of their bucket past one byte
    timing = _recorded([0.25] * 300)
    assert (timing.p50, timing.p99) == (0.25, 0.25)


def test_percentiles_of_a_mix_are_within_the_bound() -> None:
    # 40 requests that never queued, 50 that waited 1 ms, 9 that waited 2 ms, one 3 s
    samples = [0.0] * 40 + [1e-3] * 50 + [2e-3] * 9 + [3.0]
    random.Random(0).shuffle(samples)
    timing = _recorded(samples)
    assert timing.count == 100
    assert timing.max == 3.0
    assert timing.mean == pytest.approx((50 * 1e-3 + 9 * 2e-3 + 3.0) / 100)
    assert timing.p50 == pytest.approx(1e-3, rel=WITHIN)  # the 50th smallest
    assert timing.p99 == pytest.approx(2e-3, rel=WITHIN)  # the 99th smallest
    assert _recorded([0.0] * 50 + [1e-3] * 50).p50 == 0.0  # rank 50 is the last zero


def test_p99_leaves_the_zero_bucket_at_its_rank() -> None:
    # rank ceil(0.99 * 100) = 99: 99 zeros hold it; 98 do not
    assert _recorded([0.0] * 99 + [0.5]).p99 == 0.0
    timing = _recorded([0.0] * 98 + [0.5] * 2)
    assert (timing.p50, timing.p99) == (0.0, 0.5)


def test_percentiles_cover_every_sample_since_the_server_started() -> None:
    # the most recent 2,048 samples are all 0.1; most of all 4,148 are 0.3
    timing = _recorded([0.3] * 2100 + [0.1] * 2048)
    assert timing.p50 == pytest.approx(0.3, rel=WITHIN)


def test_durations_past_the_top_bucket_and_under_a_nanosecond_are_counted() -> None:
    timing = _recorded([2e9, 3e9, 4e9])  # the top bucket starts at 1e9 s
    assert (timing.count, timing.mean, timing.max) == (3, 3e9, 4e9)
    assert 2e9 <= timing.p50 <= 4e9  # never outside the samples
    timing = _recorded([5e-10, 0.0])
    assert (timing.count, timing.max, timing.p50, timing.p99) == (2, 5e-10, 0.0, 0.0)


_durations = st.lists(
    st.one_of(
        st.just(0.0),
        st.floats(min_value=1e-7, max_value=100.0),
        st.floats(min_value=-7.0, max_value=2.0).map(lambda e: 10.0**e),  # spread by decade
    ),
    min_size=1,
)


@settings(database=None)
@given(_durations)
def test_percentiles_are_within_the_bound_and_the_rest_is_exact(samples: list[float]) -> None:
    timing = _recorded(samples)
    for reported, q in ((timing.p50, Fraction(1, 2)), (timing.p99, Fraction(99, 100))):
        exact = _exact(samples, q)
        # the slack covers the float rounding of a duration on a bucket's edge
        assert abs(reported - exact) <= WITHIN * exact * (1 + 1e-9), (q, exact)
    total = 0.0
    for seconds in samples:  # summed in order, as recorded: the mean is not estimated
        total += seconds
    n = len(samples)
    assert (timing.count, timing.mean, timing.max) == (n, total / n, max(samples))


def test_percentiles_past_a_sparse_tail_of_outliers() -> None:
    # a read sums the buckets only as far as p99's rank: 1 us and 1 s are 345 buckets apart
    few = _recorded([1e-6] * 1000 + [1.0] * 5)  # p99's rank, 995, is among the 1 us
    assert (few.p50, few.p99, few.max) == (1e-6, 1e-6, 1.0)
    many = _recorded([1e-6] * 1000 + [1.0] * 20)  # p99's rank, 1,010, is among the 1 s
    assert (many.p50, many.p99, many.max) == (1e-6, 1.0, 1.0)


def test_a_recorder_stays_small_whatever_the_number_of_samples() -> None:
    # durations spread evenly over 4 decades (1 us to 10 ms): about 230 buckets
    rng = random.Random(0)
    recorder = TimingRecorder()

    def size() -> int:
        return sys.getsizeof(recorder) + sys.getsizeof(recorder.counts)

    assert size() < 200  # a recorder that saw nothing
    for _ in range(3_000):
        recorder.add(10 ** rng.uniform(-6, -2))
    assert size() < 700  # one byte a bucket
    for _ in range(100_000):
        recorder.add(10 ** rng.uniform(-6, -2))
    assert size() < 1_200  # two bytes a bucket, once a bucket counts more than 255
