"""`@server`: collect a class's marked handlers once, check them, and install its handle methods."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar, overload

from ._budget import DEFAULT_TIMEOUT, INHERIT, check_timeout
from ._errors import HandleNotCopyable, InvalidServerDefinition
from ._handle_methods import handle_method
from ._marks import BARE, Handler, PendingMark, call, cast, name_of
from ._spec import RESERVED, SPEC, STATE, Method, ServerSpec, WhenFull
from ._stopped import NotRunning

T = TypeVar("T")


@overload
def server(cls: type[T], /) -> type[T]: ...
@overload
def server(
    *,
    timeout: float | None = ...,
    mailbox_size: int | None = ...,
    when_full: WhenFull = ...,
    admission: bool = ...,
    max_abandoned_threads: int = ...,
) -> Callable[[type[T]], type[T]]: ...
def server(
    cls: object = BARE,
    /,
    *,
    timeout: object = DEFAULT_TIMEOUT,
    mailbox_size: object = None,
    when_full: object = BARE,
    admission: object = True,
    max_abandoned_threads: object = 8,
) -> Any:
    """Turn a class into a server: one task owns its state and handles requests one at a time.

    The class's `call` and `cast` methods become methods of the handle that
    `open_server` and `serve` give out. Optional ``async def on_start(self)``
    and ``async def on_stop(self)`` run in the server's task when it starts
    and stops.

    Args:
      timeout: The default budget of its handlers, in seconds (5.0 unless
        given); ``None`` or ``math.inf`` for none. Keyword-only.
      mailbox_size: At most this many requests wait in the mailbox; ``None``
        (the default) for no bound.
      when_full: What a request meets when the mailbox is full: ``"wait"``
        (the default: backpressure, the caller waits for room, within its own
        deadline) or ``"refuse"`` (`ServerOverloaded` at once). Only with
        `mailbox_size`: an unbounded mailbox is never full.
      max_abandoned_threads: At most this many ``thread=True`` handlers may
        still run after being abandoned (cut by their budget); beyond that,
        thread handlers are refused with `ServerOverloaded` rather than grow
        threads without limit. 8 unless given.
      admission: Deadline-aware admission, on by default: a call whose
        caller's remaining time is shorter than the expected wait plus the
        method's expected service time is refused, when it is queued and
        again when it would start; the refused call ends as its caller's
        deadline would end it, at once (the scope that set the deadline is
        cancelled; see the Overload page). Calls with no
        deadline are never refused this way. ``False`` turns it off for every
        method (``@call(admission=False)`` for one).

    Returns:
      The same class, with its handle methods installed, and a
      ``__getstate__`` (wrapping the class's own, if it has one) that refuses
      to copy or pickle a running server's object with `HandleNotCopyable`,
      and leaves the run out of a stopped one's copy: a fresh server object.

    Cancellation:
      Not involved: it runs when the class is defined.

    Errors:
      Every definition error is raised here, when the class is defined, never
      at the first call (except for marks in a class without ``@server``,
      refused when first used).

    Raises:
      InvalidServerDefinition: naming the class (and method), when the class
        is defined: a bad `timeout` (a string, a bool, NaN, a negative number,
        or one too large for a float), `when_full` without `mailbox_size`,
        `@server` on something that is not a class or twice on one, hooks
        that are not ``async def`` methods taking only ``self`` (other
        parameters, a ``staticmethod`` or ``classmethod``) or are marked as
        handlers, a mark left in the class body without a method
        (``x = call(timeout=3)``), names starting with ``_trioserver``
        (reserved), or a class whose instances have no ``__dict__`` (such as
        attrs' slotted classes: use ``@attrs.define(slots=False)``). The docs
        page "Misuse and its errors" lists every case.
    """
    options = (timeout, mailbox_size, when_full, admission, max_abandoned_threads)
    if cls is BARE:

        def make(klass: object) -> Any:
            return _make_server(klass, *options)

        return make
    if cls is None or isinstance(cls, (int, float, str)):
        number = cls

        def refuse(klass: object) -> Any:
            raise InvalidServerDefinition(
                f"@server({number!r}) on {name_of(klass)}: timeout is keyword-only; "
                f"write @server(timeout={number!r})"
            )

        return refuse
    return _make_server(cls, *options)


def _make_server(
    cls: object,
    timeout: object,
    mailbox_size: object,
    when_full: object,
    admission: object,
    max_abandoned_threads: object,
) -> Any:
    if not isinstance(cls, type):
        name = getattr(cls, "__qualname__", None) or repr(cls)
        raise InvalidServerDefinition(
            f"@server on {name}: it decorates a class, not a {type(cls).__name__}"
        )
    name = cls.__qualname__
    default = check_timeout(timeout, f"@server on {name}")
    if mailbox_size is not None and (
        not isinstance(mailbox_size, int) or isinstance(mailbox_size, bool) or mailbox_size < 1
    ):
        raise InvalidServerDefinition(
            f"@server on {name}: mailbox_size must be None or a whole number >= 1, "
            f"not {mailbox_size!r}"
        )
    if when_full is not BARE and when_full not in ("wait", "refuse"):
        raise InvalidServerDefinition(
            f"@server on {name}: when_full must be 'wait' or 'refuse', not {when_full!r}"
        )
    if when_full is not BARE and mailbox_size is None:
        raise InvalidServerDefinition(
            f"@server on {name}: when_full={when_full!r} says what a request meets when the "
            f"mailbox is full, but the mailbox has no bound; give mailbox_size=N too, "
            f"or drop when_full"
        )
    if not isinstance(admission, bool):
        raise InvalidServerDefinition(
            f"@server on {name}: admission must be True or False, not {admission!r}"
        )
    if (
        not isinstance(max_abandoned_threads, int)
        or isinstance(max_abandoned_threads, bool)
        or max_abandoned_threads < 0
    ):
        raise InvalidServerDefinition(
            f"@server on {name}: max_abandoned_threads must be a whole number >= 0, "
            f"not {max_abandoned_threads!r}"
        )
    if SPEC in vars(cls):
        raise InvalidServerDefinition(f"@server on {name}: the class is a server already")
    if cls.__dictoffset__ == 0:
        raise InvalidServerDefinition(
            f"@server on {name}: its instances have no __dict__ (slots), where the server "
            f"keeps its state; use @attrs.define(slots=False) or add '__dict__' to __slots__"
        )
    marks = _collect(cls)
    methods = {
        attr: Method(
            name=attr,
            label=f"{name}.{attr}",
            kind=mark.kind,
            fn=mark.fn,
            is_async=mark.is_async or mark.thread,
            budget=default if mark.timeout is INHERIT else mark.timeout,  # type: ignore[arg-type]
            admission=admission and mark.admission,
            declared=mark.timeout,
            thread=mark.thread,
            crash=mark.crash,
            run=_in_worker_thread(mark.fn) if mark.thread else mark.fn,
            guard=mark.guard,
            durable=mark.durable,
            cleanup=mark.cleanup,
            handoff=not mark.thread and mark.guard is None,
        )
        for attr, mark in marks.items()
    }
    spec = ServerSpec(
        cls=cls,
        name=name,
        timeout=default,
        methods=methods,
        on_start=_hook(cls, "on_start", marks),
        on_stop=_hook(cls, "on_stop", marks),
        mailbox_size=mailbox_size if isinstance(mailbox_size, int) else None,
        when_full="refuse" if when_full == "refuse" else "wait",
        max_abandoned_threads=max_abandoned_threads,
        guarded=any(method.guard is not None for method in methods.values()),
        durable=tuple(attr for attr, method in methods.items() if method.durable is not None),
    )
    for attr, method in methods.items():
        setattr(cls, attr, handle_method(method))
    setattr(cls, SPEC, spec)
    setattr(cls, STATE, NotRunning(spec, "it was never started"))
    setattr(cls, "__getstate__", _getstate(cls))  # noqa: B010 (mypy refuses assigning a method)
    return cls


def _getstate(cls: type) -> Callable[[Any], object]:
    """`cls.__getstate__` (what `copy` and `pickle` ask): refused while the server runs.

    A running object's ``__dict__`` holds its run (tasks, a trio context): a copy would be a
    second live handle on one run, and a pickle cannot hold it. A stopped or never-started
    object copies as a plain one: its run is left out, so its copy is a fresh server object.
    """
    own: Callable[[Any], object] | None = vars(cls).get("__getstate__")
    klass: type[Any] = cls  # as `type`, mypy refuses it to super()

    def __getstate__(self: object) -> object:
        state = self.__dict__.get(STATE)
        if state is not None and not hasattr(state, "why"):  # a stopped state says why
            raise HandleNotCopyable(
                f"{type(self).__qualname__}: a running server's handle cannot be copied or "
                f"pickled; copy its state inside a handler, or stop it first"
            )
        found: object = own(self) if own is not None else super(klass, self).__getstate__()
        if isinstance(found, tuple):
            pair = typing.cast("tuple[object, ...]", found)
            if len(pair) == 2:  # (__dict__, __slots__' values)
                return (_without_run(pair[0]), pair[1])
            return pair
        return _without_run(found)

    __getstate__.__qualname__ = f"{cls.__qualname__}.__getstate__"
    __getstate__.__module__ = cls.__module__
    return __getstate__


def _without_run(state: object) -> object:
    """An object's state for `copy` and `pickle`, without its run."""
    if not isinstance(state, dict):
        return state
    attributes = typing.cast("dict[str, object]", state)
    if STATE not in attributes:
        return attributes
    return {key: value for key, value in attributes.items() if key != STATE}


def _collect(cls: type) -> dict[str, Handler[Any, Any, Any]]:
    """The marks of `cls` and its bases, by name; a plain attribute overrides an inherited mark."""
    marks: dict[str, Handler[Any, Any, Any]] = {}
    for klass in reversed(cls.__mro__[:-1]):
        is_server = SPEC in vars(klass)
        for attr, value in vars(klass).items():
            if attr.startswith(RESERVED) and not is_server:
                raise InvalidServerDefinition(
                    f"{klass.__qualname__}.{attr}: names starting with {RESERVED!r} are "
                    f"reserved for trioserver; rename it"
                )
            if isinstance(value, PendingMark) or value is call or value is cast:
                _refuse_unapplied(klass, attr, value)
            if isinstance(value, Handler):
                marks[attr] = value
            elif is_server and attr in getattr(klass, SPEC).methods:
                method = getattr(klass, SPEC).methods[attr]
                # a bare mark keeps following the server that runs it
                marks[attr] = Handler(
                    method.kind,
                    method.fn,
                    method.declared,
                    method.admission,
                    method.thread,
                    method.crash,
                    method.guard,
                    method.durable,
                    method.cleanup,
                )
            else:
                marks.pop(attr, None)
    return marks


def _refuse_unapplied(klass: type, attr: str, value: object) -> None:
    """Refuse a mark left in a class body as a value (``x = call(42)``) instead of a decorator."""
    if isinstance(value, PendingMark):
        kind, written, meant = value.kind, value.written, value.meant
    else:  # `x = call`: the decorator itself
        kind = written = "call" if value is call else "cast"
        meant = f"@{kind}"
    raise InvalidServerDefinition(
        f"{klass.__qualname__}.{attr} = {written}: @{kind} marks the method it decorates, and "
        f"here it marks nothing; write {meant} on the line above `def {attr}(self, ...)`"
    )


def _in_worker_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The server's way to call a ``thread=True`` handler: in one of its worker threads."""

    async def run_in_thread(obj: Any, *args: Any, **kwargs: Any) -> Any:
        state = obj.__dict__[STATE]
        runtime = getattr(state, "last", None) or state  # on_stop: the run that is ending
        return await runtime.threads.run(fn, obj, *args, **kwargs)

    return run_in_thread


def _hook(cls: type, name: str, marks: dict[str, Handler[Any, Any, Any]]) -> Any:
    if name in marks:
        raise InvalidServerDefinition(
            f"{cls.__qualname__}.{name} is a lifecycle hook: it cannot be marked "
            f"@{marks[name].kind}; remove the mark"
        )
    hook = inspect.getattr_static(cls, name, None)
    if hook is None:
        return None
    where = f"{cls.__qualname__}.{name}"
    if isinstance(hook, (staticmethod, classmethod)):
        what = "staticmethod" if isinstance(hook, staticmethod) else "classmethod"
        raise InvalidServerDefinition(
            f"{where} is a {what}; a lifecycle hook is a plain `async def {name}(self)` "
            f"method: drop @{what} and take self"
        )
    if not inspect.iscoroutinefunction(hook):
        raise InvalidServerDefinition(
            f"{where} must be an `async def {name}(self)` method taking only self"
        )
    params = list(inspect.signature(hook).parameters.values())
    if len(params) != 1 or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        written = inspect.Signature([p.replace(annotation=p.empty) for p in params])
        raise InvalidServerDefinition(
            f"{where}{written}: the server calls it with self alone; "
            f"write `async def {name}(self)` and keep what it needs on self (set in __init__)"
        )
    return hook
