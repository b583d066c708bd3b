"""Guarantees 3 and 4: handlers run in the server task, cut at min(start + budget, deadline)."""

from __future__ import annotations

import contextvars
import math

import pytest
import trio
import trio.testing

from trioserver import CallTimeout, call, cast, open_server, server, statistics

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


@server(admission=False)  # admission has its own tests: here every request is admitted
class Clocked:
    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []  # (start, effective deadline)
        self.stage = "none"
        self.exits: list[float] = []

    @call(timeout=4.0)
    async def budgeted(self, seconds: float) -> float:
        self.seen.append((trio.current_time(), trio.current_effective_deadline()))
        await trio.sleep(seconds)
        return trio.current_time()

    @call(timeout=None)
    async def unbounded(self, seconds: float) -> float:
        self.seen.append((trio.current_time(), trio.current_effective_deadline()))
        await trio.sleep(seconds)
        return trio.current_time()

    @call
    def plain(self) -> float:
        self.seen.append((trio.current_time(), trio.current_effective_deadline()))
        return trio.current_effective_deadline()

    @call(timeout=1.0)
    async def check_slow_then_mutate(self, seconds: float) -> None:
        self.stage = "checked"
        await trio.sleep(seconds)
        self.stage = "mutated"

    @call(timeout=1.0)
    async def with_shielded_cleanup(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(2.0)
            self.exits.append(trio.current_time())

    @call
    def task_and_context(self) -> tuple[trio.lowlevel.Task, str]:
        return trio.lowlevel.current_task(), where.get()


async def test_handler_runs_in_servers_task_and_sees_servers_contextvars(
    autojump_clock: trio.abc.Clock,
) -> None:
    where.set("server")
    async with open_server(Clocked()) as c:
        where.set("caller")
        task, seen = await c.task_and_context()
    assert task is not trio.lowlevel.current_task()
    assert task.name == "trioserver: Clocked"
    assert seen == "server"


async def test_handler_deadline_is_start_plus_budget(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Clocked()) as c:
        await trio.sleep(3.0)
        await c.budgeted(0.0)
        ((start, deadline),) = c.seen
        assert start == 3.0
        assert deadline == 7.0


async def test_handler_deadline_is_callers_deadline_when_earlier(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Clocked()) as c:
        with trio.move_on_after(2.5):
            await c.budgeted(0.0)
        ((_, deadline),) = c.seen
        assert deadline == 2.5


async def test_plain_def_handler_sees_its_deadline(autojump_clock: trio.abc.Clock) -> None:
    async with open_server(Clocked()) as c:
        assert await c.plain() == 5.0  # the server's default budget


async def test_timeout_none_means_no_budget_but_callers_deadline_applies(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Clocked()) as c:
        assert await c.unbounded(100.0) == 100.0  # no budget of its own
        assert c.seen[-1][1] == math.inf
        with trio.move_on_after(3.0) as scope:
            await c.unbounded(100.0)
        assert scope.cancelled_caught
        assert c.seen[-1][1] == 103.0
        assert trio.current_time() == 103.0


async def test_request_whose_callers_deadline_passed_in_queue_never_starts(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The caller's deadline is read once, at the call. Here the caller's own scope is
    # extended afterwards, so trio never cancels it: the server must still refuse to start.
    async with open_server(Clocked()) as c, trio.open_nursery() as nursery:
        nursery.start_soon(c.budgeted, 2.0)
        await trio.testing.wait_all_tasks_blocked()
        outcome: list[BaseException] = []

        async def late_caller() -> None:
            with trio.CancelScope(deadline=trio.current_time() + 1.0) as scope:
                scope_box.append(scope)
                try:
                    await c.budgeted(0.0)
                except CallTimeout as exc:
                    outcome.append(exc)

        scope_box: list[trio.CancelScope] = []
        nursery.start_soon(late_caller)
        await trio.testing.wait_all_tasks_blocked()
        scope_box[0].deadline = math.inf
    assert len(c.seen) == 1  # only the first request ever started
    (error,) = outcome
    assert "never started" in str(error)
    assert statistics(c).withdrawn == 1


async def test_cut_handler_gives_call_timeout_at_its_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Clocked()) as c:
        with pytest.raises(CallTimeout) as info:
            await c.budgeted(10.0)
        assert trio.current_time() == 4.0
        assert isinstance(info.value, trio.TooSlowError)
        message = str(info.value)
        assert "Clocked.budgeted" in message
        assert "4 s" in message
        await trio.testing.wait_all_tasks_blocked()  # the handler finishes unwinding
        assert statistics(c).timed_out == 1


async def test_caller_cancelled_by_its_own_deadline_sees_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Clocked()) as c:
        with trio.move_on_after(1.0) as scope:
            await c.budgeted(10.0)
        assert scope.cancelled_caught  # trio.Cancelled, not CallTimeout
        assert trio.current_time() == 1.0
        await trio.testing.wait_all_tasks_blocked()  # let the server finish unwinding the handler
        stats = statistics(c)
        # the handler's deadline was its caller's: it counts as cut by its deadline
        assert (stats.cancelled, stats.timed_out) == (0, 1)


async def test_state_changed_before_the_cut_stays_changed(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Clocked()) as c:
        with pytest.raises(CallTimeout):
            await c.check_slow_then_mutate(5.0)
        assert c.stage == "checked"


async def test_next_request_starts_once_the_cut_handler_has_exited(
    autojump_clock: trio.abc.Clock,
) -> None:
    errors: list[tuple[float, BaseException]] = []

    async def cut_caller(c: Clocked) -> None:
        try:
            await c.with_shielded_cleanup()
        except CallTimeout as exc:
            errors.append((trio.current_time(), exc))

    async with open_server(Clocked()) as c, trio.open_nursery() as nursery:
        nursery.start_soon(cut_caller, c)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(c.budgeted, 0.0)
    # cut at 1.0 (its budget): the caller hears at 1.0, but the shielded cleanup holds the
    # server until 3.0, and the next request starts only then
    ((heard_at, error),) = errors
    assert heard_at == 1.0  # at its deadline, not when the cleanup ends
    assert "within its budget of 1 s" in str(error)
    assert c.exits == [3.0]
    assert c.seen[0][0] == 3.0


async def test_plain_def_handler_is_not_cut(autojump_clock: trio.abc.Clock) -> None:
    @server(timeout=0.0)
    class Instant:
        @call
        def compute(self) -> int:
            return 42

        @cast
        def side(self) -> None:
            pass

    async with open_server(Instant()) as s:
        assert await s.compute() == 42
        assert statistics(s).handled == 1


async def test_contextvars_set_in_the_server_carry_over_when_its_idle_task_ends(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Remembers:
        async def on_start(self) -> None:
            where.set("set by on_start")

        @call
        def read(self) -> tuple[str, trio.lowlevel.Task]:
            return where.get(), trio.lowlevel.current_task()

        @call
        def write(self, value: str) -> None:
            where.set(value)

    async with open_server(Remembers()) as r:
        seen, first_task = await r.read()
        assert seen == "set by on_start"
        await trio.sleep(1.0)  # idle: the server's task ends, the next call starts another
        await r.write("set by a handler")
        await trio.sleep(1.0)
        seen, later_task = await r.read()
        assert seen == "set by a handler"
        assert later_task is not first_task
        assert later_task.name == first_task.name
        assert first_task.name.startswith("trioserver: ")
