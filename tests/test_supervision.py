"""Supervision: crashed servers restart with fresh state, handles stay valid, intensity bounds."""

from __future__ import annotations

import copy
import itertools
import pickle
import signal

import pytest
import trio
import trio.testing

from trioserver import (
    Backoff,
    CallTimeout,
    HandleNotCopyable,
    ServerCrashed,
    call,
    cast,
    open_server,
    open_supervisor,
    server,
    statistics,
)


@server(timeout=1.0)
class Ledger:
    def __init__(self, name: str = "ledger", starts: list[str] | None = None) -> None:
        self.name = name
        self.entries: list[str] = []
        self.starts = starts if starts is not None else []

    async def on_start(self) -> None:
        self.starts.append(self.name)

    @cast(crash=True)
    def apply(self, entry: str) -> None:
        if entry == "corrupt":
            raise ValueError("corrupt entry")
        self.entries.append(entry)

    @call
    def read(self) -> list[str]:
        return list(self.entries)

    @call
    async def hang(self) -> None:
        with trio.CancelScope(shield=True):  # ignores its budget: only the watchdog sees it
            await trio.sleep(100.0)


async def _crash(ledger: Ledger) -> None:
    await ledger.apply("corrupt")
    await trio.testing.wait_all_tasks_blocked()


async def test_one_for_one_restarts_with_fresh_state_and_the_handle_stays_valid(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_supervisor() as supervisor:
        ledger = await supervisor.start(Ledger)
        await ledger.apply("a")
        assert await ledger.read() == ["a"]
        await _crash(ledger)
        assert await ledger.read() == []  # the same handle, a fresh Ledger
        await ledger.apply("b")
        assert await ledger.read() == ["b"]
        assert statistics(ledger).handled == 3  # the new run's own figures: read, apply, read
        stats = supervisor.statistics()
        assert (stats.children, stats.crashes, stats.restarts) == (1, 1, 1)


async def test_a_supervised_handle_has_the_surface_of_an_open_server_handle(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Both kinds of handle are typed as the class; both reach its attributes at run time.
    async with open_server(Ledger("local")) as local, open_supervisor() as supervisor:
        ledger = await supervisor.start(Ledger, "supervised")
        for handle, name in ((local, "local"), (ledger, "supervised")):
            await handle.apply("a")
            assert await handle.read() == ["a"]
            assert handle.name == name  # reads reach the object running now
            assert handle.entries == ["a"]
            handle.name = f"{name}!"  # writes too (unguarded, as on the object itself)
            assert handle.name == f"{name}!"
            with pytest.raises(AttributeError, match="missing"):
                handle.missing  # noqa: B018
            for copier in (copy.copy, copy.deepcopy, pickle.dumps):
                with pytest.raises(HandleNotCopyable):
                    copier(handle)
        await _crash(ledger)
        assert ledger.entries == []  # after a restart: the fresh object's state
        assert ledger.name == "supervised"
        assert "Ledger" in repr(ledger)


async def test_callers_caught_in_a_crash_get_server_crashed(
    autojump_clock: trio.abc.Clock,
) -> None:
    told: list[BaseException] = []

    async def reader(ledger: Ledger) -> None:
        try:
            await ledger.read()
        except ServerCrashed as exc:
            told.append(exc)

    async with open_supervisor() as supervisor, trio.open_nursery() as nursery:
        ledger = await supervisor.start(Ledger)
        await ledger.apply("corrupt")
        nursery.start_soon(reader, ledger)
    assert len(told) == 1
    assert isinstance(told[0], trio.BrokenResourceError)


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        ("one_for_one", ["b"]),
        ("one_for_all", ["c", "b", "a"][::-1]),
        ("rest_for_one", ["b", "c"]),
    ],
)
async def test_strategies_restart_what_otp_restarts(
    autojump_clock: trio.abc.Clock, strategy: str, restarted: list[str]
) -> None:
    starts: list[str] = []
    async with open_supervisor(strategy=strategy) as supervisor:  # type: ignore[arg-type]
        a = await supervisor.start(Ledger, "a", starts)
        b = await supervisor.start(Ledger, "b", starts)
        c = await supervisor.start(Ledger, "c", starts)
        for ledger in (a, b, c):
            await ledger.apply("kept?")
        await _crash(b)
        assert starts == ["a", "b", "c", *restarted]
        fresh = {
            name: await ledger.read() == [] for name, ledger in zip("abc", (a, b, c), strict=True)
        }
        assert [name for name, is_fresh in fresh.items() if is_fresh] == sorted(restarted)


async def test_past_the_intensity_the_supervisor_gives_up_and_fails_upward(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def scenario() -> None:
        async with open_supervisor(intensity=2, period=5.0) as supervisor:
            ledger = await supervisor.start(Ledger)
            for _ in range(3):
                await _crash(ledger)
            await trio.sleep_forever()

    with pytest.raises(ValueError, match="corrupt entry") as info:
        await scenario()
    assert any("gave up" in note for note in info.value.__notes__)
    assert trio.current_time() == 0.0


async def test_crashes_spread_beyond_the_period_are_all_restarted(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_supervisor(intensity=1, period=5.0) as supervisor:
        ledger = await supervisor.start(Ledger)
        for _ in range(4):
            await _crash(ledger)
            await trio.sleep(6.0)
        assert await ledger.read() == []
        assert supervisor.statistics().restarts == 4


async def test_backoff_waits_before_the_restart(autojump_clock: trio.abc.Clock) -> None:
    started_at: list[float] = []

    @server
    class Timed(Ledger):
        async def on_start(self) -> None:
            started_at.append(trio.current_time())

    backoff = Backoff(initial=0.5, factor=2.0, maximum=1.5, jitter=0.0)
    async with open_supervisor(backoff=backoff, intensity=10) as supervisor:
        ledger = await supervisor.start(Timed)
        for _ in range(3):
            await ledger.apply("corrupt")
            await trio.sleep(5.0)
    # each crash happened at the previous start; the restarts waited 0.5, 1.0, then 1.5 (capped)
    gaps = [later - earlier for earlier, later in itertools.pairwise(started_at)]
    assert gaps == [0.5, 5.0 + 1.0 - 0.5, 5.0 + 1.5 - 1.0]


async def test_watchdog_restarts_a_server_hung_past_its_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    outcome: list[BaseException] = []

    async def caller(ledger: Ledger) -> None:
        try:
            await ledger.hang()
        except CallTimeout as exc:
            outcome.append(exc)

    async with open_supervisor(watchdog_grace=2.0) as supervisor, trio.open_nursery() as nursery:
        ledger = await supervisor.start(Ledger)
        nursery.start_soon(caller, ledger)
        await trio.sleep(4.0)  # budget 1 s + grace 2 s: the watchdog acts by about 3 s
        assert len(outcome) == 1  # the caller heard CallTimeout at 1 s
        with trio.fail_after(0.1):
            await ledger.apply("after")
            assert await ledger.read() == ["after"]  # a fresh server answers
        assert supervisor.statistics().hung == 1
    assert trio.current_time() == pytest.approx(100.0)  # leaving waited for the hung handler


async def test_first_start_failure_comes_out_of_start(autojump_clock: trio.abc.Clock) -> None:
    @server
    class NoDatabase:
        async def on_start(self) -> None:
            raise OSError("no database")

    async with open_supervisor() as supervisor:
        with pytest.raises(OSError, match="no database"):
            await supervisor.start(NoDatabase)
        assert supervisor.statistics().children == 0


async def test_leaving_during_a_restart_is_clean(autojump_clock: trio.abc.Clock) -> None:
    # Found by the docs: leaving while a restart's on_start runs raised a RuntimeError.
    @server
    class SlowStart(Ledger):
        async def on_start(self) -> None:
            await trio.sleep(1.0)

    async with open_supervisor() as supervisor:
        ledger = await supervisor.start(SlowStart)
        await ledger.apply("corrupt")  # crashes; the restart's on_start takes 1 s
        await trio.sleep(0.5)
    assert trio.current_time() == 1.5


@server
class Holds:
    @cast(timeout=0.5)
    async def hold(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(2.0)  # ignores its budget


class Spinning(Exception):
    pass


def test_leaving_the_supervisor_as_its_watchdog_fires_never_hangs() -> None:
    # The cast's deadline is t=0.75; at t=2.0 its handler is 1.25 s past it (watchdog grace
    # 1 s), the watchdog ticks, and the block is left. When the watchdog saw the running
    # handler first, it restarted the server under the stopping supervisor, whose stop then
    # waited forever for an event the first run no longer set (with no deadline left, a
    # MockClock spins: a CPU-time alarm turns that into a failure). 30 runs meet both orders.
    async def main() -> int:
        async with open_supervisor() as supervisor:
            holds = await supervisor.start(Holds)
            await trio.sleep(0.25)
            await holds.hold()
            await trio.sleep(1.75)
        return supervisor.statistics().restarts

    def spinning(signum: int, frame: object) -> None:
        raise Spinning

    previous = signal.signal(signal.SIGVTALRM, spinning)
    signal.setitimer(signal.ITIMER_VIRTUAL, 5.0, 5.0)
    try:
        for _ in range(30):
            restarts = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
            assert restarts == 0  # nothing restarts once the stop has begun
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)
