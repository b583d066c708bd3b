"""Small servers shared by the contract tests."""

from __future__ import annotations

import trio

from trioserver import call, cast, server


@server
class Recorder:
    """Records what its handlers see; each method exercises one part of the contract."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.running = 0
        self.peak_running = 0

    @call(timeout=4.0)
    async def work(self, name: str, seconds: float = 1.0) -> str:
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        self.log.append(f"start {name}")
        try:
            await trio.sleep(seconds)
        finally:
            self.running -= 1
        self.log.append(f"end {name}")
        return name

    @call
    def get(self, key: str) -> str | None:
        return key if key in self.log else None

    @cast
    async def note(self, text: str) -> None:
        self.log.append(text)
