"""Races and their twins for servers that wait without holding the server (guarantees 14-15).

- The seed's theater paying inside ``async with trioserver.released():``. Without a hold, the
  check made before the block is stale after it: two users buy one seat. With the hold (the
  seat taken out of the free ones before the block, given back if the payment fails or is
  cut, sold after it), a reservation of a held seat waits, without holding the server, for
  the hold's outcome and checks again: linearizable, hung payments past the budget included.
  A hold that refuses a held seat at once (``SeatTaken``, as act 4 of the demo does) never
  sells a seat twice, but is not an atomic reservation: a user told "taken" can see the seat
  sold to someone else later, when the payment that held it is cut.
- A connection pool whose checkout waits for a free connection: split into ``has_free()``
  and ``take()`` calls (two users take the last connection), and as one guarded call,
  ``@call(when=...)``, which is its own model.
"""

from __future__ import annotations

import trio
from hypothesis import strategies as st

from property_tests.races import SEATS, WAITS, Payments, SeatTaken, by_seat
from trioserver import call, released, server
from trioserver.testing import (
    ScenarioTest,
    ServerMachine,
    ServerModel,
    initialize,
    invariant,
    operation,
    rule,
)

# Payments take 1 s; the user "hung" pays for 100 s, far past the 4 s budget.
USERS = st.sampled_from(["ann", "bob", "hung"])
BUDGET = 4.0

# -- the theater ---------------------------------------------------------------------------


@server
class ReleasingTheater:
    """The race: the seat is checked, the server released for the payment, then the seat is
    sold without a second look. Another reservation of the seat runs during the payment."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.payments = Payments()

    @call(timeout=BUDGET)
    async def reserve(self, seat: str, user: str) -> str:
        if seat in self.owner:
            raise SeatTaken(seat)
        async with released():  # others are served while we pay...
            await self.payments.charge(user)
        self.owner[seat] = user  # ...so the check above may be stale by now
        return seat


@server
class HoldingTheater:
    """The twin: hold the seat before the block, sell it after; a reservation of a held seat
    waits for the hold's outcome (in a released block, so it holds nothing) and looks again."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.held: dict[str, trio.Event] = {}  # seat -> set when its payment has ended
        self.payments = Payments()

    @call(timeout=BUDGET)
    async def reserve(self, seat: str, user: str) -> str:
        while seat in self.held:  # someone is paying for it: wait for the outcome
            outcome = self.held[seat]
            async with released():
                await outcome.wait()
        if seat in self.owner:
            raise SeatTaken(seat)
        done = self.held[seat] = trio.Event()  # out of the free seats: no one else takes it
        try:
            async with released():
                await self.payments.charge(user)  # cut at the budget if it hangs
            self.owner[seat] = user  # (holding the server again: the hold kept the check true)
        finally:  # sold, or the payment failed or was cut: the hold ends either way
            del self.held[seat]
            done.set()
        return seat


@server
class RefusingHoldTheater:
    """Act 4 of the demo: a held seat is refused at once (taken, or held for someone paying),
    given back if the payment fails or is cut."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.held: dict[str, str] = {}
        self.sales: list[tuple[str, str]] = []  # every sale, to count seats sold twice
        self.payments = Payments()

    @call(timeout=BUDGET)
    async def reserve(self, seat: str, user: str) -> str:
        if seat in self.owner or seat in self.held:
            raise SeatTaken(seat)
        self.held[seat] = user
        try:
            async with released():
                await self.payments.charge(user)
        finally:
            del self.held[seat]  # sold below, or given back
        self.owner[seat] = user
        self.sales.append((seat, user))
        return seat


def releasing_theater_scenarios() -> ScenarioTest[ReleasingTheater]:
    """The race as lanes of reservations (the model: the class, one call at a time)."""
    return ScenarioTest(
        ReleasingTheater, arguments={"seat": SEATS, "user": USERS}, partition=by_seat
    )


def holding_theater_scenarios() -> ScenarioTest[HoldingTheater]:
    """The twin as lanes of reservations, hung payments included."""
    return ScenarioTest(HoldingTheater, arguments={"seat": SEATS, "user": USERS}, partition=by_seat)


def refusing_hold_scenarios() -> ScenarioTest[RefusingHoldTheater]:
    """Act 4's hold as lanes of reservations, checked against an atomic reservation."""
    return ScenarioTest(
        RefusingHoldTheater, arguments={"seat": SEATS, "user": USERS}, partition=by_seat
    )


class ReleasingTheaterMachine(ServerMachine):
    """The race, step by step: reservations in the background while time passes."""

    @initialize()
    async def open_theater(self) -> None:
        self.theater = await self.serve(ReleasingTheater, partition=by_seat)

    @rule(seat=SEATS, user=USERS)
    async def reserve(self, seat: str, user: str) -> None:
        self.start(user, self.client(self.theater, user).reserve, seat, user)

    @rule(seconds=WAITS)
    async def wait(self, seconds: float) -> None:
        await trio.sleep(seconds)


class HoldingTheaterMachine(ServerMachine):
    """The twin, step by step; between steps, a seat is held or sold, never both."""

    @initialize()
    async def open_theater(self) -> None:
        self.theater = await self.serve(HoldingTheater, partition=by_seat)

    @rule(seat=SEATS, user=USERS)
    async def reserve(self, seat: str, user: str) -> None:
        self.start(user, self.client(self.theater, user).reserve, seat, user)

    @rule(seconds=WAITS)
    async def wait(self, seconds: float) -> None:
        await trio.sleep(seconds)

    @invariant()
    def a_seat_is_held_or_sold_never_both(self) -> None:  # runs while the trio thread waits
        if hasattr(self, "theater"):
            assert not set(self.theater.held) & set(self.theater.owner)


# -- the pool ------------------------------------------------------------------------------

POOL_SIZE = 1
SETTLE = 10.0  # virtual seconds a lane may wait for a connection, then it is cancelled


@server
class SplitPool:
    """The race: "is one free?" and "take one" are two calls."""

    def __init__(self) -> None:
        self.free = POOL_SIZE

    @call
    def has_free(self) -> bool:
        return self.free > 0

    @call
    def take(self) -> int:
        self.free -= 1
        return self.free  # how many are left

    @call
    def checkin(self) -> int:
        self.free += 1
        return self.free


async def checkout(pool: SplitPool) -> int:
    """The client's checkout: wait until a connection is free (polling), then take it."""
    while not await pool.has_free():  # noqa: ASYNC110 (the race this test finds)
        await trio.sleep(1.0)
    return await pool.take()


async def checkin(pool: SplitPool) -> int:
    return await pool.checkin()


def has_free(pool: GuardedPool) -> bool:
    return pool.free > 0


@server
class GuardedPool:
    """The twin: checkout is one guarded call, which waits in the mailbox, holding nothing,
    until a connection is free. It is also the model of the split pool's checkout."""

    def __init__(self) -> None:
        self.free = POOL_SIZE

    @call(when=has_free)
    def checkout(self) -> int:
        self.free -= 1
        return self.free

    @call
    def checkin(self) -> int:
        self.free += 1
        return self.free


def split_pool_scenarios() -> ScenarioTest[SplitPool]:
    """Lanes that check out (has_free, then take) and check in."""
    return ScenarioTest(
        SplitPool,
        operations=[operation(checkout), operation(checkin)],
        model=ServerModel(GuardedPool),
        settle_limit=SETTLE,
    )


def guarded_pool_scenarios() -> ScenarioTest[GuardedPool]:
    """Lanes of the guarded pool's calls (a checkout may wait for a checkin)."""
    return ScenarioTest(GuardedPool, settle_limit=SETTLE)
