"""The races of the property tests (and of benchmarks/race_figures.py), each with a correct twin.

- The seed's movie theater: a reservation split into a check call, a payment and a mark call
  (two users can buy one seat), and its twin that reserves inside one ``@call``, with
  payments that may hang past the handler's budget.
- A counter incremented through get/set calls (lost update), and its ``@call increment`` twin.
- A bank transfer through balance/withdraw/deposit calls (overdraft), and its ``@call
  transfer`` twin.
- A server that makes session ids from the wall clock: nondeterministic.
"""

from __future__ import annotations

import functools
import time
import timeit
from typing import Any

import attrs
import hypothesis
import trio
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from trioserver import call, server, statistics
from trioserver.testing import (
    ScenarioTest,
    ServerMachine,
    ServerModel,
    initialize,
    invariant,
    operation,
    race_settings,
    rule,
)

# -- the theater -----------------------------------------------------------------------------


class SeatTaken(Exception):
    """The seat has an owner already."""


class Payments:
    """A payment provider: one second per charge; the user "hung" never gets an answer."""

    async def charge(self, user: str) -> None:
        await trio.sleep(100.0 if user == "hung" else 1.0)


@server
class SplitTheater:
    """The race: checking and marking a seat are two calls, with the payment in between."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.payments = Payments()

    @call
    def is_taken(self, seat: str) -> bool:
        return seat in self.owner

    @call
    def mark(self, seat: str, user: str) -> None:
        self.owner[seat] = user


async def reserve_seat(theater: SplitTheater, seat: str, user: str) -> str:
    """The client's reservation: check, pay, mark (a composite of two calls and a payment)."""
    if await theater.is_taken(seat):
        raise SeatTaken(seat)
    await theater.payments.charge(user)
    await theater.mark(seat, user)
    return seat


class AtomicReservations:
    """The model of `reserve_seat`: what it would do with nothing in between."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    def reserve_seat(self, seat: str, user: str) -> str:
        if seat in self.owner:
            raise SeatTaken(seat)
        self.owner[seat] = user
        return seat


@server
class Theater:
    """The fix: check, pay, mark inside one ``@call`` with a 4 s budget."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.payments = Payments()

    @call(timeout=4.0)
    async def reserve(self, seat: str, user: str) -> str:
        if seat in self.owner:
            raise SeatTaken(seat)
        await self.payments.charge(user)  # cut at the budget if it hangs: nothing changed yet
        self.owner[seat] = user
        return seat

    @call
    def who(self, seat: str) -> str | None:
        return self.owner.get(seat)


SEATS = st.sampled_from(["A1", "A2"])
USERS = st.sampled_from(["ann", "bob", "cat"])
WAITS = st.sampled_from([0.5, 1.0, 2.0])


def by_seat(op: Any) -> Any:
    return op.args[0]


class SplitTheaterMachine(ServerMachine):
    """Users reserve seats in the background while time passes."""

    @initialize()
    async def open_theater(self) -> None:
        self.theater = await self.serve(SplitTheater)
        self.reservations = self.record(
            "reserve_seat", ServerModel(AtomicReservations), partition=by_seat
        )

    @rule(seat=SEATS, user=USERS)
    async def reserve(self, seat: str, user: str) -> None:
        reservation = functools.partial(reserve_seat, self.theater)
        self.start(user, self.reservations.call, user, reservation, seat, user, composite=True)

    @rule(seconds=WAITS)
    async def wait(self, seconds: float) -> None:
        await trio.sleep(seconds)


class TheaterMachine(ServerMachine):
    """The twin: the same users against the atomic reserve; payments may hang past 4 s."""

    @initialize()
    async def open_theater(self) -> None:
        self.theater = await self.serve(Theater, partition=by_seat)

    @rule(seat=SEATS, user=st.sampled_from(["ann", "bob", "cat", "hung"]))
    async def reserve(self, seat: str, user: str) -> None:
        self.start(user, self.client(self.theater, user).reserve, seat, user)

    @rule(seat=SEATS)
    async def look(self, seat: str) -> None:
        self.start("usher", self.client(self.theater, "usher").who, seat)

    @rule(seconds=WAITS)
    async def wait(self, seconds: float) -> None:
        await trio.sleep(seconds)

    @invariant()
    def one_handler_at_a_time(self) -> None:  # runs while the trio thread is paused
        assert statistics(self.theater).running <= 1


# -- the counter -----------------------------------------------------------------------------


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
    def increment(self) -> int:
        self.value += 1
        return self.value


async def increment(counter: Counter) -> int:
    """Read, add one, write: two calls."""
    value = await counter.get()
    await counter.set(value + 1)
    return value + 1


class AtomicCounter:
    def __init__(self) -> None:
        self.value = 0

    def increment(self) -> int:
        self.value += 1
        return self.value

    def get(self) -> int:
        return self.value


def lost_update() -> ScenarioTest[Counter]:
    """Lanes that increment through get/set, and read."""
    return ScenarioTest(
        Counter,
        operations=[operation(increment), operation(_get, name="get")],
        model=ServerModel(AtomicCounter),
    )


async def _get(counter: Counter) -> int:
    return await counter.get()


def counter_twin() -> ScenarioTest[Counter]:
    """Every ``@call`` of the counter, drawn from its signature: each is atomic."""
    return ScenarioTest(Counter, arguments={"value": st.integers(0, 3)})


# -- the bank --------------------------------------------------------------------------------


class InsufficientFunds(Exception):
    """The source account has less than the amount."""


@server
class Bank:
    def __init__(self) -> None:
        self.balances = {"alice": 10, "bob": 10}

    @call
    def balance(self, account: str) -> int:
        return self.balances[account]

    @call
    def withdraw(self, account: str, amount: int) -> None:
        self.balances[account] -= amount

    @call
    def deposit(self, account: str, amount: int) -> None:
        self.balances[account] += amount

    @call
    def transfer(self, source: str, target: str, amount: int) -> None:
        if self.balances[source] < amount:
            raise InsufficientFunds(source)
        self.balances[source] -= amount
        self.balances[target] += amount


async def transfer(bank: Bank, source: str, target: str, amount: int) -> None:
    """Check the balance, withdraw, deposit: three calls."""
    if await bank.balance(source) < amount:
        raise InsufficientFunds(source)
    await bank.withdraw(source, amount)
    await bank.deposit(target, amount)


async def balance(bank: Bank, account: str) -> int:
    return await bank.balance(account)


class AtomicBank:
    def __init__(self) -> None:
        self.balances = {"alice": 10, "bob": 10}

    def transfer(self, source: str, target: str, amount: int) -> None:
        if self.balances[source] < amount:
            raise InsufficientFunds(source)
        self.balances[source] -= amount
        self.balances[target] += amount

    def balance(self, account: str) -> int:
        return self.balances[account]


ACCOUNTS = st.sampled_from(["alice", "bob"])
AMOUNTS = st.sampled_from([5, 10])


def overdraft() -> ScenarioTest[Bank]:
    """Lanes that transfer through balance/withdraw/deposit, and read balances."""
    return ScenarioTest(
        Bank,
        operations=[
            operation(transfer, ACCOUNTS, ACCOUNTS, AMOUNTS),
            operation(balance, ACCOUNTS),
        ],
        model=ServerModel(AtomicBank),
    )


def bank_twin() -> ScenarioTest[Bank]:
    """The same lanes through ``@call transfer``."""

    async def transfer_call(bank: Bank, source: str, target: str, amount: int) -> None:
        await bank.transfer(source, target, amount)

    return ScenarioTest(
        Bank,
        operations=[
            operation(transfer_call, ACCOUNTS, ACCOUNTS, AMOUNTS, name="transfer"),
            operation(balance, ACCOUNTS),
        ],
        model=ServerModel(AtomicBank),
    )


# -- the wall clock --------------------------------------------------------------------------


@server
class Sessions:
    """Session ids from the wall clock: no two runs agree."""

    def __init__(self) -> None:
        self.opened = 0

    @call
    def open_session(self) -> str:
        self.opened += 1
        return f"{self.opened}-{time.time_ns()}"


def wall_clock() -> ScenarioTest[Sessions]:
    return ScenarioTest(Sessions)


# -- hunting: run one race test with one seed, counting examples -----------------------------


@attrs.frozen
class Hunt:
    """What one run of a race test found."""

    examples: int  # examples run up to and including the first failing one (all, if none)
    seconds: float  # wall time to the first failure (or to the end, if none)
    error: BaseException | None  # what the test raised at the end (shrunk), or None


Target = type[ServerMachine] | ScenarioTest[Any]


def hunt(
    target: Target, seed: int, *, max_examples: int, shrink: bool = True, steps: int = 10
) -> Hunt:
    """Run `target` (a machine class or a scenario test) with ``hypothesis.seed(seed)``.

    Args:
      target: The race test.
      seed: Hypothesis' seed.
      max_examples: Examples to try.
      shrink: Whether to shrink a failure (off to time the first failure alone).
      steps: Steps per state machine example.
    """
    phases = [hypothesis.Phase.generate] + ([hypothesis.Phase.shrink] if shrink else [])
    settings = race_settings(
        max_examples=max_examples, database=None, phases=phases, stateful_step_count=steps
    )
    count = 0
    first: tuple[int, float] | None = None
    start = timeit.default_timer()

    def failed() -> None:
        nonlocal first
        if first is None:
            first = (count, timeit.default_timer() - start)

    error: BaseException | None = None
    if isinstance(target, ScenarioTest):
        scenario_test = target

        @hypothesis.seed(seed)
        @settings
        @hypothesis.given(scenario_test.scenarios())
        def test(scenario: Any) -> None:
            nonlocal count
            count += 1
            try:
                scenario_test.check(scenario)
            except BaseException:
                failed()
                raise

        try:
            test()
        except BaseException as exc:
            error = exc
    else:

        class Counted(target):  # type: ignore[valid-type, misc]
            def __init__(self) -> None:
                nonlocal count
                count += 1
                super().__init__()

            def teardown(self) -> None:
                try:
                    super().teardown()
                except BaseException:
                    failed()
                    raise

        Counted.__name__ = Counted.__qualname__ = target.__name__
        try:
            run_state_machine_as_test(hypothesis.seed(seed)(Counted), settings=settings)
        except BaseException as exc:
            error = exc
    if first is None or error is None:  # (a failure Hypothesis discarded does not count)
        return Hunt(count, timeit.default_timer() - start, error)
    return Hunt(first[0], first[1], error)


def theater_scenarios() -> ScenarioTest[Theater]:
    """The twin as lanes of calls: reserve (payments may hang past the budget) and who."""
    return ScenarioTest(
        Theater,
        arguments={"seat": SEATS, "user": st.sampled_from(["ann", "bob", "hung"])},
        partition=by_seat,
    )


def split_theater_scenarios() -> ScenarioTest[SplitTheater]:
    """The race as lanes of `reserve_seat` composites."""
    return ScenarioTest(
        SplitTheater,
        operations=[operation(reserve_seat, SEATS, USERS)],
        model=ServerModel(AtomicReservations),
        partition=by_seat,
    )
