"""Guarantee 16: a call that would close a cycle of requests waiting on each other raises
`DeadlockError` at once, naming the cycle; nothing is queued, nothing counted."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trioserver import DeadlockError, call, open_server, released, server, statistics


@server
class A:
    def __init__(self) -> None:
        self.peer: Any = None
        self.errors: list[BaseException] = []

    @call(timeout=1.0)
    async def f(self) -> str:
        return str(await self.peer.g())

    @call(timeout=1.0)
    async def f_released(self) -> str:
        async with released():
            return str(await self.peer.g())

    @call(timeout=1.0)
    async def h(self) -> str:
        return "h"


@server
class B:
    def __init__(self) -> None:
        self.peer: Any = None
        self.errors: list[BaseException] = []

    @call(timeout=1.0)
    async def g(self) -> str:
        try:
            return str(await self.peer.h())
        except DeadlockError as exc:
            self.errors.append(exc)
            raise

    @call(timeout=1.0)
    async def g_released(self) -> str:
        async with released():
            try:
                return str(await self.peer.h())
            except DeadlockError as exc:
                self.errors.append(exc)
                raise

    @call(timeout=1.0)
    async def g_via_c(self) -> str:
        return str(await self.peer.c.k())


@server
class C:
    def __init__(self, a: Any) -> None:
        self.a = a

    @call(timeout=1.0)
    async def k(self) -> str:
        return str(await self.a.h())


@server
class B2:
    def __init__(self, c: Any) -> None:
        self.c = c

    @call(timeout=1.0)
    async def g(self) -> str:
        return str(await self.c.k())


@server
class A2:
    def __init__(self) -> None:
        self.peer: Any = None

    @call(timeout=1.0)
    async def f(self) -> str:
        return str(await self.peer.g_released())

    @call(timeout=1.0)
    async def h(self) -> str:
        return "h"


async def test_a_two_server_cycle_is_refused_at_once_naming_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    a, b = A(), B()
    async with open_server(a) as ha, open_server(b) as hb:
        a.peer, b.peer = hb, ha
        with pytest.raises(DeadlockError) as info:
            await ha.f()
        assert trio.current_time() == 0.0  # at once, not at a budget
        assert "A.f -> B.g -> A.h" in str(info.value)
        assert b.errors == [info.value]  # raised in the caller that would close it (B.g)
        sa, sb = statistics(ha), statistics(hb)
        assert sa.handled + sa.failed == 1  # f failed; h was never queued nor counted
        assert "h" not in sa.methods
        assert (sb.failed, sa.queued, sb.queued) == (1, 0, 0)


async def test_a_longer_cycle_is_named_in_order(autojump_clock: trio.abc.Clock) -> None:
    a = A()
    async with open_server(a) as ha:
        c = C(ha)
        async with open_server(c) as hc, open_server(B2(hc)) as hb:
            a.peer = hb
            with pytest.raises(DeadlockError, match=r"A\.f -> B2\.g -> C\.k -> A\.h"):
                await ha.f()
            assert trio.current_time() == 0.0


async def test_a_released_handler_is_still_a_link_of_the_chain(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A2.f holding A2 -> B.g_released -> A2.h is a cycle
    a, b = A2(), B()
    async with open_server(a) as ha, open_server(b) as hb:
        a.peer, b.peer = hb, ha
        with pytest.raises(DeadlockError, match=r"A2\.f -> B\.g_released -> A2\.h"):
            await ha.f()
        assert trio.current_time() == 0.0


async def test_a_released_holder_is_not_a_cycle(autojump_clock: trio.abc.Clock) -> None:
    # A.f released -> B.g holding B -> A.h is not: A is free to run h
    a, b = A(), B()
    async with open_server(a) as ha, open_server(b) as hb:
        a.peer, b.peer = hb, ha
        assert await ha.f_released() == "h"
        assert b.errors == []


async def test_calls_that_merely_queue_behind_each_other_are_not_cycles(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Slow:
        @call(timeout=5.0)
        async def work(self, seconds: float) -> float:
            await trio.sleep(seconds)
            return trio.current_time()

    async with open_server(Slow()) as slow, trio.open_nursery() as nursery:
        nursery.start_soon(slow.work, 2.0)
        await trio.testing.wait_all_tasks_blocked()
        assert await slow.work(1.0) == 3.0


@server
class Guarded:
    def __init__(self) -> None:
        self.peer: Any = None

    @call(timeout=1.0)
    async def f(self) -> str:
        return str(await self.peer.g())

    @call(timeout=1.0, when=lambda self: True)
    async def h(self) -> str:
        return "h"


async def test_a_guarded_call_behind_the_holder_it_waits_for_closes_a_cycle_too(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Guarded.h cannot even have its guard evaluated before Guarded.f ends: it waits for f.
    a, b = Guarded(), B()
    async with open_server(a) as ha, open_server(b) as hb:
        a.peer, b.peer = hb, ha
        with pytest.raises(DeadlockError, match=r"Guarded\.f -> B\.g -> Guarded\.h"):
            await ha.f()
        assert trio.current_time() == 0.0
