"""The marks `@call` and `@cast`: they record what a method is; `@server` collects them."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    Self,
    TypeVar,
    overload,
)

import attrs

from ._budget import INHERIT, Inherit, check_timeout
from ._errors import InvalidServerDefinition

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")

Kind = Literal["call", "cast"]


@attrs.frozen
class Durability:
    """What ``@cast(durable=True, ...)`` says of a durable cast (guarantee 17)."""

    attempts: int  # runs allowed before it is kept as dead
    backoff: float  # seconds before the first retry; doubled for each further one
    max_backoff: float  # the longest wait between two runs
    key: Callable[..., object] | None  # the cast's arguments -> its idempotency key (a str)


class Handler(Generic[S, P, R]):
    """A method marked with `@call` or `@cast`, as its class body sees it.

    `@server` replaces each of these with a handle method that sends the call
    to the running server; until then, using one on an instance is an error.
    """

    kind: Kind
    fn: Callable[..., Any]
    timeout: float | Inherit | None
    admission: bool
    thread: bool
    crash: bool
    guard: Callable[[Any], object] | None
    durable: Durability | None
    cleanup: bool
    is_async: bool
    name: str

    def __init__(
        self,
        kind: Kind,
        fn: Callable[..., Any],
        timeout: float | Inherit | None,
        admission: bool = True,
        thread: bool = False,
        crash: bool = False,
        guard: Callable[[Any], object] | None = None,
        durable: Durability | None = None,
        cleanup: bool = False,
    ) -> None:
        self.kind = kind
        self.fn = fn
        self.timeout = timeout
        self.admission = admission
        self.thread = thread
        self.crash = crash
        self.guard = guard
        self.durable = durable
        self.cleanup = cleanup
        self.is_async = inspect.iscoroutinefunction(fn)
        self.name = fn.__name__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    @property
    def qualname(self) -> str:
        return str(self.fn.__qualname__)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<@{self.kind} {self.qualname}>"

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: S, owner: type[Any] | None = None) -> Callable[P, Awaitable[R]]: ...
    def __get__(self, obj: object, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        cls = type(obj).__qualname__
        raise InvalidServerDefinition(
            f"{self.qualname} is marked @{self.kind}, but its class {cls} is not a server: "
            f"decorate {cls} with @server"
        )


if TYPE_CHECKING:

    class _CallDecorator(Protocol):
        @overload
        def __call__(  # pyright: ignore[reportOverlappingOverload]
            self, fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]], /
        ) -> Handler[S, P, R]: ...
        @overload
        def __call__(self, fn: Callable[Concatenate[S, P], R], /) -> Handler[S, P, R]: ...

    class _CastDecorator(Protocol):
        def __call__(self, fn: Callable[Concatenate[S, P], object], /) -> Handler[S, P, None]: ...


def _mark(
    kind: Kind,
    fn: object,
    timeout: object,
    admission: object,
    thread: object,
    crash: object,
    when: object = None,
    durable_options: tuple[object, ...] | None = None,
    cleanup: object = False,
) -> Handler[Any, Any, Any]:
    if isinstance(fn, Handler):
        raise InvalidServerDefinition(
            f"{fn.qualname} is marked twice (@{kind} on top of @{fn.kind}): keep one mark"
        )
    what = type(fn).__name__
    name = name_of(fn)
    if isinstance(fn, (staticmethod, classmethod, property)):
        raise InvalidServerDefinition(
            f"@{kind} on {name}: a handler is a plain instance method, not a {what}; "
            f"put @{kind} on a plain method"
        )
    if not inspect.isfunction(fn):
        raise InvalidServerDefinition(
            f"@{kind} on {name}: it marks a method (def or async def), not a {what}"
        )
    where = f"@{kind} on {fn.__qualname__}"
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise InvalidServerDefinition(
            f"{where}: a generator cannot be a handler; return a value instead"
        )
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise InvalidServerDefinition(
            f"{where}: a handler is a method; its first parameter must be `self`"
        )
    for param in params:
        if param.name.startswith("_trioserver"):
            raise InvalidServerDefinition(
                f"{where}: parameter {param.name!r}: names starting with '_trioserver' are "
                f"reserved for trioserver; rename it"
            )
    budget = timeout if isinstance(timeout, Inherit) else check_timeout(timeout, where)
    options = (("admission", admission), ("thread", thread), ("crash", crash), ("cleanup", cleanup))
    for option, value in options:
        if not isinstance(value, bool):
            raise InvalidServerDefinition(f"{where}: {option} must be True or False, not {value!r}")
    if thread and inspect.iscoroutinefunction(fn):
        raise InvalidServerDefinition(
            f"{where}: thread=True runs a plain `def` handler in a worker thread; an `async def` "
            f"handler already runs in the server's task: drop thread=True, or make it a plain def"
        )
    guard = _check_guard(when, where) if when is not None else None
    if guard is not None and kind == "cast":
        raise InvalidServerDefinition(
            f"{where}: when= guards a call (its caller waits until the guard holds); a cast "
            f"does not wait: make it a @call, or check the condition in the handler"
        )
    durable = None
    if durable_options is not None:
        try:
            durable = _durability(*durable_options)
        except InvalidServerDefinition as exc:
            raise InvalidServerDefinition(f"{where}: {exc}") from None
    if durable is not None and crash:
        raise InvalidServerDefinition(
            f"{where}: crash=True stops the server when the cast raises, and durable=True "
            f"retries it: choose one (a durable cast's failures are retried, then kept as dead)"
        )
    if durable is not None and durable.key is not None:
        _check_key(durable.key, fn, where)
    return Handler(
        kind, fn, budget, bool(admission), bool(thread), bool(crash), guard, durable, bool(cleanup)
    )


def _durability(
    durable: object, attempts: object, backoff: object, max_backoff: object, key: object
) -> Durability | None:
    """The options of a durable cast, checked (the caller names the method on error)."""
    if not isinstance(durable, bool):
        raise InvalidServerDefinition(f"durable must be True or False, not {durable!r}")
    given = {
        name: value
        for name, value, default in (
            ("attempts", attempts, 3),
            ("backoff", backoff, 1.0),
            ("max_backoff", max_backoff, 300.0),
            ("key", key, None),
        )
        if value is not default
    }
    if not durable:
        if given:
            raise InvalidServerDefinition(
                f"{', '.join(given)} apply to durable casts only: add durable=True, or drop them"
            )
        return None
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        raise InvalidServerDefinition(f"attempts must be a whole number >= 1, not {attempts!r}")
    for name, value in (("backoff", backoff), ("max_backoff", max_backoff)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise InvalidServerDefinition(
                f"{name} must be a finite number of seconds >= 0, not {value!r}"
            )
    if key is not None and not callable(key):
        raise InvalidServerDefinition(
            f"key must be a function of the cast's arguments returning a str, not {key!r}"
        )
    return Durability(attempts, float(backoff), float(max_backoff), key)  # type: ignore[arg-type]


def _check_key(key: Callable[..., object], fn: Callable[..., Any], where: str) -> None:
    """`key` must take the cast's arguments as the handle passes them (without self: the
    positional parameters by position, keyword-only ones by name), and not be async."""
    if inspect.iscoroutinefunction(key):
        raise InvalidServerDefinition(
            f"{where}: key= must be a plain function of the cast's arguments, not async"
        )
    try:
        wanted = inspect.signature(key)
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):  # (a builtin without one: trust it)
        return
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    named = {p.name: None for p in params if p.kind is p.KEYWORD_ONLY}
    try:
        wanted.bind(*positional, **named)
    except TypeError:
        shown = ", ".join([*positional, *(f"{name}=..." for name in named)])
        raise InvalidServerDefinition(
            f"{where}: key= is called with the cast's arguments as its handle passes them "
            f"(without self: positional parameters by position, keyword-only ones by name), "
            f"and {name_of(key)}{wanted} cannot take ({shown}); give it the same parameters, "
            f"or **kwargs"
        ) from None


def _check_guard(when: object, where: str) -> Callable[[Any], object]:
    """`when` as a guard: a plain function of the server object, or a named error."""
    if not callable(when):
        raise InvalidServerDefinition(
            f"{where}: when= must be a function of the server object returning a bool "
            f"(when=lambda self: ...), not {type(when).__name__} {when!r}"
        )
    hook = getattr(type(when), "__call__", None)  # noqa: B004 (an object whose __call__ is async)
    if (
        inspect.iscoroutinefunction(when)
        or inspect.isasyncgenfunction(when)
        or (not inspect.isfunction(when) and inspect.iscoroutinefunction(hook))
    ):
        raise InvalidServerDefinition(
            f"{where}: when= must be a plain function, not async: a guard is evaluated in the "
            f"server's turn, between handlers, and must not wait; read the state and return"
        )
    if isinstance(when, Handler):
        raise InvalidServerDefinition(
            f"{where}: when= got the handler {when.qualname}; a guard is a plain function of "
            f"the server object (when=lambda self: ...)"
        )
    try:
        signature = inspect.signature(when)
    except (TypeError, ValueError):  # (a builtin without one: trust it)
        pass
    else:
        try:
            signature.bind(None)
        except TypeError:
            raise InvalidServerDefinition(
                f"{where}: when= is called with the server object alone, and "
                f"{name_of(when)}{signature} cannot take it"
            ) from None
    guard: Callable[[Any], object] = when
    return guard


def name_of(obj: object) -> str:
    """How a definition error names `obj`: its qualified name (a property's getter's), or repr."""
    target: object = getattr(obj, "__func__", None) or getattr(obj, "fget", None) or obj
    name = getattr(target, "__qualname__", None)
    return name if isinstance(name, str) else repr(obj)


class _Bare:
    """Marker for "no positional argument": `@call` or `@call(...)` with keywords only."""


BARE = _Bare()


class PendingMark:
    """What ``call(timeout=...)`` returns: a mark that waits for its method.

    Applied with ``@`` it marks the method below it. Left in a class body
    (``x = call(timeout=3)``, ``x = call(42)``), `server` refuses it, naming the
    attribute, instead of leaving a stray decorator on the class.
    """

    __slots__ = ("_apply", "kind", "meant", "written")

    def __init__(
        self, kind: Kind, written: str, meant: str, apply: Callable[[object], Any]
    ) -> None:
        self.kind = kind
        self.written = written  # as the user wrote it: "call(timeout=3)", "call(42)"
        self.meant = meant  # the decorator to write instead: "@call(timeout=42)"
        self._apply = apply

    def __call__(self, method: object) -> Any:
        return self._apply(method)

    def __repr__(self) -> str:
        return f"<{self.written}, not applied to a method>"


def _decorator(
    kind: Kind,
    fn: object,
    timeout: object,
    admission: object = True,
    thread: object = False,
    crash: object = False,
    when: object = None,
    durable: tuple[object, ...] | None = None,
    options: tuple[tuple[str, object, object], ...] = (),
    cleanup: object = False,
) -> Any:
    if fn is BARE:
        given = [
            f"{option}={value!r}"
            for option, value, default in (
                ("timeout", timeout, INHERIT),
                ("admission", admission, True),
                ("thread", thread, False),
                ("crash", crash, False),
                ("when", when, None),
                ("cleanup", cleanup, False),
                *options,
            )
            if value is not default
        ]

        def mark(method: object) -> Handler[Any, Any, Any]:
            return _mark(kind, method, timeout, admission, thread, crash, when, durable, cleanup)

        written = f"{kind}({', '.join(given)})"
        return PendingMark(kind, written, f"@{written}", mark)
    if fn is None or isinstance(fn, (int, float, str)):
        # `@call(4.0)`, `@call(None)`: a budget given positionally. Refuse it once the method
        # is known, so that the message can name it.
        if fn is None or (isinstance(fn, (int, float)) and not isinstance(fn, bool)):
            meant = f"@{kind}(timeout={fn!r})"
        else:
            meant = f"@{kind}, or @{kind}(timeout=seconds) for a budget of its own"

        def refuse(method: object) -> Any:
            raise InvalidServerDefinition(
                f"@{kind}({fn!r}) on {name_of(method)}: timeout is keyword-only; write {meant}"
            )

        return PendingMark(kind, f"{kind}({fn!r})", meant, refuse)
    return _mark(kind, fn, timeout, admission, thread, crash, when, durable, cleanup)


@overload
def call(  # pyright: ignore[reportOverlappingOverload]
    fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]], /
) -> Handler[S, P, R]: ...
@overload
def call(fn: Callable[Concatenate[S, P], R], /) -> Handler[S, P, R]: ...
@overload
def call(
    *,
    timeout: float | None = ...,
    admission: bool = ...,
    thread: bool = ...,
    when: Callable[[Any], bool] | None = ...,
    cleanup: bool = ...,
) -> _CallDecorator: ...
def call(
    fn: object = BARE,
    /,
    *,
    timeout: object = INHERIT,
    admission: object = True,
    thread: object = False,
    when: object = None,
    cleanup: object = False,
) -> Any:
    """Mark a method as a request/reply call of its server.

    ``await handle.method(...)`` sends the request to the server's task and
    waits for the reply. The handler runs there, one request at a time, under
    its own cancel scope whose deadline is ``min(start + timeout, the caller's
    deadline)``. Both ``async def`` and plain ``def`` handlers are allowed.

    Args:
      timeout: The handler's budget in seconds, keyword-only. ``None`` (or
        ``math.inf``) means no budget of its own: the caller's deadline still
        applies. Omitted: the server's default (5 s unless ``@server`` says).
      admission: Whether deadline-aware admission may refuse this method's
        requests (see `server`); ``True`` unless turned off here or for the
        whole server.
      thread: Run this plain ``def`` handler in a worker thread
        (`trio.to_thread.run_sync`), so that blocking code does not freeze the
        event loop. When its budget runs out the caller gets `CallTimeout`, the
        thread is abandoned and the server goes on. An abandoned handler keeps
        running: it must not touch the server's state after it may have been
        abandoned (compute and return; let an ``async def`` handler apply the
        result). See `server`'s ``max_abandoned_threads``. Called by a handler
        of its own server, it runs inline under that handler's budget, not its
        own.
      when: A guard, ``predicate(self) -> bool``: a plain function of the
        server's state. A request whose guard is false waits in the mailbox
        without holding the server (the requests behind it run), until the
        guard holds; guards are evaluated in the server's turn, when the
        request arrives and whenever the server is free to start its next
        request, never polled. Among requests whose guard holds, the oldest
        starts first. While it waits the request is queued: its caller's
        deadline or cancellation withdraws it, a stop tells it
        `ServerStopped`; its budget starts with its handler. A guard that
        raises gives the caller that exception (counted ``failed``).
      cleanup: A call made in cleanup code (``finally:`` releasing what a task
        holds): it is sent even from a cancelled task, and its caller waits
        for its reply shielded from its own cancellation and deadline, as in
        ``with trio.CancelScope(shield=True):``; the handler keeps its own
        budget, and the server's stop still answers it. Such a call is never
        withdrawn or refused by admission on its caller's account.

    Returns:
      The mark; `server` turns it into a method of the handle that returns the
      handler's result.

    Cancellation:
      A caller cancelled while its request is queued withdraws it (the handler
      never starts); cancelled while the handler runs, the caller gets
      `trio.Cancelled` at once and the handler is cancelled.

    Errors:
      The handler's own exception reaches the caller as itself.
      `CallTimeout` when its deadline cut the handler; refused by
      admission (it never started), the call ends as its caller's deadline
      would, at once: the scope that set it is cancelled; `ServerOverloaded`
      when a full mailbox refused it;
      `ServerStopped`, `DeadlockError` as the contract says (and for a
      handler calling a guarded method of its own server whose guard is
      false: it would wait on itself); `TypeError` for
      arguments that do not fit the signature, raised in the caller before
      anything is queued. `ForeignRunError` from another thread's
      `trio.run`, `NotTrioError` outside trio: raised before anything of
      the server is touched.

    Raises:
      InvalidServerDefinition: at definition time, naming the method: a bad
        `timeout` (given positionally, a string, a bool, NaN, a negative
        number, or one too large for a float), a mark stacked on another, or
        a mark on something that is not a method. A mark left in a class
        body without a method (``x = call(timeout=3)``, ``x = call(42)``) is
        refused when `server` collects the class. A ``when`` that is not
        callable, is ``async``, or cannot take the server object alone.
    """
    return _decorator("call", fn, timeout, admission, thread, False, when, cleanup=cleanup)


@overload
def cast(fn: Callable[Concatenate[S, P], object], /) -> Handler[S, P, None]: ...
@overload
def cast(
    *,
    timeout: float | None = ...,
    thread: bool = ...,
    crash: bool = ...,
    durable: bool = ...,
    attempts: int = ...,
    backoff: float = ...,
    max_backoff: float = ...,
    key: Callable[..., str | None] | None = ...,
    cleanup: bool = ...,
) -> _CastDecorator: ...
def cast(
    fn: object = BARE,
    /,
    *,
    timeout: object = INHERIT,
    thread: object = False,
    crash: object = False,
    when: object = None,
    durable: object = False,
    attempts: object = 3,
    backoff: object = 1.0,
    max_backoff: object = 300.0,
    key: object = None,
    cleanup: object = False,
) -> Any:
    """Mark a method as a cast: fire and forget.

    ``await handle.method(...)`` queues the request and returns ``None`` once
    it is queued; the handler runs later in the server's task, in FIFO order
    with calls, under its own budget only (casts do not inherit the caster's
    deadline).

    Args:
      timeout: The handler's budget in seconds, keyword-only, as for `call`.
      thread: Run this plain ``def`` handler in a worker thread, as for `call`.
      crash: If the handler raises, the server crashes instead of going on:
        every caller waiting on it gets `ServerCrashed`, and the error comes
        out of `open_server` (a supervisor restarts the server instead).
      durable: Store the cast before it runs (guarantee 17; the server must
        be opened with a ``store``): ``await handle.method(...)`` returns once
        the cast is committed, and it runs at least once, even if the
        process dies before it ran. Its arguments must be JSON data
        (`TypeError` naming the one that is not, nothing stored). See the
        page "Durable casts".
      attempts: A durable cast's runs before it is kept as dead (3 unless
        given): a run that raises or is cut is retried.
      backoff: Seconds before a durable cast's first retry (1.0 unless
        given), doubled for each further one, with jitter (the wait is
        drawn between half and all of it).
      max_backoff: The longest wait between two runs (300 s unless given).
      key: An idempotency key: a function of the cast's arguments returning
        a str (or None: no key for this cast), called as the handle passes
        them (without ``self``: parameters that can be positional by
        position, with their defaults filled in; keyword-only ones by name);
        a second durable cast with a key already stored for its server
        stores nothing (its ``await`` returns as if stored). A key stays
        taken after its cast ran.
      cleanup: A cast sent in cleanup code (``finally:``): it is queued even
        from a cancelled task (a plain cast from a cancelled task raises
        `trio.Cancelled` and queues nothing), and its ``await`` returns once
        it is queued (for a durable one, stored) rather than raise.

    Returns:
      The mark; `server` turns it into a method of the handle.

    Cancellation:
      The caster is checked for cancellation before queueing: `trio.Cancelled`
      means "not queued". Once queued, the cast runs whatever the caster does.

    Errors:
      A cast's exception or timeout is logged on the ``trioserver`` logger
      (WARNING) naming server and method, and counted in `statistics`; the
      server goes on. A cast to a server that is not running raises
      `ServerStopped`; arguments that do not fit raise `TypeError` at once;
      `ForeignRunError` and `NotTrioError` as for `call`.

    Raises:
      InvalidServerDefinition: at definition time, as for `call`; and for
        ``when=`` (a guard makes its caller wait; a cast's caller does not);
        for durable options that are not right (``attempts`` below 1, a
        negative ``backoff``, a ``key`` that cannot take the arguments,
        ``crash=True`` with ``durable=True``, an option without
        ``durable=True``).
    """
    options = (
        ("durable", durable, False),
        ("attempts", attempts, 3),
        ("backoff", backoff, 1.0),
        ("max_backoff", max_backoff, 300.0),
        ("key", key, None),
    )
    durability = (durable, attempts, backoff, max_backoff, key)
    return _decorator("cast", fn, timeout, True, thread, crash, when, durability, options, cleanup)
