"""trioserver.testing with servers that wait without holding the server (guarantees 14-15):
the default model runs a handler's released block as a server with nothing else to serve
would, keeps a guarded call whose guard is false from taking effect, and a scenario's lanes
end (their calls cancelled) at its settle limit, so a guard that never holds ends the run. A
run stuck for good (a deadlock) is reported as `RunStuck` and abandoned, not left to hang."""

from __future__ import annotations

import math
import time

import hypothesis
import pytest
import trio
from hypothesis import strategies as st

from trioserver import NotInHandlerError, call, cast, released, server
from trioserver.testing import (
    Deviation,
    GuardIsFalse,
    IncompleteHistory,
    Operation,
    RaceFound,
    Raised,
    Returned,
    RunStuck,
    Scenario,
    ScenarioTest,
    ServerModel,
    Step,
    Unknown,
    race_settings,
)


class Empty(Exception):
    pass


def never(self: Guarded) -> bool:
    raise Empty("the guard looked")


@server
class Guarded:
    def __init__(self) -> None:
        self.free = 0
        self.log: list[str] = []

    @call(when=lambda self: self.free > 0)
    def take(self) -> int:
        self.free -= 1
        return self.free

    @call(when=never)
    def broken(self) -> None:
        pass

    @call
    def give(self) -> int:
        self.free += 1
        return self.free

    @call(timeout=2.0)
    async def pay_then_give(self, seconds: float) -> tuple[float, int]:
        self.log.append("checked")
        async with released():
            await trio.sleep(seconds)  # the model runs it to completion, budget or not
            self.log.append("paid")
        self.free += 1
        return trio.current_time(), self.free

    @call
    async def released_twice(self) -> None:
        async with released(), released():  # refused in a server: refused in the model too
            pass

    @cast
    async def give_later(self) -> None:
        async with released():
            await trio.sleep(1.0)
        self.free += 1


def test_the_model_runs_a_released_block_to_its_end_holding_the_server_after() -> None:
    model = ServerModel(Guarded)
    state = model.initial()
    after, result = model.apply(state, Operation("pay_then_give", (5.0,)))
    assert result == Returned((5.0, 1))  # the block ran, then the rest of the handler
    assert after.obj.log == ["checked", "paid"]
    assert after.obj.free == 1
    assert state.obj.free == 0  # the state it was given is left as it was
    after, result = model.apply(after, Operation("give_later"))
    assert result == Returned(None)  # a cast's caller sees None
    assert after.obj.free == 2


def test_a_released_block_inside_another_is_refused_in_the_model_as_in_a_server() -> None:
    model = ServerModel(Guarded)
    _, result = model.apply(model.initial(), Operation("released_twice"))
    assert isinstance(result, Raised)
    assert isinstance(result.error, NotInHandlerError)


def test_a_guarded_call_takes_no_effect_where_its_guard_is_false() -> None:
    model = ServerModel(Guarded)
    state = model.initial()
    same, result = model.apply(state, Operation("take"))
    assert same is state
    assert isinstance(result, Raised)
    assert isinstance(result.error, GuardIsFalse)
    assert "take" in str(result.error)
    # It matches no outcome a caller saw (but an unknown one).
    assert result != Raised(GuardIsFalse("take"))
    state, _ = model.apply(state, Operation("give"))
    state, result = model.apply(state, Operation("take"))
    assert result == Returned(0)


def test_a_guard_that_raises_gives_its_error_in_the_model_as_in_the_server() -> None:
    model = ServerModel(Guarded)
    state = model.initial()
    same, result = model.apply(state, Operation("broken"))
    assert same is state
    assert result == Raised(Empty("the guard looked"))


def test_a_lane_waiting_on_a_guard_that_never_holds_is_cancelled_at_the_settle_limit() -> None:
    test = ScenarioTest(Guarded, settle_limit=30.0)
    lanes = ((Step(0.0, "take", ()),), (Step(0.0, "give", ()), Step(1.0, "take", ())))
    run = test.run(Scenario(lanes, schedule=()))
    entries = run.checked[0].history.entries
    endings = {(e.caller, str(e.operation)): e for e in entries}
    first = endings["#1", "take()"]
    assert first.ending == Returned(0)  # it waited for bob's give
    late = endings["#2", "take()"]
    assert isinstance(late.ending, Unknown)  # none left: it waited until the limit
    assert late.ended_at == pytest.approx(30.0)
    test.check(Scenario(lanes, schedule=()))  # and the history is linearizable


def test_the_race_finder_sees_a_check_made_stale_by_a_released_block() -> None:
    @server
    class Stale:
        def __init__(self) -> None:
            self.stock = 1

        @call(timeout=10.0)
        async def buy(self) -> int:
            if self.stock < 1:
                raise Empty("sold out")
            async with released():  # another buyer is served meanwhile
                await trio.sleep(1.0)
            self.stock -= 1  # not checked again
            return self.stock

    test = ScenarioTest(Stale, lanes=2, steps=1)
    with pytest.raises(RaceFound) as caught:
        test.hypothesis_test(race_settings(database=None, max_examples=200), seed=0)()
    entries = caught.value.history.entries
    assert len(entries) == 2
    assert sorted(str(e.ending) for e in entries) == ["-> -1", "-> 0"]


@hypothesis.settings(max_examples=20, deadline=None, database=None)
@hypothesis.given(gives=st.integers(0, 3), takes=st.integers(0, 3))
def test_the_model_of_a_guarded_pool_agrees_with_the_pool_run_alone(gives: int, takes: int) -> None:
    model = ServerModel(Guarded)
    state = model.initial()
    for _ in range(gives):
        state, _ = model.apply(state, Operation("give"))
    for n in range(takes):
        state, result = model.apply(state, Operation("take"))
        if n < gives:
            assert result == Returned(gives - n - 1)
        else:
            assert isinstance(result, Raised)
            assert isinstance(result.error, GuardIsFalse)
    assert state.obj.free == max(0, gives - takes)


# -- a run stuck for good is reported, not hung -------------------------------------------


@server
class Stubborn:
    """A handler that waits, shielded, for what never comes: its server can never stop."""

    def __init__(self) -> None:
        self.calls = 0

    @call(timeout=None)
    async def wait_forever(self) -> None:
        self.calls += 1
        with trio.CancelScope(shield=True):
            await trio.Event().wait()

    @call(thread=True, timeout=None)
    def block_a_little(self) -> str:
        time.sleep(0.3)  # real time, in a worker thread: no task runs, no deadline is due
        return "done"

    @call
    def count(self) -> int:
        return self.calls


def test_a_deadlocked_run_is_reported_and_abandoned() -> None:
    test = ScenarioTest(Stubborn, settle_limit=10.0, stuck_after=0.2)
    scenario = Scenario(((Step(1.0, "wait_forever", ()),),), schedule=())
    started = time.monotonic()
    with pytest.raises(RunStuck) as caught:
        test.check(scenario)
    assert time.monotonic() - started < 5.0
    stuck = caught.value
    assert isinstance(stuck, IncompleteHistory)
    assert "the run stopped for good at t=10.000" in stuck.report
    assert "test.replay(" + repr(scenario) + ")" in stuck.report
    assert any(line.startswith("trioserver: Stubborn: ") for line in stuck.waiting)
    assert any("wait_forever" in line for line in stuck.waiting), stuck.waiting
    (entry,) = stuck.history.entries
    assert isinstance(entry.ending, Unknown)  # its caller was cancelled at the settle limit
    # The abandoned run left nothing behind: the next one runs (and is steered) as usual.
    lanes = ((Step(0.0, "count", ()),), (Step(0.0, "count", ()),))
    run = test.run(Scenario(lanes, schedule=(Deviation(after=0, resume=1),)))
    assert [e.ending for e in run.checked[0].history.entries] == [Returned(0)] * 2
    assert run.decisions  # the schedule was followed


def test_the_race_finder_reports_a_deadlock_and_shrinks_it() -> None:
    test = ScenarioTest(Stubborn, settle_limit=10.0, stuck_after=0.05)
    with pytest.raises(RunStuck) as caught:
        test.hypothesis_test(race_settings(database=None, max_examples=20), seed=0)()
    (entry,) = caught.value.history.entries
    assert entry.operation.name == "wait_forever"


def test_a_wait_for_a_worker_thread_is_not_taken_for_a_deadlock() -> None:
    # (No deadline at all: with one, virtual time would jump to it while the thread runs.)
    test = ScenarioTest(Stubborn, settle_limit=math.inf, stuck_after=2.0)
    lanes = ((Step(0.0, "block_a_little", ()),), (Step(0.0, "block_a_little", ()),))
    run = test.run(Scenario(lanes, schedule=()))
    assert [e.ending for e in run.checked[0].history.entries] == [Returned("done")] * 2
