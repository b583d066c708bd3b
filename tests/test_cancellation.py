"""Guarantees 6 and 7: each call ends in exactly one outcome; a caller that leaves is let go."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioserver import call, cast, open_server, server, statistics

from .servers import Recorder


async def test_caller_cancelled_while_queued_withdraws_its_request(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Recorder()) as rec, trio.open_nursery() as nursery:
        nursery.start_soon(rec.work, "busy", 2.0)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1.0) as scope:
            await rec.work("queued", 0.0)
        assert scope.cancelled_caught
        assert trio.current_time() == 1.0  # the caller left at its own deadline
        assert statistics(rec).withdrawn == 1
        assert statistics(rec).queued == 0
    assert "start queued" not in rec.log  # its handler never started
    assert statistics(rec).handled == 1


async def test_caller_cancelled_while_queued_by_explicit_cancel_withdraws(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Recorder()) as rec, trio.open_nursery() as nursery:
        nursery.start_soon(rec.work, "busy", 2.0)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_when_blocked, scope)
            await rec.work("never", 0.0)
        assert scope.cancelled_caught
        assert trio.current_time() == 0.0
        assert statistics(rec).withdrawn == 1
    assert "start never" not in rec.log


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_caller_cancelled_before_calling_never_queues(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Recorder()) as rec:
        with trio.CancelScope() as scope:
            scope.cancel()
            await rec.work("never", 0.0)
        assert scope.cancelled_caught
        await trio.sleep(1.0)
    assert "start never" not in rec.log
    stats = statistics(rec)
    assert stats.handled + stats.withdrawn + stats.shed == 0


@server
class Slow:
    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    @call(timeout=10.0)
    async def stubborn(self) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.events.append(("handler cancelled", trio.current_time()))
            with trio.CancelScope(shield=True):
                await trio.sleep(2.0)  # shielded cleanup
            self.events.append(("handler exited", trio.current_time()))
            raise

    @call
    def next_one(self) -> None:
        self.events.append(("next started", trio.current_time()))

    @call
    def answer(self) -> int:
        return 42

    @cast
    def cancel_scope(self, scope: trio.CancelScope) -> None:
        scope.cancel()


async def test_caller_cancelled_while_handler_runs_gets_cancelled_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def cancel_later(scope: trio.CancelScope) -> None:
        await trio.sleep(1.0)
        scope.cancel()

    async with open_server(Slow()) as s, trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_later, scope)
            nursery.start_soon(s.next_one)  # queued behind the stubborn handler
            await s.stubborn()
        assert scope.cancelled_caught
        assert trio.current_time() == 1.0  # at once, despite the 2 s shielded cleanup
    assert s.events == [
        ("handler cancelled", 1.0),
        ("handler exited", 3.0),
        ("next started", 3.0),  # only after the cancelled handler exited
    ]
    assert statistics(s).cancelled == 1


async def test_caller_cancelled_after_the_reply_still_gets_the_result(
    autojump_clock: trio.abc.Clock,
) -> None:
    # answer() replies; in the same server step the cast cancels the caller's scope. The
    # reply was already sent, so the call returns its result; the next checkpoint raises.
    async with open_server(Slow()) as s, trio.open_nursery() as nursery:
        nursery.start_soon(s.stubborn)  # hold the server so both requests queue
        await trio.testing.wait_all_tasks_blocked()
        results: list[object] = []
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                inner.start_soon(s.answer)  # a throwaway caller ahead in the queue

                async def caller() -> None:
                    results.append(await s.answer())
                    results.append("after")
                    await trio.lowlevel.checkpoint()
                    results.append("not reached")

                inner.start_soon(caller)
                await trio.testing.wait_all_tasks_blocked()
                await s.cancel_scope(scope)
                nursery.cancel_scope.cancel()  # frees the server: stubborn is cut
        assert results == [42, "after"]


async def test_no_caller_waits_past_its_own_deadline(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Recorder()) as rec, trio.open_nursery() as nursery:
        ended: list[float] = []

        async def caller(deadline: float) -> None:
            # (a call admission refused ends as its deadline would: quietly here)
            with trio.move_on_at(deadline):
                await rec.work("x", 3.0)
            ended.append(trio.current_time())

        for deadline in (0.5, 1.5, 2.5, 3.5, 4.5):
            nursery.start_soon(caller, deadline)
    assert all(
        end <= deadline
        for end, deadline in zip(sorted(ended), (0.5, 1.5, 2.5, 3.5, 4.5), strict=True)
    )


@pytest.mark.parametrize("where", ["queued", "running"])
async def test_every_call_ends_in_exactly_one_counted_outcome(
    autojump_clock: trio.abc.Clock, where: str
) -> None:
    async with open_server(Recorder()) as rec, trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(rec.work, f"c{i}", 1.0)
        with trio.move_on_after(0.5 if where == "running" else 2.5):
            await rec.work("leaver", 1.0)
    stats = statistics(rec)
    started = stats.handled + stats.failed + stats.timed_out + stats.cancelled
    assert started + stats.withdrawn + stats.shed + stats.dropped == 11
