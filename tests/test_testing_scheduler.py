"""Scheduling under Hypothesis' control: deviations, the canonical order, the fallback."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioserver import call, server
from trioserver.testing import (
    Deviation,
    RaceFound,
    Scenario,
    ScenarioTest,
    SchedulingFallbackWarning,
    ServerModel,
    Step,
    _scheduler,
    hook_available,
    operation,
    steer,
)


def test_the_hook_works_on_this_trio() -> None:
    assert hook_available()


def first_steps(schedule: tuple[Deviation, ...]) -> tuple[list[str], list[str]]:
    order: list[str] = []

    async def main() -> None:
        async def step(name: str) -> None:
            order.append(name)

        async with trio.open_nursery() as nursery:
            for name in ("ann", "bob", "cat"):
                nursery.start_soon(step, name, name=name)

    with steer(schedule) as decisions:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return order, [d.resumed for d in decisions]


def test_no_deviation_is_oldest_task_first_every_time() -> None:
    assert first_steps(()) == (["ann", "bob", "cat"], [])
    assert first_steps(()) == (["ann", "bob", "cat"], [])


def test_a_deviation_resumes_another_task_first_and_is_recorded() -> None:
    assert first_steps((Deviation(0, 2),)) == (["cat", "ann", "bob"], ["cat"])
    assert first_steps((Deviation(0, 1),)) == (["bob", "ann", "cat"], ["bob"])


def test_steering_is_refused_while_another_thread_steers() -> None:
    with steer(()), pytest.raises(RuntimeError, match="one steered trio run"), steer(()):
        pass


def test_without_the_hook_the_fallback_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scheduler, "_available", False)
    with pytest.warns(SchedulingFallbackWarning, match="random_module"):
        _scheduler.schedule_strategy(4)
    with steer(()) as decisions:  # nothing steered: trio's own order
        pass
    assert decisions == []


@server
class SlowCounter:
    def __init__(self) -> None:
        self.value = 0

    @call
    def get(self) -> int:
        return self.value

    @call
    def set(self, value: int) -> None:
        self.value = value


async def slow_increment(counter: SlowCounter) -> int:
    value = await counter.get()
    await trio.sleep(1.0)  # think
    await counter.set(value + 1)
    return value + 1


class Increments:
    def __init__(self) -> None:
        self.value = 0

    def slow_increment(self) -> int:
        self.value += 1
        return self.value


def test_a_race_that_only_an_ordering_shows_needs_a_deviation() -> None:
    # ann reads at t=0 and writes at t=1; bob reads at t=1. In the canonical order ann's write
    # lands first; only resuming bob first at t=1 loses an update.
    test = ScenarioTest(
        SlowCounter,
        operations=[operation(slow_increment)],
        model=ServerModel(Increments),
    )
    lanes = ((Step(0.0, "slow_increment", ()),), (Step(1.0, "slow_increment", ()),))
    test.check(Scenario(lanes, ()))
    found: list[str] = []
    for after in range(12):
        try:
            test.check(Scenario(lanes, (Deviation(after, 1),)))
        except RaceFound as race:
            found.append(race.report)
    assert found
    assert "resumed first" in found[0]
