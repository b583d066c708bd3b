"""When the report is about the model or the harness, not a race: it says so, or refuses early."""

from __future__ import annotations

import pytest
import trio
from hypothesis import strategies as st

from trioserver import call, cast, server
from trioserver.testing import (
    ModelMismatch,
    Operation,
    RaceFound,
    Raised,
    Returned,
    ServerModel,
    call_operations,
    check_scenarios,
    operation,
    race_settings,
)

SETTINGS = race_settings(max_examples=60)


class Insufficient(Exception):
    pass


@server
class Wallets:
    def __init__(self) -> None:
        self.balance = {"w1": 0}

    @call
    def pay(self, wallet: str, amount: int) -> int:
        if self.balance[wallet] < amount:
            raise Insufficient(f"{wallet} has too little")  # the server's words
        self.balance[wallet] -= amount
        return self.balance[wallet]


class WalletsModel:
    """A model written by hand, whose error says less than the server's."""

    def __init__(self) -> None:
        self.balance = {"w1": 0}

    def pay(self, wallet: str, amount: int) -> int:
        if self.balance[wallet] < amount:
            raise Insufficient(wallet)
        self.balance[wallet] -= amount
        return self.balance[wallet]


def test_a_model_that_disagrees_on_a_call_alone_is_a_mismatch_not_a_race() -> None:
    with pytest.raises(ModelMismatch) as caught:
        check_scenarios(
            Wallets,
            model=ServerModel(WalletsModel),
            arguments={"wallet": st.just("w1"), "amount": st.integers(1, 3)},
            settings=SETTINGS,
        )
    error = caught.value
    assert not isinstance(error, RaceFound)
    assert "ran alone" in str(error)
    assert "not a race" in str(error)
    assert error.entry.ending == Raised(Insufficient("w1 has too little"))
    assert error.expected == Raised(Insufficient("w1"))
    assert error.entry.operation.name == "pay"


def test_operation_checks_its_arity_at_definition() -> None:
    async def buy(handle: object, seat: str, user: str) -> None:
        raise AssertionError("never run")  # pragma: no cover

    with pytest.raises(TypeError, match=r"operation\(buy\): .* 1 argument\(s\)"):
        operation(buy, st.just("A1"))  # the user's strategy is missing
    assert operation(buy, st.just("A1"), st.just("ann")).name == "buy"


@server
class Mailer:
    def __init__(self) -> None:
        self.sent: list[str] = []

    @cast
    def send(self, to: str) -> None:
        if not to:
            raise ValueError("no address")  # logged by the server; its caster sees None
        self.sent.append(to)

    @call
    def count(self) -> int:
        return len(self.sent)


def test_casts_are_operations_and_the_model_gives_their_callers_none() -> None:
    names = [op.name for op in call_operations(Mailer)]
    assert names == ["send", "count"]
    model = ServerModel(Mailer)
    state, result = model.apply(model.initial(), Operation("send", ("",)))
    assert result == Returned(None)  # the handler raised; its caster still sees None
    state, result = model.apply(state, Operation("send", ("ann",)))
    assert result == Returned(None)
    assert model.apply(state, Operation("count"))[1] == Returned(1)  # its effect applied
    check_scenarios(  # a correct server: no false alarm, casts queued or run at once
        Mailer, arguments={"to": st.sampled_from(["", "ann", "bob"])}, settings=SETTINGS
    )


@server
class Clocked:
    @call
    def now(self) -> float:
        return trio.current_time()  # a plain handler that needs trio (a token bucket's clock)


def test_a_plain_handler_that_needs_trio_runs_in_trio_in_the_model() -> None:
    model = ServerModel(Clocked)
    assert model.apply(model.initial(), Operation("now"))[1] == Returned(0.0)


@server
class Tally:
    def __init__(self) -> None:
        self.count = 0

    @call
    def bump(self) -> int:
        self.count += 1
        return self.count


def test_a_run_is_public_and_a_seed_repeats_a_search() -> None:
    from trioserver.testing import Checked, Run, Scenario, ScenarioTest, Step

    test = ScenarioTest(Tally)
    run = test.run(Scenario(lanes=((Step(0.0, "bump", ()),),), schedule=()))
    assert isinstance(run, Run)
    assert isinstance(run.checked[0], Checked)
    assert [e.describe() for e in run.checked[0].history.entries] == ["#1: bump() -> 1"]

    class Recording(ScenarioTest[Tally]):
        def __init__(self) -> None:
            super().__init__(Tally)
            self.seen: list[Scenario] = []

        def check(self, scenario: Scenario) -> None:
            self.seen.append(scenario)

    first, second = Recording(), Recording()
    for recording in (first, second):
        recording.hypothesis_test(race_settings(max_examples=15, database=None), seed=7)()
    assert first.seen == second.seen
    assert len(first.seen) >= 10


def test_story_columns_fit_what_they_show() -> None:
    from trioserver.testing import History, timeline

    history = History("Long")
    long_value = "a value of fifty characters, shown whole in a row."
    entry = history.invoke("ann", Operation("echo", (long_value,)))
    history.end(entry, Returned(long_value))
    table = timeline(history.entries)
    assert repr(long_value) in table  # whole: the column is as wide as its widest cell
    assert "..." not in table.replace(") ...", ")")  # only the invocation's own marker
