"""The movie theater again: payments run while the server serves everyone else.

`Theater.reserve` checks the seat, *holds* it, and pays inside ``async with
trioserver.released():``. During the payment the server is free: other customers reserve,
and are told at once that a held seat is taken, instead of queueing behind a slow payment.
When the payment ends, by any path, the handler takes the server back and either sells the
seat or, if the payment failed or was cut, gives it back. The hold is what keeps two
customers from paying for the same seat: the check before the block stays true because the
seat is taken out of what others may reserve.

Some payments are slow, one is declined, and one hangs: the handler's 4 s budget cuts it, the
customer hears `CallTimeout` at the deadline, and the seat goes back on sale. No seat is sold
twice, and the payments run concurrently.

Run it with ``python examples/waiting/theater.py``: on trio's virtual clock, so it is instant
and prints exactly what ``tests/test_examples_waiting.py`` checks. ``--wall-clock`` runs the
same 6.5 seconds on the real clock.
"""

from __future__ import annotations

import argparse

import attrs
import trio
import trio.testing

import trioserver
from trioserver import CallTimeout, call, open_server, server, statistics

BUDGET = 4.0  # reserve's budget, seconds: the hung payment is cut there


class SeatTaken(Exception):
    """The seat is sold, or held for someone who is paying."""


class PaymentDeclined(Exception):
    """The payment provider said no."""


@attrs.frozen
class Customer:
    name: str
    arrives: float  # seconds after the start
    seat: str
    pays: float | None  # how long the payment takes; None: it hangs
    declined: bool = False


CUSTOMERS = (
    Customer("ann", 0.0, "A1", pays=2.0),
    Customer("bob", 0.1, "A1", pays=1.0),  # A1 is held for ann: told at once
    Customer("cat", 0.2, "A2", pays=1.0),
    Customer("dan", 0.3, "A3", pays=None),  # hangs: cut at 4.3, A3 back on sale
    Customer("eve", 0.4, "A4", pays=0.5, declined=True),  # A4 back on sale at 0.9
    Customer("fay", 1.0, "A4", pays=1.5),
    Customer("gus", 5.0, "A3", pays=1.5),  # buys the seat dan's hung payment held
)


class Story:
    """What happened, as ``(time, line)``: printed as it happens, kept for the tests."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self.start = trio.current_time()

    def now(self) -> float:
        return round(trio.current_time() - self.start, 3)

    def say(self, line: str) -> None:
        self.lines.append((self.now(), line))
        print(f"{self.now():4.1f}  {line}")


class Payments:
    """A payment provider: each customer's charge takes its time, or hangs."""

    def __init__(self, story: Story) -> None:
        self.story = story
        self.in_flight = 0
        self.peak = 0
        self.charged: list[str] = []  # customers whose charge went through

    async def charge(self, customer: Customer) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.story.say(f"charging {customer.name} (payments in flight: {self.in_flight})")
        try:
            if customer.pays is None:
                await trio.sleep_forever()
            await trio.sleep(customer.pays)
            if customer.declined:
                raise PaymentDeclined(customer.name)
            self.charged.append(customer.name)
        finally:
            self.in_flight -= 1


@server
class Theater:
    def __init__(self, payments: Payments, story: Story) -> None:
        self.held: dict[str, str] = {}  # seat -> who is paying for it
        self.sold: dict[str, str] = {}  # seat -> who bought it
        self.sales: list[str] = []  # every seat sold, once per sale
        self.payments = payments
        self.story = story

    @call(timeout=BUDGET)
    async def reserve(self, customer: Customer) -> str:
        seat, name = customer.seat, customer.name
        if seat in self.sold or seat in self.held:  # check...
            raise SeatTaken(seat)
        self.held[seat] = name  # ...and hold, before giving the server back
        try:
            async with trioserver.released():
                await self.payments.charge(customer)  # the others are served meanwhile
        except BaseException as exc:  # declined, cut by the budget, or the caller left
            del self.held[seat]
            why = "cut" if isinstance(exc, trio.Cancelled) else type(exc).__name__
            self.story.say(f"{seat} back on sale ({name}'s payment: {why})")
            raise
        del self.held[seat]
        self.sales.append(seat)
        self.sold[seat] = name  # the hold made the check still true: no re-check needed
        self.story.say(f"{seat} sold to {name}")
        return seat


async def customer(
    theater: Theater, me: Customer, story: Story, told: dict[str, tuple[str, float]]
) -> None:
    """Reserve, and note what this customer was told, and when."""
    await trio.sleep_until(story.start + me.arrives)
    try:
        answer = await theater.reserve(me)
    except (SeatTaken, PaymentDeclined, CallTimeout) as exc:
        answer = type(exc).__name__
    told[me.name] = (answer, story.now())


@attrs.frozen
class Result:
    lines: tuple[tuple[float, str], ...]  # the story, as (seconds, line)
    told: dict[str, tuple[str, float]]  # customer -> (their seat or the error, when)
    sold: dict[str, str]  # seat -> customer
    sales: tuple[str, ...]  # every seat sold, once per sale
    charged: tuple[str, ...]  # customers whose payment went through
    peak_payments: int  # the most payments in flight at once
    payment_seconds: float  # the time spent in payments (released blocks), in all
    elapsed: float
    handled: int
    failed: int
    timed_out: int


async def main() -> Result:
    story = Story()
    payments = Payments(story)
    theater = Theater(payments, story)
    told: dict[str, tuple[str, float]] = {}
    async with open_server(theater) as handle:
        async with trio.open_nursery() as nursery:
            for me in CUSTOMERS:
                nursery.start_soon(customer, handle, me, story, told)
        stats = statistics(handle)
    elapsed = story.now()
    # (Printed here, not as it happens: a cut customer hears CallTimeout at the deadline, at
    # the same instant as the handler puts the seat back, in either order.)
    for me in CUSTOMERS:
        answer, when = told[me.name]
        print(f"{me.name} asked for {me.seat} at {me.arrives:.1f}: {answer} at {when:.1f}")
    sold_twice = len(theater.sales) - len(set(theater.sales))
    paid_for_nothing = len(payments.charged) - len(theater.sales)
    print(
        f"sales {len(theater.sales)}, seats sold twice {sold_twice}, "
        f"paid for nothing {paid_for_nothing}"
    )
    print(
        f"payments: peak {payments.peak} in flight, "
        f"{stats.released_seconds:.1f} s of them in {elapsed:.1f} s"
    )
    print(f"handled {stats.handled}, failed {stats.failed}, timed out {stats.timed_out}")
    return Result(
        lines=tuple(story.lines),
        told=dict(told),
        sold=dict(theater.sold),
        sales=tuple(theater.sales),
        charged=tuple(payments.charged),
        peak_payments=payments.peak,
        payment_seconds=round(stats.released_seconds, 3),
        elapsed=elapsed,
        handled=stats.handled,
        failed=stats.failed,
        timed_out=stats.timed_out,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--wall-clock", action="store_true", help="run on the real clock")
    args = parser.parse_args()
    clock = None if args.wall_clock else trio.testing.MockClock(autojump_threshold=0)
    trio.run(main, clock=clock)


if __name__ == "__main__":
    cli()
