"""Recording histories on the client side, on virtual time."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
import trio.testing

from trioserver import CallTimeout, ServerOverloaded, ServerStopped, call, open_server, server
from trioserver.testing import (
    Entry,
    History,
    Operation,
    Raised,
    Refused,
    Returned,
    Unknown,
    classify,
)


@server
class Slow:
    def __init__(self) -> None:
        self.count = 0

    @call(timeout=2.0)
    async def work(self, seconds: float) -> int:
        await trio.sleep(seconds)
        self.count += 1
        return self.count

    @call
    def fail(self) -> None:
        raise ValueError("no")


async def test_calls_are_recorded_with_virtual_times_and_outcomes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    history = History("Slow")
    async with open_server(Slow()) as handle:
        ann = history.client(handle, "ann")
        assert await ann.work(1.0) == 1
        with pytest.raises(CallTimeout):
            await ann.work(5.0)
        with pytest.raises(ValueError, match="no"):
            await ann.fail()
        assert ann.count == 1  # attributes pass through, unrecorded
    first, cut, failed = history.entries
    assert (first.invoked_at, first.ended_at, first.ending) == (0.0, 1.0, Returned(1))
    assert (cut.invoked_at, cut.ended_at) == (1.0, 3.0)
    assert isinstance(cut.ending, Unknown)
    assert isinstance(failed.ending, Raised)
    assert str(first.operation) == "work(1.0)"
    assert history.incomplete() == []


async def test_a_caller_with_a_call_in_flight_is_a_second_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    history = History("Slow")
    async with open_server(Slow()) as handle, trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(history.client(handle, "ann").work, 1.0)
    assert sorted(e.caller for e in history.entries) == ["ann", "ann#2"]


async def test_a_cancelled_caller_is_recorded_as_unknown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    history = History("Slow")
    async with open_server(Slow()) as handle:
        with trio.move_on_after(0.5):
            await history.call("ann", handle.work, 1.0)
    (entry,) = history.entries
    assert entry.ending == Unknown("the caller was cancelled")
    assert entry.operation.name == "work"


def test_endings_are_classified_like_jepsen() -> None:
    assert isinstance(classify(CallTimeout("cut"), composite=False), Unknown)
    assert isinstance(classify(ServerStopped("stopped"), composite=False), Unknown)
    assert isinstance(classify(ServerOverloaded("busy"), composite=False), Refused)
    assert isinstance(classify(ServerOverloaded("busy"), composite=True), Unknown)
    assert isinstance(classify(KeyError("A1"), composite=True), Raised)


def test_an_entry_ended_twice_or_never_is_incomplete() -> None:
    history = History("x")
    twice = history.invoke("a", Operation("op"))
    history.end(twice, Returned(1))
    history.end(twice, Returned(2))
    never = history.invoke("b", Operation("op"))
    assert history.incomplete() == [twice, never]
    assert twice.ending == Returned(1)


def test_importing_trioserver_does_not_import_hypothesis() -> None:
    code = "import sys, trioserver; sys.exit('hypothesis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_invoke_and_end_take_explicit_times() -> None:
    history = History("log")
    first = history.invoke("a", Operation("write", (1,)), at=10)
    second = history.invoke("b", Operation("read"), at=10.5)
    history.end(first, Returned(None), at=12.0)
    history.end(second, Returned(1), at=12.0)  # equal times: the order recorded decides
    assert (first.invoked_at, first.ended_at) == (10.0, 12.0)
    assert (second.invoked_at, second.ended_at) == (10.5, 12.0)
    assert first.invoked < second.invoked < first.ended < second.ended  # type: ignore[operator]
    assert history.incomplete() == []


@pytest.mark.parametrize("at", [float("nan"), float("inf"), "1", True])
def test_an_explicit_time_must_be_a_finite_number(at: object) -> None:
    history = History("log")
    with pytest.raises(ValueError, match="finite number"):
        history.invoke("a", Operation("op"), at=at)  # type: ignore[arg-type]
    assert history.entries == []


def test_explicit_times_must_not_go_back() -> None:
    history = History("log")
    entry = history.invoke("a", Operation("op"), at=5)
    with pytest.raises(ValueError, match=r"before an event already recorded at 5"):
        history.invoke("b", Operation("op"), at=4)
    with pytest.raises(ValueError, match="time order"):
        history.end(entry, Returned(1), at=4.5)
    assert entry.ending is None
    assert entry.endings == 0
    history.end(entry, Returned(1), at=5)
    assert history.incomplete() == []


def test_an_entry_built_by_hand_with_an_ending_counts_as_ended_once() -> None:
    ended = Entry(0, "a", Operation("op"), 0.0, 0, Returned(1), 1.0, 1)
    open_ = Entry(1, "b", Operation("op"), 0.0, 2)
    assert ended.endings == 1
    assert open_.endings == 0
    # As before: endings given explicitly are kept.
    explicit = Entry(2, "c", Operation("op"), 0.0, 3, Returned(1), 1.0, 4, endings=1)
    twice = Entry(3, "d", Operation("op"), 0.0, 5, Returned(1), 1.0, 6, endings=2)
    history = History("by hand")
    history.entries += [ended, open_, explicit, twice]
    assert history.incomplete() == [open_, twice]
