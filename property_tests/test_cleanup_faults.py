"""Fault injection for cleanup calls and casts (``cleanup=True``): Hypothesis draws a pool of
connections, holders that acquire one and release it in ``finally`` (with a cleanup call, or a
cleanup cast), cancellations and deadlines at any moment, slow releases, and the server's stop
at any moment; on virtual time.

Invariants: every connection is accounted for (free, or held by a holder whose release never
reached a running server, told ServerStopped); each release ran at most once, and exactly once
if the server was running when it was sent; every cleanup call ended in exactly one outcome (its
value or ServerStopped), never Cancelled, whatever its caller's cancellation; statistics add up.
Small in ``make test``; ``TRIOSERVER_FAULT_EXAMPLES=N`` runs N.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from property_tests.scale import fault_settings
from trioserver import ServerStopped, call, cast, open_server, server, statistics


@server(timeout=None)
class Pool:
    def __init__(self, size: int, release_seconds: float) -> None:
        self.free = list(range(size))
        self.release_seconds = release_seconds
        self.released: list[int] = []  # the holders whose release ran, in order

    @call(when=lambda self: bool(self.free))
    def acquire(self) -> int:
        return self.free.pop()

    def _put_back(self, conn: int, holder: int) -> int:
        if conn in self.free:
            raise AssertionError(f"connection {conn} released while free")
        self.free.append(conn)
        self.released.append(holder)
        return len(self.free)

    @call(cleanup=True)
    async def release(self, conn: int, holder: int) -> int:
        await trio.sleep(self.release_seconds)
        return self._put_back(conn, holder)

    @cast(cleanup=True)
    async def release_later(self, conn: int, holder: int) -> None:
        await trio.sleep(self.release_seconds)
        self._put_back(conn, holder)


@attrs.frozen
class Holder:
    start: float
    hold: float  # how long it holds before returning it itself
    cancel_at: float | None  # its scope cancelled at this time (maybe before it acquired)
    deadline: float | None  # or a deadline on its whole life
    by_cast: bool  # releases with the cleanup cast rather than the cleanup call


@attrs.frozen
class Scenario:
    size: int
    release_seconds: float
    holders: tuple[Holder, ...]
    stop_at: float | None  # the server stops then (None: well after every holder finished)


times = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])


@st.composite
def scenarios(draw: Callable[..., Any]) -> Scenario:
    holders = draw(
        st.lists(
            st.builds(
                Holder,
                start=times,
                hold=times,
                cancel_at=st.none() | times,
                deadline=st.none() | times,
                by_cast=st.booleans(),
            ),
            min_size=1,
            max_size=6,
        )
    )
    return Scenario(
        size=draw(st.integers(1, 3)),
        release_seconds=draw(st.sampled_from([0.0, 0.1, 0.75])),
        holders=tuple(holders),
        stop_at=draw(st.none() | times),
    )


@attrs.define
class Seen:
    acquired: dict[int, int] = attrs.Factory(dict)  # holder -> its connection
    outcomes: dict[int, object] = attrs.Factory(dict)  # holder -> its release's outcome


async def run(scenario: Scenario) -> tuple[Pool, Seen]:
    pool = Pool(scenario.size, scenario.release_seconds)
    seen = Seen()
    left = len(scenario.holders)
    all_done = trio.Event()

    async def holder(index: int, spec: Holder) -> None:
        nonlocal left
        try:
            await trio.sleep(spec.start)
            with trio.CancelScope() as scope:
                if spec.deadline is not None:
                    scope.deadline = trio.current_time() + spec.deadline
                if spec.cancel_at is not None:
                    scope.deadline = min(scope.deadline, trio.current_time() + spec.cancel_at)
                try:
                    conn = await pool.acquire()
                except ServerStopped:
                    return
                seen.acquired[index] = conn
                try:
                    await trio.sleep(spec.hold)
                finally:
                    try:
                        if spec.by_cast:
                            seen.outcomes[index] = await pool.release_later(conn, index)
                        else:
                            seen.outcomes[index] = await pool.release(conn, index)
                    except ServerStopped as exc:
                        seen.outcomes[index] = exc
                    except trio.Cancelled as exc:  # must never happen to a cleanup call
                        seen.outcomes[index] = exc
                        raise
        finally:
            left -= 1
            if left == 0:
                all_done.set()

    # (the holders' nursery outlives the server's block)
    async with trio.open_nursery() as nursery, open_server(pool):
        for index, spec in enumerate(scenario.holders):
            nursery.start_soon(holder, index, spec)
        if scenario.stop_at is None:
            await all_done.wait()
            await trio.sleep(10.0)  # the casts queued last run: the server outlives them all
        else:
            await trio.sleep(scenario.stop_at)
    return pool, seen


def check(scenario: Scenario) -> None:
    pool, seen = trio.run(run, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    stats = statistics(pool)
    problems = []
    for index, outcome in seen.outcomes.items():
        if isinstance(outcome, trio.Cancelled):
            problems.append(f"holder {index}: its cleanup release raised Cancelled")
    released = pool.released
    if len(set(released)) != len(released):
        problems.append(f"a release ran twice: holders {released}")
    for index in seen.acquired:
        if index not in seen.outcomes:
            problems.append(f"holder {index}: its release has no outcome")
        elif seen.outcomes[index] is None and not scenario.holders[index].by_cast:
            problems.append(f"holder {index}: a cleanup call returned None")
        elif isinstance(seen.outcomes[index], int) and index not in released:
            problems.append(f"holder {index}: its release returned, but never ran")
        elif not isinstance(seen.outcomes[index], int | ServerStopped | None):
            problems.append(f"holder {index}: its release got {seen.outcomes[index]!r}")
        if scenario.stop_at is None and index not in released:
            problems.append(f"holder {index}: the server outlived it, its release never ran")
    held_by_unreleased = {conn for index, conn in seen.acquired.items() if index not in released}
    if sorted(set(pool.free) | held_by_unreleased) != list(range(scenario.size)):
        problems.append(
            f"connections not accounted for: free {pool.free}, held by holders whose release "
            f"did not run {sorted(held_by_unreleased)}, size {scenario.size}"
        )
    if scenario.stop_at is None and sorted(pool.free) != list(range(scenario.size)):
        problems.append(f"the server outlived every holder, yet free is {pool.free}")
    if stats.handled != len(seen.acquired) + len(released):
        problems.append(
            f"handled={stats.handled}, but {len(seen.acquired)} acquired and "
            f"{len(released)} released"
        )
    assert not problems, f"{scenario}\n" + "\n".join(problems)


@fault_settings(150)
@given(scenarios())
def test_cleanup_releases_are_never_lost(scenario: Scenario) -> None:
    check(scenario)
