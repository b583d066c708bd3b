"""Guarantee 18, the actor's side, in this process: `_ray_host.Host`, the class Ray runs as
the actor, driven from asyncio as Ray drives it (its methods are coroutines on Ray's loop;
`ray.cancel` cancels them), with no Ray cluster. What the Ray tests cannot show
deterministically shows here: requests reach the server in the order they reached the
actor, a cancelled coroutine withdraws its request or cuts its handler, the caller's
remaining time bounds the handler, and stopping answers every request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

pytest.importorskip("ray", reason="Ray is not installed (the extra trioserver[ray])")

from trioserver import CallTimeout, ServerCrashed, ServerStopped, TrioServerError, _ray_host
from trioserver._ray_host import Host
from trioserver.ray import NotSendable

from .ray_servers import Failing, Probe, SeatTaken

Scenario = Callable[[Host], Awaitable[None]]


def run(scenario: Scenario, cls: type = Probe, *args: Any) -> Host:
    """Start a host of ``cls(*args)``, run `scenario` on an asyncio loop, stop the host."""
    host = Host(cls, args)

    async def main() -> None:
        try:
            await scenario(host)
        finally:
            await host.stop()

    asyncio.run(main())
    return host


def value(reply: tuple[Any, ...]) -> Any:
    assert reply[0], reply
    return reply[1]


def error(reply: tuple[Any, ...]) -> BaseException:
    assert not reply[0], reply
    exc = reply[1]
    assert isinstance(exc, BaseException)
    return exc


async def stats(host: Host) -> Any:
    return value(await host.statistics())


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(10):
        while not await check():  # noqa: ASYNC110 (asyncio: polling the server's figures)
            await asyncio.sleep(0.01)


def test_requests_reach_the_server_in_the_order_they_reached_the_actor() -> None:
    async def scenario(host: Host) -> None:
        calls = [host.call(("Probe.mark", (str(n),), {}, None)) for n in range(200)]
        await asyncio.gather(*calls)  # (asyncio starts them in this order)
        assert value(await host.call(("Probe.seen", (), {}, None))) == [str(n) for n in range(200)]

    run(scenario)


def test_replies_carry_values_and_exceptions() -> None:
    async def scenario(host: Host) -> None:
        assert value(await host.call(("Probe.mark", ("a",), {}, None))) == 1
        seat = error(await host.call(("Probe.fail", ("seat",), {}, None)))
        assert isinstance(seat, SeatTaken)
        reply = await host.call(("Probe.fail", ("seat",), {}, None))
        assert "ray_servers.py" in reply[2]  # the handler's traceback, as text
        unrebuildable = error(await host.call(("Probe.fail", ("unrebuildable",), {}, None)))
        assert isinstance(unrebuildable, NotSendable)
        assert "Unrebuildable: B7: sold" in str(unrebuildable)
        wrong = error(await host.call(("Theater.mark", ("a",), {}, None)))
        assert isinstance(wrong, TypeError)
        assert "not a handler of Probe" in str(wrong)
        assert value(await host.call(("Probe.note", ("b",), {}, 0.0))) is None  # a cast: queued
        assert value(await host.call(("Probe.seen", (), {}, None))) == ["a", "b"]

    run(scenario)


def test_the_callers_remaining_time_bounds_the_handler() -> None:
    async def scenario(host: Host) -> None:
        cut = error(await host.call(("Probe.hold", (30,), {}, 0.2)))
        assert isinstance(cut, CallTimeout)
        assert "Probe.hold did not finish before its caller's deadline" in str(cut)
        [(how, seconds)] = value(await host.call(("Probe.held", (), {}, None)))
        assert how == "cancelled"
        assert 0.2 <= seconds < 2.0
        assert (await stats(host)).timed_out == 1

    run(scenario)


def test_a_call_refused_by_admission_ends_as_its_callers_deadline() -> None:
    # Probe.hold learns 0.3 s; a caller with 0.1 s left is refused at once in the actor, and
    # told so (`Shed`): its own side then ends the call as its deadline (`RemoteServer.call`).
    from trioserver import _private
    from trioserver._reply import Shed

    async def scenario(host: Host) -> None:
        value(await host.call(("Probe.hold", (0.3,), {}, None)))
        loop = asyncio.get_running_loop()
        began = loop.time()
        refused = error(await host.call(("Probe.hold", (0.3,), {}, 0.1)))
        if _private.ENABLED:
            assert isinstance(refused, Shed)
            assert loop.time() - began < 0.09  # at once, not at the deadline
        else:  # public trio: the actor waits for the deadline, then it is a CallTimeout
            assert isinstance(refused, CallTimeout)
        assert (await stats(host)).shed == 1
        assert len(value(await host.call(("Probe.held", (), {}, None)))) == 1  # it never ran

    run(scenario)


def test_a_cancelled_request_is_withdrawn_or_its_handler_cut() -> None:
    async def scenario(host: Host) -> None:
        holding = asyncio.ensure_future(host.call(("Probe.hold", (30,), {}, None)))

        async def running() -> bool:
            return bool((await stats(host)).running)

        await until(running)
        queued = asyncio.ensure_future(host.call(("Probe.mark", ("withdrawn",), {}, None)))

        async def waiting() -> bool:
            return (await stats(host)).queued == 1

        await until(waiting)
        queued.cancel()  # as `ray.cancel` does: the caller left while its request was queued
        with pytest.raises(asyncio.CancelledError):
            await queued
        holding.cancel()  # ... and while its handler ran
        with pytest.raises(asyncio.CancelledError):
            await holding
        assert value(await host.call(("Probe.mark", ("after",), {}, None))) == 1
        assert value(await host.call(("Probe.seen", (), {}, None))) == ["after"]
        snapshot = await stats(host)
        assert (snapshot.withdrawn, snapshot.cancelled) == (1, 1)

    run(scenario)


def test_a_request_withdrawn_by_its_token_is_withdrawn_cut_or_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray may lose `ray.cancel` when it overtakes its call; the caller's `withdraw`, by the
    token sent with the call, is delivered: it withdraws a queued request or cuts a running
    handler (and the call's coroutine ends, with a reply no one reads), or, sent before its
    call came, refuses the call when it comes. The actor keeps `WITHDRAWN_KEPT` withdrawals
    of calls that have not come, for `WITHDRAWN_SECONDS`."""
    monkeypatch.setattr(_ray_host, "WITHDRAWN_KEPT", 2)

    async def scenario(host: Host) -> None:
        holding = asyncio.ensure_future(host.call(("Probe.hold", (30,), {}, None, (7, 1))))

        async def running() -> bool:
            return bool((await stats(host)).running)

        await until(running)
        queued = asyncio.ensure_future(host.call(("Probe.mark", ("no",), {}, None, (7, 2))))

        async def waiting() -> bool:
            return (await stats(host)).queued == 1

        await until(waiting)
        await host.withdraw((7, 2))
        assert "its caller left" in str(error(await queued))
        await host.withdraw((7, 1))
        assert "its caller left" in str(error(await holding))
        await host.withdraw((7, 3))  # before its call comes
        refused = error(await host.call(("Probe.mark", ("no",), {}, None, (7, 3))))
        assert "its caller left before it came" in str(refused)
        assert value(await host.call(("Probe.mark", ("after",), {}, None, (7, 3)))) == 1
        for number in (4, 5, 6):  # (a third withdrawal of a call that has not come: the
            await host.withdraw((7, number))  # first is forgotten)
        assert value(await host.call(("Probe.mark", ("late",), {}, None, (7, 4)))) == 2
        assert isinstance(
            error(await host.call(("Probe.mark", ("no",), {}, None, (7, 5)))), TrioServerError
        )
        await asyncio.sleep(0.05)
        monkeypatch.setattr(_ray_host, "WITHDRAWN_SECONDS", 0.01)
        await host.withdraw((7, 7))  # (and one older than WITHDRAWN_SECONDS is forgotten)
        assert value(await host.call(("Probe.mark", ("old",), {}, None, (7, 6)))) == 3
        assert value(await host.call(("Probe.seen", (), {}, None))) == ["after", "late", "old"]
        snapshot = await stats(host)
        assert (snapshot.withdrawn, snapshot.cancelled) == (1, 1)
        [(how, _)] = value(await host.call(("Probe.held", (), {}, None)))
        assert how == "cancelled"
        assert host._calls == {}  # pyright: ignore[reportPrivateUsage]

    run(scenario)


def test_stopping_answers_every_request() -> None:
    async def scenario(host: Host) -> None:
        holding = asyncio.ensure_future(host.call(("Probe.hold", (30,), {}, None)))

        async def running() -> bool:
            return bool((await stats(host)).running)

        await until(running)
        queued = [host.call(("Probe.mark", (str(n),), {}, None)) for n in range(20)]
        waiting = asyncio.gather(*queued)
        await asyncio.sleep(0.1)
        assert value(await host.stop()) is None
        assert isinstance(error(await holding), ServerStopped)
        assert all(isinstance(error(reply), ServerStopped) for reply in await waiting)
        late = error(await host.call(("Probe.mark", ("late",), {}, None)))
        assert isinstance(late, ServerStopped)
        assert value(await host.stop()) is None  # once is enough

    run(scenario)


def test_a_stop_answers_requests_still_waiting_for_their_turn() -> None:
    # Found by property_tests/test_ray_faults.py (invariant 7, a coroutine left on the
    # actor's loop): requests that reached the trio thread with the stop, still waiting for
    # the one before them to reach the server, were cut by the server's end with no reply.
    async def scenario(host: Host) -> None:
        calls = [
            asyncio.ensure_future(host.call(("Probe.mark", (str(n),), {}, None)))
            for n in range(200)
        ]
        await asyncio.sleep(0)  # (each call posts its request to the trio thread)
        assert value(await host.stop()) is None
        async with asyncio.timeout(10):
            replies = await asyncio.gather(*calls)
        for reply in replies:
            assert reply[0] or isinstance(error(reply), ServerStopped), reply

    run(scenario)


def test_a_failed_start_is_told_to_ready_and_to_callers() -> None:
    async def scenario(host: Host) -> None:
        failed = error(await host.ready())
        assert isinstance(failed, LookupError)
        refused = error(await host.call(("Failing.ping", (), {}, None)))
        assert isinstance(refused, ServerCrashed)

    run(scenario, Failing, "start")


def test_on_stops_error_is_the_reply_to_stop() -> None:
    async def scenario(host: Host) -> None:
        assert value(await host.ready()) is None
        assert value(await host.call(("Failing.ping", (), {}, None))) is True
        assert isinstance(error(await host.stop()), KeyError)

    host = Host(Failing, ("stop",))
    asyncio.run(scenario(host))


async def test_the_host_runs_trio_on_a_thread_of_its_own() -> None:
    # (a trio test: the host's run is another run, on another thread, as in an actor)
    host = Host(Probe, ())

    async def scenario() -> None:
        assert value(await host.call(("Probe.mark", ("a",), {}, None))) == 1
        await host.stop()

    await trio.to_thread.run_sync(asyncio.run, scenario())
