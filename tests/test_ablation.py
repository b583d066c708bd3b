"""The ablation benchmark (benchmarks/ablation.py) removes what it says from the call path, on
the path the benchmark takes, and puts it back: if a refactoring moved the timings or the
deadline read out of reach of its patches, its figures would silently measure the shipped code.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from benchmarks.ablation import VARIANTS, contenders, removed
from trioserver import _private, call, open_server, server, statistics
from trioserver._timers import Timers, timers


@server
class Seen:
    def __init__(self) -> None:
        self.deadlines: list[float] = []

    @call(timeout=None)
    async def note(self) -> None:
        self.deadlines.append(trio.current_effective_deadline())

    @call(timeout=None)
    def note_def(self) -> None:
        self.deadlines.append(trio.current_effective_deadline())


async def _observe(parts: tuple[str, ...]) -> tuple[int, list[float]]:
    obj = Seen()
    async with open_server(obj) as handle:
        with removed(parts), trio.move_on_after(100):
            await handle.note()
            await handle.note_def()
        figures = statistics(handle).methods
        timed = sum(m.service.count for m in figures.values())
    return timed, obj.deadlines


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_variant_removes_its_parts_and_puts_them_back(variant: str) -> None:
    parts = VARIANTS[variant]
    original = _private.effective_deadline

    async def main() -> None:
        timed, deadlines = await _observe(parts)
        assert timed == (0 if "timings" in parts else 2)
        clock = trio.current_time()
        if "deadline" in parts:
            assert deadlines == [math.inf, math.inf]
        else:
            assert deadlines == [pytest.approx(clock + 100)] * 2
        timed, deadlines = await _observe(())  # restored
        assert timed == 2
        assert deadlines == [pytest.approx(trio.current_time() + 100)] * 2

    trio.run(main, clock=trio.testing.MockClock())
    assert _private.effective_deadline is original


def test_every_body_is_measured_under_every_variant() -> None:
    names = {c.name for c in contenders()}
    for body in ("trioserver_async", "trioserver_def"):
        assert {f"{body}/{v}" for v in VARIANTS} <= names


@server
class Waits:
    @call(timeout=5.0)
    async def wait(self) -> None:
        await trio.lowlevel.checkpoint()  # suspends: its deadline goes into the run's timers


def test_the_timers_part_keeps_suspended_handlers_out_of_the_timers_and_comes_back() -> None:
    original = Timers.add

    async def entries(parts: tuple[str, ...]) -> int:
        async with open_server(Waits()) as handle:
            with removed(parts):
                await handle.wait()
            return len(timers()._heap)  # pyright: ignore[reportPrivateUsage]

    async def main() -> None:
        assert await entries(("timers",)) == 0
        assert await entries(()) >= 1  # restored: the handler's deadline is in again

    trio.run(main, clock=trio.testing.MockClock())
    assert Timers.add is original
