"""Guarantee 5, and the error classes: a handler's exception reaches its caller as itself."""

from __future__ import annotations

import traceback

import pytest
import trio

from trioserver import (
    CallTimeout,
    DeadlockError,
    InvalidServerDefinition,
    ServerOverloaded,
    ServerStopped,
    TrioServerError,
    call,
    open_server,
    server,
    statistics,
)


class SeatTaken(Exception):
    pass


@server
class Failing:
    def __init__(self) -> None:
        self.raised: list[BaseException] = []

    @call
    async def reserve(self, seat: str) -> str:
        await trio.sleep(0.1)
        error = SeatTaken(seat)
        self.raised.append(error)
        raise error

    @call
    def plain_fails(self) -> None:
        raise SeatTaken("plain")

    @call
    def ok(self) -> str:
        return "ok"

    @call
    async def group(self) -> None:
        raise ExceptionGroup("mine", [SeatTaken("a"), SeatTaken("b")])

    @call
    async def exit_server(self, kind: str) -> None:
        await trio.sleep(0.1)
        raise SystemExit(3) if kind == "exit" else KeyboardInterrupt

    @call
    async def child_fails(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._boom)
            await trio.sleep_forever()

    async def _boom(self) -> None:
        raise SeatTaken("child")


def test_error_classes_resemble_trio_and_builtin_errors() -> None:
    assert issubclass(CallTimeout, trio.TooSlowError)
    assert issubclass(ServerStopped, trio.ClosedResourceError)
    assert issubclass(InvalidServerDefinition, TypeError)
    assert issubclass(DeadlockError, RuntimeError)
    for error in (CallTimeout, ServerStopped, InvalidServerDefinition, DeadlockError):
        assert issubclass(error, TrioServerError)
    assert issubclass(ServerOverloaded, TrioServerError)


async def test_handler_exception_reaches_caller_as_itself_with_handler_frames(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Failing()) as f:
        with pytest.raises(SeatTaken) as info:
            await f.reserve("A1")
        assert info.value is f.raised[0]
        names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
        assert "reserve" in names  # the handler's frame
        with pytest.raises(SeatTaken) as plain:
            await f.plain_fails()
        assert "plain_fails" in [
            frame.name for frame in traceback.extract_tb(plain.value.__traceback__)
        ]


async def test_server_keeps_running_after_a_handler_raises(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Failing()) as f:
        with pytest.raises(SeatTaken):
            await f.reserve("A1")
        assert await f.ok() == "ok"
        stats = statistics(f)
        assert (stats.failed, stats.handled) == (1, 1)


async def test_exception_group_raised_by_handler_passes_through_unchanged(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Failing()) as f:
        with pytest.raises(ExceptionGroup) as info:
            await f.group()
        assert info.value.message == "mine"
        assert [str(e) for e in info.value.exceptions] == ["a", "b"]


async def test_child_task_error_in_handler_nursery_reaches_caller(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Failing()) as f:
        with pytest.raises(ExceptionGroup) as info:
            await f.child_fails()
        assert [str(e) for e in info.value.exceptions] == ["child"]
        assert await f.ok() == "ok"


@pytest.mark.parametrize(("kind", "error"), [("exit", SystemExit), ("kbd", KeyboardInterrupt)])
async def test_systemexit_or_keyboardinterrupt_in_handler_stops_server_and_propagates(
    autojump_clock: trio.abc.Clock, kind: str, error: type[BaseException]
) -> None:
    told: list[BaseException] = []

    async def bystander(f: Failing) -> None:
        try:
            await f.ok()
        except ServerStopped as exc:
            told.append(exc)

    f = Failing()

    async def scenario() -> None:
        async with open_server(f), trio.open_nursery() as nursery:
            nursery.start_soon(f.exit_server, kind)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(bystander, f)
            await trio.sleep_forever()

    with pytest.raises(error):
        await scenario()
    assert len(told) == 1  # the queued caller was told, not left hanging
    with pytest.raises(ServerStopped, match="raised"):
        await f.ok()
