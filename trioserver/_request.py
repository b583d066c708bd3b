"""A request: one call or cast on its way to the server, and the states of its life."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from outcome import Outcome
from trio.lowlevel import Abort, Task, reschedule

if TYPE_CHECKING:
    from ._instrument import Listeners
    from ._spec import Method


class Owner(Protocol):
    """The server a request was sent to, as its request sees it."""

    @property
    def current(self) -> Request | None: ...

    def caller_left(self, request: Request, /) -> Abort: ...

    def deadline_passed(self, request: Request, /) -> None: ...


# A request's life: QUEUED -> RUNNING -> DONE; or QUEUED -> WITHDRAWN (its caller left or its
# deadline passed) | DROPPED (the server stopped); or, while its handler runs, RUNNING ->
# TIMED_OUT (its deadline passed; its caller was told) | ABANDONED (its caller left) |
# STOPPED -> DONE. A guarded call whose guard was false is GUARDED (still queued: it leaves
# as a QUEUED one does) until its guard holds and it starts.
QUEUED = 0
RUNNING = 1
DONE = 2
WITHDRAWN = 3
DROPPED = 4
TIMED_OUT = 5
ABANDONED = 6
STOPPED = 7
GUARDED = 8


class Request:
    """One call or cast on its way to the server: what to run, for whom, until when."""

    __slots__ = (
        "args",
        "awaiting",
        "cost",
        "cut_at",
        "deadline",
        "heard",
        "kwargs",
        "method",
        "number",
        "outcome",
        "queued_at",
        "released_for",
        "server",
        "started_at",
        "state",
        "task",
        "waiting",
    )

    def __init__(
        self,
        method: Method,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        task: Task | None,
        deadline: float,
        server: Owner,
        queued_at: float,
        cost: float,
        number: int,
        heard: Listeners,
    ) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.task = task  # the waiting caller; None for a cast
        self.deadline = deadline  # the caller's effective deadline, read once at the call
        self.state = QUEUED
        self.server = server
        self.cut_at = deadline  # the handler's deadline, set when it starts
        self.waiting = True  # the caller is parked, waiting for `reschedule`
        self.outcome: Outcome[Any] | None = None  # a reply that came while it was not parked
        self.queued_at = queued_at
        self.started_at = queued_at
        self.cost = cost  # how long it is expected to hold the server (`MethodRecorder.hold`)
        self.released_for = 0.0  # seconds its handler spent in released blocks
        self.number = number
        self.awaiting: Request | None = None  # the call its handler waits for (`_cycles`)
        self.heard = heard  # its server's instruments as it arrived: they hear all its events

    def abort(self, _: Any) -> Abort:
        """trio calls this when the waiting caller is cancelled."""
        return self.server.caller_left(self)

    # A request whose handler entered a released block is in the run's timers (`_timers`)
    # until `cut_at`: its server's entry looks only at the handler holding the server.

    def timer_fired(self, when: float, /) -> None:
        if self.state == RUNNING:
            self.server.deadline_passed(self)

    def timer_live(self, when: float, /) -> bool:
        return self.state == RUNNING


class Runner(Protocol):
    """A server run's durable casts (`_durable.Durable`), as its requests and state see it."""

    stored: int
    retried: int
    dead: int

    def ended(
        self, request: StoredRequest, error: BaseException | None, stopped: bool, /
    ) -> None: ...

    def running(self) -> int: ...

    def close(self) -> None: ...


class StoredRequest(Request):
    """A durable cast's run: a cast whose end is reported to its runner, which marks it done
    in the store, retries it, or keeps it as dead."""

    __slots__ = ("row", "runner")

    row: Any  # its `_store.StoredCast`
    runner: Runner


def deliver(request: Request, outcome: Outcome[Any]) -> None:
    """Wake the caller with `outcome`, or leave it for when the caller parks again."""
    if request.waiting:
        request.waiting = False
        reschedule(request.task, outcome)  # type: ignore[arg-type]
    else:
        request.outcome = outcome


def seconds(budget: float | None) -> str:
    return "no budget" if budget is None else f"its budget of {budget:g} s"


def cut_message(request: Request) -> str:
    """What `CallTimeout` says for a request cut at its deadline."""
    method = request.method
    if request.cut_at == request.deadline:
        why = "before its caller's deadline"
    else:
        why = f"within {seconds(method.budget)}"
    return f"{method.label} did not finish {why}"
