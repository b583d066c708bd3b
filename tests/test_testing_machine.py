"""ServerMachine: async rules in one trio run per example, checked at teardown."""

from __future__ import annotations

import functools

import pytest
import trio
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from trioserver import call, server
from trioserver.testing import (
    History,
    IncompleteHistory,
    ModelMismatch,
    NondeterministicTest,
    Operation,
    RaceFound,
    Returned,
    ServerMachine,
    ServerModel,
    initialize,
    invariant,
    race_settings,
    rule,
)
from trioserver.testing._verify import Checked, Run, verify


@server
class Counter:
    def __init__(self) -> None:
        self.value = 0

    @call
    def get(self) -> int:
        return self.value

    @call
    def set(self, value: int) -> None:
        self.value = value

    @call
    async def increment(self) -> int:
        await trio.sleep(0.5)
        self.value += 1
        return self.value


class Increments:
    def __init__(self) -> None:
        self.value = 0

    def increment(self) -> int:
        self.value += 1
        return self.value


async def split_increment(counter: Counter) -> int:
    value = await counter.get()
    await counter.set(value + 1)
    return value + 1


SETTINGS = race_settings(max_examples=30, database=None, stateful_step_count=6)


def test_atomic_increments_pass_and_async_invariants_see_virtual_time() -> None:
    times: list[float] = []

    class Machine(ServerMachine):
        @initialize()
        async def open(self) -> None:
            self.counter = await self.serve(Counter)

        @rule(who=st.sampled_from(["ann", "bob"]))
        async def increment(self, who: str) -> None:
            self.start(who, self.client(self.counter, who).increment)

        @rule()
        async def wait_for_calls(self) -> None:
            await self.settle()

        @invariant()
        async def clock_is_virtual(self) -> None:
            times.append(trio.current_time())

    run_state_machine_as_test(Machine, settings=SETTINGS)
    assert times
    assert all(t == int(t * 2) / 2 for t in times)  # multiples of the 0.5 s handler


def test_split_increments_are_a_race_with_a_story() -> None:
    class Machine(ServerMachine):
        @initialize()
        async def open(self) -> None:
            self.counter = await self.serve(Counter)
            self.increments = self.record("increment", ServerModel(Increments))

        @rule(callers=st.lists(st.sampled_from(["ann", "bob"]), min_size=1, max_size=3))
        async def increment(self, callers: list[str]) -> None:
            # Started in one step, they overlap; a step ends when every task is blocked.
            op = functools.partial(split_increment, self.counter)
            for who in callers:
                self.start(who, self.increments.call, who, op, name="increment", composite=True)

    with pytest.raises(RaceFound) as race:
        run_state_machine_as_test(Machine, settings=SETTINGS)
    assert "increment: not linearizable" in race.value.report
    assert len(race.value.history.entries) == 2


def test_a_call_without_exactly_one_ending_is_reported() -> None:
    history = History("x")
    history.invoke("ann", Operation("increment"))
    with pytest.raises(IncompleteHistory, match="ann: increment"):
        verify(Run((Checked(history, ServerModel(Increments)),), ()), rerun=None, replay="")


def test_a_failing_run_that_runs_differently_again_is_nondeterministic() -> None:
    def run(value: int) -> Run:
        history = History("x")
        entry = history.invoke("ann", Operation("increment"))
        history.end(entry, Returned(value))
        return Run((Checked(history, ServerModel(Increments)),), ())

    with pytest.raises(NondeterministicTest, match="running it again"):
        verify(run(5), rerun=lambda: run(6), replay="")
    with pytest.raises(ModelMismatch):  # one call alone: not a race
        verify(run(5), rerun=lambda: run(5), replay="")
