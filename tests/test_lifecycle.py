"""Guarantee 11: on_start before the handle, stop at once, on_stop shielded, nobody left hanging."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

import trioserver
from trioserver import (
    ServerStopped,
    TrioServerError,
    call,
    cast,
    open_server,
    serve,
    server,
    statistics,
)

from .tasks import tasks_named


@server(timeout=3.0)
class Life:
    def __init__(self, fail_start: bool = False, fail_stop: bool = False) -> None:
        self.events: list[tuple[str, float]] = []
        self.fail_start = fail_start
        self.fail_stop = fail_stop

    async def on_start(self) -> None:
        await trio.sleep(1.0)
        if self.fail_start:
            raise OSError("no database")
        self.events.append(("started", trio.current_time()))

    async def on_stop(self) -> None:
        self.events.append(("stopping", trio.current_time()))
        await trio.sleep(1.0)  # shielded: runs although the block was cancelled
        if self.fail_stop:
            raise OSError("flush failed")
        self.events.append(("stopped", trio.current_time()))

    @call(timeout=None)
    async def long(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.events.append(("long cut", trio.current_time()))

    @call
    def quick(self) -> str:
        return "quick"

    @cast
    def note(self, text: str) -> None:
        self.events.append((text, trio.current_time()))


async def test_on_start_finishes_before_the_handle_is_given_out(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Life()) as life:
        assert life.events == [("started", 1.0)]
        assert trio.current_time() == 1.0
        assert await life.quick() == "quick"


async def test_on_start_error_comes_out_unwrapped_and_on_stop_does_not_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    life = Life(fail_start=True)
    with pytest.raises(OSError, match="no database"):
        async with open_server(life):
            raise AssertionError("the block must not run")
    assert life.events == []
    with pytest.raises(ServerStopped, match="failed to start"):
        await life.quick()


async def test_leaving_open_server_stops_at_once_and_tells_every_caller(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioserver")
    outcomes: list[tuple[str, str, float]] = []

    async def caller(name: str, life: Life) -> None:
        try:
            if name == "running":
                await life.long()
            else:
                await life.quick()
        except ServerStopped as exc:
            outcomes.append((name, str(exc), trio.current_time()))

    life = Life()
    async with trio.open_nursery() as nursery:
        async with open_server(life):
            nursery.start_soon(caller, "running", life)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(caller, "queued", life)
            await trio.testing.wait_all_tasks_blocked()
            await life.note("dropped cast")
            await trio.sleep(1.0)
        assert trio.current_time() == 3.0  # on_stop took its second, shielded
    assert sorted(outcomes) == [
        ("queued", "Life.quick: Life stopped (it was stopped) before this call started", 2.0),
        ("running", "Life.long: Life stopped (it was stopped) while handling this call", 2.0),
    ]
    assert life.events == [
        ("started", 1.0),
        ("long cut", 2.0),
        ("stopping", 2.0),
        ("stopped", 3.0),
    ]
    stats = statistics(life)
    assert (stats.cancelled, stats.dropped) == (1, 2)  # the call and the cast never started
    assert any(
        "Life.note" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records
    )


async def test_on_stop_runs_shielded_within_the_default_timeout(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    @server(timeout=0.5)
    class SlowStop:
        async def on_stop(self) -> None:
            await trio.sleep(10.0)

    with trio.CancelScope() as outer:
        async with open_server(SlowStop()):
            outer.cancel()
            await trio.sleep_forever()
    assert trio.current_time() == 0.5
    assert any("SlowStop.on_stop" in r.getMessage() for r in caplog.records)


async def test_body_exception_comes_out_unwrapped(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(KeyError, match="body"):
        async with open_server(Life()):
            raise KeyError("body")


async def test_on_stop_error_comes_out_unwrapped(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(OSError, match="flush failed"):
        async with open_server(Life(fail_stop=True)):
            pass


async def test_call_on_a_server_never_started_says_so() -> None:
    with pytest.raises(ServerStopped, match="Life is not running: it was never started"):
        await Life().quick()


async def test_call_on_a_stopped_server_says_so(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Life()) as life:
        pass
    with pytest.raises(ServerStopped, match="Life is not running: it was stopped"):
        await life.quick()


async def test_a_server_cannot_run_twice_at_once_but_can_run_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    life = Life()
    async with open_server(life):
        with pytest.raises(TrioServerError, match="running already"):
            async with open_server(life):
                pass
    async with open_server(life):
        assert await life.quick() == "quick"


async def test_serve_gives_the_handle_and_stops_when_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    life = Life()
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(serve, life)
        assert handle is life
        assert await handle.quick() == "quick"
        nursery.cancel_scope.cancel()
    assert [event for event, _ in life.events] == ["started", "stopping", "stopped"]
    with pytest.raises(ServerStopped):
        await life.quick()


async def test_servers_served_in_a_nursery_keep_no_task_while_idle(
    autojump_clock: trio.abc.Clock,
) -> None:
    lives = [Life() for _ in range(5)]
    async with trio.open_nursery() as nursery:
        for life in lives:
            await nursery.start(serve, life)
        await lives[0].note("cast")
        assert [await life.quick() for life in lives] == ["quick"] * 5
        await trio.sleep(1.0)  # idle: their tasks retire
        assert tasks_named("trioserver: Life") == []
        assert len(tasks_named("trioserver: keeper")) == 1  # one for the nursery
        assert await lives[3].quick() == "quick"  # a task again, in the same nursery
        nursery.cancel_scope.cancel()
    for life in lives:  # every one stopped, idle or not: on_stop ran, shielded
        assert [event for event, _ in life.events if event != "cast"] == [
            "started", "stopping", "stopped",
        ]  # fmt: skip
        with pytest.raises(ServerStopped):
            await life.quick()
    assert tasks_named("trioserver: Life") == tasks_named("trioserver: keeper") == []


async def test_serve_awaited_directly_runs_until_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    life = Life()
    with trio.move_on_after(5.0):
        await serve(life)
    assert [event for event, _ in life.events] == ["started", "stopping", "stopped"]


async def test_what_stops_a_served_server_comes_out_of_its_nursery(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="no database"):  # from nursery.start, unwrapped
            await nursery.start(serve, Life(fail_start=True))
    failing = Life(fail_stop=True)
    with pytest.RaisesGroup(pytest.RaisesExc(OSError, match="flush failed")):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, failing)
            nursery.cancel_scope.cancel()
    assert [event for event, _ in failing.events] == ["started", "stopping"]


async def test_cancelled_opener_gets_cancelled_unwrapped(autojump_clock: trio.abc.Clock) -> None:
    with trio.move_on_after(0.5) as scope:  # during on_start
        async with open_server(Life()):
            raise AssertionError("not reached")
    assert scope.cancelled_caught
    with trio.move_on_after(2.0) as scope:  # during the block
        async with open_server(Life()):
            await trio.sleep_forever()
    assert scope.cancelled_caught


@server(admission=False)
class Stopping:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.stop_serving = trio.CancelScope()
        self.gate = trio.Event()

    @call
    async def stop_and_return(self) -> None:
        self.started.append("stop_and_return")
        await self.gate.wait()
        self.stop_serving.cancel()  # `serve` is cancelled: its task will stop the server

    @call
    async def queued(self) -> int:
        self.started.append("queued")
        return 1

    @call
    def queued_def(self) -> int:
        self.started.append("queued_def")
        return 1


@pytest.mark.parametrize("second", ["queued", "queued_def"])
async def test_a_request_queued_when_the_server_is_cancelled_never_starts(
    second: str, autojump_clock: trio.abc.Clock
) -> None:
    # The running handler ends just as the server's nursery is cancelled, before `serve`'s task
    # has stopped the server: the request queued behind it must get ServerStopped, not start
    # in the server's cancelled task.
    stopping = Stopping()
    outcomes: list[object] = []

    async def call_then_record(name: str) -> None:
        try:
            outcomes.append(await getattr(stopping, name)())
        except ServerStopped as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as callers:
        with stopping.stop_serving:
            async with trio.open_nursery() as serving:
                await serving.start(serve, stopping)
                callers.start_soon(call_then_record, "stop_and_return")
                await trio.testing.wait_all_tasks_blocked()
                callers.start_soon(call_then_record, second)
                await trio.testing.wait_all_tasks_blocked()
                stopping.gate.set()
                await trio.sleep_forever()
    assert stopping.started == ["stop_and_return"]
    assert outcomes[0] is None
    assert isinstance(outcomes[1], ServerStopped)


@server
class FailsAsItStops:
    @call
    async def work(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            try:
                await trio.sleep_forever()
            finally:
                raise ValueError("cleanup failed")


async def test_an_error_raised_as_the_stop_cuts_a_handler_is_logged_not_fatal(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # The handler's nursery ends with [ValueError, Cancelled]: the stop goes on, the caller
    # hears ServerStopped, and the error, which has no caller left, is logged.
    server_object = FailsAsItStops()
    heard: list[BaseException] = []

    async def caller() -> None:
        try:
            await server_object.work()
        except ServerStopped as exc:
            heard.append(exc)

    async with trio.open_nursery() as callers, open_server(server_object):
        callers.start_soon(caller)
        await trio.sleep(1)
    assert len(heard) == 1
    assert statistics(server_object).cancelled == 1
    assert statistics(server_object).running == 0
    assert "cleanup failed" in caplog.text


async def test_start_server_is_nursery_start_of_serve_typed(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Counter:
        def __init__(self) -> None:
            self.value = 0
            self.stopped = False

        async def on_stop(self) -> None:
            self.stopped = True

        @call
        def add(self, n: int) -> int:
            self.value += n
            return self.value

    counter = Counter()
    async with trio.open_nursery() as nursery:
        handle = await trioserver.start_server(nursery, counter)
        assert handle is counter
        assert await handle.add(2) == 2
        nursery.cancel_scope.cancel()
    assert counter.stopped
