"""Guarantee 15: ``async with trioserver.released():`` gives the server back for the block."""

from __future__ import annotations

import contextvars
import functools
from typing import Any

import pytest
import trio
import trio.testing

from trioserver import (
    CallTimeout,
    NotInHandlerError,
    ServerStopped,
    call,
    open_server,
    released,
    server,
    statistics,
)

from .tasks import cancel_at


@server
class Shop:
    def __init__(self) -> None:
        self.log: list[tuple[str, float]] = []
        self.stock = 1
        self.tasks: dict[str, trio.lowlevel.Task] = {}

    def note(self, what: str) -> None:
        self.log.append((what, trio.current_time()))

    @call(timeout=10.0)
    async def pay(self, who: str, seconds: float) -> str:
        self.note(f"{who} holds")
        self.tasks[who] = trio.lowlevel.current_task()
        try:
            async with released():
                self.note(f"{who} released")
                await trio.sleep(seconds)
        finally:
            self.note(f"{who} back")
        return f"{who} paid"

    @call(timeout=10.0)
    async def work(self, who: str, seconds: float) -> str:
        self.tasks[who] = trio.lowlevel.current_task()
        self.note(f"{who} starts")
        await trio.sleep(seconds)
        self.note(f"{who} ends")
        return who

    @call(timeout=2.0)
    async def pay_and_fail(self) -> None:
        async with released():
            await trio.sleep(0.5)
            raise ValueError("card declined")

    @call(timeout=2.0)
    async def pay_too_long(self) -> str:
        try:
            async with released():
                await trio.sleep(5.0)
        finally:
            self.stock += 1  # cleanup, holding the server again
            self.note("cleanup")
        return "never returned"

    @call(timeout=10.0)
    async def call_self_released(self) -> tuple[bool, str]:
        me = trio.lowlevel.current_task()
        async with released():
            result = await self.work("self", 0.0)  # queued like any call, not inline
        return self.tasks["self"] is not me, result


async def test_the_requests_behind_run_during_the_block(autojump_clock: trio.abc.Clock) -> None:
    shop = Shop()
    async with open_server(shop) as handle, trio.open_nursery() as nursery:
        nursery.start_soon(handle.pay, "a", 3.0)
        await trio.testing.wait_all_tasks_blocked()
        assert await handle.work("b", 1.0) == "b"
        assert trio.current_time() == 1.0  # b did not wait for a's payment
    assert shop.log == [
        ("a holds", 0.0),
        ("a released", 0.0),
        ("b starts", 0.0),
        ("b ends", 1.0),
        ("a back", 3.0),
    ]
    assert shop.tasks["a"] is not shop.tasks["b"]  # the block kept its task; b ran in another


async def test_leaving_retakes_the_server_ahead_of_unstarted_requests(
    autojump_clock: trio.abc.Clock,
) -> None:
    shop = Shop()
    async with open_server(shop) as handle, trio.open_nursery() as nursery:
        nursery.start_soon(handle.pay, "a", 1.0)  # leaves its block at 1.0
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(handle.work, "b", 2.0)  # holds the server from 0.0 to 2.0
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(handle.work, "c", 0.0)  # queued at 0.0, behind b
        await trio.testing.wait_all_tasks_blocked()
    assert shop.log == [
        ("a holds", 0.0),
        ("a released", 0.0),
        ("b starts", 0.0),
        ("b ends", 2.0),
        ("a back", 2.0),  # waited for b (the holder), then went before c
        ("c starts", 2.0),
        ("c ends", 2.0),
    ]


async def test_a_caller_cancelled_in_the_block_leaves_at_once_and_the_cleanup_holds_the_server(
    autojump_clock: trio.abc.Clock,
) -> None:
    shop = Shop()
    async with open_server(shop) as handle, trio.open_nursery() as nursery:
        nursery.start_soon(handle.work, "b", 0.0)
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_at, 1.0, scope)
            await handle.pay("a", 5.0)
        assert trio.current_time() == 1.0
        await trio.testing.wait_all_tasks_blocked()
        assert statistics(handle).cancelled == 1
        assert statistics(handle).released == 0
    assert ("a back", 1.0) in shop.log


async def test_a_deadline_in_the_block_gives_calltimeout_at_the_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    shop = Shop()
    async with open_server(shop) as handle:
        with pytest.raises(CallTimeout, match=r"Shop\.pay_too_long"):
            await handle.pay_too_long()
        assert trio.current_time() == 2.0
        await trio.testing.wait_all_tasks_blocked()
        assert shop.stock == 2  # the handler took the server back and ran its cleanup
        assert shop.log == [("cleanup", 2.0)]
        stats = statistics(handle)
        assert (stats.timed_out, stats.released, stats.released_seconds) == (1, 0, 2.0)


async def test_an_exception_in_the_block_reaches_the_caller(
    autojump_clock: trio.abc.Clock,
) -> None:
    shop = Shop()
    async with open_server(shop) as handle:
        with pytest.raises(ValueError, match="card declined"):
            await handle.pay_and_fail()
        assert trio.current_time() == 0.5
        assert await handle.work("next", 0.0) == "next"  # the server goes on
        assert statistics(handle).failed == 1


async def test_statistics_count_released_apart_from_running(
    autojump_clock: trio.abc.Clock,
) -> None:
    shop = Shop()
    async with open_server(shop) as handle, trio.open_nursery() as nursery:
        nursery.start_soon(handle.pay, "a", 3.0)
        nursery.start_soon(handle.pay, "b", 1.0)
        await trio.sleep(0.5)
        stats = statistics(handle)
        assert (stats.running, stats.released, stats.queued) == (0, 2, 0)
    stats = statistics(handle)
    assert (stats.running, stats.released, stats.released_seconds) == (0, 0, 4.0)


async def test_stopping_cancels_released_blocks_and_tells_their_callers(
    autojump_clock: trio.abc.Clock,
) -> None:
    stopped_at: list[float] = []

    @server
    class Stopping(Shop):
        async def on_stop(self) -> None:
            self.note("on_stop")

    shop = Stopping()

    async def pay(handle: Stopping) -> None:
        with pytest.raises(ServerStopped, match="while handling this call"):
            await handle.pay("a", 5.0)
        stopped_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        async with open_server(shop) as handle:
            nursery.start_soon(pay, handle)
            await trio.sleep(1.0)
        assert statistics(handle).cancelled == 1
    assert stopped_at == [1.0]
    assert shop.log[-2:] == [("a back", 1.0), ("on_stop", 1.0)], shop.log  # cleanup, on_stop


async def test_a_handler_out_of_its_block_at_a_stop_retakes_as_the_holder_enters_one(
    autojump_clock: trio.abc.Clock,
) -> None:
    # `a`'s block is cancelled by the stop at t=0.5 while `b` holds the server (shielded);
    # `b` enters a block at t=1.0: the server is free then, and `a` takes it back at once
    # (it once waited for `b`'s block to end, at t=2.0, as no task serves after a stop)
    @server
    class Two(Shop):
        @call(timeout=10.0)
        async def b(self) -> None:
            with trio.CancelScope(shield=True):
                await trio.sleep(1.0)
            async with released():
                with trio.CancelScope(shield=True):
                    await trio.sleep(1.0)
            self.note("b back")

    two = Two()

    async def call_it(method: Any) -> None:
        with pytest.raises(ServerStopped):
            await method()

    async with trio.open_nursery() as nursery, open_server(two) as handle:
        nursery.start_soon(call_it, functools.partial(handle.pay, "a", 10.0))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call_it, handle.b)
        await trio.sleep(0.5)
    backs = [entry for entry in two.log if entry[0].endswith(" back")]
    assert backs == [("a back", 1.0), ("b back", 2.0)], two.log


async def test_a_call_to_its_own_server_from_a_block_is_queued_not_inline(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Shop()) as handle:
        assert await handle.call_self_released() == (True, "self")


async def test_a_guard_is_evaluated_again_when_a_handler_enters_a_block(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Gate:
        def __init__(self) -> None:
            self.open = False

        @call(when=lambda self: self.open)
        def enter(self) -> float:
            return trio.current_time()

        @call
        async def open_then_pay(self) -> None:
            self.open = True
            async with released():
                await trio.sleep(2.0)

    async with open_server(Gate()) as gate, trio.open_nursery() as nursery:
        entered: list[float] = []

        async def enter() -> None:
            entered.append(await gate.enter())

        nursery.start_soon(enter)
        await trio.testing.wait_all_tasks_blocked()
        await gate.open_then_pay()
    assert entered == [0.0]  # not 2.0: the block gave the server back


async def test_released_outside_a_handler_is_refused(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(NotInHandlerError, match="handler"):
        async with released():
            pass

    @server
    class Misuse:
        async def on_start(self) -> None:
            with pytest.raises(NotInHandlerError):
                async with released():
                    pass

        @call
        async def in_child(self) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._enter)

        @call
        async def nested(self) -> None:
            async with released(), released():
                pass

        async def _enter(self) -> None:
            async with released():
                pass

    async with open_server(Misuse()) as misuse:
        with pytest.RaisesGroup(NotInHandlerError):
            await misuse.in_child()
        with pytest.raises(NotInHandlerError):
            await misuse.nested()
        assert statistics(misuse).failed == 2


async def test_a_task_told_to_end_does_not_take_a_handler_handed_to_its_successor() -> None:
    # Real clock, two callers calling twice: the idle task told to end (a released handler
    # took the server back) must not run what was handed to the handler's task meanwhile.
    @server
    class Short:
        def __init__(self) -> None:
            self.done = 0

        @call
        async def f(self) -> None:
            async with released():
                await trio.sleep(0.001)
            self.done += 1

    short = Short()
    async with open_server(short) as handle, trio.open_nursery() as nursery:
        for _ in range(4):

            async def twice() -> None:
                for _ in range(3):
                    await handle.f()

            nursery.start_soon(twice)
    assert short.done == 12
    assert statistics(handle).handled == 12


async def test_a_retake_waiting_as_the_idle_task_retires_is_not_lost(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Pay:
        @call(timeout=None)
        async def pay(self, seconds: float) -> float:
            async with released():
                await trio.sleep(seconds)
            return trio.current_time()

    for _ in range(20):  # (the retire timer and the retake race: trio's batch order varies)
        async with open_server(Pay()) as pay, trio.open_nursery() as nursery:
            retook: dict[str, float] = {}

            async def one(
                name: str, seconds: float, handle: Pay = pay, retook: dict[str, float] = retook
            ) -> None:
                retook[name] = await handle.pay(seconds)

            began = trio.current_time()
            nursery.start_soon(one, "a", 1.0)
            await trio.sleep(0.1)
            nursery.start_soon(one, "b", 1.0)
        assert retook == {"a": began + 1.0, "b": began + 1.1}


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_contextvars_set_during_a_block_by_other_requests_stay_set(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Ctx:
        @call
        def set(self, value: str) -> None:
            VAR.set(value)

        @call
        def get(self) -> str:
            return VAR.get()

        @call
        async def block(self) -> str:
            async with released():
                VAR.set("mine")  # the handler's own, in the block
                await trio.sleep(2.0)
            return VAR.get()

    async with open_server(Ctx()) as ctx, trio.open_nursery() as nursery:
        await ctx.set("before")
        results: list[str] = []

        async def block() -> None:
            results.append(await ctx.block())

        nursery.start_soon(block)
        await trio.sleep(1.0)
        assert await ctx.get() == "before"  # (what the block set is its own)
        await ctx.set("during")
        await trio.sleep(2.0)
        assert results == ["during"]  # set by a request served during the block: it stays
        assert await ctx.get() == "during"
