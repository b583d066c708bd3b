"""Guarded calls (``@call(when=...)``): which queued request the server starts next.

A request whose guard is false waits in the mailbox without holding the server
(`Mailbox.block`); the requests behind it run. Guards are evaluated here, in the server's
task and turn, whenever it is free to start its next request (a handler ended, the server
woke for a new request, or a handler entered a released block); never polled. Among the
requests whose guard holds, the oldest starts first: every waiting guarded request is older
than all of the FIFO, so they are tried first, in arrival order. Within one choice a guard is
evaluated once per method (it is a function of the state, which nothing changes meanwhile),
and the waiting ones only after a handler ended (or released the server) since they were
last found false: nothing else changes the state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from outcome import Error

from ._reply import finish, start
from ._request import GUARDED, Request

if TYPE_CHECKING:
    from ._spec import Method
    from ._state import ServerState


def next_request(state: ServerState) -> Request | None:
    """Take the request to start next from the mailbox (None: nothing may start now).

    A guard that raises an `Exception` ends its request with it (counted ``failed``), and
    the choice goes on; a `BaseException` leaves the request queued and propagates.
    """
    mailbox = state.mailbox
    verdicts: dict[Method, bool] = {}
    if mailbox.guarded and state.guards_seen != state.turns:  # (else they are still false)
        for request in mailbox.waiting_guards():
            if request.state == GUARDED and _holds(state, request, verdicts):
                mailbox.unblock(request)
                # Those behind it were not evaluated: the next choice evaluates them, whether
                # this one starts (its end is a turn anyway) or not (expired, or refused by
                # admission, as it would start: nothing else may change before the next).
                return request
    state.guards_seen = state.turns  # (every waiting guard is false now)
    while True:
        taken = mailbox.take_nowait()
        if taken is None or taken.method.guard is None:
            return taken
        mailbox.block(taken)  # (queued while its guard is evaluated: a stop tells it)
        if _holds(state, taken, verdicts):
            mailbox.unblock(taken)
            return taken


def _holds(state: ServerState, request: Request, verdicts: dict[Method, bool]) -> bool:
    method = request.method
    verdict = verdicts.get(method)
    if verdict is not None:
        return verdict
    guard = method.guard
    assert guard is not None
    state.guard_evaluations += 1
    try:
        verdict = verdicts[method] = bool(guard(state.obj))
    except Exception as exc:
        state.mailbox.unblock(request)
        _failed(state, request, exc)
        return False
    return verdict


def _failed(state: ServerState, request: Request, error: Exception) -> None:
    """The guard of `request` raised `error`: its caller gets it, as a handler's failure."""
    start(state, request, state.records[request.method.name], state.now())
    finish(state, request, Error(error))


def holds_inline(state: ServerState, method: Method, obj: Any) -> bool:
    """A handler calls a guarded method of its own server inline: does its guard hold now?"""
    guard = method.guard
    assert guard is not None
    state.guard_evaluations += 1
    return bool(guard(obj))
