"""One run of a server, as data: its mailbox, its task, the request it runs, its counters.

The modules of the call path act on it: `_caller` (the caller's side), `_handoff` (a request
run in its caller's step), `_loop` (the server's task), `_reply` (a request's start and end,
and what they count). This module holds the state, its snapshot and its event reports.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from outcome import Error, Value
from trio.lowlevel import Abort, Task, reschedule

from ._errors import CallTimeout
from ._instrument import (
    CallInfo,
    Hook,
    Instrument,
    InstrumentList,
    Instruments,
    Listeners,
    remove_raising,
    run_instruments,
)
from ._mailbox import Mailbox
from ._request import (
    ABANDONED,
    GUARDED,
    QUEUED,
    RUNNING,
    TIMED_OUT,
    Request,
    Runner,
    StoredRequest,
    cut_message,
    deliver,
)
from ._statistics import MethodRecorder, ServerStatistics
from ._threads import WorkerThreads
from ._timers import timers

if TYPE_CHECKING:
    from ._spec import ServerSpec

logger = logging.getLogger("trioserver")
# Builds a `CallInfo` from the tuple of its fields (a named tuple's own constructor takes a
# call of its own per event); tests wrap it.
_tuple_new: Any = tuple.__new__  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
build_info: Callable[[type[CallInfo], tuple[object, ...]], CallInfo] = _tuple_new
_STARTED = frozenset(("call_started", "call_finished"))  # hooks whose CallInfo has started_at
_NOT_ENDED = frozenset(("call_queued", "call_started"))  # hooks whose CallInfo has no ended_at

_INF = math.inf

RETIRE_AFTER = 0.1
"""Seconds (on trio's clock) without a request after which an idle server's task ends: it
ends between one and two of these after the server's last request."""

RETIRE: Any = object()  # sent to an idle server's parked task: end (`ServerState.timer_fired`)


class Records(dict[str, MethodRecorder]):
    """Per-method recorders, made on a method's first request (idle servers are many)."""

    __slots__ = ()  # (no __dict__ nor __weakref__: 24 bytes a server)

    def __missing__(self, name: str) -> MethodRecorder:
        record = self[name] = MethodRecorder()
        return record


class Block:
    """A handler in a released block (`_released`): it holds no server until it retakes it."""

    __slots__ = ("cancelled", "entered_at", "request", "scope", "snapshot", "source", "task")

    def __init__(
        self,
        request: Request,
        task: Task,
        scope: trio.CancelScope,
        cancelled: bool,
        entered_at: float,
    ) -> None:
        self.request = request
        self.task = task  # the handler's task, which was the server's
        self.scope = scope  # the handler's cancel scope: its deadline and its cut
        self.cancelled = cancelled  # we cancelled `scope` (as `ServerState.scope_cancelled`)
        self.entered_at = entered_at
        self.snapshot = contextvars.copy_context()  # its contextvars as the block began
        # the contextvars of the task that held the server last, as the handler retakes it
        self.source: contextvars.Context | None = None


class ServerState:
    """One run of a server object, from `open_server` to its stop."""

    __slots__ = (
        "answered_in",
        "blocks",
        "cancelled",
        "context",
        "current",
        "dropped",
        "durable",
        "failed",
        "fatal",
        "guard_evaluations",
        "guards_seen",
        "handled",
        "instruments",
        "keeper",
        "last_started",
        "longest_block",
        "loop_blocks",
        "mailbox",
        "now",
        "numbered",
        "nursery",
        "obj",
        "parked",
        "records",
        "released_seconds",
        "resume",
        "retakers",
        "retire_at",
        "retire_number",
        "scope",
        "scope_cancelled",
        "serving_marked",
        "shed",
        "spawns",
        "spec",
        "start_error",
        "started",
        "stop_error",
        "stopping",
        "task",
        "thread",
        "threads",
        "timed_out",
        "timer_at",
        "timers",
        "turns",
        "withdrawn",
    )

    def __init__(
        self,
        spec: ServerSpec,
        obj: object,
        nursery: trio.Nursery | None,
        instruments: tuple[Instrument, ...] = (),
    ) -> None:
        self.spec = spec
        self.obj = obj
        self.nursery = nursery  # where its tasks run (None until `serve` has started it)
        # `serve`'s: the servers its nursery hosts with no task of their own (else None)
        self.keeper: set[ServerState] | None = None
        self.thread = threading.get_ident()  # its trio run's thread: another run is elsewhere
        self.mailbox = Mailbox(spec.mailbox_size)
        self.timers = timers()  # the run's: handlers' deadlines, and this task's retirement
        self.timer_at = _INF  # when its entry in `timers` is due (`look_at`; INF: none)
        self.now = self.timers.now  # trio's clock (the run's bound method, not one a server)
        self.task: Task | None = None  # the server's task now; None while it is idle
        self.spawns = 0  # tasks started: the one being started checks it is still wanted
        self.context = contextvars.copy_context()  # the server's contextvars
        # `SERVING` is set in them (by `mark_serving`) once a request is first served: a
        # server that never serves keeps its opener's mapping (a new one is 136 bytes)
        self.serving_marked = False
        self.current: Request | None = None  # the request whose handler holds the server
        # handlers in released blocks (`_released`), and those waiting to take the server back
        self.blocks: dict[Request, Block] | None = None
        self.retakers: list[Block] | None = None
        self.released_seconds = 0.0
        self.parked = False  # the server's task is parked idle: a caller may lend it its step
        # a handler that began in its caller's step and suspended (or raised a BaseException),
        # for the server's task to go on with: (coroutine, request, what to yield or raise)
        self.resume: tuple[Any, Request, Any] | None = None
        # the step of its task (`_private.steps_of`) that last ran a waiting caller on
        # (`_handoff.answer_here`): one a step
        self.answered_in = -1
        self.retire_at = _INF  # when the task ends if no request comes (INF: not retiring)
        self.retire_number = 0  # `numbered` when it parked: no request since means idle
        self.last_started: Request | None = None
        # the running handler's; replaced once cancelled; unset while the server has no task
        self.scope: trio.CancelScope
        self.scope_cancelled = False  # we cancelled `scope` (a caller left, or its timer fired)
        self.stopping = False
        self.started: trio.Event | None = trio.Event()  # set, then dropped, once on_start ends
        self.start_error: BaseException | None = None
        self.fatal: BaseException | None = None
        self.stop_error: BaseException | None = None
        self.records = Records()
        self.threads = WorkerThreads() if spec.threaded else None
        self.durable: Runner | None = None  # its durable casts' runner (`_durable`), if any
        self.loop_blocks = 0
        self.longest_block = 0.0
        self.numbered = 0
        self.withdrawn = 0
        self.shed = 0
        self.dropped = 0
        self.handled = 0
        self.failed = 0
        self.guard_evaluations = 0
        # handlers that ended (or released the server): what guards read may have changed
        self.turns = 0
        self.guards_seen = -1  # `turns` when the waiting guards were last evaluated
        self.timed_out = 0
        self.cancelled = 0
        shared = run_instruments()
        # (`instruments.listeners`: what a request arriving now keeps, and its events read)
        self.instruments: InstrumentList | Instruments = (
            Instruments(InstrumentList(instruments), shared) if instruments else shared
        )

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            queued=self.mailbox.queued,
            waiting_on_guard=self.mailbox.guarded,
            running=0 if self.current is None else 1,
            released=len(self.blocks or ()),
            released_seconds=self.released_seconds,
            peak_queued=self.mailbox.peak_queued,
            withdrawn=self.withdrawn,
            shed=self.shed,
            dropped=self.dropped,
            handled=self.handled,
            failed=self.failed,
            timed_out=self.timed_out,
            cancelled=self.cancelled,
            guard_evaluations=self.guard_evaluations,
            loop_blocks=self.loop_blocks,
            longest_block=self.longest_block,
            abandoned_threads=0 if self.threads is None else self.threads.abandoned,
            durable_stored=0 if self.durable is None else self.durable.stored,
            durable_running=0 if self.durable is None else self.durable.running(),
            durable_retried=0 if self.durable is None else self.durable.retried,
            durable_dead=0 if self.durable is None else self.durable.dead,
            threads_abandoned=0 if self.threads is None else self.threads.abandoned_total,
            methods={
                name: record.snapshot()
                for name, record in self.records.items()
                if record.queue_wait.count or record.service.count
            },
        )

    # -- the server's entry in the run's timers ----------------------------------------

    def look_at(self, when: float) -> None:
        """Have the run's timers call `timer_fired` by `when` (trio's clock): for the running
        handler's deadline (`_loop`, `_handoff`, as it suspends), or the task's retirement.

        The server keeps one entry, the earliest asked for; a later time costs nothing (the
        entry, when it fires, looks again)."""
        if when < self.timer_at:
            self.timer_at = when
            self.timers.add(when, self)

    def retire_later(self) -> None:
        """The task parks idle (not yet retiring): end it if no request comes within
        `RETIRE_AFTER`."""
        self.retire_number = self.numbered
        self.retire_at = self.now() + RETIRE_AFTER
        self.look_at(self.retire_at)

    def timer_fired(self, when: float) -> None:
        """The server's entry is due: cut the running handler if its deadline has passed, end
        the task if it has been idle since `retire_later`, and look again at what is not due
        yet. (An entry that an earlier one replaced does nothing: the earlier one looked.)"""
        if when != self.timer_at:
            return
        self.timer_at = _INF
        now = self.now()
        current = self.current
        if current is not None and current.state == RUNNING and not self.scope_cancelled:
            if current.cut_at <= now:
                self.deadline_passed(current)
            elif current.cut_at != _INF:
                self.look_at(current.cut_at)
        if self.retire_at > now:  # (INF: not retiring)
            if self.retire_at != _INF:
                self.look_at(self.retire_at)
            return
        self.retire_at = _INF
        if self.task is None or self.stopping or self.mailbox.guarded:
            return  # (while guarded calls wait, it stays; parking again looks again)
        if self.parked and self.retire_number == self.numbered:
            self.parked = False
            reschedule(self.task, Value(RETIRE))
        else:
            self.retire_later()  # (a busy server: one entry per period)

    def timer_live(self, when: float) -> bool:
        return when == self.timer_at  # (the others were replaced by an earlier one)

    def retired(self, context: contextvars.Context) -> None:
        """The task ended idle: the next one gets its contextvars; what only a running task
        needs goes (idle servers are many)."""
        self.context = context
        self.task = None
        self.last_started = None
        del self.scope  # (its next task opens another)
        self.mailbox.shrink()

    def what_stopped_it(self, failure: BaseException | None) -> BaseException | None:
        """What leaving the server raises, besides `failure` (what its opener's block raised):
        a handler's fatal error, then `on_start`'s, then `failure`, then `on_stop`'s; an
        `on_stop` error shadowed by another is logged. None if it is `failure` or nothing."""
        if self.stop_error is not None and (self.fatal or self.start_error or failure):
            logger.error("%s.on_stop raised", self.spec.name, exc_info=self.stop_error)
        error = self.fatal or self.start_error or failure or self.stop_error
        return None if error is failure else error

    # -- a running handler's end, from outside it ----------------------------------------

    def deadline_passed(self, request: Request) -> None:
        """The run's timers: the suspended handler of `request` reached its deadline. Cut it;
        its caller hears `CallTimeout` now, without waiting for the handler to exit (a cut
        cast is counted and logged as it exits)."""
        if request.task is not None:
            request.state = TIMED_OUT
            deliver(request, Error(CallTimeout(cut_message(request))))
        self.cut(request, f"{request.method.label} reached its deadline")

    def caller_left(self, request: Request) -> Abort:
        """trio is cancelling a waiting caller (`Request.abort`): withdraw its request if it
        is queued, or cut its running handler."""
        request.waiting = False
        if request.state == QUEUED or request.state == GUARDED:
            self.mailbox.withdraw(request)
            self.withdrawn += 1
            if "call_withdrawn" in request.heard.hooked:
                self.emit("call_withdrawn", request, "withdrawn", "its caller left")
            return Abort.SUCCEEDED
        assert request.state == RUNNING, request.state
        if self.now() >= request.cut_at:  # cancelled by its own deadline, the handler's
            request.state = TIMED_OUT
            reason = f"{request.method.label} reached its deadline"
        else:
            request.state = ABANDONED
            reason = f"the caller of {request.method.label} left"
        self.cut(request, reason)
        return Abort.SUCCEEDED

    def cut(self, request: Request, reason: str) -> None:
        """Cancel the running handler of `request`: the server's, or a released one."""
        block = None if self.blocks is None else self.blocks.get(request)
        if block is None:
            self.scope_cancelled = True
            self.scope.cancel(reason=reason)
        else:
            block.cancelled = True
            block.scope.cancel(reason=reason)

    # -- reports ------------------------------------------------------------------------

    def emit(
        self, hook: Hook, request: Request, outcome: str | None = None, reason: str | None = None
    ) -> None:
        """Tell the instruments that heard `request` arrive what happened to it (called when
        one of them hooks `hook`)."""
        method = request.method
        info = build_info(  # (`tuple.__new__`: a sixth of the named tuple's own call)
            CallInfo,
            (
                self.spec.name,  # server
                method.label,  # method
                method.kind,  # kind
                request.number,  # number
                request.queued_at,  # queued_at
                request.started_at if hook in _STARTED else None,  # started_at
                None if hook in _NOT_ENDED else self.now(),  # ended_at
                outcome,
                reason,
                request.row.id if type(request) is StoredRequest else None,  # stored_as
                id(self.obj),  # server_id
            ),
        )
        self.notify(hook, info, request.heard)

    def notify(self, hook: Hook, info: CallInfo, listeners: Listeners) -> None:
        """Call `listeners`' `hook`s with `info`; remove, everywhere, an instrument that
        raises (it hears nothing more)."""
        for instrument, bound in listeners.calls[hook]:
            try:
                bound(info)
            except Exception:
                logger.exception("instrument %r raised in %s; removed", instrument, hook)
                remove_raising(instrument)  # (from `listeners` too: it has a hook, so it is live)

    def loop_blocked(self, seconds: float, threshold: float) -> None:
        """A step of the server's task held the event loop for `seconds` (`BlockDetector`)."""
        self.loop_blocks += 1
        self.longest_block = max(self.longest_block, seconds)
        request = self.current or self.last_started
        doing = "on_start or on_stop" if request is None else request.method.label
        logger.warning(
            "%s held the event loop for %.3f s (threshold %.3f s) in %s: blocking code in a "
            "handler freezes every task; use @call(thread=True) for it",
            self.spec.name,
            seconds,
            threshold,
            doing,
        )


class StepWatch:
    """Who times the current scheduler step: a `BlockDetector` sets itself here around each
    step, with the task stepping, so that a handler run in its caller's step (nested ones
    too) is timed as well (rarely set). A detector removed during a step is left here, as
    trio calls no hook of it after that: `timing` tells whether one times a given task's
    step."""

    detector: Any = None
    task: Task | None = None

    def timing(self, task: Task) -> Any:
        """The detector timing this step of `task`, if any."""
        return self.detector if self.task is task else None


step_watch = StepWatch()
