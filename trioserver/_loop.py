"""The server's task: start, serve requests one at a time, park when idle, retire, stop.

An idle server keeps no task (tasks cost memory, and servers may be many): its task parks,
and ends when the run's timers find it still parked with no request since it parked
(`ServerState.retire_later`, `RETIRE_AFTER`); the next request starts another in the
server's nursery (`wake`). The task's contextvars pass to the next, so handlers see what
`on_start` and earlier handlers set.

The server's task is whichever task holds the server: a handler entering a released block
keeps its task, which stops being the server's, and another is started to serve behind it
(`spawn`); the handler taking the server back makes its task the server's again, and the
task serving meanwhile ends (`free_the_server`, `hand_back`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable
from contextvars import Context
from typing import Any

import trio
from outcome import Error, Outcome, Value
from trio.lowlevel import Abort, checkpoint_if_cancelled, current_task, reschedule

from . import _private
from ._admission import refusal_at_start
from ._errors import ServerCrashed, ServerStopped, TrioServerError
from ._guards import next_request
from ._handoff import RAISE, answer_here, go_on
from ._reply import expire, finish, shed_at_start, start
from ._request import DROPPED, RUNNING, STOPPED, Request, StoredRequest, deliver, seconds
from ._serving import mark_serving
from ._state import RETIRE, Block, ServerState
from ._stopped import NotRunning

logger = logging.getLogger("trioserver")

_INF = math.inf

_SPAWNING: Any = object()  # the server's task while one is being started
YIELD: Any = object()  # sent to the idle server's parked task: a released handler took over
# (it ends on seeing that `state.task` is another task now)


def wake(state: ServerState) -> None:
    """A request was queued: wake the server's parked task, or start one if it has none."""
    if state.parked:
        state.parked = False
        reschedule(state.task)  # type: ignore[arg-type]
    elif state.task is None:
        spawn(state)


def spawn(state: ServerState, *, here: bool = False) -> None:
    """Start a task for the server, in its nursery and with its contextvars: the first one
    (which runs `on_start`), another when a request comes after it went idle, or the last
    one, to run `on_stop`; or (`here`: with a copy of the running task's contextvars) one to
    serve while a handler is in a released block."""
    state.task = _SPAWNING
    state.spawns += 1
    assert state.nursery is not None
    begin: Any = state.nursery.start_soon
    name = f"trioserver: {state.spec.name}"
    if here:
        begin(run, state, state.spawns, name=name)
    else:
        state.context.run(begin, run, state, state.spawns, name=name)


def free_the_server(state: ServerState, block: Block) -> bool:
    """A released handler would take the server back: True if it may now (no handler holds
    it, and its task, if any, is idle: it is told to end, or not to begin)."""
    if state.current is not None:
        return False
    task = state.task
    if task is None:
        block.source = state.context  # (the contextvars the retired task left)
        return True
    if task is _SPAWNING:
        state.spawns += 1  # the task being started is not wanted: it ends as it begins
        return True
    if state.parked:
        state.parked = False
        block.source = task.context
        reschedule(task, Value(YIELD))
        return True
    return False


def hand_back(state: ServerState, source: Context | None = None) -> None:
    """The server is between requests: the first released handler waiting to take it back
    gets it (its task is the server's now). From the server's task (which then ends), or,
    with `source` (the server's contextvars), from a handler entering a released block."""
    assert state.retakers
    block = state.retakers.pop(0)
    block.source = current_task().context if source is None else source
    state.task = block.task
    reschedule(block.task)


async def run(state: ServerState, number: int | None = None) -> None:
    """A task of the server: it serves until stopped, or until it has been idle a while.

    `number`: which of `spawn`'s starts this is (None: `serve` runs it in its own task)."""
    if number is not None and (state.task is not _SPAWNING or state.spawns != number):
        return  # a released handler took the server back before this task began
    state.task = current_task()
    try:
        if state.started is not None:
            if state.spec.on_start is not None:
                try:
                    await state.spec.on_start(state.obj)
                except BaseException as exc:
                    state.start_error = exc
                    stop(state, "it failed to start")
                    return  # on_stop does not run
            _started(state)
        while not state.stopping:
            with trio.CancelScope() as scope:
                state.scope = scope
                state.scope_cancelled = False
                if await _serve(state, scope):
                    break
    except BaseException as exc:
        _stop_for(state, exc)
    finally:
        _started(state)
    if state.task is not current_task():
        return  # it handed the server to a released handler taking it back
    if state.stopping and state.blocks:
        # Released handlers still run: the last of them to end runs on_stop.
        if state.retakers:
            hand_back(state)
        else:
            state.task = None
            state.context = current_task().context  # (for the handler that retakes it)
        return
    if state.stopping:
        await _on_stop(state)
        state.task = None
        if state.keeper is not None:  # started by `serve`: what stops it comes out of its nursery
            error = state.what_stopped_it(None)
            if error is not None:
                raise error
    else:
        state.retired(current_task().context)


def _started(state: ServerState) -> None:
    if state.started is not None:
        state.started.set()  # the opener, waiting for on_start, holds the event
        state.started = None


async def _serve(state: ServerState, scope: trio.CancelScope) -> bool:
    """Run requests until `scope` is spent (False), or the server is stopping, has had no
    request yet, or is retired idle (True: the task ends).

    With nothing to do, the task parks: a request queued wakes it; a caller may also lend it
    its step (`_handoff.run_here`) and hand it a handler that suspended there, to go on with.
    """
    mailbox = state.mailbox
    obj = state.obj
    now_fn = state.now
    records = state.records
    while True:
        if state.retakers:  # a released handler waits to take the server back: it comes first
            hand_back(state)
            return True
        if mailbox.queued and not _private.passes_cancel_point(state.task):  # type: ignore[arg-type]
            # The server's task is cancelled (its nursery, as a stop begins): the next request
            # must not start; it stays queued, and the stop tells its caller.
            await checkpoint_if_cancelled()
        if not mailbox.queued:
            request = None
        elif mailbox.guarded or state.spec.guarded:
            request = next_request(state)
        else:
            request = mailbox.take_nowait()
        if request is not None and not state.serving_marked:
            mark_serving(state)  # (in this task's contextvars, where the handler runs)
        if request is None:
            if state.stopping or not state.numbered:  # (not one request yet: no need to wait)
                return True
            me = state.task
            result = resume = handler = None  # (parked, it keeps nothing of the last request)
            woken = await _park(state)
            if state.task is not me:  # told to end (`YIELD`): a released handler took over;
                return True  # what came since (a handler to go on with) is its task's
            resume = state.resume
            if resume is None:
                message = woken.unwrap()  # (Cancelled: stopping)
                if message is RETIRE and not mailbox.queued and not state.retakers:
                    return True  # (a released handler waiting to retake: hand it the server)
                continue
            state.resume = None
            handler, request, pending = resume
            try:
                if pending is RAISE:
                    raise handler
                result = await go_on(handler, woken, pending)
            except BaseException as exc:
                if _raised(state, request, exc, scope):
                    return False
                continue
        else:
            now = now_fn()
            if request.deadline <= now:
                expire(state, request)
                continue
            method = request.method
            record = records[method.name]
            if state.threads is not None or (method.admission and request.deadline != _INF):
                refusal = _refusal(state, request, now)
                if refusal is not None:
                    shed_at_start(state, request, *refusal)
                    continue
            start(state, request, record, now)
            try:
                if request.kwargs is None:
                    result = method.run(obj, *request.args)
                else:
                    result = method.run(obj, *request.args, **request.kwargs)
                if method.is_async:
                    # If it suspends, the run's timers cut it at its deadline.
                    if request.cut_at < state.timer_at:
                        state.look_at(request.cut_at)
                    result = await result
            except BaseException as exc:
                if _raised(state, request, exc, scope):
                    return False
                continue
        answer_here(state, request, Value(result))  # (`finish`, and its caller stepped on)
        # The public path armed the handler's deadline: disarm it (it must not fire while the
        # task is idle); the private path only showed it, and leaves it shown.
        if not _private.ENABLED and _hide_deadline(scope):
            return False  # its deadline fired as the handler ended: a fresh scope
        if state.scope_cancelled:
            return False  # the handler swallowed a cancellation: leave the spent scope


def _refusal(state: ServerState, request: Request, now: float) -> tuple[str, bool] | None:
    """Why `request` may not start now, and whether because its caller's deadline would pass
    first (admission) rather than for the server's sake (too many abandoned threads); or None."""
    method = request.method
    threads = state.threads
    if (
        threads is not None
        and method.thread
        and threads.abandoned >= state.spec.max_abandoned_threads
    ):
        return f"{threads.abandoned} of its worker threads still run, abandoned", False
    if method.admission and request.deadline != _INF:
        reason = refusal_at_start(state.records[method.name], request.deadline, now)
        return None if reason is None else (reason, True)
    return None


def _park(state: ServerState) -> Awaitable[Outcome[Any]]:
    """Wait, idle, for a request (or a handler handed over, or `RETIRE`)."""
    if state.retire_at == _INF and not state.mailbox.guarded:  # (guarded calls wait: it stays)
        state.retire_later()
    state.parked = True
    return _private.park(lambda _: _idle_abort(state))


def _idle_abort(state: ServerState) -> Abort:
    state.parked = False
    return Abort.SUCCEEDED


def _hide_deadline(scope: trio.CancelScope) -> bool:
    """A handler ended: its scope shows no deadline; True if the scope is spent (cancelled:
    by us, or by the public path's armed deadline)."""
    _private.show_deadline(scope, _INF)
    return scope.cancel_called


def _without_cancelled(exc: BaseException) -> BaseException | None:
    """`exc` less its `trio.Cancelled` parts; None if it holds nothing else."""
    if isinstance(exc, trio.Cancelled):
        return None
    if isinstance(exc, BaseExceptionGroup):
        group: BaseExceptionGroup[BaseException] = exc  # pyright: ignore[reportUnknownVariableType]
        return group.split(trio.Cancelled)[1]
    return exc


def _raised(state: ServerState, request: Request, exc: BaseException, scope: Any) -> bool:
    """End a request whose handler raised; True if `scope` is spent. May re-raise."""
    spent = state.scope_cancelled or _hide_deadline(scope)
    outcome: Outcome[Any] | None
    rest = None if isinstance(exc, Exception) else _without_cancelled(exc)
    if isinstance(exc, Exception):
        outcome = Error(exc)
    elif spent and not state.stopping and rest is None:
        outcome = None  # cut by its deadline, or its caller left
        spent = True
    elif spent and not state.stopping and isinstance(rest, Exception):
        outcome = Error(rest)  # a nursery in the handler: a child's error met our cut
        spent = True
    elif rest is None or isinstance(rest, Exception):
        # Cancelled from outside: the server stops as this propagates. The request is still
        # current, so `stop` tells its caller, as it tells queued ones. An error the handler
        # raised as it was cut has no caller left to reach: it is logged, not fatal.
        stop(state, "its nursery was cancelled")
        finish(state, request, None)
        if rest is not None:
            logger.warning(
                "%s raised %r as %s stopped", request.method.label, rest, state.spec.name,
                exc_info=rest,
            )  # fmt: skip
            assert isinstance(exc, BaseExceptionGroup)
            raise exc.split(trio.Cancelled)[0] or exc  # pyright: ignore[reportUnknownMemberType]
        raise exc
    else:  # a KeyboardInterrupt or SystemExit: the server dies, and it propagates
        _stop_for(state, exc)
        finish(state, request, None)
        raise exc
    error = finish(state, request, outcome)
    if error is not None:
        crash(state, error, f"cast {request.method.label} raised")
    return spent


def _stop_for(state: ServerState, exc: BaseException) -> None:
    """Stop because `exc` is leaving the server's task."""
    if _without_cancelled(exc) is None:
        stop(state, "its nursery was cancelled")
    else:  # KeyboardInterrupt, SystemExit from a handler: the server dies
        state.fatal = exc
        stop(state, f"a handler raised {type(exc).__name__}")


def crash(state: ServerState, error: BaseException, why: str) -> None:
    """Stop because `error` crashed the server: callers get `ServerCrashed`; it propagates."""
    if state.stopping:
        return
    logger.error("%s crashed: %s", state.spec.name, why, exc_info=error)
    state.fatal = error
    stop(state, f"it crashed: {why}", ServerCrashed)


def stop(state: ServerState, why: str, error: type[TrioServerError] = ServerStopped) -> None:
    """Stop at once: tell the running and queued callers, drop queued casts, cancel the task."""
    if state.stopping:
        return
    state.stopping = True
    name = state.spec.name
    state.obj.__dict__["_trioserver_state"] = NotRunning(state.spec, why, state, error)
    current = state.current
    if current is not None and current.state == RUNNING:
        current.state = STOPPED
        if current.task is not None:
            message = f"{current.method.label}: {name} stopped ({why}) while handling this call"
            deliver(current, Error(error(message)))
    for block in list((state.blocks or {}).values()):
        request = block.request
        if request.state == RUNNING:
            request.state = STOPPED
            if request.task is not None:
                message = f"{request.method.label}: {name} stopped ({why}) while handling this call"
                deliver(request, Error(error(message)))
        block.cancelled = True
        block.scope.cancel(reason=f"{name} stopped")
    for request in state.mailbox.drain():
        request.state = DROPPED
        state.dropped += 1
        if "call_withdrawn" in request.heard.hooked:
            state.emit("call_withdrawn", request, "dropped", f"{name} stopped ({why})")
        if request.task is not None:
            message = f"{request.method.label}: {name} stopped ({why}) before this call started"
            deliver(request, Error(error(message)))
        elif type(request) is StoredRequest:
            request.runner.ended(request, None, True)
            logger.info(
                "durable cast %s not run: %s stopped (%s); it stays stored for the next run",
                request.method.label,
                name,
                why,
            )
        else:
            logger.warning(
                "cast %s dropped: %s stopped (%s) before it started",
                request.method.label,
                name,
                why,
            )
    if state.durable is not None:
        state.durable.close()  # its last round commits what is left, and gives back the rest
    if state.keeper is not None:  # `serve`'s: its task (if any) is its nursery's, which goes on
        state.keeper.discard(state)
        if state.task is not None and state.task is not _SPAWNING:
            state.scope.cancel(reason=f"{name} stopped")
    elif state.nursery is not None:
        # The server's nursery holds only the server's task once the opener's block has ended
        # (or when the server died or crashed, and the block must end too).
        state.nursery.cancel_scope.cancel(reason=f"{name} stopped")
    # (else `serve` is running on_start in its own task, which sees what stops it)
    if state.task is None and state.started is None and state.start_error is None:
        spawn(state)  # an idle server has no task: start one to run on_stop


async def _on_stop(state: ServerState) -> None:
    hook = state.spec.on_stop
    if hook is None or state.start_error is not None:
        return
    with trio.CancelScope(shield=True) as scope:
        if state.spec.timeout is not None:
            scope.deadline = trio.current_time() + state.spec.timeout
        try:
            await hook(state.obj)
        except Exception as exc:
            state.stop_error = exc
    if scope.cancelled_caught:
        logger.warning(
            "%s.on_stop did not finish within %s and was cancelled",
            state.spec.name,
            seconds(state.spec.timeout),
        )
