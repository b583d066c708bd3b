"""The hand-off: an idle server's task runs a request inside its caller's scheduler step.

Every contract test runs with and without it (`make test` runs tests/ again with
``TRIOSERVER_PRIVATE=0``, which turns off all private trio access, the hand-off with it).
These tests cover what is particular to it: the handler really runs as the server's task,
in no task step of its own; a handler that suspends part-way is driven on by the server's
task, whatever it waits on; what only the server's task may raise is raised there; and the
idle task retires on its timer, never cutting a handler.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trioserver import (
    CallTimeout,
    DeadlockError,
    ServerCrashed,
    ServerStopped,
    _handoff,
    _private,
    _state,
    call,
    cast,
    open_server,
    server,
    statistics,
)
from trioserver._spec import STATE

from .tasks import Foreign, StepCounter, tasks_named

needs_handoff = pytest.mark.skipif(
    not _private.ENABLED, reason="hand-off disabled (TRIOSERVER_PRIVATE=0 or an untested trio)"
)

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


@server(admission=False)
class Book:
    def __init__(self) -> None:
        self.event = trio.Event()
        self.lock = trio.Lock()
        self.seen: list[tuple[str, trio.lowlevel.Task, str]] = []
        self.other: Book | None = None
        self.refused: BaseException | None = None

    async def on_start(self) -> None:
        where.set("server")

    @call
    async def mark(self, label: str) -> trio.lowlevel.Task:
        task = trio.lowlevel.current_task()
        self.seen.append((label, task, where.get()))
        return task

    @call
    def deadline(self) -> float:
        return trio.current_effective_deadline()

    @call(timeout=10.0)
    async def wait_event(self) -> tuple[str, str]:
        where.set("before")
        before = (trio.lowlevel.current_task().name, where.get())
        await self.event.wait()
        after = (trio.lowlevel.current_task().name, where.get())
        assert before == after
        return after

    @call(timeout=10.0)
    async def locked(self) -> str:
        async with self.lock:
            await trio.sleep(1.0)
        return "locked"

    @call(timeout=10.0)
    async def with_children(self) -> int:
        results: list[int] = []

        async def child(n: int) -> None:
            await trio.sleep(n)
            results.append(n)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, 2)
            nursery.start_soon(child, 1)
        return sum(results) + len(results) * 10

    @call(timeout=1.0)
    async def stuck(self) -> None:
        await trio.sleep_forever()

    @call
    async def foreign(self) -> None:
        await Foreign()

    @call
    def interrupt(self) -> None:
        raise KeyboardInterrupt

    @call
    async def self_call(self) -> tuple[trio.lowlevel.Task, trio.lowlevel.Task]:
        outer = trio.lowlevel.current_task()
        inner = await self.mark("inline")
        return outer, inner

    @call
    async def ask_other(self) -> trio.lowlevel.Task:
        assert self.other is not None
        return await self.other.mark("nested")

    @call(timeout=5.0)
    async def child_calls_back(self) -> None:
        async def child() -> None:
            try:
                await self.mark("from a child")
            except DeadlockError as exc:
                self.refused = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)

    @call(timeout=5.0)
    async def sleep(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return trio.current_time()

    @cast
    async def note(self, label: str) -> None:
        self.seen.append((label, trio.lowlevel.current_task(), where.get()))
        if label.startswith("wait"):
            await self.event.wait()
            self.seen.append((label + " done", trio.lowlevel.current_task(), where.get()))

    @cast(crash=True)
    def corrupt(self) -> None:
        raise ValueError("corrupt entry")


@asynccontextmanager
async def open_idle(book: Book) -> AsyncIterator[Book]:
    """Open a server, and leave its task parked idle: the next call may be handed off."""
    async with open_server(book) as handle:
        await handle.deadline()  # a server's task starts with its first request
        await trio.testing.wait_all_tasks_blocked()
        assert len(server_tasks("Book")) >= 1
        yield handle


def server_tasks(name: str) -> list[trio.lowlevel.Task]:
    """The live tasks of servers of class `name`."""
    return tasks_named(f"trioserver: {name}")


@needs_handoff
async def test_a_call_to_an_idle_server_runs_as_its_task_in_no_step_of_its_own(
    autojump_clock: trio.abc.Clock,
) -> None:
    counter = StepCounter("trioserver: ")
    async with open_idle(Book()) as book:
        (task,) = server_tasks("Book")
        trio.lowlevel.add_instrument(counter)
        try:
            got = await book.mark("fast")
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert got is task  # current_task() in the handler: the server's task
        assert got is not trio.lowlevel.current_task()
        assert book.seen == [("fast", task, "server")]  # and the server's contextvars
        assert counter.steps == 0  # yet the server's task did not take a step


@needs_handoff
async def test_a_cast_to_an_idle_server_starts_in_the_casters_step(
    autojump_clock: trio.abc.Clock,
) -> None:
    counter = StepCounter("trioserver: ")
    async with open_idle(Book()) as book:
        (task,) = server_tasks("Book")
        trio.lowlevel.add_instrument(counter)
        try:
            await book.note("fast")
            assert book.seen == [("fast", task, "server")]  # ran before the cast returned
            await book.note("wait")  # returns once its handler suspends
            assert book.seen[-1] == ("wait", task, "server")
            assert counter.steps == 0
            book.event.set()
            await trio.testing.wait_all_tasks_blocked()
            assert book.seen[-1] == ("wait done", task, "server")
            assert counter.steps == 1  # the server's task went on with it
        finally:
            trio.lowlevel.remove_instrument(counter)


@needs_handoff
async def test_a_crashing_cast_run_in_its_casters_step_crashes_the_server_not_the_caster(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[BaseException] = []

    async def scenario() -> None:
        async with open_idle(Book()) as book:
            await book.corrupt()  # the caster is not told: fire and forget
            try:
                await book.mark("after")
            except ServerCrashed as exc:
                told.append(exc)
            await trio.sleep_forever()

    with pytest.raises(ValueError, match="corrupt entry"):  # out of open_server, as queued
        await scenario()
    assert len(told) == 1
    assert "Book crashed: cast Book.corrupt raised" in caplog.text
    assert "cast Book.corrupt raised" in str(told[0])


async def test_the_handler_sees_its_own_deadline_not_the_callers_scopes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_idle(Book()) as book:
        start = trio.current_time()
        assert await book.deadline() == start + 5.0  # the server's default budget
        with trio.move_on_after(2.0):
            assert await book.deadline() == start + 2.0  # the caller's deadline, earlier
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            assert await book.deadline() == start + 1.0


async def test_a_handler_that_suspends_goes_on_in_the_servers_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_idle(Book()) as b, trio.open_nursery() as nursery:
        got: list[tuple[str, str]] = []

        async def waiter() -> None:
            got.append(await b.wait_event())

        counter = StepCounter("trioserver: ")
        trio.lowlevel.add_instrument(counter)
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        if _private.ENABLED:
            assert counter.steps == 0  # it began in the waiter's step, and waits in its stead
        b.event.set()
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.remove_instrument(counter)
        assert counter.steps >= 1  # the server's task went on with it
        assert got == [("trioserver: Book", "before")]
        assert await b.mark("after") is server_tasks("Book")[0]
        assert b.seen[-1][2] == "before"  # the handler's contextvar stayed the server's


async def test_handlers_that_wait_on_locks_sleeps_and_child_tasks_finish(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_idle(Book()) as b:
        start = trio.current_time()
        assert await b.locked() == "locked"
        assert await b.with_children() == 23
        assert trio.current_time() == start + 3.0
        assert await b.sleep(0.5) == start + 3.5


async def test_a_cut_handler_that_began_in_its_callers_step(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_idle(Book()) as b:
        start = trio.current_time()
        with pytest.raises(CallTimeout, match=r"Book\.stuck did not finish within its budget"):
            await b.stuck()
        assert trio.current_time() == start + 1.0
        with trio.move_on_after(0.5) as scope:
            await b.stuck()
        assert scope.cancelled_caught
        assert trio.current_time() == start + 1.5
        assert await b.sleep(0.25) == start + 1.75  # the server goes on


async def test_a_foreign_message_gets_trios_type_error_in_the_handler(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_idle(Book()) as b:
        with pytest.raises(TypeError, match="unrecognized yield message"):
            await b.foreign()
        assert await b.deadline() > 0  # the server goes on


async def test_keyboard_interrupt_raised_at_once_stops_the_server_from_its_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    told: list[BaseException] = []

    async def scenario() -> None:
        async with open_idle(Book()) as b:
            try:
                await b.interrupt()
            except ServerStopped as exc:
                told.append(exc)
                await trio.sleep_forever()  # the server's death cancels this block

    with pytest.raises(KeyboardInterrupt):
        await scenario()
    assert len(told) == 1
    assert "stopped (a handler raised KeyboardInterrupt) while handling this call" in str(told[0])


async def test_self_calls_nested_servers_and_deadlocks_from_a_handed_off_handler(
    autojump_clock: trio.abc.Clock,
) -> None:
    a, b = Book(), Book()
    a.other = b
    async with open_idle(a) as a, open_idle(b) as b:
        outer, inner = await a.self_call()
        assert outer is inner  # inline, in a's task
        nested = await a.ask_other()
        assert nested is not outer
        assert nested.name == outer.name == "trioserver: Book"
        await a.child_calls_back()
        assert isinstance(a.refused, DeadlockError)


async def test_an_idle_task_retires_on_its_timer_and_a_busy_one_stays(
    autojump_clock: trio.abc.Clock,
) -> None:
    retire = _state.RETIRE_AFTER
    async with open_idle(Book()) as b:
        (first,) = server_tasks("Book")
        for _ in range(10):  # busy: a call every half retire period, for five periods
            await b.mark("busy")
            await trio.sleep(retire / 2)
        assert server_tasks("Book") == [first]
        await trio.sleep(2 * retire)  # idle: the task ends
        assert server_tasks("Book") == []
        assert await b.mark("again") is not first  # the next request starts another


async def test_a_retired_server_keeps_nothing_its_task_needed(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Idle servers are many: once its task ends, a server holds neither the task's cancel
    # scope nor its last request (benchmarks/memory.py counts the bytes), and the next
    # request, or the stop, opens what it needs.
    async with open_idle(Book()) as b:
        handled = statistics(b).handled
        await b.mark("first")
        state = getattr(b, STATE)
        assert state.scope is not None
        assert state.last_started is not None
        await trio.sleep(3 * _state.RETIRE_AFTER)
        assert server_tasks("Book") == []
        assert state.task is None
        assert state.last_started is None
        assert not hasattr(state, "scope")
        assert await b.sleep(1.0) == trio.current_time()  # a handler that suspends, cut-free
        assert state.scope is not None
        await trio.sleep(3 * _state.RETIRE_AFTER)
        assert not hasattr(state, "scope")
    assert statistics(b).handled == handled + 2


class Token:
    """A value a handler returns, to see who keeps it."""


@server(admission=False)
class Maker:
    def __init__(self) -> None:
        self.event = trio.Event()

    @call
    async def make(self) -> Token:
        return Token()

    @call(timeout=10.0)
    async def make_later(self) -> Token:
        await self.event.wait()
        return Token()

    @call(timeout=10.0)
    async def fail_later(self) -> None:
        await self.event.wait()
        raise ValueError("failed after waiting")


@needs_handoff
async def test_handlers_run_in_drivers_that_keep_nothing_of_theirs_and_are_few(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A coroutine handler run in its caller's step runs inside a driver (`_handoff._drives`),
    # taken from the idle ones and put back once the handler returned: a call to an idle server
    # makes no new one, an idle driver does not keep the value its handler returned, and no
    # more than `_KEEP` wait idle, however many handlers were handed over at once. (That it
    # drops the finished coroutine too, `coro = None`, is not checked here.)
    makers = [Maker() for _ in range(3 * _handoff._KEEP)]
    async with contextlib.AsyncExitStack() as stack:
        handles = [await stack.enter_async_context(open_server(m)) for m in makers]
        for handle in handles:
            await handle.make()  # (its task starts, and parks idle)
        await trio.testing.wait_all_tasks_blocked()
        idle = list(_handoff._DRIVERS)
        assert idle
        token = await handles[0].make()
        assert idle == _handoff._DRIVERS  # the same driver ran it, and is idle again
        kept = weakref.ref(token)
        del token
        gc.collect()
        assert kept() is None

        got: list[Token] = []

        async def make_later(handle: Maker) -> None:
            got.append(await handle.make_later())

        async def fail_later(handle: Maker) -> None:
            with pytest.raises(ValueError, match="failed after waiting"):
                await handle.fail_later()

        async with trio.open_nursery() as nursery:
            for i, handle in enumerate(handles):
                nursery.start_soon(make_later if i % 2 else fail_later, handle)
            await trio.testing.wait_all_tasks_blocked()
            assert _handoff._DRIVERS == []  # every one taken by a handler that waits
            for m in makers:
                m.event.set()
        assert len(got) == len(handles) // 2
        assert 1 <= len(_handoff._DRIVERS) <= _handoff._KEEP
        kept = weakref.ref(got[0])
        got.clear()
        gc.collect()
        assert kept() is None


async def test_a_parked_server_keeps_nothing_of_its_last_request(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A server's task parks idle for a while before it retires (and for as long as guarded
    # calls wait): it must not keep the last value it returned, or the last request, alive.
    maker = Maker()
    async with open_server(maker) as handle, trio.open_nursery() as nursery:
        got: list[Token] = []

        async def make_later() -> None:
            got.append(await handle.make_later())  # (handed off, if the server is idle)

        async def make() -> None:
            got.append(await handle.make())  # (queued behind it: the server's task runs it)

        nursery.start_soon(make_later)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(make)
        await trio.testing.wait_all_tasks_blocked()
        maker.event.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(got) == 2
        assert server_tasks("Maker") != []  # parked, not retired
        kept = [weakref.ref(token) for token in got]
        got.clear()
        gc.collect()
        assert [ref() for ref in kept] == [None, None]


async def test_the_retire_timer_never_cuts_a_handler(
    autojump_clock: trio.abc.Clock,
) -> None:
    retire = _state.RETIRE_AFTER
    async with open_idle(Book()) as b:
        start = trio.current_time()
        assert await b.sleep(10 * retire) == start + 10 * retire


async def test_callers_racing_an_idle_server_are_served_one_at_a_time_in_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    arrivals: list[str] = []

    async def caller(b: Book, i: int) -> None:
        await trio.sleep(0.001 * (i % 3))
        arrivals.append(f"m{i}")
        await b.mark(f"m{i}")  # no checkpoint between arriving and calling
        if i % 2:
            await b.sleep(0.002)

    async with open_idle(Book()) as b, trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(caller, b, i)
    assert [label for label, _, _ in b.seen] == arrivals
    assert len(arrivals) == 30


def test_the_handoff_is_on_for_the_trio_it_was_checked_with() -> None:
    low, high = _private.TESTED_TRIO_VERSIONS
    version = tuple(int(part) for part in trio.__version__.split(".")[:2])
    assert (low <= version < high) == _private.SUPPORTED


async def test_effective_deadline_matches_trios() -> None:
    task = trio.lowlevel.current_task()
    checks: list[tuple[float, float]] = []

    def check() -> None:
        checks.append((_private.effective_deadline(task), trio.current_effective_deadline()))

    check()
    with trio.move_on_after(5):  # noqa: ASYNC100 (reads deadlines only)
        check()
        with trio.move_on_after(10):  # noqa: ASYNC100 (reads deadlines only)
            check()
            with trio.CancelScope(shield=True):  # noqa: ASYNC100 (reads deadlines only)
                check()
                with trio.move_on_after(20):  # noqa: ASYNC100 (reads deadlines only)
                    check()
            with trio.CancelScope() as cancelled:  # noqa: ASYNC100 (reads deadlines only)
                cancelled.cancel()
                check()
    with trio.CancelScope(deadline=trio.current_time() - 1):  # noqa: ASYNC100 (reads deadlines only)
        check()
    assert len(checks) == 7
    assert all(ours == theirs for ours, theirs in checks), checks


@needs_handoff
async def test_a_handed_off_handler_is_not_protected_from_keyboard_interrupt() -> None:
    # While the caller lends its step, trio's current task is the server's; the swap itself is
    # protected from KeyboardInterrupt, the handler (user code) never is.
    seen: list[bool] = []

    @server
    class Probe:
        @call
        def look(self) -> None:
            seen.append(trio.lowlevel.currently_ki_protected())

    async with open_server(Probe()) as probe:
        await probe.look()  # the first call starts the server's task
        await trio.testing.wait_all_tasks_blocked()
        await probe.look()  # handed off: the server's task is parked idle
    assert seen == [False, False]
