"""Guarantee 9: arguments are bound in the caller; a wrong call raises TypeError there, at once.

"At once" means when ``handle.method(...)`` is called, before anything is
awaited: the caller's task never reaches the server, so nothing is queued, and
the server, busy with another call, never sees it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trioserver import InvalidServerDefinition, call, cast, open_server, server, statistics


@server
class Box:
    def __init__(self) -> None:
        self.seen: list[object] = []

    @call(timeout=None)
    async def hold(self, seconds: float) -> None:
        await trio.sleep(seconds)

    @call
    def put(self, key: str, value: int = 0, *, tag: str = "") -> str:
        self.seen.append(("put", key, value, tag))
        return key

    @call
    async def pair(self, a: int, b: int, /) -> int:
        self.seen.append(("pair", a, b))
        return a + b

    @cast
    def note(self, text: str, *, level: int = 0) -> None:
        self.seen.append(("note", text, level))


WRONG_CALLS: list[Any] = [
    pytest.param(lambda box: box.put(), id="call-missing-argument"),
    pytest.param(lambda box: box.put("k", 1, 2), id="call-extra-positional"),
    pytest.param(lambda box: box.put("k", colour="red"), id="call-unknown-keyword"),
    pytest.param(lambda box: box.put("k", key="k"), id="call-argument-given-twice"),
    pytest.param(lambda box: box.put("k", 1, "tag"), id="call-keyword-only-passed-positionally"),
    pytest.param(lambda box: box.pair(a=1, b=2), id="call-positional-only-passed-by-keyword"),
    pytest.param(lambda box: box.pair(1, b=2), id="call-one-positional-only-by-keyword"),
    pytest.param(lambda box: box.pair(1), id="call-positional-only-missing"),
    pytest.param(lambda box: box.note(), id="cast-missing-argument"),
    pytest.param(lambda box: box.note("t", 1), id="cast-keyword-only-passed-positionally"),
    pytest.param(lambda box: box.note("t", lvl=1), id="cast-unknown-keyword"),
    pytest.param(lambda box: box.note("t", "u"), id="cast-extra-positional"),
]


@asynccontextmanager
async def busy_box() -> AsyncIterator[Box]:
    """A running Box whose handler is busy with a long call, so anything queued would wait."""
    async with open_server(Box()) as box, trio.open_nursery() as nursery:
        nursery.start_soon(box.hold, 100.0)
        await trio.testing.wait_all_tasks_blocked()
        stats = statistics(box)
        assert (stats.running, stats.queued, stats.handled) == (1, 0, 0)
        yield box
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("wrong", WRONG_CALLS)
async def test_wrong_call_raises_type_error_before_await_and_queues_nothing(
    autojump_clock: trio.abc.Clock, wrong: Callable[[Box], object]
) -> None:
    async with busy_box() as box:
        before = statistics(box)
        with pytest.raises(TypeError) as info:
            wrong(box)  # not awaited: binding must fail in the call itself
        assert not isinstance(info.value, InvalidServerDefinition)
        await trio.testing.wait_all_tasks_blocked()
        assert statistics(box) == before  # queued 0, peak_queued 0, handled unchanged
        assert box.seen == []


@pytest.mark.parametrize("wrong", WRONG_CALLS)
async def test_awaited_wrong_call_raises_without_a_checkpoint(
    autojump_clock: trio.abc.Clock, wrong: Callable[[Box], Any]
) -> None:
    async with busy_box() as box:
        before = statistics(box)
        with trio.testing.assert_no_checkpoints(), pytest.raises(TypeError):
            await wrong(box)
        assert statistics(box) == before
        # The server finishes its long call and never sees the wrong one.
        await trio.sleep(100.0)
        await trio.testing.wait_all_tasks_blocked()
        after = statistics(box)
        assert (after.handled, after.failed) == (1, 0)
        assert after.peak_queued == before.peak_queued
        assert box.seen == []


async def test_type_error_names_the_method(autojump_clock: trio.abc.Clock) -> None:
    async with busy_box() as box:
        with pytest.raises(
            TypeError, match=r"put\(\) missing 1 required positional argument: 'key'"
        ):
            box.put()
        with pytest.raises(TypeError, match=r"note\(\) got an unexpected keyword argument 'lvl'"):
            box.note("t", lvl=1)


async def test_right_calls_are_queued_behind_the_busy_server(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The control for the tests above: the same counters do see a well-formed request.
    async with busy_box() as box, trio.open_nursery() as nursery:
        before = statistics(box)
        nursery.start_soon(box.put, "k")
        await trio.testing.wait_all_tasks_blocked()
        await box.note("t")
        stats = statistics(box)
        assert stats.queued == 2
        assert stats.peak_queued == max(2, before.peak_queued)
        await trio.sleep(100.0)
        await trio.testing.wait_all_tasks_blocked()
        assert box.seen == [("put", "k", 0, ""), ("note", "t", 0)]


async def test_wrong_call_from_a_cancelled_caller_raises_type_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with busy_box() as box:
        before = statistics(box)
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(TypeError):
                await box.put()
            with pytest.raises(TypeError):
                await box.note()
        assert statistics(box) == before


@pytest.mark.parametrize("wrong", WRONG_CALLS)
def test_wrong_call_on_a_server_not_running_raises_type_error(
    wrong: Callable[[Box], object],
) -> None:
    # Binding comes first: TypeError, not ServerStopped, and no coroutine left un-awaited.
    with pytest.raises(TypeError) as info:
        wrong(Box())
    assert not isinstance(info.value, InvalidServerDefinition)


async def test_handler_calling_its_own_server_wrongly_gets_type_error_inline(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Outer:
        @call
        async def inner(self, x: int) -> int:
            return x

        @call
        async def outer(self) -> str:
            try:
                await self.inner()
            except TypeError as error:
                return str(error)
            return "no error"

    async with open_server(Outer()) as outer:
        assert "inner() missing 1 required positional argument" in await outer.outer()
        stats = statistics(outer)
        assert (stats.handled, stats.failed) == (1, 0)  # the inline call is part of outer
