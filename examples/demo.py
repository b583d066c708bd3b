"""The movie theater of trioserver's seed: many customers, few seats, a payment service that
is mostly fast, sometimes slow and now and then hangs forever.

Four acts, each counted from what happened (nothing printed is fixed in advance):

1. check-then-reserve split across three calls (`is_free`, the payment, `mark`): every call
   is serialized, yet seats are sold twice, because other calls run between them;
2. the same check, payment and mutation inside one `@call` handler: never sold twice;
3. payments that hang: each ends in `CallTimeout` at the handler's budget, and the server
   goes on answering everyone else, but those who called while a payment hung wait for the cut;
4. the same customers and hung payments, the seat held (taken out of the free seats) and paid
   for inside ``async with trioserver.released():``, given back if the payment fails or is cut,
   sold after the block: never sold twice, payments run concurrently, and no one waits behind
   a hung payment.

Run it with ``make demo`` (the wall clock) or ``python examples/demo.py --virtual`` (the
same customers replayed on trio's MockClock, exactly reproducible and near-instant).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio
import trio.testing

from trioserver import (
    CallTimeout,
    ServerStatistics,
    call,
    open_server,
    released,
    server,
    statistics,
)

SEED = 20240611
CUSTOMERS = 200
ROWS = "ABCDE"
SEATS_PER_ROW = 10  # 5 rows x 10 = 50 seats
PREFERENCES = 3  # seats a customer will try, best first, before giving up
ARRIVAL_WINDOW = 0.25  # customers arrive over the first quarter second
BUDGET = 0.2  # the reserve handler's budget, seconds
FAST = (0.002, 0.010)  # most payments take 2-10 ms
SLOW = (0.02, 0.08)  # slow ones 20-80 ms
SLOW_SHARE = 0.2  # share of payments that are slow (hung ones included, in acts 3 and 4)
HUNG_SHARE = 0.08  # share of payments that hang forever, in acts 3 and 4

T = TypeVar("T")


class SeatTaken(Exception):
    """The seat was sold before this customer's turn."""


@attrs.frozen
class Customer:
    name: str
    arrival: float  # seconds after the doors open
    seats: tuple[str, ...]  # the seats they would take, best first
    payment: float | None  # how long their payment takes; None: it hangs forever


def make_customers(seed: int = SEED, *, hung_share: float = 0.0) -> list[Customer]:
    """The same crowd for every act: `hung_share` only turns some slow payments into hangs."""
    rng = random.Random(seed)
    seats = [f"{row}{n}" for row in ROWS for n in range(1, SEATS_PER_ROW + 1)]
    # The middle of rows C and D is eight times as wanted as any other seat.
    weights = [8 if seat[0] in "CD" and 4 <= int(seat[1:]) <= 7 else 1 for seat in seats]
    crowd = []
    for i in range(CUSTOMERS):
        arrival = rng.uniform(0, ARRIVAL_WINDOW)
        wanted: list[str] = []
        while len(wanted) < PREFERENCES:
            seat = rng.choices(seats, weights)[0]
            if seat not in wanted:
                wanted.append(seat)
        kind = rng.random()
        fast, slow = rng.uniform(*FAST), rng.uniform(*SLOW)
        payment = None if kind < hung_share else slow if kind < SLOW_SHARE else fast
        crowd.append(Customer(f"c{i:03d}", arrival, tuple(wanted), payment))
    return crowd


class Payments:
    """A payment service (not a server): many charges run at once, each takes its own time."""

    def __init__(self, crowd: list[Customer]) -> None:
        self.latency = {c.name: c.payment for c in crowd}
        self.charged: list[str] = []
        self.hung: dict[str, float] = {}  # customer -> when their hung payment began
        self.running = 0  # payments in progress now
        self.peak = 0  # the most payments ever in progress at once

    async def charge(self, user: str) -> None:
        latency = self.latency[user]
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if latency is None:
                self.hung[user] = trio.current_time()
                await trio.sleep_forever()
            else:
                await trio.sleep(latency)
                self.charged.append(user)
        finally:
            self.running -= 1


@server
class Theater:
    """Seats and who bought them. A seat sold twice has two names in `sales`."""

    def __init__(self, crowd: list[Customer], payments: Payments) -> None:
        self.sales: dict[str, list[str]] = {seat: [] for c in crowd for seat in c.seats}
        self.payments = payments
        self.held: dict[str, str] = {}  # act 4: seat -> the customer paying for it now
        self.given_back = 0  # act 4: holds given back (the payment failed or was cut)
        self.started: dict[tuple[str, str], float] = {}  # (customer, seat) -> handler start

    # Act 1's building blocks: each call is atomic, the sequence of three is not.
    @call
    def is_free(self, seat: str) -> bool:
        return not self.sales[seat]

    @call
    def mark(self, seat: str, user: str) -> None:
        self.sales[seat].append(user)

    # Acts 2 and 3: check, slow work, then mutate, in one handler with a budget.
    @call(timeout=BUDGET)
    async def reserve(self, seat: str, user: str) -> str:
        self.started[user, seat] = trio.current_time()
        if self.sales[seat]:
            raise SeatTaken(seat)
        await self.payments.charge(user)  # if cut here, nothing has changed yet
        self.sales[seat].append(user)
        return seat

    # Act 4: hold the seat, pay without holding the server, then sell.
    @call(timeout=BUDGET)
    async def reserve_released(self, seat: str, user: str) -> str:
        self.started[user, seat] = trio.current_time()
        if self.sales[seat] or seat in self.held:
            raise SeatTaken(seat)
        self.held[seat] = user  # out of the free seats: no one else can buy it while we pay
        try:
            async with released():  # other customers are served while this payment runs
                await self.payments.charge(user)
        except BaseException:  # the payment failed, or was cut at the budget: give it back
            del self.held[seat]
            self.given_back += 1
            raise
        del self.held[seat]  # (the server is ours again: nothing ran between these lines)
        self.sales[seat].append(user)
        return seat


def sold_twice(sales: dict[str, list[str]]) -> tuple[int, int]:
    """(seats sold more than once, customers who paid for a seat already sold to another)."""
    seats = sum(1 for buyers in sales.values() if len(buyers) > 1)
    losers = sum(len(buyers) - 1 for buyers in sales.values() if buyers)
    return seats, losers


@attrs.frozen
class SplitResult:
    """Act 1: reserve written as `is_free`, then the payment, then `mark`."""

    customers: int
    seats_sold: int
    payments: int
    seats_sold_twice: int
    paid_for_nothing: int
    took: float  # from the doors opening to the last customer leaving, on the act's clock


async def act_split(crowd: list[Customer]) -> SplitResult:
    payments = Payments(crowd)
    opened = trio.current_time()
    async with open_server(Theater(crowd, payments)) as theater:

        async def customer(c: Customer) -> None:
            await trio.sleep(c.arrival)
            for seat in c.seats:
                if await theater.is_free(seat):
                    await payments.charge(c.name)  # other calls run while we pay ...
                    await theater.mark(seat, c.name)  # ... so the seat may be gone by now
                    return

        async with trio.open_nursery() as nursery:
            for c in crowd:
                nursery.start_soon(customer, c)
        seats, losers = sold_twice(theater.sales)
        sold = sum(1 for buyers in theater.sales.values() if buyers)
    took = trio.current_time() - opened
    return SplitResult(len(crowd), sold, len(payments.charged), seats, losers, took)


@attrs.frozen
class AtomicResult:
    """Act 2: reserve as one handler."""

    customers: int
    seats_sold: int
    refused: int
    payments: int
    seats_sold_twice: int
    paid_for_nothing: int
    peak_payments: int  # the most payments in progress at once
    took: float


async def act_atomic(crowd: list[Customer]) -> AtomicResult:
    payments = Payments(crowd)
    refused = 0
    opened = trio.current_time()
    async with open_server(Theater(crowd, payments)) as theater:

        async def customer(c: Customer) -> None:
            nonlocal refused
            await trio.sleep(c.arrival)
            for seat in c.seats:
                try:
                    await theater.reserve(seat, c.name)
                except SeatTaken:
                    continue
                return
            refused += 1

        async with trio.open_nursery() as nursery:
            for c in crowd:
                nursery.start_soon(customer, c)
        seats, losers = sold_twice(theater.sales)
        sold = sum(1 for buyers in theater.sales.values() if buyers)
    took = trio.current_time() - opened
    return AtomicResult(
        len(crowd), sold, refused, len(payments.charged), seats, losers, payments.peak, took
    )


@attrs.frozen
class HungResult:
    """Acts 3 and 4: the customers of act 3, some payments hanging forever.

    A customer *waited behind a hung payment* if they made a call while a hung payment was in
    progress (after it began, before CallTimeout cut it) whose handler started only after the
    cut: it could not start until the hung payment was over. Measured the same way in both
    acts, from the times customers called and the times their handlers started. (Customers
    already queued when a payment hung also waited for it; they are not counted, in either act.)
    """

    method: str  # the Theater method customers call
    budget: float
    hung: frozenset[str]  # customers whose payment began and hung
    timed_out: frozenset[str]  # customers who got CallTimeout
    cut_after: tuple[float, ...]  # per timeout: from the hung payment's start to the CallTimeout
    seats_sold: int
    others: int  # customers whose payment did not hang
    others_answered: int  # ... who got an answer: their seat, or SeatTaken
    waited_behind_hang: int  # ... who waited behind a hung payment (see the class)
    longest_wait: float  # the longest time from a call to its handler's start
    peak_payments: int  # the most payments in progress at once
    given_back: int  # holds given back (act 4; 0 in act 3, which holds nothing)
    seats_sold_twice: int
    paid_for_nothing: int
    statistics: ServerStatistics
    took: float


async def act_hung(crowd: list[Customer], method: str = "reserve") -> HungResult:
    """Act 3 (`reserve`: the payment holds the server), or act 4 (`reserve_released`)."""
    payments = Payments(crowd)
    answered: set[str] = set()
    timed_out: dict[str, float] = {}  # customer -> when CallTimeout reached them
    called: dict[tuple[str, str], float] = {}  # (customer, seat) -> when they called
    opened = trio.current_time()
    async with open_server(Theater(crowd, payments)) as theater:
        reserve = getattr(theater, method)

        async def customer(c: Customer) -> None:
            await trio.sleep(c.arrival)
            for seat in c.seats:
                called[c.name, seat] = trio.current_time()
                try:
                    await reserve(seat, c.name)
                except SeatTaken:
                    continue
                except CallTimeout:
                    timed_out[c.name] = trio.current_time()
                    return
                break
            answered.add(c.name)  # a seat, or SeatTaken for every seat they wanted

        async with trio.open_nursery() as nursery:
            for c in crowd:
                nursery.start_soon(customer, c)
        stats = statistics(theater)
        seats, losers = sold_twice(theater.sales)
        sold = sum(1 for buyers in theater.sales.values() if buyers)
        started = dict(theater.started)
        given_back = theater.given_back
    took = trio.current_time() - opened

    hangs = [(began, timed_out.get(user, math.inf)) for user, began in payments.hung.items()]
    waited = {
        user
        for (user, seat), at in called.items()
        if user not in payments.hung
        and any(began <= at < cut <= started[user, seat] for began, cut in hangs)
    }
    others = [c.name for c in crowd if c.name not in payments.hung]
    return HungResult(
        method=method,
        budget=BUDGET,
        hung=frozenset(payments.hung),
        timed_out=frozenset(timed_out),
        cut_after=tuple(sorted(timed_out[u] - payments.hung[u] for u in timed_out)),
        seats_sold=sold,
        others=len(others),
        others_answered=sum(1 for name in others if name in answered),
        waited_behind_hang=len(waited),
        longest_wait=max(started[key] - at for key, at in called.items()),
        peak_payments=payments.peak,
        given_back=given_back,
        seats_sold_twice=seats,
        paid_for_nothing=losers,
        statistics=stats,
        took=took,
    )


async def act_released(crowd: list[Customer]) -> HungResult:
    """Act 4: act 3's customers, the seat held and paid for in a released block."""
    return await act_hung(crowd, "reserve_released")


def play(act: Callable[[list[Customer]], Awaitable[T]], crowd: list[Customer], virtual: bool) -> T:
    """Run one act in its own `trio.run`, on the wall clock or on virtual time."""
    if virtual:
        return trio.run(act, crowd, clock=trio.testing.MockClock(autojump_threshold=0))
    return trio.run(act, crowd)


def ms(span: tuple[float, float]) -> str:
    return f"{span[0] * 1000:g}-{span[1] * 1000:g} ms"


def cut_span(result: HungResult) -> str:
    """When CallTimeout reached the hung payments' customers, after the payment began."""
    if not result.cut_after:
        return "(none raised)"
    low, high = min(result.cut_after), max(result.cut_after)
    return f"{low:.3f} s" if round(low, 3) == round(high, 3) else f"{low:.3f}-{high:.3f} s"


def report(virtual: bool) -> float:
    """Play the four acts and print the table; return the wall time taken."""
    started = time.perf_counter()
    calm = make_customers()
    stormy = make_customers(hung_share=HUNG_SHARE)
    clock = "virtual time" if virtual else "wall clock"
    about_clock = (
        "virtual time (trio's MockClock): every figure replays exactly"
        if virtual
        else "wall clock: the interleavings, hence the counts, can differ a little between runs "
        "(--virtual replays exactly)"
    )
    print(
        f"trioserver demo: {CUSTOMERS} customers, {len(ROWS) * SEATS_PER_ROW} seats, seed {SEED}."
        f" Payments: most {ms(FAST)}, {SLOW_SHARE:.0%} slow ({ms(SLOW)});"
        f" in acts 3 and 4, {HUNG_SHARE:.0%} hang forever."
    )
    print(f"Time: {about_clock}.")
    print()
    row = "{:<5}{:<44}{:>10}{:>15}{:>10}"
    print(row.format("act", "reserve written as", "sold twice", "paid, no seat", "took"))
    split: SplitResult = play(act_split, calm, virtual)
    print(
        row.format(
            "1",
            "is_free, charge, mark: three calls",
            split.seats_sold_twice,
            split.paid_for_nothing,
            f"{split.took:.2f} s",
        )
    )
    atomic: AtomicResult = play(act_atomic, calm, virtual)
    print(
        row.format(
            "2",
            "one @call handler: check, charge, mutate",
            atomic.seats_sold_twice,
            atomic.paid_for_nothing,
            f"{atomic.took:.2f} s",
        )
    )
    hung: HungResult = play(act_hung, stormy, virtual)
    print(
        row.format(
            "3",
            f"the same, @call(timeout={BUDGET}), {HUNG_SHARE:.0%} hang",
            hung.seats_sold_twice,
            hung.paid_for_nothing,
            f"{hung.took:.2f} s",
        )
    )
    freed: HungResult = play(act_released, stormy, virtual)
    print(
        row.format(
            "4",
            "act 3's, seat held, charge in released()",
            freed.seats_sold_twice,
            freed.paid_for_nothing,
            f"{freed.took:.2f} s",
        )
    )
    print()
    seen = (
        "every call is atomic, but other calls ran between them"
        if split.seats_sold_twice
        else "the race was NOT observed this run (it is still there)"
    )
    print(f"act 1: {split.seats_sold} seats sold to {split.payments} paying customers: {seen}.")
    print(
        f"act 2: {atomic.seats_sold} seats sold to {atomic.payments} paying customers; "
        f"{atomic.refused} turned away (SeatTaken on every seat they wanted);"
    )
    print(
        f"       the payments ran one at a time inside the server, so the act took "
        f"{atomic.took:.2f} s against {split.took:.2f} s."
    )
    for act, result in (("3", hung), ("4", freed)):
        same = (
            "exactly those customers"
            if result.timed_out == result.hung
            else "NOT the same customers"
        )
        print(
            f"act {act}: {len(result.hung)} payments hung -> {len(result.timed_out)} CallTimeout "
            f"({same}),"
        )
        print(
            f"       raised {cut_span(result)} after the payment began "
            f"(budget {BUDGET} s, {clock});"
        )
        if act == "4":
            print(
                f"       the {result.given_back} seats they held were given back; "
                f"{result.seats_sold} seats sold, {result.seats_sold_twice} of them twice;"
            )
            print(
                f"       payments ran concurrently, up to {result.peak_payments} at once "
                f"(act 2: {atomic.peak_payments}, act 3: {hung.peak_payments}):"
            )
            print(
                f"       the act took {result.took:.2f} s against act 2's {atomic.took:.2f} s "
                f"(and act 3's {hung.took:.2f} s);"
            )
        print(
            f"       {result.others_answered} of the {result.others} other customers answered, "
            f"{result.waited_behind_hang} of them after waiting behind a hung payment*;"
        )
        st = result.statistics
        released_time = f" released_seconds={st.released_seconds:.2f}" if act == "4" else ""
        print(f"       the longest wait for the server: {result.longest_wait:.3f} s;")
        print(
            f"       statistics(theater): handled={st.handled} failed={st.failed} "
            f"timed_out={st.timed_out}{released_time}"
        )
    print("       (failed: SeatTaken, once per seat tried and found sold, or held in act 4).")
    print(
        "       * waited behind a hung payment: called while it was in progress, and was served "
        "only after it was cut."
    )
    wall = time.perf_counter() - started
    print()
    print(
        f"Summary: split across calls, {split.seats_sold_twice} seats were sold twice; "
        f"in one handler, {atomic.seats_sold_twice + hung.seats_sold_twice}; "
        f"{len(hung.timed_out)} hung payments were cut {cut_span(hung)} after they began "
        f"(budget {BUDGET} s) while {hung.others_answered} other customers were served, "
        f"{hung.waited_behind_hang} of them after waiting behind a hung payment; with the seat "
        f"held and the payment in a released block, {freed.seats_sold_twice} seats sold twice, "
        f"{freed.waited_behind_hang} customers waited behind a hung payment, and the act took "
        f"{freed.took:.2f} s against {atomic.took:.2f} s with the payment inside the handler "
        f"({wall:.2f} s of wall time in all)."
    )
    return wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--virtual",
        action="store_true",
        help="run on trio's MockClock (virtual time): exactly reproducible",
    )
    args = parser.parse_args(argv)
    report(args.virtual)


if __name__ == "__main__":
    main()
