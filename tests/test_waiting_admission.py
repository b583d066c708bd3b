"""Admission with released blocks and guards: the expected wait counts what the requests
ahead hold the server, not their time in released blocks nor guarded calls' waits."""

from __future__ import annotations

import trio
import trio.testing

from trioserver import _private, call, open_server, released, server, statistics


@server
class Payments:
    def __init__(self) -> None:
        self.open = False

    @call(timeout=10.0)
    async def pay(self) -> str:
        async with released():
            await trio.sleep(2.0)  # the payment: 2 s, not holding the server
        return "paid"

    @call(when=lambda self: self.open, timeout=10.0)
    async def gated(self) -> str:
        await trio.sleep(1.0)  # holding the server
        return "in"

    @call
    def set_open(self, value: bool) -> None:
        self.open = value


async def test_time_in_released_blocks_is_not_a_wait_for_the_others(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Payments()) as payments, trio.open_nursery() as nursery:
        assert await payments.pay() == "paid"  # it learns: 2 s of service, 0 s of hold
        results: list[str] = []

        async def pay() -> None:
            with trio.move_on_after(3.0):
                results.append(await payments.pay())

        for _ in range(5):  # held one after another, they would need 10 s: none refused
            nursery.start_soon(pay)
    assert results == ["paid"] * 5
    assert statistics(payments).shed == 0
    assert trio.current_time() == 4.0


async def test_guarded_calls_waiting_hold_nothing(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Payments()) as payments, trio.open_nursery() as nursery:
        assert await payments.pay() == "paid"
        await payments.set_open(True)
        assert await payments.gated() == "in"  # it learns: 1 s held
        await payments.set_open(False)
        for _ in range(10):
            nursery.start_soon(payments.gated)  # they wait for their guard, holding nothing
        await trio.testing.wait_all_tasks_blocked()
        assert statistics(payments).waiting_on_guard == 10
        with trio.move_on_after(2.5):
            assert await payments.pay() == "paid"  # not refused behind ten waiting guards
        nursery.cancel_scope.cancel()
    assert statistics(payments).shed == 0


async def test_a_guarded_call_refused_as_it_would_start_lets_the_next_true_one_start(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Payments()) as payments, trio.open_nursery() as nursery:
        await payments.set_open(True)
        assert await payments.gated() == "in"  # it learns: 1 s held
        await payments.set_open(False)
        ended: list[tuple[str, float]] = []

        async def hurried() -> None:
            with trio.move_on_after(1.5):  # its deadline: t=2.5
                ended.append((await payments.gated(), trio.current_time()))
            ended.append(("gave up", trio.current_time()))

        async def patient() -> None:
            ended.append((await payments.gated(), trio.current_time()))

        nursery.start_soon(hurried)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(patient)  # behind it
        await trio.sleep(1.0)
        # t=2.0: both guards hold; the first would end at 3.0, past its deadline: refused,
        # and its call ends as the deadline would (now; on public trio, at the deadline);
        # the next one starts in its turn
        await payments.set_open(True)
    assert ended == [("gave up", 2.0 if _private.ENABLED else 2.5), ("in", 3.0)]
    stats = statistics(payments)
    assert (stats.shed, stats.handled) == (1, 5)  # (three set_open, two gated)
