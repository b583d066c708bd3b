"""What a server has done, as frozen snapshots (`statistics(handle)`), and their recorders.

Durations are counted in log-bucketed histograms, as DDSketch does: bucket ``i`` counts the
durations from ``SMALLEST * GAMMA**i`` up to ``SMALLEST * GAMMA**(i + 1)``, and a percentile is
reported as the point of its bucket that is within `RELATIVE_ERROR` of every duration in it
(clamped to the smallest and largest duration recorded). A recorder keeps counts only for the
span of buckets its durations have reached, so its size depends on how spread they are, not on
how many; recording allocates nothing to keep, and a read walks the counts once, unsorted.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from itertools import accumulate, islice
from typing import Any

import attrs

from ._spec import STATE, spec_of

SMOOTHING = 0.2
"""Weight of the newest run in a method's expected service time (an exponential moving average)."""

RELATIVE_ERROR = 0.02
"""How far a reported `p50` or `p99` may be from the exact one, relative to the exact one."""

GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
"""Each bucket's upper bound over its lower bound (about 17 buckets per doubling)."""

SMALLEST = 1e-9
"""Durations below this (1 ns) count as 0.0 in percentiles: 0.0 is common (a request that
never queued waits 0.0)."""

LARGEST = 1e9
"""Durations from this on (32 years) count in the top bucket: no more than about 1,050 buckets,
whatever a clock returns."""

_SCALE = 1 / math.log2(GAMMA)  # buckets per doubling
_SHIFT = -math.log2(SMALLEST) * _SCALE  # puts SMALLEST at the bottom of bucket 0
_TOP = math.floor(math.log2(LARGEST) * _SCALE + _SHIFT)
_MIDDLE = SMALLEST * (1 + RELATIVE_ERROR)  # bucket i reports _MIDDLE * GAMMA**i
_WIDER = {"B": "H", "H": "I", "I": "Q"}  # counts start at one byte each and widen on overflow
_NO_COUNTS = array("B")  # shared by the recorders that have no bucket yet; never written to
_log2 = math.log2
_floor = math.floor  # not int(), which costs three times as much on a float


@attrs.frozen
class Timing:
    """Durations of one kind (queue wait or service) for one method, in seconds.

    Every figure covers every sample since the server started. `count`, `mean`
    and `max` are exact. `p50` and `p99` are read from a log-bucketed histogram
    of bounded size: each is within 2% of the exact percentile (the sample of rank
    ``ceil(0.50 * count)``, or ``ceil(0.99 * count)``, in ascending order) and
    never outside the smallest and largest samples, so a duration that never
    varies is reported exactly. Samples under 1 ns count as 0.0.
    """

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0


@attrs.frozen
class MethodStatistics:
    """Per-method figures: how long requests waited in the mailbox, and how long handlers ran."""

    queue_wait: Timing = Timing()
    """How long requests that started waited, from the call (or cast) to the handler's start."""
    service: Timing = Timing()
    """How long handlers ran, from their start to their end (return, raise or cut)."""
    expected_service: float = 0.0
    """The service time admission expects of the next run: a moving average of the runs that
    returned or raised (0 until one has)."""


@attrs.frozen
class ServerStatistics:
    """A snapshot of one server's counters, taken by `statistics`.

    Every request ends in exactly one counter: those that never started in
    `withdrawn`, `shed` or `dropped`; those that started in `handled`,
    `failed`, `timed_out` or `cancelled`. Calls a handler makes to its own
    server run inline, as part of that handler, and are not counted.
    """

    queued: int = 0
    """How many requests wait in the mailbox now (guarded calls waiting for their guard
    included)."""
    waiting_on_guard: int = 0
    """How many guarded calls (``@call(when=...)``) wait for their guard now (counted in
    `queued` too)."""
    running: int = 0
    """How many handlers hold the server now (1 or 0)."""
    released: int = 0
    """How many handlers are in a released block now (``trioserver.released()``), not
    holding the server (waiting to take it back included)."""
    released_seconds: float = 0.0
    """The time handlers spent in released blocks, in all (on trio's clock), counted as each
    takes the server back."""
    peak_queued: int = 0
    """The most requests that ever waited at once."""
    withdrawn: int = 0
    """Requests that never started because their caller left (was cancelled or reached its
    deadline) while they were queued."""
    shed: int = 0
    """Requests that never started because they were refused: by admission (the call
    ended as its caller's deadline), by a full mailbox or by abandoned threads
    (`ServerOverloaded`)."""
    dropped: int = 0
    """Requests that never started because the server stopped while they were queued."""
    handled: int = 0
    """Handlers that started and returned."""
    failed: int = 0
    """Handlers that started and raised an exception (passed to the caller, or logged for a
    cast)."""
    timed_out: int = 0
    """Handlers that started and were cut by their deadline (their budget, or their caller's
    deadline if earlier)."""
    cancelled: int = 0
    """Handlers that started and were cut because their caller was cancelled (other than by
    its deadline) or the server stopped."""
    guard_evaluations: int = 0
    """How many times the server evaluated a guard (``@call(when=...)``), in all."""
    loop_blocks: int = 0
    """How many steps of the server's task held the event loop past `BlockDetector`'s
    threshold (0 unless one is installed)."""
    longest_block: float = 0.0
    """The longest such step, in seconds of wall-clock time."""
    abandoned_threads: int = 0
    """How many ``thread=True`` handlers, abandoned when cut, still run in their threads now."""
    threads_abandoned: int = 0
    """How many ``thread=True`` handlers were abandoned while their thread still ran, in all."""
    durable_stored: int = 0
    """Durable casts committed to the store by this run's callers (a cast whose key was
    stored already is not counted)."""
    durable_running: int = 0
    """Stored casts this run has claimed and not finished: queued, running, or waiting out a
    retry's backoff."""
    durable_retried: int = 0
    """Runs of durable casts that failed (raised or were cut) and will be retried."""
    durable_dead: int = 0
    """Durable casts this run kept as dead: failed on their last attempt, or could not run
    (their handler is gone, or their stored arguments no longer fit it)."""
    methods: Mapping[str, MethodStatistics] = attrs.field(factory=dict[str, MethodStatistics])
    """Figures per method name, for the methods that have been called."""


_NO_TIMING = Timing()
_STRIDE = 32  # buckets summed at a time by a read (about two doublings)
_new = object.__new__


def _slot_setters(cls: type) -> tuple[Any, ...]:
    """The setters of a frozen, slotted attrs class's fields, in order: a read makes many
    snapshots, and sets their slots directly (at three quarters of the class's __init__)."""
    return tuple(cls.__dict__[field.name].__set__ for field in attrs.fields(cls))


_count, _mean, _p50, _p99, _max = _slot_setters(Timing)
_queue_wait, _service, _expected_service = _slot_setters(MethodStatistics)


class TimingRecorder:
    """Collects one kind of duration: count, total, max, and a log-bucketed histogram."""

    __slots__ = ("count", "counts", "high", "least", "low", "max", "total", "zeros")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.zeros = 0  # durations under SMALLEST
        self.least = math.inf  # the smallest of the others
        self.low = self.high = 0  # the buckets that counts[0] and counts[-1] count
        self.counts = _NO_COUNTS  # then from the least's bucket to the max's, and no further

    def add(self, seconds: float) -> None:
        self.count += 1
        if seconds < SMALLEST:
            self.zeros += 1
            if seconds:  # (0.0, the commonest, adds nothing: no new float to keep)
                self.total += seconds
                if seconds > self.max:  # only while every sample so far is a zero
                    self.max = seconds
            return
        self.total += seconds
        bucket = _floor(_log2(seconds) * _SCALE + _SHIFT)
        low = self.low
        if low < bucket < self.high:  # inside the span: neither a new least nor a new max
            try:
                self.counts[bucket - low] += 1
            except OverflowError:
                self._widen(bucket - low)
        else:
            self._edge(seconds, bucket)

    def _edge(self, seconds: float, bucket: int) -> None:
        """Count `seconds`, in `bucket`: the span's lowest or highest, or outside it."""
        if seconds > self.max:
            self.max = seconds
        if seconds < self.least:
            self.least = seconds
        bucket = min(bucket, _TOP)
        counts = self.counts
        if not counts:
            counts = array("B", [0])
            self.low = self.high = bucket
        elif bucket < self.low:
            counts = array(counts.typecode, [0]) * (self.low - bucket) + counts
            self.low = bucket
        elif bucket > self.high:
            counts = counts + array(counts.typecode, [0]) * (bucket - self.high)
            self.high = bucket
        self.counts = counts  # a new array of the exact size: growing one in place over-allocates
        try:
            counts[bucket - self.low] += 1
        except OverflowError:
            self._widen(bucket - self.low)

    def _widen(self, i: int) -> None:
        counts = self.counts = array(_WIDER[self.counts.typecode], self.counts.tolist())
        counts[i] += 1

    def snapshot(self) -> Timing:
        count = self.count
        if not count:
            return _NO_TIMING
        timing = _new(Timing)  # (slots set directly: `_slot_setters`)
        _count(timing, count)
        _mean(timing, self.total / count)
        _max(timing, self.max)
        rank99 = (99 * count + 99) // 100  # ranks ceil(q * count)
        zeros = self.zeros
        if zeros >= rank99:  # both in the zero bucket (a method whose calls never queue)
            _p50(timing, 0.0)
            _p99(timing, 0.0)
            return timing
        # up_to[j]: zeros + counts[:j], as far as it takes to reach rank99 (a sparse tail of
        # slow outliers, often most of the span, is not walked)
        sums = accumulate(self.counts, initial=zeros)
        up_to = list(islice(sums, _STRIDE + 1))
        while up_to[-1] < rank99 and len(up_to) <= len(self.counts):  # (the sum is count)
            up_to += islice(sums, _STRIDE)
        j50 = bisect_left(up_to, (count + 1) // 2)
        _p50(timing, self._at(j50))
        _p99(timing, self._at(bisect_left(up_to, rank99, j50)))
        return timing

    def _at(self, j: int) -> float:
        """What to report for a rank first reached at ``up_to[j]``: 0.0 in the zero bucket
        (j = 0), else the middle of bucket ``low + j - 1``, kept within the samples."""
        if not j:
            return 0.0
        middle = _MIDDLE * GAMMA ** (self.low + j - 1)
        if middle < self.least:
            return self.least
        return middle if middle < self.max else self.max


class MethodRecorder:
    """One method's timings in one run of a server, and its expected service time.

    Only handlers that returned or raised teach the expectation: a cut handler only shows
    that its service time was longer than its deadline allowed.
    """

    __slots__ = (
        "expected",
        "hold",
        "learned",
        "learned_at",
        "probing",
        "queue_wait",
        "service",
    )

    def __init__(self) -> None:
        self.queue_wait = TimingRecorder()
        self.service = TimingRecorder()
        self.expected = 0.0
        # the part of it spent holding the server (not in released blocks): what the requests
        # behind wait for
        self.hold = 0.0
        self.learned = 0  # how many runs taught `expected`
        self.learned_at = 0.0  # when the last one ended
        self.probing = False  # admission let one request through to re-learn `expected`

    def ended(self, seconds: float, now: float, cut: bool = False, released: float = 0.0) -> None:
        """A handler ended after `seconds`, `released` of them in released blocks."""
        self.service.add(seconds)
        probed, self.probing = self.probing, False
        if cut:
            return
        if self.learned and not probed:
            self.expected += SMOOTHING * (seconds - self.expected)
            self.hold += SMOOTHING * (seconds - released - self.hold)
        else:  # the first run, or the first since the expectation went stale: start afresh
            self.expected = seconds
            self.hold = seconds - released
        self.learned += 1
        self.learned_at = now

    def snapshot(self) -> MethodStatistics:
        figures = _new(MethodStatistics)  # (slots set directly: `_slot_setters`)
        _queue_wait(figures, self.queue_wait.snapshot())
        _service(figures, self.service.snapshot())
        _expected_service(figures, self.expected)
        return figures


def statistics(handle: object) -> ServerStatistics:
    """A frozen snapshot of what the server behind `handle` has done.

    Works on a running server, and on one that stopped (its last run); a
    server never started reports zeros.

    Cancellation:
      Not a checkpoint: it never blocks, and cannot be cancelled.

    Errors:
      A handler cut by its deadline is counted when it exits, not when its
      caller hears `CallTimeout`: read it after ``wait_all_tasks_blocked()``
      to see such a cut.

    Raises:
      InvalidServerDefinition: `handle`'s class is not a server.
    """
    spec_of(handle)
    snapshot: ServerStatistics = getattr(handle, STATE).statistics()
    return snapshot
