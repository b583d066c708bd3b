"""The classes that the section ``ray`` hosts in Ray actors running trio, in a module of its
own: Ray's workers import it by name to rebuild the classes, and import nothing else of the
benchmarks."""

from __future__ import annotations

import asyncio
import os
import threading

import trio

from trioserver import call, server


@server
class Counter:
    """The round trip's counter (`benchmarks.contenders.Counter`), and the pid of its process."""

    def __init__(self) -> None:
        self.count = 0

    @call
    async def bump(self, n: int) -> int:
        self.count += n
        return self.count

    @call
    def pid(self) -> int:
        return os.getpid()


class TrioThreadCounter:
    """An async Ray actor (``ray.remote(TrioThreadCounter)``) with trio on a thread of its own,
    as trioserver.ray's host has, and no server: each ``bump`` crosses from Ray's asyncio loop
    into the trio run (`trio.lowlevel.TrioToken.run_sync_soon`), adds there, and posts its
    reply back (``loop.call_soon_threadsafe``). The price of the crossing alone."""

    def __init__(self) -> None:
        self.count = 0
        tokens: list[trio.lowlevel.TrioToken] = []
        started = threading.Event()

        async def main() -> None:
            tokens.append(trio.lowlevel.current_trio_token())
            started.set()
            await trio.sleep_forever()

        threading.Thread(target=trio.run, args=(main,), name="trio", daemon=True).start()
        started.wait()
        self.token = tokens[0]

    async def bump(self, n: int) -> int:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[int] = loop.create_future()

        def add() -> None:  # in the trio thread
            self.count += n
            loop.call_soon_threadsafe(reply.set_result, self.count)

        self.token.run_sync_soon(add)
        return await reply

    async def pid(self) -> int:
        return os.getpid()
