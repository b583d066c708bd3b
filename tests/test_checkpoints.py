"""Guarantee 8: an await on a handle method that returns normally has executed a checkpoint."""

from __future__ import annotations

import trio
from trio.testing import assert_checkpoints

from trioserver import call, cast, open_server, server


@server
class Quick:
    @call
    async def async_fast(self) -> int:
        return 1  # never suspends: the fast path

    @call
    async def async_suspends(self) -> int:
        await trio.lowlevel.checkpoint()
        return 2

    @call
    def plain(self) -> int:
        return 3

    @call
    async def outer(self) -> int:
        with assert_checkpoints():
            return await self.plain()  # inline self-call

    @cast
    def fire(self) -> None:
        pass


async def test_calls_are_checkpoints(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Quick()) as q:
        with assert_checkpoints():
            assert await q.async_fast() == 1
        with assert_checkpoints():
            assert await q.async_suspends() == 2
        with assert_checkpoints():
            assert await q.plain() == 3


async def test_inline_self_call_is_a_checkpoint(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Quick()) as q:
        assert await q.outer() == 3


async def test_cast_is_a_checkpoint(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Quick()) as q:
        with assert_checkpoints():
            await q.fire()
