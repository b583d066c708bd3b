"""The run's timers: one task per trio run, and a heap that stays as small as what is live."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from trioserver import CallTimeout, _private, _timers, call, cast, open_server, server

from .tasks import tasks_named


@server
class Waiting:
    def __init__(self) -> None:
        self.count = 0

    @call(timeout=5.0)
    async def tick(self) -> int:
        await trio.lowlevel.checkpoint()  # suspends: its deadline goes to the run's timers
        self.count += 1
        return self.count

    @call(timeout=1.0)
    async def stuck(self) -> None:
        await trio.sleep_forever()

    @cast(timeout=1.0)
    async def stuck_cast(self) -> None:
        await trio.sleep_forever()

    @call(timeout=3.0)
    async def stuck_longer(self) -> None:
        await trio.sleep_forever()


async def test_one_timer_task_serves_every_server_of_a_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Waiting()) as a, open_server(Waiting()) as b:
        await a.tick()
        await b.tick()
        assert len(tasks_named("trioserver: timers")) == 1
        assert _timers.timers() is _timers.timers()


async def test_the_heap_keeps_no_more_than_what_is_live(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Waiting()) as waiting:
        for _ in range(5000):
            await waiting.tick()  # each leaves a dead entry behind (it returned in time)
        timers = _timers.timers()
        # rebuilt whenever it holds more than max(64, twice the live entries at the last
        # rebuild): here one live entry at most, the server's retirement check
        assert len(timers._heap) <= 65  # pyright: ignore[reportPrivateUsage]
        assert waiting.count == 5000


async def test_a_call_and_a_cast_are_cut_at_their_deadlines_by_the_timers(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Waiting()) as waiting:
        start = trio.current_time()
        await waiting.stuck_cast()
        try:
            await waiting.stuck()
        except CallTimeout:
            heard = trio.current_time()
        else:  # pragma: no cover
            raise AssertionError("not cut")
        # the cast held the server for its 1 s budget; the call then had its own
        assert heard == start + 2.0
        await trio.sleep(10.0)  # nothing left in the heap fires for them again
        assert await waiting.tick() == 1


async def test_a_busy_server_asks_the_timers_once_not_once_a_call(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    added: list[float] = []
    original = _timers.Timers.add

    def counting(self: _timers.Timers, when: float, target: _timers.Timed) -> None:
        added.append(when)
        original(self, when, target)

    async with open_server(Waiting()) as waiting:
        monkeypatch.setattr(_timers.Timers, "add", counting)
        for _ in range(1000):
            await waiting.tick()  # every one suspends, with a deadline 5 s on
        # the first deadline's entry stands for the later ones (it looks again when it fires);
        # on the public path the task parks between calls, and its retirement asks once too
        assert added == ([5.0] if _private.ENABLED else [5.0, 0.1])
        assert waiting.count == 1000


async def test_a_deadline_after_the_servers_entry_is_cut_at_its_own_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Waiting()) as waiting:
        await waiting.tick()  # the server's entry: 5.0, the end of tick's budget
        await trio.sleep(4.5)
        with pytest.raises(CallTimeout, match="within its budget of 3 s"):
            await waiting.stuck_longer()  # its deadline, 7.5, is after the entry's
        assert trio.current_time() == 7.5


async def test_a_deadline_before_the_servers_entry_is_cut_at_its_own_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Waiting()) as waiting:
        await waiting.tick()  # the server's entry: 5.0
        with pytest.raises(CallTimeout):
            await waiting.stuck()  # 1 s budget: an earlier entry
        assert trio.current_time() == 1.0
        await trio.sleep(10.0)  # the replaced entry fires for nothing
        assert await waiting.tick() == 2
