"""Hand-off: an idle server's task runs a request inside its caller's scheduler step.

A round trip through another trio task costs two task switches, each a pass of trio's
scheduler; an uncontended `trio.Lock` costs one checkpoint. When the server is idle (its
task parked, its mailbox empty, no handler running), the caller does not wake the server's
task and wait for it: it lends its own step. For the length of the handler, trio's notion
of the current task *is the server's task*: `trio.lowlevel.current_task` returns it, the
handler runs in the server task's `contextvars.Context`, under the server task's cancel
scopes (its deadline is the request's, as always), and nurseries it opens belong to the
server's task. Only the Python frames below the handler are the caller's.

A handler that returns or raises without suspending is done: its caller gets the outcome
after a schedule point of its own, having paid no task switch. A handler that suspends
yields one of trio's traps; it is applied to the server's task exactly as trio's run loop
applies a trap to the task that yielded it (`apply_trap`), so the server's task is now
parked *in the handler's wait*, and whoever wakes it (an event, a lock, a timer, a
cancellation) wakes the server's task, which drives the rest of the handler in its own
steps. The caller then waits for the reply as it does for any request.

This leans on trio's private run-loop internals (the run context's current task, a task's
abort function and cancel status, the trap classes), so it is used only with trio versions
whose run loop was read and tested (`TESTED_TRIO_VERSIONS`) and when those internals are
found at import. Otherwise, or with the environment variable ``TRIOSERVER_HANDOFF=0``,
every request goes through the mailbox and the server's task: the same guarantees, one
task switch more each way.
"""

from __future__ import annotations

import math
import os
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import trio
from outcome import Outcome, acapture
from trio.lowlevel import Abort, Task, reschedule, wait_task_rescheduled

#: trio versions whose run loop was read and tested with the hand-off.
TESTED_TRIO_VERSIONS = ((0, 31), (0, 36))

AbortFn = Callable[[Any], Abort]


def _trio_version() -> tuple[int, int]:
    major, minor = trio.__version__.split(".")[:2]
    return int(major), int(minor)


def _find_internals() -> tuple[Any, type, object] | None:
    """trio's run context and its two trap messages, if this trio has them as expected."""
    low, high = TESTED_TRIO_VERSIONS
    try:
        if not low <= _trio_version() < high:
            return None
        from trio._core._run import (  # pyright: ignore[reportPrivateUsage]
            GLOBAL_RUN_CONTEXT,
            CancelStatus,
        )
        from trio._core._traps import (  # pyright: ignore[reportPrivateUsage]
            CancelShieldedCheckpoint,
            WaitTaskRescheduled,
        )
    except (ImportError, ValueError):  # pragma: no cover
        return None
    wanted = (
        "_abort_func",
        "_cancel_status",
        "_cancel_points",
        "_schedule_points",
        "_attempt_delivery_of_any_pending_cancel",
    )
    scope_fields = ("_deadline", "_shield", "_cancel_status")
    status_fields = ("_scope", "_parent", "effectively_cancelled")
    if not (
        all(hasattr(Task, name) for name in wanted)
        and all(hasattr(trio.CancelScope, name) for name in scope_fields)
        and all(hasattr(CancelStatus, name) for name in status_fields)
    ):  # pragma: no cover
        return None
    return GLOBAL_RUN_CONTEXT, WaitTaskRescheduled, CancelShieldedCheckpoint


_INTERNALS = _find_internals()
SUPPORTED = _INTERNALS is not None
"""Whether this trio's run loop is one the hand-off was checked against."""

ENABLED = SUPPORTED and os.environ.get("TRIOSERVER_PRIVATE", "1") != "0"
"""Whether idle servers run requests in their callers' steps (else always via the mailbox)."""

_found: tuple[Any, Any, Any] = _INTERNALS if _INTERNALS is not None else (None, None, None)
RUN_CONTEXT, _WAIT, _SHIELDED_CHECKPOINT = _found


@types.coroutine
def _park_here(abort: AbortFn) -> Generator[Any, Any, Outcome[Any]]:
    outcome: Outcome[Any] = yield _WAIT(abort)
    return outcome


async def _park_public(abort: AbortFn) -> Outcome[Any]:  # pragma: no cover
    outcome: Outcome[Any] = await acapture(wait_task_rescheduled, abort)
    return outcome


park: Callable[[AbortFn], Awaitable[Outcome[Any]]] = (
    _park_here if _WAIT is not None else _park_public
)
"""`trio.lowlevel.wait_task_rescheduled`, returning what the waker sent, not unwrapped.

A server's task parked here can be handed a suspended handler (`apply_trap`): what its next
waker sends belongs to the handler, and is passed on to it as it is.
"""


@types.coroutine
def schedule_point() -> Generator[Any, Any, None]:
    """`trio.lowlevel.cancel_shielded_checkpoint`, without its two coroutine layers."""
    yield _SHIELDED_CHECKPOINT


def passes_cancel_point(task: Task) -> bool:
    """The cancel point of `trio.lowlevel.checkpoint_if_cancelled` for the running `task`:
    True (and counted) if nothing is to be raised; False if the caller must await that."""
    if task._cancel_status.effectively_cancelled or task._runner.ki_pending:  # pyright: ignore[reportPrivateUsage]
        return False
    task._cancel_points += 1  # pyright: ignore[reportPrivateUsage]
    return True


def apply_trap(task: Task, trap: Any) -> bool:
    """Make `task`, parked in `park`, wait as a handler that yielded `trap` in its stead would.

    This is what trio's run loop does with a trap a task yields. False for a message other
    than trio's two waits (a foreign library's, or a detach): `task` must be woken and yield
    it itself, so that trio answers it as it would.
    """
    task._schedule_points += 1  # pyright: ignore[reportPrivateUsage]
    if trap is _SHIELDED_CHECKPOINT:
        reschedule(task)
        return True
    if type(trap) is _WAIT:
        task._cancel_points += 1  # pyright: ignore[reportPrivateUsage]
        task._abort_func = trap.abort_func  # pyright: ignore[reportPrivateUsage]
        task._attempt_delivery_of_any_pending_cancel()  # pyright: ignore[reportPrivateUsage]
        return True
    task._schedule_points -= 1  # pyright: ignore[reportPrivateUsage]
    return False


def effective_deadline(task: Task) -> float:
    """`trio.current_effective_deadline` for `task`, walking its cancel scopes in a loop.

    trio's own recurses once per enclosing scope (slower, and deep nesting overflows the
    stack); the answer is the same: -inf if cancelled, else the earliest deadline of the
    scopes up to and including the innermost shielded one.
    """
    status: Any = task._cancel_status  # pyright: ignore[reportPrivateUsage]
    if status.effectively_cancelled:
        return -math.inf
    deadline = math.inf
    while True:
        scope = status._scope
        if scope._deadline < deadline:
            deadline = scope._deadline
        status = status._parent
        if status is None or scope._shield:
            return deadline
