"""Scenarios as a user meets them: lane names, scheduling decisions by lane, several servers,
small stories (waits, delays that shrink in small steps, minimal replays), and where
Hypothesis keeps its files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis
import pytest
import trio
from hypothesis import strategies as st

from trioserver import call, server
from trioserver.testing import (
    Deviation,
    RaceFound,
    Scenario,
    ScenarioTest,
    ServerModel,
    Step,
    check_scenarios,
    operation,
    race_settings,
)


@server
class Tally:
    def __init__(self) -> None:
        self.count = 0

    @call
    def bump(self) -> int:
        self.count += 1
        return self.count


# -- lane names -------------------------------------------------------------------------------


def test_lanes_are_named_so_that_no_drawn_value_looks_like_one() -> None:
    test = ScenarioTest(Tally, lanes=9)
    lanes = tuple((Step(0.0, "bump"),) for _ in range(9))
    entries = test.run(Scenario(lanes, schedule=())).checked[0].history.entries
    callers = [e.caller for e in entries]
    assert sorted(callers, key=lambda c: int(c[1:])) == [f"#{i}" for i in range(1, 10)]
    # (a name from "ann", "bob"... would read like the users a test draws, and wrapped at 8)


# -- scheduling decisions name tasks by lane --------------------------------------------------


async def bump_twice(tally: Tally) -> list[int]:
    """A client operation that makes two calls at once, from two tasks of its own."""
    results: list[int] = []

    async def grab() -> None:
        results.append(await tally.bump())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(grab)
        nursery.start_soon(grab)
    return sorted(results)


class TwoBumps:
    def __init__(self) -> None:
        self.count = 0

    def bump_twice(self) -> list[int]:
        self.count += 2
        return [self.count - 1, self.count]


def test_scheduling_decisions_name_tasks_by_lane() -> None:
    test = ScenarioTest(
        Tally, operations=[operation(bump_twice)], model=ServerModel(TwoBumps), lanes=2
    )
    lanes = ((Step(0.0, "bump_twice"),), (Step(0.0, "bump_twice"),))
    run = test.run(Scenario(lanes, schedule=(Deviation(3, 1),)))
    assert run.decisions
    for decision in run.decisions:
        for name in (*decision.runnable, decision.resumed):
            assert name.startswith("#") or name.startswith("trioserver"), decision.describe()
    names = {name for d in run.decisions for name in d.runnable}
    assert names & {"#1/grab", "#2/grab"}  # a lane's own tasks: the lane, then the function


# -- several servers --------------------------------------------------------------------------


@server
class Account:
    def __init__(self, balance: int) -> None:
        self.balance = balance

    @call
    def withdraw(self, amount: int) -> None:
        self.balance -= amount

    @call
    def deposit(self, amount: int) -> None:
        self.balance += amount

    @call
    def read(self) -> int:
        return self.balance


def two_accounts() -> tuple[Account, Account]:
    return Account(100), Account(0)


async def transfer(accounts: tuple[Account, Account], amount: int) -> None:
    source, target = accounts
    await source.withdraw(amount)
    await trio.sleep(1.0)  # (a network hop between the two servers)
    await target.deposit(amount)


async def total(accounts: tuple[Account, Account]) -> int:
    return await accounts[0].read() + await accounts[1].read()


class Ledger:
    """The composite model: both accounts, each operation at once."""

    def __init__(self) -> None:
        self.balances = [100, 0]

    def transfer(self, amount: int) -> None:
        self.balances[0] -= amount
        self.balances[1] += amount

    def total(self) -> int:
        return sum(self.balances)


def test_a_transfer_between_two_servers_is_a_scenario_with_a_composite_model() -> None:
    operations = [operation(transfer, st.sampled_from([10, 20])), operation(total)]
    with pytest.raises(RaceFound) as caught:
        check_scenarios(
            two_accounts,
            operations=operations,
            model=ServerModel(Ledger),
            settings=race_settings(max_examples=300, database=None),
            seed=0,
        )
    race = caught.value
    assert race.report.startswith("Account, Account: not linearizable")
    assert {e.operation.name for e in race.violation.entries} == {"transfer", "total"}
    total_seen = [e for e in race.violation.entries if e.operation.name == "total"]
    assert any(str(e.ending) != "-> 100" for e in total_seen)  # money in flight


def test_several_servers_need_operations_and_a_model() -> None:
    with pytest.raises(TypeError, match="several servers"):
        ScenarioTest(two_accounts)
    with pytest.raises(TypeError, match="no @server object"):
        ScenarioTest(lambda: 42)


def test_a_replay_naming_an_unknown_operation_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\['bunp'\]"):
        ScenarioTest(Tally).run(Scenario(((Step(0.0, "bunp"),),), schedule=()))


def test_bad_options_are_refused_at_definition() -> None:
    with pytest.raises(ValueError, match="lanes=0"):
        ScenarioTest(Tally, lanes=0)
    with pytest.raises(ValueError, match="delays"):
        ScenarioTest(Tally, delays=())
    with pytest.raises(ValueError, match="delays"):
        ScenarioTest(Tally, delays=(0.0, -1.0))


# -- small stories ----------------------------------------------------------------------------

QUIET = hypothesis.settings(database=None, max_examples=2000)


def smallest_positive_delay(test: ScenarioTest[Any]) -> list[float]:
    found = hypothesis.find(
        test.scenarios(),
        lambda s: sum(step.delay for lane in s.lanes for step in lane) > 0,
        settings=QUIET,
    )
    return [step.delay for lane in found.lanes for step in lane]


def test_delays_shrink_toward_zero_in_small_steps() -> None:
    assert smallest_positive_delay(ScenarioTest(Tally)) == [0.5]  # by default: 0, 0.5, 1
    # in increasing order, whatever order they are given in
    assert smallest_positive_delay(ScenarioTest(Tally, delays=(1.0, 0.0, 0.25))) == [0.25]


def test_a_step_can_be_a_pure_wait() -> None:
    test = ScenarioTest(Tally)
    found = hypothesis.find(
        test.scenarios(),
        lambda s: any(step.name is None for lane in s.lanes for step in lane),
        settings=QUIET,
    )
    assert found.lanes == ((Step(0.0, None),),)
    assert found.operations == 0
    entries = test.run(found).checked[0].history.entries
    assert entries == []  # a wait calls nothing


@server
class Seats:
    """Split check and mark (a race), seats independent of each other."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    @call
    def is_taken(self, seat: str) -> bool:
        return seat in self.owner

    @call
    def mark(self, seat: str, user: str) -> None:
        self.owner[seat] = user


class SeatTaken(Exception):
    pass


async def reserve(seats: Seats, seat: str, user: str) -> str:
    if await seats.is_taken(seat):
        raise SeatTaken(seat)
    await trio.sleep(2.0 if seat == "A1" else 1.0)  # the payment
    await seats.mark(seat, user)
    return seat


class Reservations:
    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    def reserve(self, seat: str, user: str) -> str:
        if seat in self.owner:
            raise SeatTaken(seat)
        self.owner[seat] = user
        return seat


def by_seat(op: Any) -> Any:
    return op.args[0]


def seats_test() -> ScenarioTest[Seats]:
    return ScenarioTest(
        Seats,
        operations=[operation(reserve, st.sampled_from(["A1", "A2"]), st.just("u"))],
        model=ServerModel(Reservations),
        partition=by_seat,
        delays=(0.0, 1.0),
    )


def test_a_step_that_only_lines_the_race_up_becomes_a_wait_or_goes() -> None:
    test = seats_test()
    # #2 reserves A2 first (another partition: the story does not show it), which only makes
    # its A1 reservation start a second later, inside #1's payment.
    lanes = (
        (Step(0.0, "reserve", ("A1", "u")),),
        (Step(0.0, "reserve", ("A2", "u")), Step(0.0, "reserve", ("A1", "u"))),
        (Step(1.0, "reserve", ("A2", "u")),),
    )
    big = Scenario(lanes, schedule=())
    with pytest.raises(RaceFound):
        test.check(big)
    smaller = test.minimal(big)
    assert smaller is not None
    scenario, race = smaller
    assert scenario.operations == len(race.violation.entries) == 2
    assert "more than the story shows" not in race.report
    assert repr(scenario) in race.report  # the replay is the smaller example
    with pytest.raises(RaceFound):
        test.replay(scenario)


def test_minimal_says_none_of_an_example_that_passes() -> None:
    test = seats_test()
    assert test.minimal(Scenario(((Step(0.0, "reserve", ("A1", "u")),),), schedule=())) is None


@pytest.mark.parametrize("seed", range(3))
def test_a_found_race_replays_exactly_the_operations_of_its_story(seed: int) -> None:
    with pytest.raises(RaceFound) as caught:
        seats_test().hypothesis_test(race_settings(max_examples=300, database=None), seed=seed)()
    race = caught.value
    shown = len(race.violation.entries)
    replay = race.report.rpartition("test.replay(")[2]
    assert replay.count("'reserve'") == shown or "more than the story shows" in race.report
    assert len(race.history.entries) == shown


# -- Hypothesis' files ------------------------------------------------------------------------


def test_hypothesis_keeps_its_files_out_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(RaceFound):  # a failure: Hypothesis saves it in its example database
        seats_test().hypothesis_test(race_settings(max_examples=100))()
    assert list(work.iterdir()) == []
    assert list((tmp_path / "cache" / "trioserver" / "hypothesis").rglob("*"))


def test_hypothesis_storage_stays_where_the_user_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(RaceFound):
        seats_test().hypothesis_test(race_settings(max_examples=100))()
    assert not (tmp_path / "cache").exists()
