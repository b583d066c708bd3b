"""What `@server` learned about a class: its spec and methods (a leaf: the runtime reads it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs

from ._budget import Inherit
from ._errors import InvalidServerDefinition
from ._marks import Durability, Kind

WhenFull = Literal["wait", "refuse"]

RESERVED = "_trioserver"
SPEC = "_trioserver_spec"
STATE = "_trioserver_state"
HOOKS = ("on_start", "on_stop")


@attrs.frozen(eq=False)
class Method:
    """One handler of a server class, with its budget resolved."""

    name: str
    label: str  # "Theater.reserve": how errors and logs name it
    kind: Kind
    fn: Callable[..., Any]
    is_async: bool
    budget: float | None
    admission: bool  # deadline-aware admission may refuse its requests
    declared: float | Inherit | None  # the mark's own timeout: INHERIT follows the server
    thread: bool  # a plain def run in a worker thread
    crash: bool  # a cast whose error crashes the server
    run: Callable[..., Any]  # what the server calls: `fn`, or `fn` in a worker thread
    guard: Callable[[Any], object] | None  # `when=`: it starts only while this holds
    durable: Durability | None  # a durable cast (`_durable`): stored before it runs
    cleanup: bool  # sent even from a cancelled task, its reply awaited shielded (`_cleanup`)
    handoff: (
        bool  # an idle server may run it in its caller's step (`_handoff`): no thread, no guard
    )


@attrs.frozen(eq=False)
class ServerSpec:
    """What `@server` learned about a class: its handlers, hooks and default budget."""

    cls: type
    name: str
    timeout: float | None
    methods: dict[str, Method]
    on_start: Callable[[Any], Any] | None
    on_stop: Callable[[Any], Any] | None
    mailbox_size: int | None
    when_full: WhenFull
    max_abandoned_threads: int
    guarded: bool  # some method has a guard (`when=`)
    durable: tuple[str, ...]  # the names of its durable casts: it needs a store

    @property
    def threaded(self) -> bool:
        """Whether any handler runs in worker threads (``thread=True``)."""
        return any(method.thread for method in self.methods.values())


def spec_of(obj: object) -> ServerSpec:
    """The spec of `obj`'s server class, or `InvalidServerDefinition` if it has none.

    Every entry point (`open_server`, `serve`, `statistics`, supervision) asks it first.
    """
    spec = getattr(type(obj), SPEC, None)
    if isinstance(spec, ServerSpec):
        return spec
    if isinstance(obj, type):
        cls = obj.__qualname__
        if isinstance(getattr(obj, SPEC, None), ServerSpec):
            raise InvalidServerDefinition(
                f"got the server class {cls} itself, where a server object is needed: "
                f"give an instance, {cls}(...)"
            )
        raise InvalidServerDefinition(
            f"got the class {cls}, where a server object is needed: decorate the class "
            f"{cls} with @server and give an instance, {cls}(...)"
        )
    cls = type(obj).__qualname__
    raise InvalidServerDefinition(f"{cls} is not a server: decorate the class {cls} with @server")
