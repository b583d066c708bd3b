"""The races of the property tests (and of benchmarks/race_figures.py), each with a correct twin.

- The seed's movie theater: a reservation split into a check call, a payment and a mark call
  (two users can buy one seat), and its twin that reserves inside one ``@call``, with
  payments that may hang past the handler's budget.
- A counter incremented through get/set calls (lost update), and its ``@call increment`` twin.
- A bank transfer through balance/withdraw/deposit calls (overdraft), and its ``@call
  transfer`` twin.
- A read-through cache filled by its clients: a slow fetch races an invalidation and
  overwrites the newer value with a stale one; its twin reads and writes through ``@call``.
- A move made of a copy and a delete started together in two tasks, correct only in trio's
  first-in-first-out task order (a race no choice of lanes and delays shows, only another
  task order); its twin moves in one ``@call``.
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


# -- the cache: a slow fetch races an invalidation (stale overwrite) --------------------------


class Backend:
    """The source of truth behind a cache: a fetch reads at once and answers a second later."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    async def fetch(self, key: str) -> int:
        value = self.data.get(key, 0)
        await trio.sleep(1.0)
        return value

    def store(self, key: str, value: int) -> None:
        self.data[key] = value


@server
class Cache:
    """A read-through cache; clients fill it and invalidate it."""

    def __init__(self) -> None:
        self.entries: dict[str, int] = {}
        self.backend = Backend()

    @call
    def lookup(self, key: str) -> int | None:
        return self.entries.get(key)

    @call
    def fill(self, key: str, value: int) -> None:
        self.entries[key] = value

    @call
    def invalidate(self, key: str) -> None:
        self.entries.pop(key, None)

    @call
    async def read_through(self, key: str) -> int:
        """The twin's read: the fetch happens inside the call, so no write comes between."""
        if key not in self.entries:
            self.entries[key] = await self.backend.fetch(key)
        return self.entries[key]

    @call
    def write_through(self, key: str, value: int) -> None:
        self.backend.store(key, value)
        self.entries.pop(key, None)


async def cached_read(cache: Cache, key: str) -> int:
    """The race: on a miss, fetch (slowly) and fill; a write during the fetch is overwritten."""
    value = await cache.lookup(key)
    if value is None:
        value = await cache.backend.fetch(key)
        await cache.fill(key, value)
    return value


async def write(cache: Cache, key: str, value: int) -> None:
    """Write the source of truth, then invalidate the cache."""
    cache.backend.store(key, value)
    await cache.invalidate(key)


class Register:
    """The model of the cache: what a read returns is the last value written."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    def read(self, key: str) -> int:
        return self.data.get(key, 0)

    def write(self, key: str, value: int) -> None:
        self.data[key] = value


KEYS = st.just("k")
VALUES = st.sampled_from([1, 2])


def stale_cache() -> ScenarioTest[Cache]:
    """Lanes that read through the cache on the client side, and write."""
    return ScenarioTest(
        Cache,
        operations=[
            operation(cached_read, KEYS, name="read"),
            operation(write, KEYS, VALUES),
        ],
        model=ServerModel(Register),
    )


def cache_twin() -> ScenarioTest[Cache]:
    """The same through ``@call read_through`` and ``@call write_through``."""

    async def read(cache: Cache, key: str) -> int:
        return await cache.read_through(key)

    async def write_call(cache: Cache, key: str, value: int) -> None:
        await cache.write_through(key, value)

    return ScenarioTest(
        Cache,
        operations=[operation(read, KEYS), operation(write_call, KEYS, VALUES, name="write")],
        model=ServerModel(Register),
    )


# -- the move: a client that counts on the order its own tasks start in ----------------------


@server
class Shelf:
    """Two slots, ``a`` and ``b``; the book starts in ``a``."""

    def __init__(self) -> None:
        self.items: dict[str, str | None] = {"a": "book"}

    @call
    def get(self, slot: str) -> str | None:
        return self.items.get(slot)

    @call
    def put(self, slot: str, item: str | None) -> None:
        self.items[slot] = item

    @call
    def delete(self, slot: str) -> None:
        self.items.pop(slot, None)

    @call
    def move_to(self, target: str) -> None:
        self.items[target] = self.items.pop(_other(target), None)


def _other(slot: str) -> str:
    return "a" if slot == "b" else "b"


async def move_to(shelf: Shelf, target: str) -> None:
    """The race: move what the other slot holds into `target` by a copy and a delete started
    at once, counting on the copy's get to reach the server first. It does in trio's
    first-in-first-out task order: only another order shows the race."""
    source = _other(target)

    async def copy() -> None:
        await shelf.put(target, await shelf.get(source))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(copy)
        nursery.start_soon(shelf.delete, source)


async def look(shelf: Shelf, slot: str) -> str | None:
    return await shelf.get(slot)


class Slots:
    def __init__(self) -> None:
        self.items: dict[str, str | None] = {"a": "book"}

    def move_to(self, target: str) -> None:
        self.items[target] = self.items.pop(_other(target), None)

    def look(self, slot: str) -> str | None:
        return self.items.get(slot)


SLOTS = st.sampled_from(["a", "b"])


def task_order() -> ScenarioTest[Shelf]:
    """One lane that moves through a copy and a delete started together, and looks.

    One lane: two moves at once break it in trio's own order too (a plain race); alone, a
    move fails only when its delete's task runs before its copy's.
    """
    return ScenarioTest(
        Shelf,
        operations=[operation(move_to, SLOTS), operation(look, SLOTS)],
        model=ServerModel(Slots),
        lanes=1,
        steps=3,
    )


def shelf_twin() -> ScenarioTest[Shelf]:
    """The same through ``@call move_to``."""

    async def move_call(shelf: Shelf, target: str) -> None:
        await shelf.move_to(target)

    return ScenarioTest(
        Shelf,
        operations=[operation(move_call, SLOTS, name="move_to"), operation(look, SLOTS)],
        model=ServerModel(Slots),
        lanes=1,
        steps=3,
    )


# -- hunting: run one race test with one seed, counting examples -----------------------------


@attrs.frozen
class Hunt:
    """What one run of a race test found."""

    examples: int  # examples run up to and including the first failing one (all, if none)
    seconds: float  # wall time to the first failure (or to the end, if none)
    error: BaseException | None  # what the test raised at the end (shrunk), or None
    cpu_seconds: float = 0.0  # processor time of this process to the same point


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
    first: tuple[int, float, float] | None = None
    start = timeit.default_timer()
    cpu_start = time.process_time()

    def failed() -> None:
        nonlocal first
        if first is None:
            first = (count, timeit.default_timer() - start, time.process_time() - cpu_start)

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
        return Hunt(count, timeit.default_timer() - start, error, time.process_time() - cpu_start)
    return Hunt(first[0], first[1], error, first[2])


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
