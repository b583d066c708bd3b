"""The raw Ray actor that the section ``ray`` measures against: the same body as
`benchmarks._ray_server.Counter`, without trioserver. A module of its own, importing neither
trio nor trioserver, so that its actor's memory is Ray's alone."""

from __future__ import annotations

import os


class RawCounter:
    """An async Ray actor (``ray.remote(RawCounter)``): Ray runs its methods on its asyncio
    loop, up to 1000 at once (Ray's default for async actors; trioserver.ray's too)."""

    def __init__(self) -> None:
        self.count = 0

    async def bump(self, n: int) -> int:
        self.count += n
        return self.count

    async def pid(self) -> int:
        return os.getpid()
