"""The server that the section ``ray`` hosts in a Ray actor, in a module of its own: Ray's
workers import it by name to rebuild the class, and import nothing else of the benchmarks."""

from __future__ import annotations

import os

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
