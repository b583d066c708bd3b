"""A running server: callers hand requests to its mailbox; its task runs them one at a time.

The call path is built for speed; no task and no cancel scope is made per request:

- When the server is idle (its task parked, nothing queued or running), the caller lends its
  own scheduler step to the server's task, which runs the handler in it (`_handoff`): a
  handler that does not suspend costs no task switch; one that does is then driven by the
  server's task, as every request is when the server is busy.
- The handler runs in the server's task under one long-lived cancel scope. Its deadline,
  ``min(start + budget, caller's deadline)``, is written where `trio.current_effective_deadline`
  sees it but registered with trio's timer heap only if the handler suspends: a handler that
  finishes without suspending cannot be cut, so it costs no timer. A scope that has been
  cancelled is replaced (a cancelled scope cannot be reused).
- When a call's handler suspends, its caller is woken once and starts its own timer at that
  deadline: when it fires, the caller raises `CallTimeout` right then and cancels the handler,
  even if the handler's shielded cleanup keeps the server busy a while longer.
- An idle server's task parks, with a retire timer on its scope; when the timer finds that no
  request came since it was set, the task ends (servers may be many; an idle one keeps no
  task), and the next request starts another in the server's nursery.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

import trio
from outcome import Error, Outcome, Value
from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from . import _handoff
from ._admission import refusal_at_queue, refusal_at_start
from ._errors import (
    CallTimeout,
    DeadlockError,
    ServerCrashed,
    ServerOverloaded,
    ServerStopped,
    TrioServerError,
)
from ._instrument import CallInfo, Hook, Instrument, Instruments, run_instruments
from ._mailbox import (
    ABANDONED,
    DONE,
    DROPPED,
    QUEUED,
    RUNNING,
    STOPPED,
    TIMED_OUT,
    WITHDRAWN,
    Mailbox,
    Request,
)
from ._statistics import MethodRecorder, ServerStatistics
from ._threads import WorkerThreads

if TYPE_CHECKING:
    from ._spec import Method, ServerSpec

logger = logging.getLogger("trioserver")

_INF = math.inf


class _Expired(Exception):
    """Sent to a caller whose deadline passed while its request was queued."""


_SUSPENDED = object()  # sent to a caller whose handler suspended: time to start its timer
_SPAWNING: Any = object()  # the server's task while it is being started
_RAISE: Any = object()  # in `Runtime.resume`: the handler raised a BaseException to re-raise
_HANDED_OVER: Any = object()  # from `Runtime._run_here`: the server's task goes on with it
_SETTLED: Any = object()  # from `Runtime._run_here`: the reply is in `request.outcome`

RETIRE_AFTER = 0.1
"""Seconds (on trio's clock) without a request after which an idle server's task ends: it
ends between one and two of these after the server's last request."""


def _private_deadline_works() -> bool:
    """Whether trio keeps a scope's deadline in ``_deadline``, apart from its registration.

    Checked once, at import: trio's attribute is private, so with a trio that stores it
    otherwise we register every handler's deadline (correct, a few microseconds slower).
    """
    scope = trio.CancelScope()
    try:
        scope._deadline = 12.5  # pyright: ignore[reportPrivateUsage]
    except AttributeError:  # pragma: no cover
        return False
    return scope.deadline == 12.5 and getattr(scope, "_registered_deadline", None) == _INF


_PRIVATE_DEADLINE = _private_deadline_works()
_HANDOFF = _handoff.ENABLED and _PRIVATE_DEADLINE


def _public_effective_deadline(task: Task) -> float:
    return trio.current_effective_deadline()


_effective_deadline = (
    _handoff.effective_deadline if _handoff.SUPPORTED else _public_effective_deadline
)


class StepWatch:
    """Who times the current scheduler step: a `BlockDetector` sets itself here around each
    step, so that a handler run in its caller's step is timed too (rarely set)."""

    detector: Any = None


step_watch = StepWatch()


def _seconds(budget: float | None) -> str:
    return "no budget" if budget is None else f"its budget of {budget:g} s"


def _without_cancelled(exc: BaseException) -> BaseException | None:
    """`exc` less its `trio.Cancelled` parts; None if it holds nothing else."""
    if isinstance(exc, trio.Cancelled):
        return None
    if isinstance(exc, BaseExceptionGroup):
        group: BaseExceptionGroup[BaseException] = exc  # pyright: ignore[reportUnknownVariableType]
        return group.split(trio.Cancelled)[1]
    return exc


def _started_by(task: Task, ancestor: Task) -> bool:
    """Whether `task` descends from `ancestor` (was started, maybe indirectly, in its nurseries)."""
    nursery = task.parent_nursery
    while nursery is not None:
        parent = nursery.parent_task
        if parent is ancestor:
            return True
        nursery = parent.parent_nursery
    return False


def _drive(coro: Coroutine[Any, Any, Any], value: Any, trap: Any) -> Generator[Any, Any, Any]:
    """Drive a suspended handler's coroutine from the server's task: yield `trap` (if any) for
    it, send what comes back, and so on until it returns."""
    while True:
        if trap is not None:
            try:
                value = yield trap
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # trio throws only for a message it does not know
                try:
                    trap = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
        try:
            trap = coro.send(value)
        except StopIteration as stop:
            return stop.value


_go_on = types.coroutine(_drive)


class NotRunning:
    """The state of a server object that is not running: every request gets `ServerStopped`
    (`ServerCrashed` after a crash)."""

    __slots__ = ("error", "last", "spec", "why")

    def __init__(
        self,
        spec: ServerSpec,
        why: str,
        last: Runtime | None = None,
        error: type[TrioServerError] = ServerStopped,
    ) -> None:
        self.spec = spec
        self.why = why
        self.last = last  # the run that ended, for statistics
        self.error = error

    def _refuse(self, method: Method) -> TrioServerError:
        return self.error(f"{method.label}: {self.spec.name} is not running: {self.why}")

    async def call(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
        last = self.last
        if last is not None and last.task is current_task():  # on_stop calling its own server
            return await last._inline(method, args, kwargs)  # pyright: ignore[reportPrivateUsage]
        raise self._refuse(method)

    async def cast(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> None:
        raise self._refuse(method)

    def statistics(self) -> ServerStatistics:
        return ServerStatistics() if self.last is None else self.last.statistics()


class _Records(dict[str, MethodRecorder]):
    """Per-method recorders, made on a method's first request (idle servers are many)."""

    def __missing__(self, name: str) -> MethodRecorder:
        record = self[name] = MethodRecorder()
        return record


class Runtime:
    """One run of a server object, from `open_server` to its stop."""

    __slots__ = (
        "cancelled",
        "context",
        "current",
        "dropped",
        "failed",
        "fatal",
        "handled",
        "instruments",
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
        "resume",
        "retire_at",
        "retire_number",
        "scope",
        "scope_cancelled",
        "shed",
        "spec",
        "start_error",
        "started",
        "stop_error",
        "stopping",
        "task",
        "threads",
        "timed_out",
        "withdrawn",
    )

    def __init__(
        self,
        spec: ServerSpec,
        obj: object,
        nursery: trio.Nursery,
        instruments: tuple[Instrument, ...] = (),
    ) -> None:
        self.spec = spec
        self.obj = obj
        self.nursery = nursery
        self.mailbox = Mailbox(spec.mailbox_size)
        self.now = trio.lowlevel.current_clock().current_time
        self.task: Task | None = None  # the server's task now; None while it is idle
        self.context = contextvars.copy_context()  # the server's contextvars
        self.current: Request | None = None  # the request whose handler is running
        self.parked = False  # the server's task is parked idle: a caller may lend it its step
        # a handler that began in its caller's step and suspended (or raised a BaseException),
        # for the server's task to go on with: (coroutine, request, what to yield or raise)
        self.resume: tuple[Any, Request, Any] | None = None
        self.retire_at = _INF  # when the retire timer on `scope` fires (inf: not set)
        self.retire_number = 0  # `numbered` when it was set: no request since means idle
        self.last_started: Request | None = None
        self.scope: trio.CancelScope  # the running handler's; replaced once cancelled
        self.scope_cancelled = False  # we cancelled `scope` (a caller left, or its timer fired)
        self.stopping = False
        self.started: trio.Event | None = trio.Event()  # set, then dropped, once on_start ends
        self.start_error: BaseException | None = None
        self.fatal: BaseException | None = None
        self.stop_error: BaseException | None = None
        self.records = _Records()
        self.threads = WorkerThreads() if spec.threaded else None
        self.loop_blocks = 0
        self.longest_block = 0.0
        self.numbered = 0
        self.withdrawn = 0
        self.shed = 0
        self.dropped = 0
        self.handled = 0
        self.failed = 0
        self.timed_out = 0
        self.cancelled = 0
        shared = run_instruments()
        self.instruments: list[Instrument] | Instruments = (
            Instruments(list(instruments), shared) if instruments else shared
        )

    # -- the caller's side ------------------------------------------------------

    async def call(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
        if self.stopping:
            raise ServerStopped(f"{method.label}: {self.spec.name} is not running: it was stopped")
        task = current_task()
        if task is self.task:
            return await self._inline(method, args, kwargs)
        if self.current is not None and _started_by(task, self.task):  # type: ignore[arg-type]
            raise DeadlockError(
                f"{method.label} was called from a task started by the running handler "
                f"{self.current.method.label}: it would wait for the handler, which waits "
                f"for the task. Call it from the handler itself (runs inline) or cast it."
            )
        deadline = _effective_deadline(task)
        waited = self.mailbox.capacity is not None and self.mailbox.full()
        if waited:
            await self._wait_for_room(method)
        now = self.now()
        record = self.records[method.name]
        if method.admission and deadline != _INF:
            refusal = refusal_at_queue(self, record, deadline, now)
            if refusal is not None:
                if waited:
                    self.mailbox.pass_room()
                await checkpoint()
                raise self._refuse(method, now, refusal)
        self.numbered += 1
        request = Request(
            method, args, kwargs, task, deadline, self, now, record.expected, self.numbered
        )
        # An idle server runs the request in this step (instruments see every one queued).
        idle = self.parked and _HANDOFF and not self.instruments
        if idle and now < deadline and not method.thread:
            if not _handoff.passes_cancel_point(task):
                await checkpoint_if_cancelled()  # raises Cancelled (or a KeyboardInterrupt)
            result = self._run_here(request, record)
            if result is _HANDED_OVER:
                return await self._wait_until_cut(request)
            await _handoff.schedule_point()
            if result is _SETTLED:
                assert request.outcome is not None
                return request.outcome.unwrap()
            return result
        self.mailbox.put(request)
        self._wake()
        if self.instruments:
            self._emit("call_queued", request)
        try:
            result = await wait_task_rescheduled(request.abort)
        except _Expired:
            await checkpoint()  # the caller's own cancellation comes first
            raise CallTimeout(
                f"{method.label} never started: its caller's deadline passed while it was queued"
            ) from None
        if result is _SUSPENDED:
            return await self._wait_until_cut(request)
        return result

    def _wake(self) -> None:
        """A request was queued: wake the server's parked task, or start one if it has none."""
        if self.parked:
            self.parked = False
            reschedule(self.task)  # type: ignore[arg-type]
        elif self.task is None:
            self.spawn()

    def _run_here(self, request: Request, record: MethodRecorder) -> Any:
        """The server is idle: run `request` in its task, within this caller's step (`_handoff`).

        If the handler returns without suspending, that is the reply: returned. If it raises,
        the reply is settled in `request.outcome` (`_SETTLED`). If it suspends, the server's
        task waits in its stead and goes on with it (`_HANDED_OVER`); the caller waits for
        the reply as for a queued request, from then on.
        """
        caller: Any = request.task
        server: Any = self.task
        method = request.method
        obj = self.obj
        now = request.queued_at
        budget = method.budget
        cut_at = request.deadline
        if budget is not None and now + budget < cut_at:
            cut_at = now + budget
        request.cut_at = cut_at
        request.state = RUNNING
        request.waiting = False  # a reply is left in `request.outcome` until the caller parks
        record.queue_wait.add(0.0)
        self.current = self.last_started = request
        self.parked = False
        scope = self.scope
        scope._deadline = cut_at  # pyright: ignore[reportPrivateUsage]
        detector = step_watch.detector
        began = time.perf_counter() if detector is not None else 0.0
        # From here to `finally`, trio's current task is the server's: its step is ours.
        run_context = _handoff.RUN_CONTEXT
        idle_abort = server._abort_func
        server._abort_func = None  # as trio has it for a running task
        run_context.task = server
        result: Any = None
        handler: Any = None
        failure: BaseException | None = None
        trap: Any = None  # what the handler yielded, if it suspended
        try:
            if not method.is_async:
                if request.kwargs is None:
                    result = server.context.run(method.run, obj, *request.args)
                else:
                    result = server.context.run(method.run, obj, *request.args, **request.kwargs)
            else:
                if request.kwargs is None:
                    handler = method.run(obj, *request.args)
                else:
                    handler = method.run(obj, *request.args, **request.kwargs)
                try:
                    trap = server.context.run(handler.send, None)
                except StopIteration as stop:
                    result = stop.value
        except BaseException as exc:
            failure = exc
        finally:
            run_context.task = caller
        if detector is not None:
            self._timed(time.perf_counter() - began, detector)
        if trap is not None:
            return self._hand_over(request, handler, trap)
        if failure is not None and not isinstance(failure, Exception):
            # KeyboardInterrupt, SystemExit...: the server's task raises it, as if it ran there
            return self._hand_over(request, failure, _RAISE)
        server._abort_func = idle_abort  # parked idle again
        self.parked = True
        self.current = None
        scope._deadline = scope._registered_deadline  # pyright: ignore[reportPrivateUsage]
        if server._cancel_status.effectively_cancelled:  # the handler cancelled the server
            server._attempt_delivery_of_any_pending_cancel()
        if failure is None and request.state == RUNNING:  # the common case, inlined
            ended = self.now()
            record.ended(ended - now, ended)
            self.handled += 1
            request.state = DONE
            return result
        self._settle(request, Value(result) if failure is None else Error(failure))
        return _SETTLED

    def _hand_over(self, request: Request, handler: Any, trap: Any) -> Any:
        """The handler run in this caller's step suspended (yielded `trap`), or raised what
        only the server's task may raise (`handler` is then the error, `trap` is `_RAISE`):
        the server's task goes on with it."""
        server: Any = self.task
        self._disarm_retire(request.cut_at)
        if trap is _RAISE or not _handoff.apply_trap(server, trap):
            self.resume = (handler, request, trap)
            reschedule(server)  # it raises the error, or yields the foreign message, itself
        else:
            self.resume = (handler, request, None)
        return _HANDED_OVER

    def _timed(self, seconds: float, detector: Any) -> None:
        """A handler ran in a caller's step for `seconds` while a `BlockDetector` watched."""
        if seconds >= detector.threshold:
            self.loop_blocked(seconds, detector.threshold)

    async def _wait_until_cut(self, request: Request) -> Any:
        """The handler suspended: wait for its reply, but not past its deadline."""
        if request.outcome is not None:  # it replied before we got here
            return request.outcome.unwrap()
        request.waiting = True
        if request.cut_at == _INF:
            return await wait_task_rescheduled(request.abort)
        with trio.CancelScope(deadline=request.cut_at) as request.timer:
            return await wait_task_rescheduled(request.abort)
        raise CallTimeout(self._cut_message(request))

    async def cast(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> None:
        await checkpoint_if_cancelled()
        if self.stopping:
            raise ServerStopped(f"{method.label}: {self.spec.name} is not running: it was stopped")
        # The server's own task never waits for room in its own mailbox: it would wait on itself.
        if self.mailbox.full() and current_task() is not self.task:
            await self._wait_for_room(method)
        self.numbered += 1
        request = Request(method, args, kwargs, None, _INF, self, self.now(), 0.0, self.numbered)
        request.waiting = False
        self.mailbox.put(request)
        self._wake()
        if self.instruments:
            self._emit("call_queued", request)
        await cancel_shielded_checkpoint()

    async def _wait_for_room(self, method: Method) -> None:
        """The mailbox is full: wait for room in turn, or refuse, as the server says."""
        mailbox = self.mailbox
        if self.spec.when_full == "refuse":
            await checkpoint()
            reason = f"the mailbox is full ({mailbox.capacity} requests)"
            raise self._refuse(method, self.now(), reason)
        assert mailbox.capacity is not None
        assert mailbox.room is not None
        await mailbox.room.park()  # FIFO among the waiting callers
        while True:
            if self.stopping:
                raise ServerStopped(
                    f"{method.label}: {self.spec.name} stopped while this call waited for room"
                )
            if mailbox.queued < mailbox.capacity:
                return
            await mailbox.room.park()  # (woken, then beaten to the room: wait again)

    def _refuse(self, method: Method, now: float, reason: str) -> ServerOverloaded:
        """Count and report a request refused before it was queued (after a checkpoint)."""
        self.shed += 1
        if self.instruments:
            self.numbered += 1
            info = CallInfo(
                self.spec.name, method.label, method.kind, self.numbered, now,
                ended_at=now, outcome="shed", reason=reason,
            )  # fmt: skip
            self._notify("call_shed", info)
        return ServerOverloaded(f"{method.label} refused: {reason}")

    async def _inline(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
        """A handler calling its own server: run the handler here, inside the outer budget."""
        await checkpoint()
        if kwargs is None:
            kwargs = {}
        if method.is_async:
            return await method.run(self.obj, *args, **kwargs)
        return method.run(self.obj, *args, **kwargs)

    def caller_left(self, request: Request) -> Abort:
        """trio is cancelling the waiting caller: withdraw its request, or cut its handler."""
        request.waiting = False
        if request.state == QUEUED:
            self.mailbox.withdraw(request)
            self.withdrawn += 1
            if self.instruments:
                self._emit("call_withdrawn", request, "withdrawn", "its caller left")
            return Abort.SUCCEEDED
        assert request.state == RUNNING, request.state
        timer = request.timer
        if timer is not None and timer.cancel_called:
            request.state = TIMED_OUT
            reason = f"{request.method.label} reached its deadline"
        else:
            request.state = ABANDONED
            reason = f"the caller of {request.method.label} left"
        self.scope_cancelled = True
        self.scope.cancel(reason=reason)
        return Abort.SUCCEEDED

    def _deliver(self, request: Request, outcome: Outcome[Any]) -> None:
        """Wake the caller with `outcome`, or leave it for when the caller parks again."""
        if request.waiting:
            request.waiting = False
            reschedule(request.task, outcome)  # type: ignore[arg-type]
        else:
            request.outcome = outcome

    # -- the server's task ------------------------------------------------------

    def spawn(self) -> None:
        """Start a task for the server, in its nursery and with its contextvars: the first one
        (which runs `on_start`), another when a request comes after it went idle, or the last
        one, to run `on_stop`."""
        self.task = _SPAWNING
        start: Any = self.nursery.start_soon
        self.context.run(start, self.run, name=f"trioserver: {self.spec.name}")

    async def run(self) -> None:
        """A task of the server: it serves until stopped, or until it has been idle a while.

        An idle server keeps no task (tasks cost memory, and servers may be many); the next
        request starts one. The task's contextvars pass to the next, so handlers see what
        `on_start` and earlier handlers set. `stop` cancels the server's nursery, whose only
        task is this one by then.
        """
        self.task = current_task()
        try:
            if self.started is not None:
                if self.spec.on_start is not None:
                    try:
                        await self.spec.on_start(self.obj)
                    except BaseException as exc:
                        self.start_error = exc
                        self.stop("it failed to start")
                        return  # on_stop does not run
                self._started()
            while not self.stopping:
                with trio.CancelScope() as scope:
                    self.scope = scope
                    self.scope_cancelled = False
                    self.retire_at = _INF
                    if await self._serve(scope):
                        break
                # Only the retire timer cancels the scope from outside a handler.
                if scope.cancelled_caught and self.retire_number == self.numbered:
                    break  # no request since the timer was set: retire this task
        except BaseException as exc:
            self._stop_for(exc)
        finally:
            self._started()
        if self.stopping:
            await self._on_stop()
        else:  # idle: retire this task, and keep its contextvars for the next one
            self.context = current_task().context
        self.task = None

    def _stop_for(self, exc: BaseException) -> None:
        """Stop because `exc` is leaving the server's task."""
        if _without_cancelled(exc) is None:
            self.stop("its nursery was cancelled")
        else:  # KeyboardInterrupt, SystemExit from a handler: the server dies
            self.fatal = exc
            self.stop(f"a handler raised {type(exc).__name__}")

    def _started(self) -> None:
        if self.started is not None:
            self.started.set()  # the opener, waiting for on_start, holds the event
            self.started = None

    async def _serve(self, scope: trio.CancelScope) -> bool:
        """Run requests until `scope` is spent (False), or the server is stopping or has had
        no request yet (True: the task ends).

        With nothing to do, the task parks: a request queued wakes it; a caller may also lend
        it its step (`_run_here`) and hand it a handler that suspended there, to go on with.
        """
        mailbox = self.mailbox
        obj = self.obj
        now_fn = self.now
        records = self.records
        private = _PRIVATE_DEADLINE
        while True:
            request = mailbox.take_nowait()
            if request is None:
                if self.stopping or not self.numbered:  # (not one request yet: no need to wait)
                    return True
                woken = await self._park(scope)
                resume = self.resume
                if resume is None:
                    woken.unwrap()  # Cancelled: the retire timer fired, or the server stops
                    if scope.cancel_called:
                        return False  # the retire timer fired as we were woken: a fresh scope
                    continue
                self.resume = None
                handler, request, pending = resume
                record = records[request.method.name]
                now = request.started_at
                try:
                    if pending is _RAISE:
                        raise handler
                    result = await _go_on(handler, woken, pending)
                except BaseException as exc:
                    if self._raised(request, exc, scope):
                        return False
                    continue
            else:
                now = now_fn()
                if request.deadline <= now:
                    self._expire(request)
                    continue
                method = request.method
                record = records[method.name]
                threads = self.threads
                if (
                    threads is not None
                    and method.thread
                    and (threads.abandoned >= self.spec.max_abandoned_threads)
                ):
                    reason = f"{threads.abandoned} of its worker threads still run, abandoned"
                    self._shed_at_start(request, now, reason)
                    continue
                if method.admission and request.deadline != _INF:
                    refusal = refusal_at_start(record, request.deadline, now)
                    if refusal is not None:
                        self._shed_at_start(request, now, refusal)
                        continue
                budget = method.budget
                cut_at = request.deadline
                if budget is not None and now + budget < cut_at:
                    cut_at = now + budget
                request.cut_at = cut_at
                request.state = RUNNING
                request.started_at = now
                record.queue_wait.add(now - request.queued_at)
                self.current = self.last_started = request
                if self.instruments:
                    self._emit("call_started", request)
                # The handler sees its deadline; trio's timer is armed only if it suspends.
                if private:
                    scope._deadline = cut_at  # pyright: ignore[reportPrivateUsage]
                else:  # pragma: no cover
                    scope.deadline = cut_at
                    self.retire_at = _INF
                try:
                    if request.kwargs is None:
                        result = method.run(obj, *request.args)
                    else:
                        result = method.run(obj, *request.args, **request.kwargs)
                    if method.is_async:
                        try:
                            trap = result.send(None)
                        except StopIteration as stop:
                            result = stop.value
                        else:
                            result = await self._suspended(result, trap, request, scope)
                except BaseException as exc:
                    if self._raised(request, exc, scope):
                        return False
                    continue
            self.current = None
            spent = self._hide_deadline(scope)
            if request.state == RUNNING and request.waiting and not self.instruments:
                # the common case, inlined
                ended = now_fn()
                record.ended(ended - now, ended)
                self.handled += 1
                request.state = DONE
                request.waiting = False
                reschedule(request.task, Value(result))  # type: ignore[arg-type]
            else:
                self._settle(request, Value(result))
            if spent or self.scope_cancelled:
                return False  # the handler swallowed a cancellation: leave the spent scope

    def _park(self, scope: trio.CancelScope) -> Awaitable[Outcome[Any]]:
        """Wait, idle, for a request; set the retire timer unless it is set."""
        if self.retire_at == _INF:
            self.retire_at = self.now() + RETIRE_AFTER
            self.retire_number = self.numbered
            scope.deadline = self.retire_at
        self.parked = True
        return _handoff.park(self._idle_abort)

    def _idle_abort(self, _: Any) -> Abort:
        self.parked = False
        return Abort.SUCCEEDED

    def _disarm_retire(self, cut_at: float) -> None:
        """A handler suspends: the retire timer must not cut it. Its deadline stays shown."""
        if self.retire_at != _INF:
            self.scope.deadline = _INF
            self.retire_at = _INF
            self.scope._deadline = cut_at  # pyright: ignore[reportPrivateUsage]

    def _hide_deadline(self, scope: trio.CancelScope) -> bool:
        """A handler ended: show the retire timer's deadline again (or none); True if the
        scope is spent (a cast's deadline armed on it fired: trio then unregisters it)."""
        if _PRIVATE_DEADLINE and scope._registered_deadline == self.retire_at:  # pyright: ignore[reportPrivateUsage]
            scope._deadline = self.retire_at  # pyright: ignore[reportPrivateUsage]
        else:
            scope.deadline = _INF
            self.retire_at = _INF
        return scope.cancel_called

    @types.coroutine
    def _suspended(
        self, coro: Coroutine[Any, Any, Any], trap: Any, request: Request, scope: trio.CancelScope
    ) -> Generator[Any, Any, Any]:
        """Drive a handler that suspended, after arming its deadline."""
        self._disarm_retire(request.cut_at)
        if request.task is None:  # a cast: its scope keeps the deadline
            scope.deadline = request.cut_at
        elif request.state == RUNNING:  # a call: its caller keeps the deadline
            self._deliver(request, Value(_SUSPENDED))
        return (yield from _drive(coro, None, trap))

    def _raised(self, request: Request, exc: BaseException, scope: trio.CancelScope) -> bool:
        """Settle a request whose handler raised; True if `scope` is spent. May re-raise."""
        self.current = None
        spent = self.scope_cancelled or self._hide_deadline(scope)
        if isinstance(exc, Exception):
            self._settle(request, Error(exc))
            return spent
        ours = spent and not self.stopping
        rest = _without_cancelled(exc)
        if ours and rest is None:
            self._settle(request, None)
            return True
        if ours and isinstance(rest, Exception):
            # a nursery in the handler: a child's error met our cancellation
            self._settle(request, Error(rest))
            return True
        if request.state == RUNNING:  # the server stops as this propagates: stop() tells
            self.current = request  # its caller so, as it tells a queued one
            self._stop_for(exc)
        self._settle(request, None)
        raise exc  # the server stops; or KeyboardInterrupt, SystemExit: the server dies

    def _settle(self, request: Request, outcome: Outcome[Any] | None) -> None:
        """Count and time how a started request ended; reply if its caller still waits.

        `outcome` is None when the handler was cut by its scope.
        """
        now = self.now()
        cut = outcome is None or request.state != RUNNING
        self.records[request.method.name].ended(now - request.started_at, now, cut)
        state = request.state
        request.state = DONE
        if state == RUNNING:
            if outcome is None:
                self.timed_out += 1
                ending = "timed_out"
                outcome = Error(CallTimeout(self._cut_message(request)))
            elif isinstance(outcome, Error):
                self.failed += 1
                ending = "failed"
            else:
                self.handled += 1
                ending = "handled"
            if request.task is not None:
                self._deliver(request, outcome)
            elif isinstance(outcome, Error) and request.method.crash:
                self.crash(outcome.error, f"cast {request.method.label} raised")
            elif isinstance(outcome, Error):
                error = outcome.error
                logger.warning(
                    "cast %s failed: %r; %s goes on",
                    request.method.label,
                    error,
                    self.spec.name,
                    exc_info=None if isinstance(error, CallTimeout) else error,
                )
        elif state == TIMED_OUT:
            self.timed_out += 1
            ending = "timed_out"
        else:  # ABANDONED (its caller left) or STOPPED
            self.cancelled += 1
            ending = "cancelled"
        if self.instruments:
            self._emit("call_finished", request, ending)

    def _cut_message(self, request: Request) -> str:
        method = request.method
        if request.cut_at == request.deadline:
            why = "before its caller's deadline"
        else:
            why = f"within {_seconds(method.budget)}"
        return f"{method.label} did not finish {why}"

    def _expire(self, request: Request) -> None:
        request.state = WITHDRAWN
        self.withdrawn += 1
        if self.instruments:
            self._emit("call_withdrawn", request, "withdrawn", "its caller's deadline passed")
        self._deliver(request, Error(_Expired()))

    def _shed_at_start(self, request: Request, now: float, reason: str) -> None:
        request.state = WITHDRAWN
        self.shed += 1
        if self.instruments:
            self._emit("call_shed", request, "shed", reason)
        self._deliver(request, Error(ServerOverloaded(f"{request.method.label} refused: {reason}")))

    # -- instruments --------------------------------------------------------------

    def _emit(
        self, hook: Hook, request: Request, outcome: str | None = None, reason: str | None = None
    ) -> None:
        started = hook in ("call_started", "call_finished")
        info = CallInfo(
            server=self.spec.name,
            method=request.method.label,
            kind=request.method.kind,
            number=request.number,
            queued_at=request.queued_at,
            started_at=request.started_at if started else None,
            ended_at=None if hook in ("call_queued", "call_started") else self.now(),
            outcome=outcome,
            reason=reason,
        )
        self._notify(hook, info)

    def _notify(self, hook: Hook, info: CallInfo) -> None:
        for instrument in list(self.instruments):
            try:
                getattr(instrument, hook)(info)
            except Exception:
                logger.exception("instrument %r raised in %s; removed", instrument, hook)
                shared = run_instruments()
                if instrument in shared:
                    shared.remove(instrument)
                if isinstance(self.instruments, Instruments):
                    self.instruments.remove(instrument)

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

    # -- stopping -----------------------------------------------------------------

    def crash(self, error: BaseException, why: str) -> None:
        """Stop because `error` crashed the server: callers get `ServerCrashed`; it propagates."""
        if self.stopping:
            return
        logger.error("%s crashed: %s", self.spec.name, why, exc_info=error)
        self.fatal = error
        self.stop(f"it crashed: {why}", ServerCrashed)

    def stop(self, why: str, error: type[TrioServerError] = ServerStopped) -> None:
        """Stop at once: tell the running and queued callers, drop queued casts, cancel the task."""
        if self.stopping:
            return
        self.stopping = True
        name = self.spec.name
        self.obj.__dict__["_trioserver_state"] = NotRunning(self.spec, why, self, error)
        current = self.current
        if current is not None and current.state == RUNNING:
            current.state = STOPPED
            if current.task is not None:
                message = f"{current.method.label}: {name} stopped ({why}) while handling this call"
                self._deliver(current, Error(error(message)))
        for request in self.mailbox.drain():
            request.state = DROPPED
            self.dropped += 1
            if self.instruments:
                self._emit("call_withdrawn", request, "dropped", f"{name} stopped ({why})")
            if request.task is not None:
                message = f"{request.method.label}: {name} stopped ({why}) before this call started"
                self._deliver(request, Error(error(message)))
            else:
                logger.warning(
                    "cast %s dropped: %s stopped (%s) before it started",
                    request.method.label,
                    name,
                    why,
                )
        # The server's nursery holds only the server's task once the opener's block has ended
        # (or when the server died or crashed, and the block must end too).
        self.nursery.cancel_scope.cancel(reason=f"{name} stopped")
        if self.task is None and self.started is None and self.start_error is None:
            self.spawn()  # an idle server has no task: start one to run on_stop

    async def _on_stop(self) -> None:
        hook = self.spec.on_stop
        if hook is None or self.start_error is not None:
            return
        with trio.CancelScope(shield=True) as scope:
            if self.spec.timeout is not None:
                scope.deadline = trio.current_time() + self.spec.timeout
            try:
                await hook(self.obj)
            except Exception as exc:
                self.stop_error = exc
        if scope.cancelled_caught:
            logger.warning(
                "%s.on_stop did not finish within %s and was cancelled",
                self.spec.name,
                _seconds(self.spec.timeout),
            )

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            queued=self.mailbox.queued,
            running=0 if self.current is None else 1,
            peak_queued=self.mailbox.peak_queued,
            withdrawn=self.withdrawn,
            shed=self.shed,
            dropped=self.dropped,
            handled=self.handled,
            failed=self.failed,
            timed_out=self.timed_out,
            cancelled=self.cancelled,
            loop_blocks=self.loop_blocks,
            longest_block=self.longest_block,
            abandoned_threads=0 if self.threads is None else self.threads.abandoned,
            threads_abandoned=0 if self.threads is None else self.threads.abandoned_total,
            methods={
                name: record.snapshot()
                for name, record in self.records.items()
                if record.queue_wait.count or record.service.count
            },
        )
