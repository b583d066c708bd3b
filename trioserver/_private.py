"""Every use of trio's private internals, each beside its public fallback, behind one switch.

trioserver's guarantees hold on public trio alone. A few private run-loop details make the
path users take faster: a handler's deadline shown without arming a timer, an idle server's
task lent its caller's scheduler step (the hand-off, `_handoff`), a waiting caller stepped on
in its server's step (the hand-back, `_handoff.answer_here`), a cancel point counted
without a coroutine layer, and the caller's effective deadline read in a loop. They are used
only with trio versions whose run loop was read and tested (`TESTED_TRIO_VERSIONS`), when
every name is found at import, and unless the environment variable ``TRIOSERVER_PRIVATE=0``
turns all of them off; then each function here does what its public fallback does.

Nothing outside this module touches a private trio name (the testing module's scheduler
hook aside, which guards its own).
"""

from __future__ import annotations

import math
import os
import types
import warnings
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, cast

import trio
from outcome import Error, Outcome, Value, acapture
from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    disable_ki_protection,
    enable_ki_protection,
    reschedule,
    wait_task_rescheduled,
)

#: trio versions whose run loop was read and tested with the private path: [low, high).
TESTED_TRIO_VERSIONS = ((0, 31), (0, 36))

if TYPE_CHECKING:
    from trio._core._run import CancelStatus  # pyright: ignore[reportPrivateUsage]
    from trio._core._run_context import RunContext  # pyright: ignore[reportPrivateUsage]
    from trio._core._traps import WaitTaskRescheduled  # pyright: ignore[reportPrivateUsage]

AbortFn = Callable[[Any], Abort]
_INF = math.inf


def _trio_version() -> tuple[int, int]:
    major, minor = trio.__version__.split(".")[:2]
    return int(major), int(minor)


def _find() -> tuple[RunContext, type[WaitTaskRescheduled], object, type[Any]] | None:
    """trio's run context and its three trap messages, if this trio has them as read."""
    low, high = TESTED_TRIO_VERSIONS
    if not low <= _trio_version() < high:
        return None
    try:
        from trio._core._run import (  # pyright: ignore[reportPrivateUsage]
            GLOBAL_RUN_CONTEXT,
            CancelStatus,
            Runner,
        )
        from trio._core._traps import (  # pyright: ignore[reportPrivateUsage]
            CancelShieldedCheckpoint,
            PermanentlyDetachCoroutineObject,
            WaitTaskRescheduled,
        )
    except ImportError:
        return None
    task_fields = (
        "_abort_func",
        "_child_nurseries",
        "_cancel_status",
        "_cancel_points",
        "_schedule_points",
        "_attempt_delivery_of_any_pending_cancel",
        "_attempt_delivery_of_pending_ki",
        "_next_send_fn",
        "_runner",
    )
    if not (
        all(hasattr(Task, name) for name in task_fields)
        and all(hasattr(trio.CancelScope, name) for name in ("_deadline", "_shield"))
        and all(hasattr(CancelStatus, name) for name in ("_scope", "_parent"))
        and all(hasattr(Runner, name) for name in ("task_exited", "reschedule", "ki_pending"))
        and _deadline_is_apart_from_its_timer()
    ):
        return None
    return (
        GLOBAL_RUN_CONTEXT,
        WaitTaskRescheduled,
        CancelShieldedCheckpoint,
        PermanentlyDetachCoroutineObject,
    )


def _deadline_is_apart_from_its_timer() -> bool:
    """Whether a scope's shown deadline (``_deadline``) is kept apart from the one armed."""
    scope = trio.CancelScope()
    scope._deadline = 12.5  # pyright: ignore[reportPrivateUsage]
    return scope.deadline == 12.5 and scope._registered_deadline == _INF  # pyright: ignore[reportPrivateUsage]


_FOUND = _find()
SUPPORTED = _FOUND is not None
"""Whether this trio is one whose private internals were read and tested."""

ENABLED = SUPPORTED and os.environ.get("TRIOSERVER_PRIVATE", "1") != "0"
"""Whether the private path is on (else every function here takes its public fallback)."""

if not SUPPORTED:
    warnings.warn(
        f"trioserver: trio {trio.__version__} is outside the versions whose internals "
        f"trioserver was tested with {TESTED_TRIO_VERSIONS}; it runs on public trio only: "
        f"same guarantees, calls to an idle server about 2x slower",
        RuntimeWarning,
        stacklevel=2,
    )

_run_context: RunContext = cast("Any", None)
_wait_trap: type[WaitTaskRescheduled] = cast("Any", None)
_shielded_trap: object = None
_detach_trap: type[Any] = cast("Any", None)
if ENABLED and _FOUND is not None:
    _run_context, _wait_trap, _shielded_trap, _detach_trap = _FOUND


# -- deadlines -------------------------------------------------------------------------


def _show_deadline_private(scope: trio.CancelScope, deadline: float) -> None:
    scope._deadline = deadline  # pyright: ignore[reportPrivateUsage]


def _show_deadline_public(scope: trio.CancelScope, deadline: float) -> None:
    scope.deadline = deadline


show_deadline: Callable[[trio.CancelScope, float], None] = (
    _show_deadline_private if ENABLED else _show_deadline_public
)
"""Make a deadline what `trio.current_effective_deadline` reports inside a scope, without
arming trio's timer for it (a handler that never suspends cannot be cut: no timer needed).

Public fallback: the deadline is set, and armed.
"""


def effective_deadline(task: Task) -> float:
    """`trio.current_effective_deadline` for the running `task`, walking its cancel scopes in
    a loop (trio's recurses once per scope: slower, and deep nesting overflows the stack).

    Public fallback: `trio.current_effective_deadline`.
    """
    if not ENABLED:
        return trio.current_effective_deadline()
    status: CancelStatus | None = task._cancel_status  # pyright: ignore[reportPrivateUsage]
    assert status is not None
    if status.effectively_cancelled:
        return -_INF
    deadline = _INF
    while status is not None:
        scope = status._scope  # pyright: ignore[reportPrivateUsage]
        if scope._deadline < deadline:  # pyright: ignore[reportPrivateUsage]
            deadline = scope._deadline  # pyright: ignore[reportPrivateUsage]
        if scope._shield:  # pyright: ignore[reportPrivateUsage]
            break
        status = status._parent  # pyright: ignore[reportPrivateUsage]
    return deadline


def deadline_scope(task: Task, deadline: float) -> trio.CancelScope | None:
    """The innermost cancel scope of the running `task` whose deadline is `deadline` (its
    effective deadline): the scope that reaching it would cancel. A call refused because that
    deadline will pass before it could finish cancels this scope, to end as the deadline would.

    Public fallback: None (the caller waits for its deadline, which then ends it the same way).
    """
    if not ENABLED:
        return None
    status: CancelStatus | None = task._cancel_status  # pyright: ignore[reportPrivateUsage]
    while status is not None:
        scope = status._scope  # pyright: ignore[reportPrivateUsage]
        if scope._deadline == deadline:  # pyright: ignore[reportPrivateUsage]
            return scope
        if scope._shield:  # pyright: ignore[reportPrivateUsage]
            return None
        status = status._parent  # pyright: ignore[reportPrivateUsage]
    return None


def has_children(task: Task) -> bool:
    """Whether `task` has a nursery open (a task it started, maybe indirectly, may be running).

    Public fallback: `trio.lowlevel.Task.child_nurseries` (a property that copies the list).
    """
    if not ENABLED:
        return bool(task.child_nurseries)
    return bool(task._child_nurseries)  # pyright: ignore[reportPrivateUsage]


# -- checkpoints and parking -------------------------------------------------------------


@types.coroutine
def _yield_shielded() -> Generator[Any, Any, None]:
    yield _shielded_trap


schedule_point: Callable[[], Awaitable[None]] = (
    _yield_shielded if ENABLED else cancel_shielded_checkpoint
)
"""`trio.lowlevel.cancel_shielded_checkpoint` (private: without its two coroutine layers)."""


def passes_cancel_point(task: Task) -> bool:
    """The cancel point of `trio.lowlevel.checkpoint_if_cancelled` for the running `task`:
    True (and counted) if nothing is to be raised; False if the caller must await that.

    Public fallback: always False (the caller awaits `checkpoint_if_cancelled`).
    """
    if not ENABLED:
        return False
    status = task._cancel_status  # pyright: ignore[reportPrivateUsage]
    if status.effectively_cancelled or task._runner.ki_pending:  # pyright: ignore[reportPrivateUsage]
        return False
    task._cancel_points += 1  # pyright: ignore[reportPrivateUsage]
    return True


@types.coroutine
def _park_private(abort: AbortFn) -> Generator[Any, Any, Outcome[Any]]:
    outcome: Outcome[Any] = yield _wait_trap(abort)
    return outcome


async def _park_public(abort: AbortFn) -> Outcome[Any]:
    outcome: Outcome[Any] = await acapture(wait_task_rescheduled, abort)
    return outcome


park: Callable[[AbortFn], Awaitable[Outcome[Any]]] = _park_private if ENABLED else _park_public
"""`trio.lowlevel.wait_task_rescheduled`, returning what the waker sent, not unwrapped.

A server's task parked here (private path) can be handed a suspended handler (`lend_step`,
`apply_trap`): what its next waker sends belongs to the handler, and is passed on as it is.
"""


@types.coroutine
def _wait_private(abort: AbortFn) -> Generator[Any, Any, Any]:
    outcome: Any = yield _wait_trap(abort)  # (an `Outcome`)
    if type(outcome) is Value:  # (a reply: its value, without `unwrap`'s two calls)
        return outcome.value  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    return outcome.unwrap()


wait: Callable[[AbortFn], Awaitable[Any]] = _wait_private if ENABLED else wait_task_rescheduled
"""`trio.lowlevel.wait_task_rescheduled` (private: without its two coroutine layers, which a
waiting caller's reply passes through)."""


# -- the hand-off: an idle server's task runs in its caller's step (private only) -------------


@enable_ki_protection
def lend_step(server: Task, scope: trio.CancelScope, deadline: float) -> AbortFn | None:
    """From now on trio's current task is `server` (parked idle), as trio has it for a running
    task, and `scope` (its handler's) shows `deadline` (as `show_deadline`); returns the abort
    function it was parked with, for `take_back`."""
    scope._deadline = deadline  # pyright: ignore[reportPrivateUsage]
    idle_abort = server._abort_func  # pyright: ignore[reportPrivateUsage]
    server._abort_func = None  # pyright: ignore[reportPrivateUsage]
    _run_context.task = server
    return idle_abort


@enable_ki_protection
def take_back(
    caller: Task,
    server: Task | None = None,
    idle_abort: AbortFn | None = None,
    scope: trio.CancelScope | None = None,
) -> None:
    """trio's current task is `caller` again (after `lend_step`), whatever happened between.

    With `server`: the handler run in the lent step ended without suspending, so `server` is
    parked idle again (with `idle_abort`), `scope` shows the deadline trio's timer holds for
    it (none: the run's timers cut handlers), and `server` gets any cancellation the handler
    left pending for it.
    """
    _run_context.task = caller
    if server is None:
        return
    if scope is not None:
        scope._deadline = scope._registered_deadline  # pyright: ignore[reportPrivateUsage]
    server._abort_func = idle_abort  # pyright: ignore[reportPrivateUsage]
    if server._cancel_status.effectively_cancelled:  # pyright: ignore[reportPrivateUsage]
        server._attempt_delivery_of_any_pending_cancel()  # pyright: ignore[reportPrivateUsage]


def apply_trap(task: Task, trap: object) -> bool:
    """Make `task`, parked, wait as if it had yielded `trap` itself: what trio's run loop does
    with a trap a task yields. Both ways of stepping a task in another's step end here: the
    hand-off (`task` is the server's, parked in `park`; the handler yielded `trap` in its
    stead) and the hand-back (`step_here`: `task` is the caller, which yielded it).

    False for a message other than trio's two waits (a foreign library's), which trio answers
    another way.
    """
    if trap is _shielded_trap:
        task._schedule_points += 1  # pyright: ignore[reportPrivateUsage]
        reschedule(task)
        return True
    if isinstance(trap, _wait_trap):
        task._schedule_points += 1  # pyright: ignore[reportPrivateUsage]
        task._cancel_points += 1  # pyright: ignore[reportPrivateUsage]
        task._abort_func = trap.abort_func  # pyright: ignore[reportPrivateUsage]
        runner = task._runner  # pyright: ignore[reportPrivateUsage]
        if runner.ki_pending and task is runner.main_task:  # (KI is outside every scope)
            task._attempt_delivery_of_pending_ki()  # pyright: ignore[reportPrivateUsage]
        if task._cancel_status.effectively_cancelled:  # pyright: ignore[reportPrivateUsage]
            task._attempt_delivery_of_any_pending_cancel()  # pyright: ignore[reportPrivateUsage]
        return True
    return False


# -- the hand-back: a waiting caller stepped in its server's step (private only) ----------------


def steps_of(task: Task) -> int:
    """How many steps `task` has taken (trio counts one as each step ends in a trap): a
    number that stays the same for the length of one step."""
    return task._schedule_points  # pyright: ignore[reportPrivateUsage]


@enable_ki_protection  # trio's state changes here; the caller's code runs in `_send`
def step_here(task: Task, outcome: Outcome[Any]) -> None:
    """Step `task`, parked in `wait` and now sent `outcome`, to its next trap, within the
    running task's step: what trio's run loop does after ``reschedule(task, outcome)``, one
    pass of the scheduler sooner. Then the running task is current again.

    As in the hand-off, trio's instruments see no step of `task`: its code runs inside the
    running task's step. A trap it yields is applied as the run loop applies it; if it
    returns or raises, trio is told that it exited, as the run loop tells it.
    """
    running = _run_context.task
    _run_context.task = task  # (until the end: trio's loop applies the trap as the task's too)
    try:
        task._abort_func = None  # pyright: ignore[reportPrivateUsage]  # (as `reschedule` does)
        task.custom_sleep_data = None
        final: Outcome[Any] | None = None
        message: Any = None
        try:
            message = _send(task, outcome)
        except StopIteration as stop:
            final = Value(stop.value)
        except BaseException as exc:
            tb = exc.__traceback__  # (less this module's frames, as trio drops its own)
            while tb is not None and tb.tb_frame.f_code in _OWN_FRAMES:
                tb = tb.tb_next
            final = Error(exc.with_traceback(tb))
            del tb
        if final is not None:  # (outside the except blocks: no stray __context__, as in trio)
            task._runner.task_exited(task, final)  # pyright: ignore[reportPrivateUsage]
        elif not apply_trap(task, message):
            _foreign_message(task, message)
    finally:
        _run_context.task = running


def _foreign_message(task: Task, message: Any) -> None:
    """`task`, stepped by `step_here`, yielded what is not one of trio's waits: do what
    trio's run loop does with it."""
    runner: Any = task._runner  # pyright: ignore[reportPrivateUsage]
    task._schedule_points += 1  # pyright: ignore[reportPrivateUsage]
    if type(message) is _detach_trap:
        runner.task_exited(task, message.final_outcome)
    else:  # a foreign library's message: trio throws this into the task, and so do we
        runner.reschedule(
            task,
            TypeError(
                f"trio.run received unrecognized yield message {message!r}. Are you trying "
                f"to use a library written for some other framework like asyncio? That "
                f"won't work without some kind of compatibility shim."
            ),
        )
        task._next_send_fn = task.coro.throw  # pyright: ignore[reportPrivateUsage]


@disable_ki_protection  # the task's code: a KeyboardInterrupt may come at once, as anywhere
def _send(task: Task, outcome: Outcome[Any]) -> Any:
    return task.context.run(task.coro.send, outcome)


_OWN_FRAMES = frozenset((step_here.__code__, _send.__code__))  # (trio marks the code in place)
