"""Sequential models: what an operation does when operations run one at a time."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from collections.abc import Callable, Generator, Hashable
from typing import Any, Generic, TypeVar

import attrs
import trio
import trio.testing

from .._instrument import Listeners
from .._request import Request
from .._serving import SERVING
from .._spec import SPEC, ServerSpec
from .._state import ServerState
from ._history import Operation, Raised, Result, Returned

S = TypeVar("S")
_KNOWN_LIMIT = 20_000  # remembered (state, operation) answers per model
T = TypeVar("T")


class Model(Generic[S]):
    """A sequential specification: a state, and what each operation does to it.

    Subclass it for a composite client operation (or pass a plain class to
    `ServerModel`). `apply` must not change the state it is given: it returns
    a new one.
    """

    def initial(self) -> S:
        """The state before any operation.

        Returns:
          The initial state.
        """
        raise NotImplementedError

    def apply(self, state: S, operation: Operation) -> tuple[S, Result]:
        """Run `operation` alone on `state`.

        Args:
          state: The state before; left unchanged.
          operation: The operation.

        Returns:
          The state after, and the operation's result (`Returned` or `Raised`).
        """
        raise NotImplementedError

    def fingerprint(self, state: S) -> Hashable:
        """A hashable value equal for states that behave alike (the checker memoizes on it).

        Args:
          state: A state.

        Returns:
          ``freeze(state)`` unless overridden.
        """
        return freeze(state)


class GuardIsFalse(Exception):
    """What `ServerModel` says of a guarded call (``@call(when=...)``) tried on a state in which
    its guard is false: it cannot take effect there (the server keeps it waiting), so no
    outcome a caller saw matches it, and the checker places it elsewhere."""


@attrs.frozen(eq=False)
class Snapshot(Generic[T]):
    """A `ServerModel` state: an instance, and the operations that made it (to rebuild it)."""

    obj: T
    log: tuple[Operation, ...]


class ServerModel(Model[Snapshot[T]]):
    """The default model: a fresh instance of the class, its handlers run one call at a time.

    Each operation calls the original handler function (``type(obj).name.__wrapped__``
    for a ``@server`` class, or the plain method of any other class, so a plain
    class can model a composite operation) on a copy of the state. A plain
    ``def`` is called directly, and an ``async def`` stepped once, without
    trio; if it returns there, that is its result. Otherwise (it suspends, or
    it raised, perhaps because it used trio outside a run) it is run again on
    a fresh copy inside its own ``trio.run`` on a `trio.testing.MockClock` (autojump), so
    its sleeps cost no time and it runs to completion, budget or not. There a
    ``trioserver.released()`` block runs as in a server with nothing else to
    serve: it gives the server back and takes it again, and nothing runs
    between (operations run one at a time). A guarded call (``@call(when=...)``)
    whose guard is false on the state cannot take effect there: its result is
    ``Raised(GuardIsFalse(...))``, which matches no outcome a caller saw, and the
    state is unchanged. A ``@cast`` handler's effect is applied and its result is ``None`` (what its
    caller sees, whatever the handler did). States
    are copied with ``copy.deepcopy``; a state that cannot be copied is rebuilt
    from `factory` by replaying its operations. Answers are remembered by
    (state fingerprint, operation), so a handler must depend only on the state
    and its arguments.

    Args:
      factory: Makes a fresh instance in its initial state (``lambda: Theater(FakePayments())``).
      fingerprint: Optional: a hashable summary of an instance's state; by
        default its attributes, frozen with `freeze`.
    """

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        fingerprint: Callable[[T], Hashable] | None = None,
    ) -> None:
        self.factory = factory
        self._fingerprint = fingerprint
        self._known: dict[tuple[Hashable, Operation], tuple[Snapshot[T], Result]] = {}

    def initial(self) -> Snapshot[T]:
        return Snapshot(self.factory(), ())

    def apply(self, state: Snapshot[T], operation: Operation) -> tuple[Snapshot[T], Result]:
        # The checker applies the same operation to equal states again and again while it
        # backtracks: remember the answers (states with equal fingerprints behave alike).
        try:
            key = (self.fingerprint(state), operation)
            known = self._known.get(key)
        except TypeError:  # unhashable arguments
            return self._apply(state, operation)
        if known is None:
            if len(self._known) >= _KNOWN_LIMIT:
                self._known.clear()
            known = self._known[key] = self._apply(state, operation)
        return known

    def _apply(self, state: Snapshot[T], operation: Operation) -> tuple[Snapshot[T], Result]:
        obj = self._copy(state)
        fn = self._function(obj, operation.name)
        waits = _guard(obj, operation.name)
        if waits is not None:
            return state, waits  # it cannot start on this state: nothing changes
        result = _without_trio(fn, obj, operation)
        if result is None:  # it suspended, or raised (maybe trio's "must be called from async
            obj = self._copy(state)  # context"): run it in trio, on a fresh copy
            result = _run_in_trio(fn, obj, operation)
        if self._is_cast(obj, operation.name):
            result = Returned(None)  # its caller sees None, whatever the handler did
        return Snapshot(obj, (*state.log, operation)), result

    @staticmethod
    def _is_cast(obj: object, name: str) -> bool:
        """Whether `name` is a ``@cast`` handler of `obj`'s server class."""
        return getattr(_handler(obj, name), "kind", None) == "cast"

    def fingerprint(self, state: Snapshot[T]) -> Hashable:
        if self._fingerprint is not None:
            return self._fingerprint(state.obj)
        return freeze(_attributes(state.obj))

    def _copy(self, state: Snapshot[T]) -> T:
        try:
            return copy.deepcopy(state.obj)
        except Exception:
            obj = self.factory()
            for operation in state.log:  # (in trio, as `_apply` runs what fails outside it)
                _run_in_trio(self._function(obj, operation.name), obj, operation)
            return obj

    @staticmethod
    def _function(obj: object, name: str) -> Callable[..., Any]:
        attribute = inspect.getattr_static(type(obj), name, None)
        fn: object = getattr(attribute, "__wrapped__", attribute)
        if not callable(fn):
            raise TypeError(
                f"the model {type(obj).__qualname__} has no method {name!r}: for a composite "
                f"operation, give a model that has one (a plain class, or a Model subclass)"
            )
        return fn


def _handler(obj: object, name: str) -> object:
    """The ``@call``/``@cast`` mark of method `name` of `obj`'s class, or None."""
    return getattr(inspect.getattr_static(type(obj), name, None), "_trioserver_method", None)


def _guard(obj: object, name: str) -> Result | None:
    """None if call `name` may start on `obj` (no guard, or it holds); else what the model
    says: `GuardIsFalse`, or the exception the guard raised (the server gives its caller that)."""
    guard: Callable[[Any], object] | None = getattr(_handler(obj, name), "guard", None)
    if guard is None:
        return None
    try:
        holds = bool(guard(obj))
    except Exception as error:
        return Raised(error)
    if holds:
        return None
    return Raised(GuardIsFalse(f"{name}: its guard is false; the server would keep it waiting"))


def _without_trio(fn: Callable[..., Any], obj: object, operation: Operation) -> Result | None:
    """A handler's result if it runs to its end without trio (a plain function that returns,
    or an ``async def`` that returns at its first step); None if it must run in trio."""
    kwargs = dict(operation.kwargs)
    if not inspect.iscoroutinefunction(fn):
        try:
            return Returned(fn(obj, *operation.args, **kwargs))
        except Exception:
            return None
    coroutine = fn(obj, *operation.args, **kwargs)
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return Returned(stop.value)
    except Exception:
        return None
    coroutine.close()
    return None


def _run_in_trio(fn: Callable[..., Any], obj: object, operation: Operation) -> Result:
    """Run a handler (``async def`` or plain) to its end in a `trio.run` of its own."""
    is_async = inspect.iscoroutinefunction(fn)

    async def run() -> Result:
        with _alone_in_its_server(obj, operation):
            try:
                value = fn(obj, *operation.args, **dict(operation.kwargs))
                return Returned(await value if is_async else value)
            except Exception as error:
                return Raised(error)

    return trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))


@contextlib.contextmanager
def _alone_in_its_server(obj: object, operation: Operation) -> Generator[None]:
    """Run the handler as if it held `obj`'s server, which has nothing else to serve, so that
    ``trioserver.released()`` works in it: it gives the server back (no task is started to
    serve others: there are none) and takes it back at once when the block ends."""
    spec = getattr(type(obj), SPEC, None)
    method = spec.methods.get(operation.name) if isinstance(spec, ServerSpec) else None
    if spec is None or method is None:
        yield  # a plain class (a composite operation's model): released() is refused in it
        return
    state = ServerState(spec, obj, None)
    now = trio.current_time()
    kwargs = dict(operation.kwargs) or None
    state.current = Request(
        method, operation.args, kwargs, None, math.inf, _NoOwner(), now, 0, 0, Listeners()
    )
    state.task = trio.lowlevel.current_task()
    state.scope = trio.CancelScope()
    state.stopping = True  # (so a released block starts no task to serve the others)
    token = SERVING.set(state)
    try:
        yield
    finally:
        SERVING.reset(token)


class _NoOwner:
    """The owner of the request a model runs: no caller waits for it, no deadline cuts it."""

    def caller_left(self, request: Request, /) -> trio.lowlevel.Abort:
        return trio.lowlevel.Abort.FAILED  # pragma: no cover (the model's request has no caller)

    def deadline_passed(self, request: Request, /) -> None:
        pass  # pragma: no cover (its deadline is infinite)

    @property
    def current(self) -> Request | None:
        return None  # (no other request holds the model's server: no wait chain)


def _attributes(obj: object) -> dict[str, Any]:
    attributes = getattr(obj, "__dict__", None)
    if not isinstance(attributes, dict):
        return {"": obj}
    return {k: v for k, v in attributes.items() if not str(k).startswith("_trioserver")}  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]


@attrs.frozen(eq=False)
class _Identity:
    """An unhashable object that stands for itself (and is kept alive, so its id is not reused)."""

    obj: object

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def freeze(value: object, _seen: frozenset[int] = frozenset()) -> Hashable:
    """A hashable, structural stand-in for `value`, for memoizing states.

    Dicts, lists, tuples and sets are frozen item by item; objects with a
    ``__dict__`` by their attributes; other hashable values stand for
    themselves; anything else by identity.

    Args:
      value: A state or part of one.

    Returns:
      Equal for structurally equal values.
    """
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    if id(value) in _seen:
        return _Identity(value)
    seen = _seen | {id(value)}
    if isinstance(value, dict):
        items: dict[Any, Any] = value  # pyright: ignore[reportUnknownVariableType]
        return ("dict", frozenset((freeze(k, seen), freeze(v, seen)) for k, v in items.items()))
    if isinstance(value, (list, tuple)):
        sequence: list[Any] | tuple[Any, ...] = value  # pyright: ignore[reportUnknownVariableType]
        kind = "list" if isinstance(sequence, list) else "tuple"
        return (kind, tuple(freeze(v, seen) for v in sequence))
    if isinstance(value, (set, frozenset)):
        members: set[Any] | frozenset[Any] = value  # pyright: ignore[reportUnknownVariableType]
        return ("set", frozenset(freeze(v, seen) for v in members))
    if isinstance(value, type):
        return value
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        return (type(value), freeze(_attributes(value), seen))
    try:
        hash(value)
    except TypeError:
        return _Identity(value)
    return value
