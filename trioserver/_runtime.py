"""A running server: callers hand requests to its mailbox; its task runs them one at a time.

Each handler runs in the server's task under a cancel scope whose deadline is
``min(start + budget, caller's deadline)``. The scope is long-lived: only its
deadline moves per request, and a fresh one replaces it after it has fired
(a cancelled scope cannot be reused). No task is spawned per call.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import trio
from outcome import Error, Value
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

from ._errors import CallTimeout, DeadlockError, ServerStopped
from ._mailbox import ABANDONED, DONE, DROPPED, QUEUED, RUNNING, WITHDRAWN, Mailbox, Request
from ._statistics import ServerStatistics

if TYPE_CHECKING:
    from ._server import Method, ServerSpec

logger = logging.getLogger("trioserver")

_INF = math.inf


class _Expired(Exception):
    """Sent to a caller whose deadline passed while its request was queued."""


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


class NotRunning:
    """The state of a server object that is not running: every request gets `ServerStopped`."""

    __slots__ = ("last", "spec", "why")

    def __init__(self, spec: ServerSpec, why: str, last: Runtime | None = None) -> None:
        self.spec = spec
        self.why = why
        self.last = last  # the run that ended, for statistics

    def _refuse(self, method: Method) -> ServerStopped:
        return ServerStopped(f"{method.label}: {self.spec.name} is not running: {self.why}")

    async def call(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
        raise self._refuse(method)

    async def cast(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> None:
        raise self._refuse(method)

    def statistics(self) -> ServerStatistics:
        return ServerStatistics() if self.last is None else self.last.statistics()


class Runtime:
    """One run of a server object, from `open_server` to its stop."""

    def __init__(self, spec: ServerSpec, obj: object, nursery: trio.Nursery) -> None:
        self.spec = spec
        self.obj = obj
        self.nursery = nursery
        self.mailbox = Mailbox()
        self.task: Task | None = None
        self.current: Request | None = None  # the request whose handler is running
        self.scope = trio.CancelScope()  # the running handler's; replaced after it fires
        self.stop_scope = trio.CancelScope()
        self.stopping = False
        self.started = trio.Event()
        self.start_error: BaseException | None = None
        self.fatal: BaseException | None = None
        self.stop_error: BaseException | None = None
        self.withdrawn = 0
        self.shed = 0
        self.dropped = 0
        self.handled = 0
        self.failed = 0
        self.timed_out = 0
        self.cancelled = 0

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
        request = Request(method, args, kwargs, task, trio.current_effective_deadline(), self)
        self.mailbox.put(request)
        try:
            return await wait_task_rescheduled(request.abort)
        except _Expired:
            await checkpoint()  # the caller's own cancellation comes first
            raise CallTimeout(
                f"{method.label} never started: its caller's deadline passed while it was queued"
            ) from None

    async def cast(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> None:
        await checkpoint_if_cancelled()
        if self.stopping:
            raise ServerStopped(f"{method.label}: {self.spec.name} is not running: it was stopped")
        self.mailbox.put(Request(method, args, kwargs, None, _INF, self))
        await cancel_shielded_checkpoint()

    async def _inline(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
        """A handler calling its own server: run the handler here, inside the outer budget."""
        await checkpoint()
        if kwargs is None:
            kwargs = {}
        if method.is_async:
            return await method.fn(self.obj, *args, **kwargs)
        return method.fn(self.obj, *args, **kwargs)

    def caller_left(self, request: Request) -> Abort:
        """The caller of `request` was cancelled: withdraw it, or cut its running handler."""
        if request.state == QUEUED:
            self.mailbox.withdraw(request)
            self.withdrawn += 1
        else:
            assert request.state == RUNNING, request.state
            request.state = ABANDONED
            self.scope.cancel(reason=f"the caller of {request.method.label} left")
        return Abort.SUCCEEDED

    # -- the server's task ------------------------------------------------------

    async def run(self) -> None:
        """The server's task: on_start, the request loop until stopped, then on_stop."""
        self.task = current_task()
        try:
            with self.stop_scope:
                if self.spec.on_start is not None:
                    try:
                        await self.spec.on_start(self.obj)
                    except BaseException as exc:
                        self.start_error = exc
                        self.stop("it failed to start")
                        return  # on_stop does not run
                self.started.set()
                while True:
                    with trio.CancelScope() as self.scope:
                        await self._serve(self.scope)
        except BaseException as exc:
            if _without_cancelled(exc) is None:
                self.stop("its nursery was cancelled")
            else:  # KeyboardInterrupt, SystemExit from a handler: the server dies
                self.fatal = exc
                self.stop(f"a handler raised {type(exc).__name__}")
                self.nursery.cancel_scope.cancel(reason=f"{self.spec.name} died")
        finally:
            self.started.set()
        await self._on_stop()

    async def _serve(self, scope: trio.CancelScope) -> None:
        """Run requests until the scope is spent (a handler was cut by it)."""
        mailbox = self.mailbox
        obj = self.obj
        while True:
            request = mailbox.take_nowait()
            if request is None:
                await mailbox.wait()
                continue
            now = trio.current_time()
            if request.deadline <= now:
                self._expire(request)
                continue
            method = request.method
            budget = method.budget
            deadline = request.deadline
            if budget is not None and now + budget < deadline:
                deadline = now + budget
            request.state = RUNNING
            self.current = request
            scope.deadline = deadline
            try:
                if request.kwargs is None:
                    result = method.fn(obj, *request.args)
                else:
                    result = method.fn(obj, *request.args, **request.kwargs)
                if method.is_async:
                    result = await result
            except BaseException as exc:
                scope.deadline = _INF
                self.current = None
                if self._settle_error(request, exc, scope, deadline):
                    return
                continue
            scope.deadline = _INF
            self.current = None
            self.handled += 1
            self._reply(request, Value(result))
            if method.is_async and scope.cancel_called:
                return  # the handler swallowed our cancellation; leave the spent scope

    def _settle_error(
        self, request: Request, exc: BaseException, scope: trio.CancelScope, deadline: float
    ) -> bool:
        """Settle a request whose handler raised; True if `scope` is spent."""
        if isinstance(exc, Exception):
            self.failed += 1
            self._reply(request, Error(exc))
            return scope.cancel_called
        ours = not self.stopping and scope.cancel_called
        rest = _without_cancelled(exc)
        if rest is None:
            if not ours:
                self.cancelled += 1
                raise exc  # the server stops, or its nursery was cancelled
            self._cut(request, deadline)
            return True
        if ours and isinstance(rest, Exception):
            # a nursery in the handler: a child's error met our cancellation
            self.failed += 1
            self._reply(request, Error(rest))
            return True
        raise exc  # KeyboardInterrupt, SystemExit: the server dies

    def _reply(self, request: Request, result: Value[Any] | Error) -> None:
        if request.state != RUNNING:
            return  # the caller left, or the server stopped and told it so
        request.state = DONE
        if request.task is not None:
            reschedule(request.task, result)
        elif isinstance(result, Error):
            logger.warning(
                "cast %s raised %r; the server goes on",
                request.method.label,
                result.error,
                exc_info=result.error,
            )

    def _cut(self, request: Request, deadline: float) -> None:
        """The handler of `request` was cut by its scope: its deadline, or its caller left."""
        if request.state != RUNNING:
            self.cancelled += 1
            return
        self.timed_out += 1
        method = request.method
        if deadline == request.deadline:
            why = "before its caller's deadline"
        else:
            why = f"within {_seconds(method.budget)}"
        message = f"{method.label} on {self.spec.name} did not finish {why}"
        self._reply(request, Error(CallTimeout(message)))
        if request.task is None:
            logger.warning("cast %s timed out: %s", method.label, message)

    def _expire(self, request: Request) -> None:
        request.state = WITHDRAWN
        self.withdrawn += 1
        assert request.task is not None  # casts have no deadline
        reschedule(request.task, Error(_Expired()))

    # -- stopping -----------------------------------------------------------------

    def stop(self, why: str) -> None:
        """Stop at once: tell the running and queued callers, drop queued casts, cancel the task."""
        if self.stopping:
            return
        self.stopping = True
        name = self.spec.name
        self.obj.__dict__["_trioserver_state"] = NotRunning(self.spec, why, self)
        current = self.current
        if current is not None and current.state == RUNNING:
            current.state = ABANDONED
            if current.task is not None:
                reschedule(
                    current.task,
                    Error(
                        ServerStopped(
                            f"{current.method.label}: {name} stopped ({why}) "
                            f"while handling this call"
                        )
                    ),
                )
        for request in self.mailbox.drain():
            request.state = DROPPED
            self.dropped += 1
            if request.task is not None:
                reschedule(
                    request.task,
                    Error(
                        ServerStopped(
                            f"{request.method.label}: {name} stopped ({why}) "
                            f"before this call started"
                        )
                    ),
                )
            else:
                logger.warning(
                    "cast %s dropped: %s stopped (%s) before it started",
                    request.method.label,
                    name,
                    why,
                )
        self.stop_scope.cancel(reason=f"{name} stopped")

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
        )
