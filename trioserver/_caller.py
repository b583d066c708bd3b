"""The caller's side: send a request, wait for room, wait for the reply, leave.

``await handle.method(...)`` comes here (`call`, `cast`). An idle server runs the request
in this caller's step (`_handoff`); otherwise it is queued in the mailbox and the server's
task is woken (`_loop.wake`), and the caller waits, parked, until its reply is delivered
(`_reply`). A handler that suspends is in the run's timers (`_timers`) until its deadline:
if they cut it, its caller hears `CallTimeout` right then, even while a shielded cleanup
keeps the server busy (`ServerState.deadline_passed`). A caller cancelled while it waits
leaves (`ServerState.caller_left`): a queued request is withdrawn, a running handler is cut.
"""

from __future__ import annotations

import math
from threading import get_ident
from typing import Any, NoReturn

import trio
from outcome import Error
from trio.lowlevel import (
    Task,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
)

from . import _private
from ._admission import refusal_at_queue
from ._cycles import closing_cycle, describe, handling
from ._errors import (
    CallTimeout,
    DeadlockError,
    ForeignRunError,
    NotTrioError,
    ServerOverloaded,
    ServerStopped,
    TrioServerError,
)
from ._handoff import HANDED_OVER, SETTLED, run_here
from ._inline import run_inline
from ._instrument import CallInfo
from ._loop import crash, wake
from ._reply import Expired, Shed
from ._request import Request
from ._serving import SERVING
from ._spec import Method
from ._state import ServerState

_INF = math.inf


def outside(state: ServerState, method: Method) -> TrioServerError:
    """The error for a call made outside the server's trio run (checked in the caller)."""
    try:
        current_task()
    except RuntimeError:
        return NotTrioError(
            f"{method.label} was called outside trio (asyncio?): trioserver needs trio "
            f"(trio.run, or anyio's trio backend)"
        )
    return ForeignRunError(
        f"{method.label} was called from another trio run (another thread's trio.run) "
        f"than its server's: call it from the run that serves {state.spec.name}, or "
        f"from a thread with trio.from_thread.run"
    )


async def call(state: ServerState, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
    if get_ident() != state.thread:  # (a trio run has one thread: another is another run)
        raise outside(state, method)
    task = current_task()
    if state.stopping:
        raise ServerStopped(f"{method.label}: {state.spec.name} is not running: it was stopped")
    if task is state.task:
        return await run_inline(state, method, args, kwargs)
    server = state.task
    if (
        state.current is not None
        and server is not None
        and _private.has_children(server)
        and _started_by(task, server)
    ):
        raise DeadlockError(
            f"{method.label} was called from a task started by the running handler "
            f"{state.current.method.label}: it would wait for the handler, which waits "
            f"for the task. Call it from the handler itself (runs inline) or cast it."
        )
    serving = SERVING.get()  # (a handler calling another server: a link of a wait chain)
    mine = None if serving is None else handling(serving, task)
    if mine is not None:  # (a guarded call too: it waits for the holder before its guard)
        cycle = closing_cycle(state, mine)
        if cycle is not None:
            raise DeadlockError(
                f"{method.label} would close a cycle of requests waiting on each other: "
                f"{describe(cycle, method.label)}. Each waits for the next; none could go on "
                f"until a budget cut it. Cast one of them, or release the server around the call."
            )
    deadline = _private.effective_deadline(task)
    mailbox = state.mailbox
    waited = mailbox.capacity is not None and mailbox.full()
    if waited:
        await _wait_for_room(state, method)
    now = state.now()
    record = state.records[method.name]
    if method.admission and deadline != _INF:
        refusal = refusal_at_queue(state, record, deadline, now)
        if refusal is not None:
            if waited:
                mailbox.pass_room()
            await checkpoint_if_cancelled()  # a caller already cancelled was not refused
            _shed(state, method, now, refusal)
            await end_as_deadline(task, deadline, serving is None)
    state.numbered += 1
    request = Request(
        method, args, kwargs, task, deadline, state, now, record.hold, state.numbered,
        state.instruments.listeners,
    )  # fmt: skip
    # An idle server runs the request in this step (instruments see it queued, then started).
    if (
        state.parked
        and _private.ENABLED
        and now < deadline
        and method.handoff
        and not mailbox.guarded
    ):
        if waited:
            mailbox.pass_room()  # the room this caller waited for stays free: pass it on
        if not _private.passes_cancel_point(task):
            await checkpoint_if_cancelled()  # raises Cancelled (or a KeyboardInterrupt)
        if "call_queued" in request.heard.hooked:
            state.emit("call_queued", request)
        if mine is not None:
            mine.awaiting = request
        try:
            reply = run_here(state, request, record, task)
        finally:
            if mine is not None:
                mine.awaiting = None
        if reply is not HANDED_OVER:
            await _private.schedule_point()
            if reply is SETTLED:
                assert request.outcome is not None
                return request.outcome.unwrap()
            return reply
        request.waiting = True  # the handler suspended: wait for its reply, as when queued
    else:
        mailbox.put(request)
        if state.parked or state.task is None:  # (else its busy task takes it in turn)
            wake(state)
        if "call_queued" in request.heard.hooked:
            state.emit("call_queued", request)
    if mine is not None:
        mine.awaiting = request
    try:
        return await _private.wait(request.abort)
    except Shed:  # (admission refused it as it would start: its caller's deadline is near)
        await end_as_deadline(task, deadline, serving is None)
    except Expired:
        await checkpoint()  # the caller's own cancellation comes first
        raise CallTimeout(
            f"{method.label} never started: its caller's deadline passed while it was queued"
        ) from None
    except CallTimeout:  # (from the run's timers: its handler reached its deadline)
        await checkpoint_if_cancelled()  # the caller's own cancellation comes first
        raise
    finally:
        if mine is not None:
            mine.awaiting = None


def _started_by(task: Task, ancestor: Task | None) -> bool:
    """Whether `task` descends from `ancestor` (was started, maybe indirectly, in its nurseries)."""
    nursery = task.parent_nursery
    while nursery is not None:
        parent = nursery.parent_task
        if parent is ancestor:
            return True
        nursery = parent.parent_nursery
    return False


async def cast(state: ServerState, method: Method, args: tuple[Any, ...], kwargs: Any) -> None:
    if get_ident() != state.thread:
        raise outside(state, method)
    task = current_task()
    if not _private.passes_cancel_point(task):
        await checkpoint_if_cancelled()  # Cancelled: not queued
    if state.stopping:
        raise ServerStopped(f"{method.label}: {state.spec.name} is not running: it was stopped")
    # The server's own task never waits for room in its own mailbox: it would wait on itself.
    mailbox = state.mailbox
    waited = mailbox.capacity is not None and mailbox.full() and task is not state.task
    if waited:
        await _wait_for_room(state, method)
    state.numbered += 1
    request = Request(
        method, args, kwargs, None, _INF, state, state.now(), 0.0, state.numbered,
        state.instruments.listeners,
    )  # fmt: skip
    request.waiting = False
    # An idle server starts the cast in this step, as it does a call: the caster goes on when
    # the handler returns or first suspends.
    if state.parked and _private.ENABLED and method.handoff and not mailbox.guarded:
        if waited:
            mailbox.pass_room()  # the room this caster waited for stays free: pass it on
        if "call_queued" in request.heard.hooked:
            state.emit("call_queued", request)
        if run_here(state, request, state.records[method.name], task) is SETTLED:
            crashed = request.outcome  # a cast marked to crash its server raised
            if isinstance(crashed, Error):
                crash(state, crashed.error, f"cast {method.label} raised")
    else:
        mailbox.put(request)
        if state.parked or state.task is None:  # (else its busy task takes it in turn)
            wake(state)
        if "call_queued" in request.heard.hooked:
            state.emit("call_queued", request)
    await _private.schedule_point()


async def _wait_for_room(state: ServerState, method: Method) -> None:
    """The mailbox is full: wait for room in turn, or refuse, as the server says.

    A caller given the room either fills it (queues its request) or passes it on
    (`Mailbox.pass_room`): refused, or run at once by an idle server.
    """
    mailbox = state.mailbox
    if state.spec.when_full == "refuse":
        await checkpoint()
        reason = f"the mailbox is full ({mailbox.capacity} requests)"
        _shed(state, method, state.now(), reason)
        raise ServerOverloaded(f"{method.label} refused: {reason}")
    assert mailbox.capacity is not None
    assert mailbox.room is not None
    await mailbox.room.park()  # FIFO among the waiting callers
    while True:
        if state.stopping:
            raise ServerStopped(
                f"{method.label}: {state.spec.name} stopped while this call waited for room"
            )
        if mailbox.queued < mailbox.capacity:
            return
        await mailbox.room.park()  # (woken, then beaten to the room: wait again)


def _shed(state: ServerState, method: Method, now: float, reason: str) -> None:
    """Count and report a request refused before it was queued."""
    state.shed += 1
    listeners = state.instruments.listeners
    if "call_shed" in listeners.hooked:
        state.numbered += 1
        info = CallInfo(
            state.spec.name, method.label, method.kind, state.numbered, now,
            ended_at=now, outcome="shed", reason=reason, server_id=id(state.obj),
        )  # fmt: skip
        state.notify("call_shed", info, listeners)


async def end_as_deadline(task: Task, deadline: float, at_once: bool) -> NoReturn:
    """End a call that admission refused because its caller's `deadline` would pass before it
    could finish, as reaching that deadline ends it: the cancel scope that set the deadline is
    cancelled now (``move_on_after`` ends quietly, ``fail_after`` raises ``TooSlowError``).

    The caller waits for the deadline instead on public trio, which cannot name that scope,
    and when it is a handler (not `at_once`): its deadline may be its server's, whose cut only
    the server makes (its caller then hears `CallTimeout`, as from any handler cut)."""
    scope = _private.deadline_scope(task, deadline) if at_once else None
    if scope is not None:
        scope.cancel()
    await trio.sleep_forever()  # Cancelled: now, or at the deadline
    raise AssertionError("unreachable: sleep_forever returned")  # pragma: no cover
