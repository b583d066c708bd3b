"""The hand-off: an idle server's task runs a request inside its caller's scheduler step; and back.

A round trip through another trio task costs two task switches, each a pass of trio's
scheduler; an uncontended `trio.Lock` costs one checkpoint. When the server is idle (its
task parked, its mailbox empty, no handler running), the caller does not wake the server's
task and wait for it: it lends its own step (`_private.lend_step`). For the length of the
handler, trio's current task *is the server's task*: `trio.lowlevel.current_task` returns
it, the handler runs in the server task's `contextvars.Context`, under the server task's
cancel scopes (its deadline is the request's, as always), and nurseries it opens belong to
the server's task. Only the Python frames below the handler are the caller's.

A handler that returns or raises without suspending is done: its caller gets the outcome
after a schedule point of its own, having paid no task switch. A handler that suspends
yields one of trio's traps; it is applied to the server's task as trio's run loop applies a
trap to the task that yielded it (`_private.apply_trap`), so the server's task is now parked
*in the handler's wait*, and whoever wakes it wakes the server's task, which drives the rest
of the handler in its own steps (`go_on`). The caller then waits for the reply as it does
for any request.

The hand-back is the other way round (`answer_here`): when a handler returns in a step of
the server's own task and the caller waits for the reply, the caller is stepped on with it
inside that step (`_private.step_here`), once a step, instead of in the scheduler's next
pass; a caller that calls again at once queues its request, and the server's task starts
it in the same step.

Both exist only on the private path (`_private.ENABLED`); off it, every request goes through
the mailbox and the server's task, and every caller is woken for a step of its own: the same
guarantees, one task switch more each way.
"""

from __future__ import annotations

import math
import time
import types
from collections.abc import Callable, Generator
from typing import Any, cast

from outcome import Error, Outcome, Value
from trio.lowlevel import Task, disable_ki_protection, enable_ki_protection, reschedule

from . import _private
from ._reply import finish
from ._request import DONE, RUNNING, Request
from ._serving import mark_serving
from ._state import ServerState, step_watch
from ._statistics import MethodRecorder

RAISE: Any = object()  # in `ServerState.resume`: the handler raised a BaseException to re-raise
HANDED_OVER: Any = object()  # from `run_here`: the server's task goes on with the handler
SETTLED: Any = object()  # from `run_here`: the reply is in `request.outcome`
_INF = math.inf


@enable_ki_protection  # trio's state and ours change here; the handler runs in `_run`, `_resume`
def run_here(state: ServerState, request: Request, record: MethodRecorder, caller: Task) -> Any:
    """Run `request` (a call or a cast) in the idle server's task, within `caller`'s step.

    If the handler returns without suspending, its result is returned; if it raises, the
    reply is left in `request.outcome` (`SETTLED`; for a cast marked to crash its server, the
    error that crashes it; else None). If it suspends, the server's task waits in its stead
    and goes on with it (`HANDED_OVER`); a caller waits for the reply as for a queued
    request, from then on.
    """
    server = state.task
    assert server is not None
    method = request.method
    state.parked = False
    request.waiting = False  # the reply is left in `request.outcome` until the caller parks
    # `_reply.start` inlined (this path is private): with `finish` below, a fifth of the
    # round trip of benchmarks/roundtrip.py (1 and 100 callers).
    budget = method.budget
    cut_at = request.deadline
    if budget is not None and request.queued_at + budget < cut_at:
        cut_at = request.queued_at + budget
    request.cut_at = cut_at
    request.state = RUNNING
    record.queue_wait.add(0.0)
    state.current = state.last_started = request
    if not state.serving_marked:  # (the handler runs in the server task's contextvars)
        server.context.run(mark_serving, state)
    hooked = request.heard.hooked
    if "call_started" in hooked:  # (in the handler's contextvars, as on the queued path)
        server.context.run(state.emit, "call_started", request)
    detector = step_watch.detector
    began = time.perf_counter() if detector is not None else 0.0
    result: Any = None
    handler: Any = None
    failure: BaseException | None = None
    trap: Any = None  # what the handler yielded, if it suspended
    # From here to `take_back`, trio's current task is the server's: its step is ours.
    idle_abort = _private.lend_step(server, state.scope, cut_at)
    try:
        kwargs = request.kwargs
        if not method.is_async:
            if kwargs is None:
                result = _run(server, method.run, state.obj, request.args)
            else:
                result = _run_kw(server, method.run, state.obj, request.args, kwargs)
        else:
            # (an `async def` runs nothing when called: the handler starts in `_resume`)
            if kwargs is None:
                handler = method.run(state.obj, *request.args)
            else:
                handler = method.run(state.obj, *request.args, **kwargs)
            driver = _driver()
            trap = _resume(server, driver.send, handler)
            if type(trap) is _Returned:  # (the commonest: it returned without suspending)
                result = trap.value
                trap.value = None
                trap = None
                _DRIVERS.append(driver)  # (taken from there, or the first: no more than were)
            else:
                handler = driver  # the server's task drives the rest (`go_on`)
    except BaseException as exc:
        failure = exc
    if trap is None and (failure is None or isinstance(failure, Exception)):
        _private.take_back(caller, server, idle_abort, state.scope)  # parked idle again
        state.parked = True
    else:
        _private.take_back(caller)
    if detector is not None and time.perf_counter() - began >= detector.threshold:
        state.loop_blocked(time.perf_counter() - began, detector.threshold)
    if trap is not None:
        return _hand_over(state, request, handler, trap)
    if failure is not None and not isinstance(failure, Exception):
        # KeyboardInterrupt, SystemExit...: the server's task raises it, as if it ran there
        return _hand_over(state, request, failure, RAISE)
    if failure is None and request.state == RUNNING:
        # `_reply.finish` inlined for its commonest case, a handler that returned at once:
        # a tenth of the round trip in benchmarks/roundtrip.py, 1 caller.
        ended = state.now()
        record.ended(ended - request.started_at, ended)
        state.handled += 1  # (no `turns`: no guard waits while a request is handed off)
        request.state = DONE
        state.current = None
        if "call_finished" in hooked:  # (in the handler's contextvars, as on the queued path)
            server.context.run(state.emit, "call_finished", request, "handled")
        return result
    outcome = Value(result) if failure is None else Error(failure)
    if "call_finished" in hooked:  # (in the handler's contextvars, as on the queued path)
        crash = server.context.run(finish, state, request, outcome)
    else:
        crash = finish(state, request, outcome)
    if crash is not None:
        request.outcome = Error(crash)
    return SETTLED


def answer_here(state: ServerState, request: Request, outcome: Outcome[Any]) -> None:
    """End `request`, whose handler ended in a step of the server's own task (`_loop._serve`
    passes those that returned), and, if its caller waits for the reply, step the caller on
    with it here (the hand-back).

    The caller's step would otherwise come in the scheduler's next pass: a caller that
    makes its next call at once queues it, and the server's task starts it in this same
    step. Once a step, so that a caller calling in a loop still lets other tasks run: the
    next reply in the same step wakes its caller as usual. Not while a `BlockDetector`
    times steps (it reports a blocking handler as the step ends, before its caller goes
    on), nor while a released handler waits to take the server back (it is handed the
    server first, in this step, and the caller goes on after it, as before), nor while
    guarded calls wait (their guards are evaluated again as a handler ends, before its caller
    goes on, as before).
    """
    caller = request.task
    server = state.task
    if (
        caller is None
        or not _private.ENABLED
        or not request.waiting
        or request.state != RUNNING
        or server is None
        or (step := _private.steps_of(server)) == state.answered_in
        or (step_watch.detector is not None and step_watch.timing(server) is not None)
        or state.retakers  # (a released handler waits to take the server back: it goes first)
        or state.mailbox.guarded  # (guards are evaluated as a handler ends: before it goes on)
    ):
        finish(state, request, outcome)
        return
    state.answered_in = step
    request.waiting = False  # (`finish` leaves the reply in `request.outcome`)
    finish(state, request, outcome)
    reply = request.outcome
    assert reply is not None  # (a handler that returned or raised in time answers its caller)
    request.outcome = None
    _private.step_here(caller, reply)


@disable_ki_protection  # user code: a KeyboardInterrupt may come at once, as anywhere
def _run(server: Task, fn: Callable[..., Any], obj: object, args: tuple[Any, ...]) -> Any:
    """Run a plain handler in the server's contextvars."""
    return server.context.run(fn, obj, *args)


@disable_ki_protection  # user code: a KeyboardInterrupt may come at once, as anywhere
def _run_kw(server: Task, fn: Callable[..., Any], obj: object, args: Any, kwargs: Any) -> Any:
    """Run a plain handler that has keyword arguments in the server's contextvars."""
    return server.context.run(fn, obj, *args, **kwargs)


@disable_ki_protection  # user code: a KeyboardInterrupt may come at once, as anywhere
def _resume(server: Task, send: Callable[[Any], Any], handler: Any) -> Any:
    """Start a handler's coroutine, in a driver, in the server's contextvars."""
    return server.context.run(send, handler)


def _hand_over(state: ServerState, request: Request, handler: Any, trap: Any) -> Any:
    """The handler run in this caller's step suspended (yielded `trap`), or raised what only
    the server's task may raise (`handler` is then the error, `trap` is `RAISE`): the
    server's task goes on with it."""
    server = state.task
    assert server is not None
    if request.cut_at < state.timer_at:
        state.look_at(request.cut_at)  # the run's timers cut it at its deadline
    if trap is RAISE or not _private.apply_trap(server, trap):
        state.resume = (handler, request, trap)
        reschedule(server)  # it raises the error, or yields the foreign message, itself
    else:
        state.resume = (handler, request, None)
    return HANDED_OVER


class _Returned:
    """What a driver yields once its handler returned: the value, for whoever drives it."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None


def _drives(returned: _Returned) -> Generator[Any, Any, Any]:
    """A driver: sent a handler's coroutine, it runs it and yields `returned`, which holds its
    value; then it waits for the next one.

    A coroutine driven with ``send`` raises StopIteration as it returns: an exception made,
    raised and caught once a call. Run by ``yield from`` inside a driver, it returns as in an
    ``await``, raising nothing: a fiftieth of a cast, or of a call that does not suspend
    (benchmarks/instructions.py, one caller). A handler that raises ends its driver.
    """
    coro = yield
    while True:
        returned.value = yield from coro
        coro = None  # (an idle driver keeps nothing of the handler's)
        coro = yield returned


# (``yield from`` a coroutine is allowed in a generator marked as `types.coroutine` does)
_new_driver = cast("Callable[[_Returned], Generator[Any, Any, Any]]", types.coroutine(_drives))
_DRIVERS: list[Generator[Any, Any, Any]] = []  # idle drivers, for any run in any thread
_KEEP = 8  # at most: more are only ever needed while that many handlers are handed over


def _driver() -> Generator[Any, Any, Any]:
    """An idle driver (`_drives`), taken from `_DRIVERS`, or a new one."""
    try:
        return _DRIVERS.pop()
    except IndexError:  # (none idle: the first, or all taken by handed-over handlers)
        driver = _new_driver(_Returned())
        driver.send(None)
        return driver


def _drive(driver: Generator[Any, Any, Any], value: Any, trap: Any) -> Generator[Any, Any, Any]:
    """Drive a suspended handler's driver from the server's task: yield `trap` (if any) for
    it, send what comes back, and so on until the handler returns; then the driver is idle
    again."""
    while True:
        if trap is not None:
            try:
                value = yield trap
            except GeneratorExit:
                driver.close()  # (and so the handler's coroutine)
                raise
            except BaseException as exc:  # trio throws only for a message it does not know
                trap = driver.throw(exc)
                if type(trap) is _Returned:
                    break
                continue
        trap = driver.send(value)
        if type(trap) is _Returned:
            break
    value = trap.value
    trap.value = None
    if len(_DRIVERS) < _KEEP:
        _DRIVERS.append(driver)
    return value


go_on = types.coroutine(_drive)
"""Await ``go_on(coroutine, value, trap)`` to drive a suspended handler to its end."""
