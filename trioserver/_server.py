"""`@server`: collect a class's marked handlers once, check them, and install its handle methods."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from ._budget import DEFAULT_TIMEOUT, INHERIT, check_timeout
from ._errors import InvalidServerDefinition
from ._handle_methods import handle_method
from ._marks import BARE, Handler, name_of
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
    when_full: object = "wait",
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
        (backpressure: the caller waits for room, within its own deadline) or
        ``"refuse"`` (`ServerOverloaded` at once).
      max_abandoned_threads: At most this many ``thread=True`` handlers may
        still run after being abandoned (cut by their budget); beyond that,
        thread handlers are refused with `ServerOverloaded` rather than grow
        threads without limit. 8 unless given.
      admission: Deadline-aware admission, on by default: a call whose
        caller's remaining time is shorter than the expected wait plus the
        method's expected service time is refused with `ServerOverloaded`,
        when it is queued and again when it would start. Calls with no
        deadline are never refused this way. ``False`` turns it off for every
        method (``@call(admission=False)`` for one).

    Returns:
      The same class, with its handle methods installed.

    Cancellation:
      Not involved: it runs when the class is defined.

    Errors:
      Every definition error is raised here, when the class is defined, never
      at the first call (except for marks in a class without ``@server``,
      refused when first used).

    Raises:
      InvalidServerDefinition: naming the class (and method), when the class
        is defined: a bad `timeout`, `@server` on something that is not a
        class or twice on one, hooks that are not ``async def`` or are marked
        as handlers, names starting with ``_trioserver`` (reserved), or a
        class whose instances have no ``__dict__`` (such as attrs' slotted
        classes: use ``@attrs.define(slots=False)``).
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
    if when_full not in ("wait", "refuse"):
        raise InvalidServerDefinition(
            f"@server on {name}: when_full must be 'wait' or 'refuse', not {when_full!r}"
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
    )
    for attr, method in methods.items():
        setattr(cls, attr, handle_method(method))
    setattr(cls, SPEC, spec)
    setattr(cls, STATE, NotRunning(spec, "it was never started"))
    return cls


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
                )
            else:
                marks.pop(attr, None)
    return marks


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
    if not inspect.iscoroutinefunction(hook):
        raise InvalidServerDefinition(
            f"{cls.__qualname__}.{name} must be an `async def` method taking only self"
        )
    return hook
