"""Histories: what each caller invoked, when, and how it ended, recorded on the client side."""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

import attrs
import trio

from .._errors import (
    CallTimeout,
    DeadlockError,
    ServerOverloaded,
    ServerStopped,
    TrioServerError,
)

T = TypeVar("T")


@attrs.frozen
class Operation:
    """A client operation as the history and the sequential model see it: a name and arguments.

    Attributes:
      name: The operation's name: a ``@call`` method's name, or a composite operation's.
      args: Positional arguments.
      kwargs: Keyword arguments, as sorted ``(name, value)`` pairs.
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"{self.name}({', '.join(parts)})"


@attrs.frozen
class Returned:
    """A definite outcome: the operation returned `value`."""

    value: Any

    def __str__(self) -> str:
        return f"-> {self.value!r}"


@attrs.frozen(eq=False)
class Raised:
    """A definite outcome: the operation raised `error` (the handler's own exception)."""

    error: BaseException

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Raised)
            and type(self.error) is type(other.error)
            and _same(self.error.args, other.error.args)
        )

    def __hash__(self) -> int:
        return hash(type(self.error))

    def __str__(self) -> str:
        return f"raised {self.error!r}"


@attrs.frozen
class Unknown:
    """An unknown outcome (Jepsen's ``:info``): its effects may or may not have happened.

    A call cut by its budget (`trioserver.CallTimeout`), cancelled, stopped with its
    server, or still running when the example ended. The checker lets it take
    effect at any point after it was invoked, or never, and accepts any result.
    """

    reason: str

    def __str__(self) -> str:
        return f"unknown ({self.reason})"


@attrs.frozen
class Refused:
    """The server refused the call before its handler started: it had no effect."""

    reason: str

    def __str__(self) -> str:
        return f"refused ({self.reason})"


#: What a sequential model says an operation does.
Result = Returned | Raised
#: How a recorded operation ended.
Ending = Returned | Raised | Unknown | Refused


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def same_result(model: Result, observed: Ending) -> bool:
    """Whether an observed ending agrees with what the model says (unknown endings always do).

    Args:
      model: The model's result.
      observed: The recorded ending.

    Returns:
      ``True`` if `observed` is `Unknown`, or both returned equal values, or
      both raised exceptions of the same type with equal ``args``.
    """
    if isinstance(observed, Unknown):
        return True
    if isinstance(model, Returned) and isinstance(observed, Returned):
        return _same(model.value, observed.value)
    return isinstance(model, Raised) and model == observed


@attrs.define(eq=False)
class Entry:
    """One recorded operation: who invoked what, when, and how it ended.

    Times are virtual (`trio.current_time`) or given (``History.invoke(..., at=)``);
    ``invoked``/``ended`` are positions in the history's event order, which decides
    real-time precedence (many events share one virtual instant). An entry built by
    hand with an ending counts as ended once.
    """

    id: int
    caller: str
    operation: Operation
    invoked_at: float
    invoked: int
    ending: Ending | None = None
    ended_at: float | None = None
    ended: int | None = None
    #: How many times an ending was recorded: exactly one is right. Left out, it is 1 for
    #: an entry built with an ending and 0 for one without (`History.invoke` builds those).
    endings: int = attrs.field(
        default=attrs.Factory(lambda self: int(self.ending is not None), takes_self=True)
    )

    def describe(self) -> str:
        """``ann: reserve('A1', 'ann') -> 'A1'``."""
        ending = "(never ended)" if self.ending is None else str(self.ending)
        return f"{self.caller}: {self.operation} {ending}"


def classify(error: BaseException, *, composite: bool) -> Ending:
    """How an exception that came out of an operation counts in the history.

    Args:
      error: The exception the caller saw.
      composite: Whether the operation is a composite client operation (several
        calls): then any trioserver error leaves its effects unknown.

    Returns:
      `Unknown` for a budget cut, a cancellation, or a stopped server (and, in a
      composite operation, any trioserver error); `Refused` for a call refused
      before it started; otherwise `Raised` (the handler's own exception).
    """
    if isinstance(error, trio.Cancelled):
        return Unknown("the caller was cancelled")
    if isinstance(error, CallTimeout):
        return Unknown(f"cut by its budget: {error}")
    if isinstance(error, trio.TooSlowError):
        return Unknown("cut by the caller's deadline")
    if isinstance(error, ServerStopped):
        return Unknown(f"server stopped: {error}")
    if composite and isinstance(error, TrioServerError):
        return Unknown(f"{type(error).__name__} inside a composite operation: {error}")
    if isinstance(error, (ServerOverloaded, DeadlockError)):
        return Refused(f"{type(error).__name__}: {error}")
    return Raised(error)


class History:
    """The record of the operations on one checked object (a server, or a composite of calls).

    Calls go through `call` (or a `client` proxy), which records, in the
    caller's task, the invocation and the ending with the virtual time and
    the order of events.

    Args:
      name: How reports name the object (``"Theater"``).
      partition: Optional: the key of an operation (``lambda op: op.args[0]``,
        the seat). Operations with different keys must not affect each other;
        each key is then checked on its own, which keeps the check fast.
    """

    def __init__(
        self, name: str, *, partition: Callable[[Operation], Hashable] | None = None
    ) -> None:
        self.name = name
        self.partition = partition
        self.entries: list[Entry] = []
        self._events = itertools.count()
        self._latest = -math.inf  # the latest time recorded
        self._latest_of: dict[str, Entry] = {}  # each caller's latest entry

    def _time(self, at: float | None, what: str) -> float:
        if at is None:
            now = _now()
        else:
            try:
                finite = not isinstance(at, bool) and math.isfinite(at)
            except TypeError:
                finite = False
            if not finite:
                raise ValueError(f"{what}: at={at!r} is not a finite number of seconds")
            if at < self._latest:
                raise ValueError(
                    f"{what}: at={at!r} is before an event already recorded at "
                    f"{self._latest!r}; events are recorded in time order (their order "
                    "decides which operation came first)"
                )
            now = float(at)
        if now > self._latest:
            self._latest = now
        return now

    def invoke(self, caller: str, operation: Operation, *, at: float | None = None) -> Entry:
        """Record an invocation (now, or at a given time); `end` records its ending.

        Args:
          caller: The caller's name (a lane, a user).
          operation: What it invokes.
          at: Optional: when it was invoked (seconds on any clock, such as a log's),
            instead of now on trio's clock. Events must be recorded in time order;
            at equal times, the order they are recorded in decides.

        Returns:
          The new entry. A caller with an operation still in flight is a second
          caller of the same name: it is recorded as ``"ann#2"`` (and so on),
          as each caller of a history is sequential.

        Raises:
          ValueError: `at` is not a finite number, or is earlier than an event
            already recorded.
        """
        invoked_at = self._time(at, f"History.invoke({caller!r}, {operation})")
        if self._busy(caller):
            caller = next(
                f"{caller}#{n}" for n in itertools.count(2) if not self._busy(f"{caller}#{n}")
            )
        entry = Entry(
            id=len(self.entries),
            caller=caller,
            operation=operation,
            invoked_at=invoked_at,
            invoked=next(self._events),
        )
        self.entries.append(entry)
        self._latest_of[caller] = entry
        return entry

    def _busy(self, caller: str) -> bool:
        latest = self._latest_of.get(caller)
        return latest is not None and latest.ending is None

    def end(self, entry: Entry, ending: Ending, *, at: float | None = None) -> None:
        """Record how `entry` ended (now, or at a given time). A second ending is counted,
        and reported as a bug.

        Args:
          entry: The entry from `invoke`.
          ending: How it ended.
          at: Optional: when it ended, on the clock `invoke`'s ``at`` used (see there).

        Raises:
          ValueError: `at` is not a finite number, or is earlier than an event
            already recorded.
        """
        ended_at = self._time(at, f"History.end({entry.describe()})")
        entry.endings += 1
        if entry.ending is None:
            entry.ending = ending
            entry.ended_at = ended_at
            entry.ended = next(self._events)

    async def call(
        self,
        caller: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        name: str | None = None,
        composite: bool = False,
        **kwargs: Any,
    ) -> T:
        """Invoke ``await fn(*args, **kwargs)`` and record it.

        Args:
          caller: The caller's name.
          fn: A handle method (``theater.reserve``) or a composite client operation
            (``functools.partial(reserve_seat, theater)``: arguments bound by the
            partial are not part of the recorded operation).
          *args: Its positional arguments.
          name: The operation's name; ``fn.__name__`` (or its partial's function's) if omitted.
          composite: Whether `fn` is a composite of several calls (see `classify`).
          **kwargs: Its keyword arguments.

        Returns:
          What `fn` returned.

        Raises:
          Exception: Whatever `fn` raised, after recording it.

        Cancellation:
          A cancelled caller is recorded with an `Unknown` ending, and the
          `trio.Cancelled` propagates.
        """
        name = name or _name_of(fn)
        operation = Operation(name, args, tuple(sorted(kwargs.items())))
        entry = self.invoke(caller, operation)
        try:
            value = await fn(*args, **kwargs)
        except BaseException as error:
            self.end(entry, classify(error, composite=composite))
            raise
        self.end(entry, Returned(value))
        return value

    def client(self, handle: T, caller: str) -> T:
        """A proxy of `handle` whose method calls are recorded as `caller`'s.

        ``theater = history.client(handle, "ann")`` then ``await
        theater.reserve("A1", "ann")``. Attributes that are not methods (state
        the test inspects) are passed through unrecorded.

        Args:
          handle: The server's handle.
          caller: The caller's name.

        Returns:
          The proxy, typed as the handle.
        """
        return cast(T, _Client(self, handle, caller))

    def incomplete(self) -> list[Entry]:
        """Entries that did not end exactly once (guarantee 6 says every call does).

        Returns:
          The entries with no ending or with more than one.
        """
        return [entry for entry in self.entries if entry.endings != 1]


class _Client:
    def __init__(self, history: History, handle: object, caller: str) -> None:
        self._history = history
        self._handle = handle
        self._caller = caller

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._handle, name)
        if not callable(attribute) or not hasattr(attribute, "__wrapped__"):
            return attribute
        history, caller = self._history, self._caller
        method = cast(Callable[..., Awaitable[Any]], attribute)

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            return await history.call(caller, method, *args, name=name, **kwargs)

        recorded.__name__ = name
        return recorded


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:
        return float("nan")


def _name_of(fn: object) -> str:
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None)
    return name if isinstance(name, str) else "operation"
