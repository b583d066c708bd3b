"""What a server has done, as frozen snapshots (`statistics(handle)`), and their recorders."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._spec import STATE, spec_of

WINDOW = 2048
"""How many recent samples per method the percentiles are taken over."""

SMOOTHING = 0.2
"""Weight of the newest run in a method's expected service time (an exponential moving average)."""


@attrs.frozen
class Timing:
    """Durations of one kind (queue wait or service) for one method, in seconds.

    `count`, `mean` and `max` cover every sample since the server started;
    `p50` and `p99` cover the most recent 2,048 (exact, not estimated).
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
    """How many requests wait in the mailbox now."""
    running: int = 0
    """How many handlers run now (1 or 0)."""
    peak_queued: int = 0
    """The most requests that ever waited at once."""
    withdrawn: int = 0
    """Requests that never started because their caller left (was cancelled or reached its
    deadline) while they were queued."""
    shed: int = 0
    """Requests that never started because they were refused with `ServerOverloaded`
    (by admission, or by a full mailbox)."""
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
    loop_blocks: int = 0
    """How many steps of the server's task held the event loop past `BlockDetector`'s
    threshold (0 unless one is installed)."""
    longest_block: float = 0.0
    """The longest such step, in seconds of wall-clock time."""
    abandoned_threads: int = 0
    """How many ``thread=True`` handlers, abandoned when cut, still run in their threads now."""
    threads_abandoned: int = 0
    """How many ``thread=True`` handlers were abandoned while their thread still ran, in all."""
    methods: Mapping[str, MethodStatistics] = attrs.field(factory=dict[str, MethodStatistics])
    """Figures per method name, for the methods that have been called."""


class TimingRecorder:
    """Collects one kind of duration: all-time count, total and max; a window for percentiles."""

    __slots__ = ("count", "max", "recent", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.recent: list[float] = []  # a ring of the last WINDOW samples, grown on demand

    def add(self, seconds: float) -> None:
        count = self.count
        self.count = count + 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        if count < WINDOW:
            self.recent.append(seconds)
        else:
            self.recent[count % WINDOW] = seconds

    def snapshot(self) -> Timing:
        if not self.count:
            return Timing()
        ordered = sorted(self.recent)
        last = len(ordered) - 1
        return Timing(
            count=self.count,
            mean=self.total / self.count,
            p50=ordered[round(0.50 * last)],
            p99=ordered[round(0.99 * last)],
            max=self.max,
        )


class MethodRecorder:
    """One method's timings in one run of a server, and its expected service time.

    Only handlers that returned or raised teach the expectation: a cut handler only shows
    that its service time was longer than its deadline allowed.
    """

    __slots__ = ("expected", "learned", "learned_at", "probing", "queue_wait", "service")

    def __init__(self) -> None:
        self.queue_wait = TimingRecorder()
        self.service = TimingRecorder()
        self.expected = 0.0
        self.learned = 0  # how many runs taught `expected`
        self.learned_at = 0.0  # when the last one ended
        self.probing = False  # admission let one request through to re-learn `expected`

    def ended(self, seconds: float, now: float, cut: bool = False) -> None:
        self.service.add(seconds)
        probed, self.probing = self.probing, False
        if cut:
            return
        if self.learned and not probed:
            self.expected += SMOOTHING * (seconds - self.expected)
        else:  # the first run, or the first since the expectation went stale: start afresh
            self.expected = seconds
        self.learned += 1
        self.learned_at = now

    def snapshot(self) -> MethodStatistics:
        return MethodStatistics(
            queue_wait=self.queue_wait.snapshot(),
            service=self.service.snapshot(),
            expected_service=self.expected,
        )


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
