# pyright: reportUnnecessaryTypeIgnoreComment=true
"""Type tests for trioserver.testing: scenario tests, their results and failures. Checked by
``mypy --strict`` and pyright strict, never run."""

from __future__ import annotations

from typing import assert_type

from hypothesis import strategies as st

from trioserver import call, server
from trioserver.testing import (
    Checked,
    ClientOperation,
    Decision,
    Entry,
    History,
    ModelMismatch,
    RaceFound,
    Result,
    Run,
    Scenario,
    ScenarioTest,
    ServerModel,
    Step,
    Violation,
    check_scenarios,
    operation,
    race_settings,
)


@server
class Counter:
    def __init__(self) -> None:
        self.value = 0

    @call
    def get(self) -> int:
        return self.value


async def read(counter: Counter) -> int:
    return await counter.get()


async def read_both(counters: tuple[Counter, Counter]) -> int:
    return await counters[0].get() + await counters[1].get()


class Total:
    def read_both(self) -> int:
        return 0


def check_testing() -> None:
    test = ScenarioTest(Counter, operations=[operation(read)], lanes=2, delays=(0.0, 0.5))
    assert_type(test, ScenarioTest[Counter])
    scenario = Scenario(lanes=((Step(0.0, "read"), Step(0.5, None)),), schedule=())
    assert_type(scenario.operations, int)
    run = test.run(scenario)
    assert_type(run, Run)
    assert_type(run.checked, tuple[Checked, ...])
    assert_type(run.checked[0].history, History)
    assert_type(run.decisions, tuple[Decision, ...])
    smaller = test.minimal(scenario)
    assert_type(smaller, tuple[Scenario, RaceFound] | None)
    test.hypothesis_test(race_settings(max_examples=10), seed=3)()
    pair = ScenarioTest(
        lambda: (Counter(), Counter()),
        operations=[operation(read_both)],
        model=ServerModel(Total),
    )
    assert_type(pair, ScenarioTest[tuple[Counter, Counter]])
    assert_type(operation(read), ClientOperation)
    check_scenarios(Counter, seed=1, settings=race_settings(database=None))
    try:
        test.check(scenario)
    except RaceFound as race:
        assert_type(race.scenario, Scenario | None)
        assert_type(race.violation, Violation)
        assert_type(race.history, History)
    except ModelMismatch as mismatch:
        assert_type(mismatch.entry, Entry)
        assert_type(mismatch.expected, Result)


def check_testing_must_fail() -> None:
    Step(0.0, 3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    ScenarioTest(Counter, lanes="2")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    operation(read, st.just(1), name=2)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
