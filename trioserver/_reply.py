"""A request's start and its end: the one place that counts, times and answers requests.

Every path a request takes (run in its caller's step, or by the server's task; returned,
raised, cut or stopped) starts it with `start` and ends it with `finish`; requests that never
start end in `expire`, `shed_at_start`, a withdrawal (`_caller`) or a drop (`_loop.stop`).
"""

from __future__ import annotations

import logging
from typing import Any

from outcome import Error, Outcome, Value
from trio.lowlevel import reschedule

from . import _private
from ._errors import CallTimeout, ServerOverloaded
from ._request import (
    DONE,
    RUNNING,
    TIMED_OUT,
    WITHDRAWN,
    Request,
    StoredRequest,
    cut_message,
    deliver,
)
from ._state import ServerState
from ._statistics import MethodRecorder

logger = logging.getLogger("trioserver")


class Expired(Exception):
    """Sent to a caller whose deadline passed while its request was queued."""


class Shed(Exception):
    """Sent to a caller whose request admission refused as it would start, because the
    caller's deadline would pass before it could finish: the call ends as that deadline.
    (Also from a server in a Ray actor, `_ray_host`, to its remote caller.)"""


def start(state: ServerState, request: Request, record: MethodRecorder, now: float) -> None:
    """`request`'s handler starts now: its deadline is ``min(now + budget, caller's deadline)``,
    shown on the server's scope (the run's timers cut it there only if it suspends)."""
    budget = request.method.budget
    cut_at = request.deadline
    if budget is not None and now + budget < cut_at:
        cut_at = now + budget
    request.cut_at = cut_at
    request.state = RUNNING
    request.started_at = now
    record.queue_wait.add(now - request.queued_at)
    state.current = state.last_started = request
    _private.show_deadline(state.scope, cut_at)
    if "call_started" in request.heard.hooked:
        state.emit("call_started", request)


def finish(
    state: ServerState, request: Request, outcome: Outcome[Any] | None
) -> BaseException | None:
    """`request`'s handler ended with `outcome` (None: cut by its scope): count it once, time
    it, and answer its caller if it still waits. A cast's error is logged; returned instead
    if the cast is marked to crash its server (the loop stops it)."""
    if state.current is request:
        state.current = None
    state.turns += 1
    now = state.now()
    status = request.state
    request.state = DONE
    record = state.records[request.method.name]
    crash: BaseException | None = None
    if status == RUNNING and isinstance(outcome, Value):
        record.ended(now - request.started_at, now, False, request.released_for)
        state.handled += 1
        ending = "handled"
        if request.task is not None:
            if request.waiting:  # (`deliver`, inlined: once per call)
                request.waiting = False
                reschedule(request.task, outcome)
            else:
                request.outcome = outcome
        elif type(request) is StoredRequest:
            request.runner.ended(request, None, False)
    elif status == RUNNING:
        record.ended(now - request.started_at, now, outcome is None, request.released_for)
        if outcome is None:
            state.timed_out += 1
            ending = "timed_out"
            outcome = Error(CallTimeout(cut_message(request)))
        else:
            state.failed += 1
            ending = "failed"
        if request.task is not None:
            deliver(request, outcome)
        elif type(request) is StoredRequest:
            request.runner.ended(request, _error_of(outcome), False)
        elif request.method.crash:
            crash = _error_of(outcome)
        else:
            _log_cast_failure(state, request, _error_of(outcome))
    else:
        record.ended(now - request.started_at, now, True)
        if status == TIMED_OUT:  # its caller's timer fired, and told it
            state.timed_out += 1
            ending = "timed_out"
        else:  # ABANDONED (its caller left) or STOPPED (stop told its caller)
            state.cancelled += 1
            ending = "cancelled"
        if type(request) is StoredRequest:  # stopped: it stays stored, for the next run
            request.runner.ended(request, None, True)
    if "call_finished" in request.heard.hooked:
        state.emit("call_finished", request, ending)
    return crash


def _error_of(outcome: Outcome[Any]) -> BaseException:
    assert isinstance(outcome, Error)
    error: BaseException = outcome.error
    return error


def _log_cast_failure(state: ServerState, request: Request, error: BaseException) -> None:
    logger.warning(
        "cast %s failed: %r; %s goes on",
        request.method.label,
        error,
        state.spec.name,
        exc_info=None if isinstance(error, CallTimeout) else error,
    )


def expire(state: ServerState, request: Request) -> None:
    """`request` reached the front after its caller's deadline: it never starts."""
    request.state = WITHDRAWN
    state.withdrawn += 1
    if "call_withdrawn" in request.heard.hooked:
        state.emit("call_withdrawn", request, "withdrawn", "its caller's deadline passed")
    deliver(request, Error(Expired()))


def shed_at_start(state: ServerState, request: Request, reason: str, by_deadline: bool) -> None:
    """`request` is refused as it would start: by admission (`by_deadline`: its caller's
    deadline would pass first, the call ends as that deadline), or for its server's sake."""
    request.state = WITHDRAWN
    state.shed += 1
    if "call_shed" in request.heard.hooked:
        state.emit("call_shed", request, "shed", reason)
    if by_deadline:
        deliver(request, Error(Shed(reason)))
    else:
        deliver(request, Error(ServerOverloaded(f"{request.method.label} refused: {reason}")))
