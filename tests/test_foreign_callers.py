"""A handle used outside its server's trio run is refused at the call, with a named error.

Nothing of the server's state is touched: the refusal comes before any request is made.
"""

from __future__ import annotations

import asyncio

import pytest
import trio

from trioserver import ForeignRunError, NotTrioError, call, cast, open_server, server, statistics


@server
class Counter:
    def __init__(self) -> None:
        self.count = 0

    @call
    async def bump(self) -> int:
        self.count += 1
        return self.count

    @cast
    async def note(self) -> None:
        self.count += 1


def _in_another_trio_run(counter: Counter, method: str) -> BaseException | None:
    async def use() -> None:
        await getattr(counter, method)()

    try:
        trio.run(use)
    except BaseException as exc:
        return exc
    return None


@pytest.mark.parametrize("method", ["bump", "note"])
async def test_a_call_from_another_threads_trio_run_raises_foreign_run_error(method: str) -> None:
    counter = Counter()
    async with open_server(counter):
        await counter.bump()
        error = await trio.to_thread.run_sync(_in_another_trio_run, counter, method)
        assert isinstance(error, ForeignRunError)
        assert f"Counter.{method}" in str(error)
        assert counter.count == 1
        stats = statistics(counter)
        assert stats.handled == 1
        assert stats.queued == 0
        assert await counter.bump() == 2  # the server goes on


def _under_asyncio(counter: Counter, method: str) -> BaseException | None:
    async def use() -> None:
        await getattr(counter, method)()

    try:
        asyncio.run(use())
    except BaseException as exc:
        return exc
    return None


@pytest.mark.parametrize("method", ["bump", "note"])
async def test_a_call_under_asyncio_says_trioserver_needs_trio(method: str) -> None:
    counter = Counter()
    async with open_server(counter):
        error = await trio.to_thread.run_sync(_under_asyncio, counter, method)
        assert isinstance(error, NotTrioError)
        assert "needs trio" in str(error)
        assert counter.count == 0
        assert statistics(counter).handled == 0
