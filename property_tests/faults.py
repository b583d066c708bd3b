"""Fault injection: whole scenarios drawn by Hypothesis, run on virtual time, checked afterwards.

Only the public API is used (``from trioserver import ...``, trio, Hypothesis), so the suite
survives rewrites of the internals. A scenario is a few servers (options and methods drawn), the
callers that use them (start time, deadline, cancellation, what the handler will do), and when
and how each server is stopped. `run_scenario` runs it in one ``trio.run`` on a ``MockClock``
(autojump), records a log of every call and every handler run, and `check` returns the
violations of the invariants, each naming its invariant; `story` prints the scenario.

The numbered invariants (the brief's, after guarantees 1-16 of docs/explanation/contract.md):

1. every call ends in exactly one allowed outcome, and no caller is still waiting at the end
   (HANG otherwise);
2. no caller finishes after its own deadline or cancellation (exact, virtual time);
3. at most one handler of a server *holds* it at a time (guarantee 15: code inside a released
   block does not hold it; inline self-calls and child tasks are part of their handler);
4. start order: among the requests waiting for a server, the oldest whose guard holds starts
   first (guarantee 14; an unguarded request's guard always holds, so among those it is
   FIFO), and a released handler leaving its block retakes the server ahead of every request
   not yet started (guarantee 15); only where guarantee 1 clearly requires it (not behind a
   mailbox whose callers wait for room);
5. a handler's deadline is ``min(start + budget, caller's deadline)`` (a guarded request's
   budget starts with its handler);
6. statistics add up after the stop (and, sampled whenever a handler takes or gives back the
   server, ``running`` is 1 while one holds it and ``released`` counts the handlers in
   released blocks);
7. no task is left after the scenario;
9. an instrument installed on a server sees each request's life once, in order (queued, then
   started, then finished; or queued, then withdrawn or shed; or shed before queueing), and
   its events add up to the statistics (drawn per server: instrumented or not);
14. guarded calls: a guarded handler starts only while its guard holds; a guard that raises
   gives its caller that very exception (counted ``failed``); guards are evaluated only in
   the server's turn (never while a handler other than an inline caller holds the server); a
   server free while a waiting request's guard holds does not stay free; an inline self-call
   to a guarded method whose guard is false is a ``DeadlockError`` at once;
15. released blocks: a handler in a block retakes the server as soon as it is free (and only
   waits while another handler holds it); a call from a block to its own server is queued,
   not run inline; the block ends by the request's deadline or its caller's cancellation;
   every handler, released ones included, has ended before its server's stop completes;
16. cross-server cycles: a call that would close a cycle of waits (A's handler awaits B's
   request, which waits for A's holder...) may only end as the guarantee says; see
   `CYCLES_DETECTED`.

Invariant 8 (no leaked thread) is checked by the thread test in test_faults.py.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import re
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import hypothesis
import trio
import trio.testing
from hypothesis import strategies as st

from trioserver import (
    CallInfo,
    CallTimeout,
    DeadlockError,
    Instrument,
    ServerCrashed,
    ServerOverloaded,
    ServerStopped,
    _private,
    call,
    cast,
    open_server,
    open_supervisor,
    released,
    serve,
    server,
    statistics,
)

DEFAULT_TIMEOUT = 5.0
"""The server-wide budget when ``@server`` is not given one (docs: 5 s unless set)."""

SCENARIO_LIMIT = 100.0
"""Virtual seconds a whole scenario may take; a caller still waiting then is a HANG."""

INHERIT = "inherit"
"""A method or server option that is not given (the default applies)."""

# Guarantee 16 (cross-server cycle detection, on main since 0b4ffd7): a call that closes a
# cycle of waits raises DeadlockError at once (nothing queued, nothing counted).
# TRIOSERVER_CYCLES_DETECTED=0 loosens this for code without the detection: such a call may
# then also end as the cycle's budgets run out (CallTimeout at a handler's deadline, or the
# closing call cancelled with its handler).
CYCLES_DETECTED = os.environ.get("TRIOSERVER_CYCLES_DETECTED", "1") == "1"

GUARD_STOP = 30.0
"""In a scenario with guarded calls, a server stopped "once every caller finished" is stopped
at this virtual time at the latest: a caller with no deadline may wait for its guard forever,
which guarantee 14 allows (the stop tells it ServerStopped)."""

GUARDS = {
    "free": "tokens >= 1",
    "two": "tokens >= 2",
    "flaky": "raises if tokens == 1, else tokens >= 2",
}
"""The guards a guarded method may have: plain functions of the server's token count."""

NEEDS = {"free": 1, "two": 2, "flaky": 1}
"""How many tokens a guarded handler takes at its start (its guard promised them)."""


def guard_verdict(guard: str | None, tokens: int) -> bool | str:
    """What guard `guard` says with `tokens` tokens: True, False, or "raise"."""
    if guard is None:
        return True
    if guard == "free":
        return tokens >= 1
    if guard == "two":
        return tokens >= 2
    if tokens == 1:
        return "raise"
    return tokens >= 2


# -- the scenario ----------------------------------------------------------------------------


@attrs.frozen
class Action:
    """What a handler does with one request.

    kind: ``return``, ``raise``, ``sleep`` (``seconds``), ``shield`` (a shielded sleep of
    ``seconds``), ``children`` (``count`` child tasks sleeping ``seconds``; with ``deadlock``
    one of them calls the handler's own server, which must be refused), ``self`` (an inline
    call of method ``method`` of its own server, doing ``inner``; from inside a released block
    it is queued instead), ``other`` (a call of method ``method`` of server ``server``, doing
    ``inner``), ``released`` (``async with trioserver.released():`` doing ``inner``; then,
    holding the server again, in a ``finally``, it gives ``regive`` tokens back, and if
    ``after`` is not None it sleeps ``after`` seconds holding it).

    ``give``: tokens the handler adds to its server's count as it starts, holding it.
    """

    kind: str
    seconds: float = 0.0
    count: int = 0
    deadlock: bool = False
    server: int = -1
    method: str = ""
    inner: Action | None = None
    give: int = 0
    regive: int = 0
    after: float | None = None

    def __str__(self) -> str:
        give = f"give {self.give}; " if self.give else ""
        return give + self._what()

    def _what(self) -> str:
        if self.kind in ("return", "raise"):
            return self.kind
        if self.kind == "sleep":
            return f"sleep({self.seconds})"
        if self.kind == "shield":
            return f"shielded sleep({self.seconds})"
        if self.kind == "children":
            extra = ", one calls its own server" if self.deadlock else ""
            return f"{self.count} children sleeping {self.seconds}{extra}"
        if self.kind == "self":
            return f"self-call .{self.method}() doing [{self.inner}]"
        if self.kind == "released":
            after = "" if self.after is None else f"; sleep({self.after}) holding"
            return (
                f"async with released(): [{self.inner}]; finally (holding): "
                f"give {self.regive}{after}"
            )
        return f"call S{self.server}.{self.method}() doing [{self.inner}]"


@attrs.frozen
class MethodSpec:
    name: str
    kind: str  # "call" or "cast"
    is_async: bool
    timeout: float | str | None = INHERIT
    crash: bool = False
    admission: bool = True
    guard: str | None = None  # a key of GUARDS: @call(when=...)

    def __str__(self) -> str:
        options = []
        if self.guard is not None:
            options.append(f"when={GUARDS[self.guard]}, takes {NEEDS[self.guard]}")
        if self.timeout != INHERIT:
            options.append(f"timeout={self.timeout}")
        if self.crash:
            options.append("crash=True")
        if not self.admission:
            options.append("admission=False")
        prefix = "async def" if self.is_async else "def"
        return f"@{self.kind}({', '.join(options)}) {prefix} {self.name}"


@attrs.frozen
class ServerSpec:
    index: int
    methods: tuple[MethodSpec, ...]
    timeout: float | str | None = INHERIT
    mailbox_size: int | None = None
    when_full: str = "wait"
    admission: bool = True
    lifetime: str = "open_exit"  # open_exit, open_cancel, serve, supervised
    stop_at: float | None = None  # None: once every caller has finished
    instrumented: bool = False  # an `EventLog` instrument installed (not when supervised)
    tokens: int = 0  # the server's token count at its start (what guards read)

    def method(self, name: str) -> MethodSpec:
        return next(m for m in self.methods if m.name == name)

    def budget(self, method: MethodSpec) -> float:
        timeout = self.timeout if method.timeout == INHERIT else method.timeout
        if timeout == INHERIT:
            return DEFAULT_TIMEOUT
        return math.inf if timeout is None else float(timeout)

    def guarded(self) -> bool:
        return any(m.guard is not None for m in self.methods)

    def bounded_wait(self) -> bool:
        """Callers may wait for room, outside the mailbox (where start order is unobservable)."""
        return self.mailbox_size is not None and self.when_full == "wait"

    def options(self) -> str:
        options = []
        if self.timeout != INHERIT:
            options.append(f"timeout={self.timeout}")
        if self.mailbox_size is not None:
            options.append(f"mailbox_size={self.mailbox_size}, when_full={self.when_full!r}")
        if not self.admission:
            options.append("admission=False")
        return ", ".join(options)

    def __str__(self) -> str:
        how = {
            "open_exit": "async with open_server(S{i}) (the block ends at the stop)",
            "open_cancel": "async with open_server(S{i}) (its scope cancelled at the stop)",
            "serve": "await nursery.start(serve, S{i}) (that nursery cancelled at the stop)",
            "supervised": "await supervisor.start(S{i}) under open_supervisor",
        }[self.lifetime].format(i=self.index)
        stop = "once every caller finished" if self.stop_at is None else f"at t={self.stop_at}"
        tokens = f"; {self.tokens} tokens at its start" if self.tokens else ""
        lines = [f"@server({self.options()}) class S{self.index}: {how}; stopped {stop}{tokens}"]
        lines += [f"    {m}" for m in self.methods]
        if self.instrumented:
            lines.append("    (an instrument installed: it logs every event)")
        return "\n".join(lines)


@attrs.frozen
class CallerSpec:
    index: int
    server: int
    method: str
    action: Action
    start: float = 0.0
    deadline: str = "none"  # none, move_on_after, fail_after
    seconds: float = 0.0  # of the deadline
    cancel_after: float | None = None  # another task cancels the caller's scope then

    def __str__(self) -> str:
        limit = "" if self.deadline == "none" else f" under {self.deadline}({self.seconds})"
        cancel = ""
        if self.cancel_after is not None:
            cancel = f", its scope cancelled at t={self.start + self.cancel_after}"
        return (
            f"caller c{self.index} at t={self.start}{limit}{cancel}: "
            f"S{self.server}.{self.method}() doing [{self.action}]"
        )


@attrs.frozen
class Scenario:
    servers: tuple[ServerSpec, ...]
    callers: tuple[CallerSpec, ...]
    # what seeded trio's scheduler (`st.random_module()`: trio registers the Random with which
    # it reverses or shuffles each batch of runnable tasks), so the interleaving is drawn
    # too; None: as it was
    order: Any = attrs.field(default=None, eq=False)

    def guarded(self) -> bool:
        return any(s.guarded() for s in self.servers)

    def lines(self) -> list[str]:
        lines = [*map(str, self.servers), *map(str, self.callers)]
        if self.guarded():
            lines.append(f"(servers stopped once every caller finished: at t={GUARD_STOP} latest)")
        if self.order is not None:
            lines.append(f"(trio's scheduler: {self.order!r})")
        return lines

    def __str__(self) -> str:
        return "\n".join(["scenario:", *self.lines()])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis prints the story
        printer.text("\n".join(["", *self.lines()]))


# -- strategies ------------------------------------------------------------------------------

SLEEPS = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.0])
DEADLINES = st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 6.0])
BUDGETS = (INHERIT, INHERIT, None, 0.0, 0.5, 1.0, 2.0)
SERVER_BUDGETS = (INHERIT, INHERIT, None, 0.5, 1.0, 2.0)


@attrs.frozen
class Focus:
    """Where a test's scenarios concentrate: the choices each knob is drawn from.

    Repeated entries weigh a choice; Hypothesis shrinks toward the first one.
    """

    lifetimes: tuple[str, ...] = ("open_exit", "open_cancel", "serve")
    servers: tuple[int, ...] = (1, 2)
    mailbox_sizes: tuple[int | None, ...] = (None, None, 1, 1, 2, 3)
    when_full: tuple[str, ...] = ("wait", "wait", "refuse")
    stop_at: tuple[float | None, ...] = (None, None, None, 0.0, 0.25, 0.5, 1.0, 2.0)
    kinds: tuple[str, ...] = ("call", "call", "cast")
    deadlines: tuple[str, ...] = ("none", "none", "move_on_after", "fail_after")
    cancel_after: tuple[float | None, ...] = (None, None, None, 0.0, 0.25, 0.5, 1.0, 2.0)
    max_callers: int = 7
    min_callers: int = 1
    repeat: int = 3  # 1 in `repeat` callers repeats the previous one (a burst)
    times: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 2.0)  # callers' starts
    asyncs: tuple[bool, ...] = (False, True)  # whether a method is `async def`
    budgets: tuple[float | str | None, ...] = BUDGETS  # a method's timeout
    server_budgets: tuple[float | str | None, ...] = SERVER_BUDGETS  # @server(timeout=...)
    # guarantee 14: a call's guard (None: unguarded), the tokens a server starts with, and the
    # tokens an action gives back
    guards: tuple[str | None, ...] = (None,) * 9 + ("free", "two", "flaky")
    tokens: tuple[int, ...] = (0, 0, 1, 2)
    gives: tuple[int, ...] = (0, 0, 0, 1)
    # guarantee 15: how many of the handler's action choices are a released block (of 3 leaf
    # choices, 1 for an inline self-call and 1 for a call to another server), what the block
    # sleeps, and what the handler sleeps after it (None: nothing)
    released: int = 0
    # (0.1 and 0.2: an idle server's task retires 0.1 s after it parks, trioserver's
    # RETIRE_AFTER: a block may end just as it does)
    block_sleeps: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 6.0, 0.1, 0.2)
    afters: tuple[float | None, ...] = (None, None, None, 0.0, 0.5)
    # guarantee 16: calls to any other server (not only later ones), nested two deep; how
    # many of the action choices are such a call
    cycles: bool = False
    calls: int = 1
    # often begin with a pattern (the rest drawn as usual): a handler releases its server,
    # another takes it and holds it past the block's end, others queue meanwhile, so that
    # the released handler must take the server back ahead of them
    retakes: bool = False


GENERAL = Focus(released=1)
BURSTS = Focus(
    servers=(1, 1, 2),
    mailbox_sizes=(1, 1, 1, 2, 3, None),
    when_full=("wait", "wait", "wait", "refuse"),
    stop_at=(None,),
    deadlines=("none", "none", "none", "none", "move_on_after", "fail_after"),
    cancel_after=(None, None, None, None, 0.0, 0.5),
    max_callers=8,
    repeat=1,
    guards=(None,),  # (as before guarantees 14-16: the other foci mix those in)
)
STOPS = Focus(
    stop_at=(0.5, 0.0, 0.25, 1.0, 2.0, None),
    kinds=("cast", "call"),
    mailbox_sizes=(None, None, 1, 2),
    max_callers=5,
    released=2,
)
SUPERVISED = Focus(
    lifetimes=("supervised", "supervised", "open_exit", "serve"),
    kinds=("cast", "call"),
    max_callers=6,
    guards=(None, None, None, None, None, "free"),
    released=1,
)
GUARDED = Focus(
    servers=(1, 1, 2),
    times=(0.0, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0),
    asyncs=(False, True, True),
    mailbox_sizes=(None, None, None, 1, 2),
    stop_at=(None, None, None, None, 0.5, 1.0, 2.0, 4.0),
    guards=(None, None, "free", "free", "two", "flaky"),
    tokens=(0, 0, 1, 1, 2),
    gives=(0, 1, 1, 2),
    released=2,
    min_callers=3,
    max_callers=8,
)
RELEASED = Focus(
    servers=(1, 1, 1, 2),
    times=(0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 2.0),
    asyncs=(True, True, True, False),
    stop_at=(None, None, None, 0.0, 0.25, 0.5, 1.0, 2.0, 3.0),
    guards=(None, None, None, None, "free", "two", "flaky"),
    gives=(0, 0, 1),
    released=3,
    block_sleeps=(0.0, 0.25, 0.25, 0.5, 0.5, 1.0, 2.0, 3.0, 6.0, 0.1, 0.2),
    retakes=True,
    min_callers=3,
    max_callers=8,
    repeat=2,
)
CYCLES = Focus(
    lifetimes=("open_exit", "open_cancel", "serve"),
    servers=(2, 2, 3),
    asyncs=(True, True, False),
    mailbox_sizes=(None,),
    stop_at=(None, None, None, None, 1.0, 3.0),
    kinds=("call", "call", "call", "cast"),
    # finite budgets only: a cycle of waits closed by a released handler taking its server
    # back (not by a call, so guarantee 16 does not refuse it) ends only as budgets run out
    budgets=(INHERIT, INHERIT, 0.5, 1.0, 2.0),
    server_budgets=(INHERIT, 1.0, 2.0, 3.0),
    guards=(None, None, None, None, None, "free"),
    released=2,
    cycles=True,
    calls=8,
    min_callers=2,
    repeat=2,
)


def leaf_actions(is_async: bool, focus: Focus, gives: bool = True) -> st.SearchStrategy[Action]:
    give = st.sampled_from(focus.gives) if gives else st.just(0)
    simple = st.builds(Action, kind=st.sampled_from(["return", "raise"]), give=give)
    if not is_async:
        return simple
    return st.one_of(
        simple,
        st.builds(Action, kind=st.just("sleep"), seconds=SLEEPS, give=give),
        st.builds(Action, kind=st.just("shield"), seconds=SLEEPS, give=give),
        st.builds(
            Action,
            kind=st.just("children"),
            seconds=SLEEPS,
            count=st.integers(1, 3),
            deadlock=st.booleans(),
            give=give,
        ),
    )


def call_targets(
    servers: tuple[ServerSpec, ...], spec: ServerSpec, focus: Focus
) -> list[ServerSpec]:
    """The servers a handler of `spec` may call: later ones (no cycle possible), or with
    `focus.cycles` every other one."""
    if focus.cycles:
        return [s for s in servers if s.index != spec.index]
    return list(servers[spec.index + 1 :])


@st.composite
def actions(
    draw: st.DrawFn,
    servers: tuple[ServerSpec, ...],
    spec: ServerSpec,
    method: MethodSpec,
    focus: Focus = GENERAL,
    depth: int = 0,
) -> Action:
    """What a handler of `spec.method` does. At `depth` 0 a call it makes may itself call
    on (with `focus.cycles`), or enter a released block."""
    if not method.is_async:
        return draw(leaf_actions(False, focus))
    choices = ["leaf", "leaf", "leaf"]
    own_calls = [m for m in spec.methods if m.kind == "call"]
    if own_calls:
        choices.append("self")
    targets = call_targets(servers, spec, focus)
    if targets:
        choices += ["other"] * focus.calls
    if depth <= 1:
        choices += ["released"] * focus.released
    choice = draw(st.sampled_from(choices))
    if choice == "leaf":
        action = draw(leaf_actions(True, focus))
        if action.kind == "children" and action.deadlock and not own_calls:
            action = attrs.evolve(action, deadlock=False)
        return action
    if choice == "released":
        return draw(released_actions(servers, spec, focus, depth))
    give = draw(st.sampled_from(focus.gives))
    if choice == "self":
        target = draw(st.sampled_from(own_calls))
        if depth == 0 and target.is_async and focus.released and draw(st.integers(0, 3)) == 0:
            inner = draw(released_actions(servers, spec, focus, depth=1))  # an inline block
        else:
            inner = draw(leaf_actions(target.is_async, focus))
        return Action("self", method=target.name, inner=inner, give=give)
    other = draw(st.sampled_from(targets))
    target = draw(st.sampled_from(other.methods))
    if depth == 0 and focus.cycles:
        inner = draw(actions(servers, other, target, focus, depth=1))
    else:
        inner = draw(leaf_actions(target.is_async, focus))
    return Action("other", server=other.index, method=target.name, inner=inner, give=give)


@st.composite
def released_actions(
    draw: st.DrawFn, servers: tuple[ServerSpec, ...], spec: ServerSpec, focus: Focus, depth: int
) -> Action:
    return Action(
        "released",
        inner=draw(block_actions(servers, spec, focus, depth)),
        give=draw(st.sampled_from(focus.gives)),
        regive=draw(st.sampled_from(focus.gives)),
        after=draw(st.sampled_from(focus.afters)),
    )


@st.composite
def block_actions(
    draw: st.DrawFn, servers: tuple[ServerSpec, ...], spec: ServerSpec, focus: Focus, depth: int
) -> Action:
    """What a released block does: sleep (within or past the budget), raise, a shielded
    sleep, children, a (queued) call to its own server, or a call to another server."""
    choices = ["sleep", "sleep", "sleep", "raise", "shield", "children"]
    own_calls = [m for m in spec.methods if m.kind == "call"]
    if own_calls:
        choices.append("self")
    targets = call_targets(servers, spec, focus)
    if targets:
        choices.append("other")
    choice = draw(st.sampled_from(choices))
    seconds = draw(st.sampled_from(focus.block_sleeps))
    if choice in ("sleep", "shield"):
        return Action(choice, seconds=seconds)
    if choice == "raise":
        return Action("raise")
    if choice == "children":
        count = draw(st.integers(1, 2))
        return Action("children", seconds=seconds, count=count, deadlock=bool(own_calls))
    if choice == "self":
        target = draw(st.sampled_from(own_calls))
        return Action("self", method=target.name, inner=draw(leaf_actions(target.is_async, focus)))
    other = draw(st.sampled_from(targets))
    target = draw(st.sampled_from(other.methods))
    if depth == 0 and focus.cycles:
        inner = draw(actions(servers, other, target, focus, depth=1))
    else:
        inner = draw(leaf_actions(target.is_async, focus))
    return Action("other", server=other.index, method=target.name, inner=inner)


@st.composite
def server_specs(draw: st.DrawFn, index: int, focus: Focus) -> ServerSpec:
    lifetime = draw(st.sampled_from(focus.lifetimes))
    methods = []
    for number in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(focus.kinds))
        is_async = draw(st.sampled_from(focus.asyncs))
        crash = kind == "cast" and lifetime == "supervised" and draw(st.booleans())
        admission = kind == "cast" or draw(st.sampled_from([True, True, False]))
        guard = draw(st.sampled_from(focus.guards)) if kind == "call" else None
        methods.append(
            MethodSpec(
                f"m{number}",
                kind,
                is_async,
                timeout=draw(st.sampled_from(focus.budgets)),
                crash=crash,
                admission=admission,
                guard=guard,
            )
        )
    guarded = any(m.guard is not None for m in methods)
    return ServerSpec(
        index=index,
        methods=tuple(methods),
        timeout=draw(st.sampled_from(focus.server_budgets)),
        mailbox_size=draw(st.sampled_from(focus.mailbox_sizes)),
        when_full=draw(st.sampled_from(focus.when_full)),
        admission=draw(st.booleans()),
        lifetime=lifetime,
        stop_at=draw(st.sampled_from(focus.stop_at)),
        instrumented=lifetime != "supervised" and draw(st.booleans()),
        tokens=draw(st.sampled_from(focus.tokens)) if guarded else 0,
    )


@st.composite
def callers(
    draw: st.DrawFn, servers: tuple[ServerSpec, ...], index: int, focus: Focus
) -> CallerSpec:
    spec = draw(st.sampled_from(servers))
    method = draw(st.sampled_from(spec.methods))
    deadline = draw(st.sampled_from(focus.deadlines))
    return CallerSpec(
        index=index,
        server=spec.index,
        method=method.name,
        action=draw(actions(servers, spec, method, focus)),
        start=draw(st.sampled_from(focus.times)),
        deadline=deadline,
        seconds=0.0 if deadline == "none" else draw(DEADLINES),
        cancel_after=draw(st.sampled_from(focus.cancel_after)),
    )


@st.composite
def retake_pattern(
    draw: st.DrawFn, servers: tuple[ServerSpec, ...], focus: Focus
) -> list[CallerSpec]:
    """c0 releases S0 for `block` seconds from t=0; c1 takes S0 at t=0.25 and holds it past
    the block's end; c2 (and maybe c3) queue behind c1: c0 must retake S0 before them."""
    spec = servers[0]
    methods = [m for m in spec.methods if m.is_async]
    if not methods:
        return []
    block = draw(st.sampled_from([0.5, 1.0, 0.2]))
    release = Action(
        "released",
        inner=Action("sleep", seconds=block),
        regive=draw(st.sampled_from(focus.gives)),
        after=draw(st.sampled_from(focus.afters)),
    )
    hold = Action("sleep", seconds=block + draw(st.sampled_from([0.25, 0.5, 1.0])))
    pattern = [
        CallerSpec(0, 0, draw(st.sampled_from(methods)).name, release, start=0.0),
        CallerSpec(1, 0, draw(st.sampled_from(methods)).name, hold, start=0.25),
    ]
    for index in range(2, 2 + draw(st.integers(1, 2))):
        method = draw(st.sampled_from(spec.methods))
        pattern.append(
            CallerSpec(
                index,
                0,
                method.name,
                draw(actions(servers, spec, method, focus)),
                start=draw(st.sampled_from([0.25, 0.5, block])),
            )
        )
    return pattern


@st.composite
def scenarios(draw: st.DrawFn, focus: Focus = GENERAL) -> Scenario:
    count = draw(st.sampled_from(focus.servers))
    servers = tuple(draw(server_specs(i, focus)) for i in range(count))
    # bursts: often a caller repeats the previous one (same start, method and action)
    drawn: list[CallerSpec] = []
    if focus.retakes and draw(st.booleans()):
        drawn += draw(retake_pattern(servers, focus))
    for index in range(len(drawn), draw(st.integers(focus.min_callers, focus.max_callers))):
        if drawn and draw(st.integers(0, focus.repeat)) == 0:
            drawn.append(attrs.evolve(drawn[-1], index=index))
        else:
            drawn.append(draw(callers(servers, index, focus)))
    # the interleaving: trio's scheduler seeded from the example (shrinks toward seed 0)
    return Scenario(servers, tuple(drawn), draw(st.random_module()))


# -- the log ---------------------------------------------------------------------------------


class Boom(Exception):
    """A handler's own exception: each one is a fresh object, compared by identity."""


class GuardBoom(Exception):
    """A guard's own exception (the ``flaky`` guard, with one token): a fresh object each time."""


@attrs.define(eq=False)
class Req:
    """One request: the argument every handler takes."""

    rid: str
    action: Action
    inline: bool = False
    parent: HandlerRun | None = None  # the outer handler's run, for an inline self-call


@attrs.define(eq=False)
class HandlerRun:
    rid: str
    server: int
    obj: int  # which object (a supervisor makes a fresh one per restart)
    method: str
    inline: bool
    start: float
    deadline: float
    order: int  # global start order
    end: float | None = None
    ending: str = ""  # returned, raised, cut (BaseException), or other
    token: object = None
    error: BaseException | None = None
    overlap: str = ""
    parent: HandlerRun | None = None
    end_order: int | None = None
    tokens: int = 0  # the server's tokens as the handler started (before it took any)
    task: object = None  # the task it started in
    # its released block (guarantee 15): entered, left (the block's code ended), taken back
    block_in: float | None = None
    block_in_order: int = -1
    block_out: float | None = None
    block_out_order: int | None = None
    retake: float | None = None
    retake_order: int | None = None
    late: float = -math.inf  # the last time it (or an inline self-call in it) retook the server
    # (top-level runs) the call it (or an inline self-call in it) waits for now; whether it is
    # in a released block now (then it holds no server)
    awaiting: CallRecord | None = None
    in_block: bool = False

    def top(self) -> HandlerRun:
        """The top-level run this one is part of (itself, unless an inline self-call)."""
        return self.parent.top() if self.inline and self.parent is not None else self


@attrs.frozen
class Hold:
    """A handler of a server takes it (``start``, ``retake``) or gives it back (``end``,
    ``release``), with the server's tokens then (before a start takes any)."""

    order: int
    time: float
    server: int
    obj: int
    rid: str
    kind: str
    tokens: int

    def begins(self) -> bool:
        return self.kind in ("start", "retake")

    def __str__(self) -> str:
        where = f"t={self.time} #{self.order} S{self.server}"
        return f"{where} {self.kind} {self.rid} tokens={self.tokens}"


@attrs.define(eq=False)
class CallRecord:
    rid: str
    who: str  # c3, or "r7's handler" (or a child task of it) for calls made inside handlers
    server: int
    method: str
    kind: str  # call, cast
    action: Action
    start: float
    caller_deadline: float  # trio.current_effective_deadline() at the call
    own_limit: float  # the caller's own deadline / cancellation (inf when none)
    arrival: int
    inline: bool = False
    expect_deadlock: bool = False
    cancelled_at: float | None = None
    outcome: object = None
    outcome_kind: str = "pending"  # value, exception, cancelled
    own_scope_caught: bool = False
    finish: float | None = None
    # an inline self-call to a guarded method: what its guard said at the call
    inline_guard: bool | str | None = None
    # a call from a handler to another server (or its own, from a released block): whether it
    # closes a cycle of waits at the call ("yes", "no", "maybe": it cannot be told from outside)
    cycle: str = ""
    in_block: bool = False  # made from inside a released block
    caller_task: object = None  # the task that made it

    def describe(self) -> str:
        if self.outcome_kind == "pending":
            got = "never finished"
        elif self.outcome_kind == "value":
            got = f"returned {self.outcome!r}"
        elif self.outcome_kind == "cancelled":
            got = "got its own trio.Cancelled"
        else:
            got = f"got {self.outcome!r}"
        own = "" if self.own_limit == math.inf else f" (own limit t={self.own_limit})"
        finish = "" if self.finish is None else f" at t={self.finish}"
        extra = ""
        if self.cycle in ("yes", "maybe"):
            extra += f" (closes a cycle: {self.cycle})"
        if self.inline_guard is not None:
            extra += f" (inline; its guard said {self.inline_guard})"
        if self.in_block:
            extra += " (from a released block)"
        return (
            f"{self.who} [{self.rid}] {self.kind} S{self.server}.{self.method} "
            f"from t={self.start}{own}{extra}: {got}{finish}"
        )


class EventLog(Instrument):
    """What an instrument saw of one server: ``(hook, request number, outcome)``, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, str | None]] = []

    def _add(self, hook: str, call: CallInfo) -> None:
        self.events.append((hook, call.number, call.outcome))

    def call_queued(self, call: CallInfo) -> None:
        self._add("queued", call)

    def call_started(self, call: CallInfo) -> None:
        self._add("started", call)

    def call_finished(self, call: CallInfo) -> None:
        self._add("finished", call)

    def call_withdrawn(self, call: CallInfo) -> None:
        self._add("withdrawn", call)

    def call_shed(self, call: CallInfo) -> None:
        self._add("shed", call)


@attrs.define(eq=False)
class Log:
    scenario: Scenario
    t0: float = 0.0
    handles: dict[int, Any] = attrs.Factory(dict)
    calls: list[CallRecord] = attrs.Factory(list)
    runs: list[HandlerRun] = attrs.Factory(list)
    stop_time: dict[int, float] = attrs.Factory(dict)
    stats: dict[int, Any] = attrs.Factory(dict)
    events: dict[int, EventLog] = attrs.Factory(dict)
    crashes: int = 0
    hang: bool = False
    leftover_tasks: list[str] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    counter: itertools.count[int] = attrs.Factory(itertools.count)
    # guarantees 14-16
    holds: list[Hold] = attrs.Factory(list)
    guard_evals: list[tuple[int, int, float, int, str]] = attrs.Factory(list)  # server, obj, t
    # server, obj, error, whether evaluated for an inline self-call
    guard_errors: list[tuple[int, int, GuardBoom, bool]] = attrs.Factory(list)
    live: list[str] = attrs.Factory(list)  # violations seen as they happened
    holder: dict[int, HandlerRun | None] = attrs.Factory(dict)  # per server, the holding run
    active: dict[str, HandlerRun] = attrs.Factory(dict)  # rid -> its running top-level run
    started: set[str] = attrs.Factory(set)  # the rids whose top-level handler started
    objs: dict[int, int] = attrs.Factory(dict)  # per server, its current object's number
    objects: dict[int, Any] = attrs.Factory(dict)  # per server, its current object
    stop_done: dict[int, int] = attrs.Factory(dict)  # per server, the order its stop completed

    def now(self) -> float:
        return trio.current_time() - self.t0

    def next(self) -> int:
        return next(self.counter)


# -- servers made from specs -----------------------------------------------------------------


class FaultServerBase:
    """Every generated server's base: the handlers run `fi_act`, which logs.

    The server's state is a token count (``fi_tokens``): guards read it, guarded handlers take
    from it as they start, actions give back to it, always holding the server (never inside a
    released block), so that a guard's verdict when the server chose a request is still true
    when its handler starts, and the count at any moment is the count at the last hold event.
    """

    def __init__(self, log: Log, index: int) -> None:
        self.fi_log = log
        self.fi_index = index
        self.fi_obj = log.next()
        self.fi_active = 0  # handlers running, inline ones included
        self.fi_holders = 0  # top-level handlers holding the server (not in a released block)
        self.fi_holder_task: object = None
        self.fi_in_block = 0  # handlers in a released block (waiting to retake included)
        self.fi_tokens = log.scenario.servers[index].tokens
        log.objs[index] = self.fi_obj
        log.objects[index] = self
        log.holder[index] = None

    # -- holding the server (guarantees 1 and 15) ------------------------------------------

    def fi_hold(self, kind: str, top: HandlerRun) -> Hold:
        """`top` (a top-level run) takes the server or gives it back: log it, and check that
        nobody else holds it and that the statistics say the same."""
        log = self.fi_log
        now = log.now()
        if kind in ("start", "retake"):
            if self.fi_holders > 0:
                holding = [
                    r.rid
                    for r in log.runs
                    if r.obj == self.fi_obj
                    and not r.inline
                    and r.end is None
                    and not r.in_block
                    and r is not top
                ]
                what = "started" if kind == "start" else "took the server back"
                top.overlap = top.overlap or f"{what} at t={now} while {holding} held it"
            self.fi_holders += 1
            self.fi_holder_task = trio.lowlevel.current_task()
            if kind == "retake":
                self.fi_in_block -= 1
                top.in_block = False
            if log.objs.get(self.fi_index) == self.fi_obj:
                log.holder[self.fi_index] = top
        else:
            self.fi_holders -= 1
            if kind == "release":
                self.fi_in_block += 1
                top.in_block = True
            if log.holder.get(self.fi_index) is top:
                log.holder[self.fi_index] = None
        hold = Hold(log.next(), now, self.fi_index, self.fi_obj, top.rid, kind, self.fi_tokens)
        log.holds.append(hold)
        spec = log.scenario.servers[self.fi_index]
        handle = log.handles.get(self.fi_index)
        if spec.lifetime != "supervised" and handle is not None:
            stats = statistics(handle)
            running = 0 if kind == "release" else 1
            if (
                stats.running != running
                or stats.released != self.fi_in_block
                or stats.waiting_on_guard > stats.queued
            ):
                log.live.append(
                    f"invariant 6 (statistics now): at the {kind} of {top.rid}'s handler on "
                    f"S{self.fi_index} at t={now}: running={stats.running}, "
                    f"released={stats.released}, waiting_on_guard={stats.waiting_on_guard}, "
                    f"queued={stats.queued}; expected running={running}, "
                    f"released={self.fi_in_block}, waiting_on_guard <= queued"
                )
            if kind == "start" and spec.guarded() and not spec.bounded_wait():
                self.fi_waiting_on_guard(stats, top, hold)
        return hold

    def fi_waiting_on_guard(self, stats: Any, top: HandlerRun, hold: Hold) -> None:
        """As a request starts, the guarded requests still waiting that arrived before it (at
        an earlier instant) have reached the front, so each waits on its guard (a true one
        would start first: invariant 4); no more than the guarded requests in flight do."""
        log = self.fi_log
        spec = log.scenario.servers[self.fi_index]
        if hold.time >= log.stop_time.get(self.fi_index, math.inf):
            return
        started = {r.rid for r in log.runs}
        mine = next((c for c in log.calls if c.rid == top.rid), None)
        if mine is None:
            return
        upper = lower = 0
        for record in log.calls:
            if record.server != self.fi_index or record.inline or record.finish is not None:
                continue
            guard = spec.method(record.method).guard
            if guard is None or record.rid in started:
                continue
            upper += 1
            if (
                record.who == record.rid  # a caller of the scenario's (not a handler's call,
                # which may be withdrawn this instant as its handler is cut)
                and record.start < mine.start
                and record.own_limit > hold.time
                and guard_verdict(guard, hold.tokens) is False
            ):
                lower += 1
        if not lower <= stats.waiting_on_guard <= upper:
            log.live.append(
                f"invariant 6 (statistics now): as {top.rid}'s handler started on "
                f"S{self.fi_index} at t={hold.time}, waiting_on_guard={stats.waiting_on_guard}, "
                f"but {lower} older guarded requests waited with their guard false, and "
                f"{upper} guarded requests were in flight"
            )

    # -- guards (guarantee 14) -------------------------------------------------------------

    def fi_guard(self, kind: str) -> bool:
        log = self.fi_log
        now = log.now()
        log.guard_evals.append((self.fi_index, self.fi_obj, now, self.fi_tokens, kind))
        if self.fi_holders > 0 and trio.lowlevel.current_task() is not self.fi_holder_task:
            holding = [
                r.rid
                for r in log.runs
                if r.obj == self.fi_obj and not r.inline and r.end is None and not r.in_block
            ]
            log.live.append(
                f"invariant 14 (guard evaluated out of the server's turn): a guard of "
                f"S{self.fi_index} was evaluated at t={now} while {holding} held the server"
            )
        verdict = guard_verdict(kind, self.fi_tokens)
        if verdict == "raise":
            error = GuardBoom(
                f"guard {GUARDS[kind]!r} of S{self.fi_index} at t={now}, #{log.next()}"
            )
            # (an inline self-call's guard is evaluated in the task of the handler holding)
            inline = self.fi_holders > 0 and trio.lowlevel.current_task() is self.fi_holder_task
            log.guard_errors.append((self.fi_index, self.fi_obj, error, inline))
            raise error
        return bool(verdict)

    # -- a handler's life ------------------------------------------------------------------

    def fi_begin(self, method: str, req: Req) -> HandlerRun:
        log = self.fi_log
        run = HandlerRun(
            rid=req.rid,
            server=self.fi_index,
            obj=self.fi_obj,
            method=method,
            inline=req.inline,
            start=log.now(),
            deadline=trio.current_effective_deadline() - log.t0,
            order=log.next(),
            parent=req.parent,
            tokens=self.fi_tokens,
            task=trio.lowlevel.current_task(),
        )
        if req.inline and self.fi_holders == 0:
            run.overlap = "an inline self-call ran while no handler held its server"
        self.fi_active += 1
        log.runs.append(run)
        if not req.inline:
            log.active[run.rid] = run
            log.started.add(run.rid)
            self.fi_hold("start", run)
        guard = log.scenario.servers[self.fi_index].method(method).guard
        if guard is not None:
            verdict = guard_verdict(guard, self.fi_tokens)
            if verdict is not True:
                log.live.append(
                    f"invariant 14 (guard): the handler S{self.fi_index}.{method} of {req.rid} "
                    f"started at t={run.start} with {self.fi_tokens} tokens, where its guard "
                    f"({GUARDS[guard]}) says {verdict}"
                )
            self.fi_tokens -= NEEDS[guard]
        return run

    def fi_end(self, run: HandlerRun, ending: str, error: BaseException | None = None) -> None:
        log = self.fi_log
        self.fi_active -= 1
        run.end = log.now()
        run.ending = ending
        run.error = error
        if not run.inline:
            run.end_order = self.fi_hold("end", run).order
            log.active.pop(run.rid, None)

    def fi_sync(self, method: str, req: Req) -> object:
        run = self.fi_begin(method, req)
        self.fi_tokens += req.action.give
        if req.action.kind == "raise":
            error = Boom(f"{req.rid} from S{self.fi_index}.{method}")
            self.fi_end(run, "raised", error)
            raise error
        run.token = token = f"value of {req.rid} (#{run.order})"
        self.fi_end(run, "returned")
        return token

    async def fi_async(self, method: str, req: Req) -> object:
        run = self.fi_begin(method, req)
        try:
            await self.fi_do(req.action, req, run, in_block=False)
        except Boom as error:
            self.fi_end(run, "raised", error)
            raise
        except BaseException as error:
            self.fi_end(run, "cut" if isinstance(error, trio.Cancelled) else "other", error)
            raise
        run.token = token = f"value of {req.rid} (#{run.order})"
        self.fi_end(run, "returned")
        return token

    async def fi_do(self, action: Action, req: Req, run: HandlerRun, in_block: bool) -> None:
        """Do `action` in the handler of `run` (`in_block`: inside its released block)."""
        log = self.fi_log
        assert not (in_block and action.give), "only a holder changes the state"
        self.fi_tokens += action.give
        if action.kind == "raise":
            raise Boom(f"{req.rid} from S{self.fi_index}.{run.method}")
        if action.kind == "sleep":
            await trio.sleep(action.seconds)
        elif action.kind == "shield":
            with trio.CancelScope(shield=True):
                await trio.sleep(action.seconds)
        elif action.kind == "children":
            async with trio.open_nursery() as nursery:
                for _ in range(action.count):
                    nursery.start_soon(trio.sleep, action.seconds)
                own_calls = [
                    m for m in log.scenario.servers[self.fi_index].methods if m.kind == "call"
                ]
                # (an inner action is drawn before its server is known: one with no call
                # of its own has nothing to deadlock on). From a released block the call is
                # queued like any call (guarantee 15): the handler holds nothing to wait for.
                if action.deadlock and own_calls:
                    target = own_calls[0]
                    nursery.start_soon(
                        functools.partial(
                            make_call,
                            log,
                            self,
                            self.fi_index,
                            target,
                            Action("return"),
                            f"a child task of {req.rid}'s handler"
                            + (" in its released block" if in_block else ""),
                            False,
                            expect_deadlock=not in_block,
                            in_block=in_block,
                        )
                    )
        elif action.kind == "self":
            assert action.inner is not None
            target = log.scenario.servers[self.fi_index].method(action.method)
            await make_call(
                log,
                self,
                self.fi_index,
                target,
                action.inner,
                f"{req.rid}'s handler" + (" in its released block" if in_block else ""),
                inline=not in_block,  # guarantee 15: from a block it is queued
                parent=None if in_block else run,
                caller=run,
                in_block=in_block,
            )
        elif action.kind == "other":
            assert action.inner is not None
            target = log.scenario.servers[action.server].method(action.method)
            handle = log.handles[action.server]
            await make_call(
                log,
                handle,
                action.server,
                target,
                action.inner,
                f"{req.rid}'s handler" + (" in its released block" if in_block else ""),
                caller=run,
                in_block=in_block,
            )
        elif action.kind == "released":
            assert action.inner is not None
            await self.fi_released(action, action.inner, req, run)

    async def fi_released(self, action: Action, inner: Action, req: Req, run: HandlerRun) -> None:
        """``async with released():`` doing `inner`; then, holding the server again, give
        tokens back (in a ``finally``: the cleanup runs whatever ended the block), and sleep
        ``action.after`` holding it."""
        log = self.fi_log
        top = run.top()
        entered = False
        try:
            async with released():
                # (the server was given back as the block was entered; nothing else has run)
                entered = True
                run.block_in = log.now()
                run.block_in_order = self.fi_hold("release", top).order
                try:
                    await self.fi_do(inner, req, run, in_block=True)
                finally:
                    run.block_out = log.now()
                    run.block_out_order = log.next()
        finally:
            if entered:
                # (the server was taken back as the block was left; nothing else has run)
                hold = self.fi_hold("retake", top)
                run.retake, run.retake_order = hold.time, hold.order
                run.late = max(run.late, hold.time)
                top.late = max(top.late, hold.time)
                self.fi_tokens += action.regive
        if action.after is not None:
            await trio.sleep(action.after)


def only_cancelled(error: BaseException) -> bool:
    """Whether `error` is a `trio.Cancelled`, or a group of nothing else (from a nursery)."""
    if isinstance(error, BaseExceptionGroup):
        return all(only_cancelled(e) for e in error.exceptions)
    return isinstance(error, trio.Cancelled)


def shielded(action: Action) -> bool:
    """Whether a handler doing `action` may outlive its deadline (shields, here or inline)."""
    if action.kind == "shield":
        return True
    return (
        action.kind in ("self", "released") and action.inner is not None and shielded(action.inner)
    )


def overruns(action: Action) -> bool:
    """Whether a call doing `action` inline may end after its deadline: a shield, or a
    released block (its handler waits, shielded, to take the server back)."""
    if action.kind in ("shield", "released"):
        return True
    return action.kind == "self" and action.inner is not None and overruns(action.inner)


def make_class(log: Log, spec: ServerSpec) -> type:
    """The server class of `spec` (cached: the log reaches it through each object)."""
    del log
    return _make_class(attrs.evolve(spec, lifetime="open_exit", stop_at=None))


@functools.lru_cache(maxsize=4096)
def _make_class(spec: ServerSpec) -> type:
    namespace: dict[str, Any] = {}
    for method in spec.methods:
        fn: Callable[..., Any]
        if method.is_async:

            async def fn(self: FaultServerBase, req: Req, _name: str = method.name) -> object:
                return await self.fi_async(_name, req)

        else:

            def fn(self: FaultServerBase, req: Req, _name: str = method.name) -> object:
                return self.fi_sync(_name, req)

        fn.__name__ = method.name
        fn.__qualname__ = f"S{spec.index}.{method.name}"
        kwargs: dict[str, Any] = {}
        if method.timeout != INHERIT:
            kwargs["timeout"] = method.timeout
        if method.guard is not None:

            def guard(self: FaultServerBase, _kind: str = method.guard) -> bool:
                return self.fi_guard(_kind)

            kwargs["when"] = guard
        if method.kind == "call":
            if not method.admission:
                kwargs["admission"] = False
            namespace[method.name] = call(**kwargs)(fn)
        else:
            if method.crash:
                kwargs["crash"] = True
            namespace[method.name] = cast(**kwargs)(fn)
    cls = type(f"S{spec.index}", (FaultServerBase,), namespace)
    options: dict[str, Any] = {"admission": spec.admission}
    if spec.timeout != INHERIT:
        options["timeout"] = spec.timeout
    if spec.mailbox_size is not None:
        options["mailbox_size"] = spec.mailbox_size
        options["when_full"] = spec.when_full
    return server(**options)(cls)


# -- running ---------------------------------------------------------------------------------


async def make_call(
    log: Log,
    handle: Any,
    server_index: int,
    method: MethodSpec,
    action: Action,
    who: str,
    inline: bool = False,
    expect_deadlock: bool = False,
    parent: HandlerRun | None = None,
    caller: HandlerRun | None = None,
    in_block: bool = False,
) -> None:
    """A call made inside a handler (or a child task of one): logged like any call.

    `caller`: the run of the handler making it from its own task (for the waits of
    guarantee 16: while the call waits, that handler waits for the call's request)."""
    record = CallRecord(
        rid=f"r{log.next()}",
        who=who,
        server=server_index,
        method=method.name,
        kind=method.kind,
        action=action,
        start=log.now(),
        caller_deadline=trio.current_effective_deadline() - log.t0,
        own_limit=math.inf,  # bounded by the handler's deadline, checked as such
        arrival=log.next(),
        inline=inline,
        expect_deadlock=expect_deadlock,
        in_block=in_block,
        caller_task=trio.lowlevel.current_task(),
    )
    record.own_limit = record.caller_deadline
    if inline and method.guard is not None:
        record.inline_guard = guard_verdict(method.guard, handle.fi_tokens)
    top = None if caller is None else caller.top()
    if top is not None and not inline:
        record.cycle = cycle_verdict(log, top, server_index, method)
        if method.kind == "call":
            top.awaiting = record
    log.calls.append(record)
    try:
        value = await getattr(handle, method.name)(Req(record.rid, action, inline, parent))
    except Exception as error:
        record.outcome_kind = "exception"
        record.outcome = error
    except BaseException as error:
        record.outcome_kind = "cancelled" if only_cancelled(error) else "exception"
        record.outcome = None if only_cancelled(error) else error
        record.own_scope_caught = True  # the handler's scope: checked against its deadline
        record.finish = log.now()
        raise
    else:
        record.outcome_kind = "value"
        record.outcome = value
    finally:
        if top is not None and top.awaiting is record:
            top.awaiting = None
    record.finish = log.now()


def cycle_verdict(log: Log, top: HandlerRun, server_index: int, method: MethodSpec) -> str:
    """Whether a call by the handler of `top` to `method` of server `server_index` closes a
    cycle of waits (guarantee 16): "yes", "no", or "maybe" (where the public API cannot tell:
    a guarded request may wait for its guard, which is no link, even one that holds now if
    it was found false since the request came (`found_false`); a supervised server restarts;
    a bounded mailbox makes callers wait for room; a request may start at this very instant;
    a link whose caller has left, directly or up its chain of handlers, is being cut; a link
    admission may have refused as it would start holds no place (`passed_over`)).

    The links: a handler awaiting a call waits for that call's request; a queued request waits
    for the request holding its server; a request in a released block holds nothing.
    """
    if method.kind != "call":
        return "no"  # a cast waits for no request

    def may_wait_for_guard(spec: ServerSpec, guard: str | None) -> bool:
        # a guard true now stays true while its server's holder waits in the chain
        tokens = log.objects[spec.index].fi_tokens
        return guard is not None and guard_verdict(guard, tokens) is not True

    now = log.now()
    spec = log.scenario.servers[server_index]
    # (a guarded call closes a cycle too: it waits for its server's holder before its guard
    # is evaluated; main since 890b8a9. Its guard false now, it may be found waiting on it.)
    unsure = may_wait_for_guard(spec, method.guard)
    seen: set[int] = set()
    while True:
        if spec.lifetime == "supervised" or spec.bounded_wait() or spec.index in log.stop_time:
            unsure = True
        holder = log.holder.get(spec.index)
        if holder is None:
            retaking = any(
                r.server == spec.index and r.block_out is not None and r.retake is None
                for r in log.runs
            )
            return "maybe" if retaking else "no"  # (a handler about to take the server back)
        if holder is top:
            return "maybe" if unsure else "yes"
        if holder.deadline <= now or caller_left(log, holder.rid, now):
            unsure = True  # it is being cut at this very instant
        if id(holder) in seen:
            return "maybe"  # a cycle that does not pass through this caller
        seen.add(id(holder))
        waits_for = holder.awaiting
        if waits_for is None:
            return "no"
        if waits_for.finish is not None:
            return "maybe"  # it has its answer, and its handler has not yet run on
        running = log.active.get(waits_for.rid)
        if running is None and waits_for.rid in log.started:
            return "maybe"  # its handler has ended: the reply is on its way
        while running is not None:
            # the awaited request runs (holding its server, or released): it waits for what
            # it awaits
            if running is top:
                return "maybe" if unsure else "yes"
            if running.deadline <= now or caller_left(log, running.rid, now):
                unsure = True
            if id(running) in seen:
                return "maybe"
            seen.add(id(running))
            waits_for = running.awaiting
            if waits_for is None:
                return "no"
            if waits_for.finish is not None:
                return "maybe"
            running = log.active.get(waits_for.rid)
            if running is None and waits_for.rid in log.started:
                return "maybe"
        # the awaited request is queued (or about to start): it waits for its server's holder
        if waits_for.own_limit <= now or waits_for.cancelled_at is not None:
            unsure = True  # withdrawn at this very instant
        spec = log.scenario.servers[waits_for.server]
        guard = spec.method(waits_for.method).guard
        if may_wait_for_guard(spec, guard) or found_false(log, waits_for, guard):
            unsure = True  # it may wait for its guard: a state, not a request
        if admitted_by_deadline(spec, waits_for) and passed_over(log, waits_for):
            unsure = True  # refused as it would start: its handler waits for its deadline


def passed_over(log: Log, record: CallRecord) -> bool:
    """Whether a request that came after `record` started on its server while `record` had
    not: admission may have refused `record` as it would start, and a handler refused so waits
    for its deadline (`_caller.end_as_deadline`), holding no place in the mailbox."""
    later = {c.rid for c in log.calls if c.server == record.server and c.arrival > record.arrival}
    return any(
        h.server == record.server and h.kind == "start" and h.rid in later for h in log.holds
    )


def found_false(log: Log, record: CallRecord, guard: str | None) -> bool:
    """Whether guard `guard` of `record`'s server was found false since `record` was made:
    the request may then be waiting on its guard (GUARDED) though the guard holds now, for
    it is evaluated again only when its server is next free (guarantee 14)."""
    return guard is not None and any(
        index == record.server
        and kind == guard
        and t >= record.start
        and guard_verdict(guard, tokens) is not True
        for index, _, t, tokens, kind in log.guard_evals
    )


def caller_left(log: Log, rid: str, now: float) -> bool:
    """Whether the caller of request `rid` has left by `now` (its deadline passed or its scope
    cancelled), directly or through the callers of the handlers that made it: its handler is
    then being cut at this very instant, and the waits through it are about to end."""
    record = next((c for c in log.calls if c.rid == rid), None)
    if record is None:
        return False
    if record.own_limit <= now:
        return True
    parent = re.search(r"\b(r\d+|c\d+)'s handler", record.who)
    return parent is not None and caller_left(log, parent.group(1), now)


async def run_caller(log: Log, spec: CallerSpec, all_done: Callable[[], None]) -> None:
    try:
        await trio.sleep_until(log.t0 + spec.start)
        server_spec = log.scenario.servers[spec.server]
        method = server_spec.method(spec.method)
        handle = log.handles[spec.server]
        own = trio.CancelScope()
        now = log.now()
        own_limit = now + spec.seconds if spec.deadline != "none" else math.inf
        record = CallRecord(
            rid=f"c{spec.index}",
            who=f"c{spec.index}",
            server=spec.server,
            method=method.name,
            kind=method.kind,
            action=spec.action,
            start=now,
            caller_deadline=math.inf,
            own_limit=own_limit,
            arrival=-1,
        )
        log.calls.append(record)
        async with trio.open_nursery() as nursery:
            if spec.cancel_after is not None:

                async def cancel_later() -> None:
                    await trio.sleep_until(log.t0 + spec.start + spec.cancel_after)
                    if record.finish is None:
                        record.cancelled_at = log.now()
                        record.own_limit = min(record.own_limit, record.cancelled_at)
                    own.cancel()

                nursery.start_soon(cancel_later)
            deadline_scope: Any
            if spec.deadline == "move_on_after":
                deadline_scope = trio.move_on_after(spec.seconds)
            elif spec.deadline == "fail_after":
                deadline_scope = trio.fail_after(spec.seconds)
            else:
                deadline_scope = trio.CancelScope()
            try:
                with own, deadline_scope as scope:
                    record.caller_deadline = trio.current_effective_deadline() - log.t0
                    record.arrival = log.next()
                    try:
                        value = await getattr(handle, method.name)(Req(record.rid, spec.action))
                    except trio.Cancelled:
                        record.outcome_kind = "cancelled"
                        raise
                    except Exception as error:
                        record.outcome_kind = "exception"
                        record.outcome = error
                    else:
                        record.outcome_kind = "value"
                        record.outcome = value
                    record.finish = log.now()
            except trio.TooSlowError:
                if record.outcome_kind != "cancelled":
                    raise
            if record.outcome_kind == "cancelled":
                record.own_scope_caught = own.cancelled_caught or scope.cancelled_caught
                record.finish = log.now()
            nursery.cancel_scope.cancel()  # the canceller, if it has not fired yet
    finally:
        all_done()


async def run_server(
    log: Log,
    spec: ServerSpec,
    callers_done: trio.Event,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    cls = make_class(log, spec)
    instruments: list[Instrument] = []
    if spec.instrumented:
        log.events[spec.index] = EventLog()
        instruments.append(log.events[spec.index])

    async def stop_trigger() -> None:
        if spec.stop_at is None:
            # (a caller may wait for a guard forever: guarantee 14 allows it)
            limit = GUARD_STOP if log.scenario.guarded() else math.inf
            with trio.move_on_at(log.t0 + limit):
                await callers_done.wait()
        else:
            await trio.sleep_until(log.t0 + spec.stop_at)
        log.stop_time[spec.index] = log.now()

    handle: Any = None
    if spec.lifetime == "open_exit":
        async with open_server(cls(log, spec.index), instruments=instruments) as handle:
            log.handles[spec.index] = handle
            task_status.started(handle)
            await stop_trigger()
    elif spec.lifetime == "open_cancel":
        with trio.CancelScope() as scope:
            async with open_server(cls(log, spec.index), instruments=instruments) as handle:
                log.handles[spec.index] = handle
                task_status.started(handle)
                await stop_trigger()
                scope.cancel()
                await trio.sleep_forever()
    elif spec.lifetime == "serve":
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(
                functools.partial(serve, instruments=instruments), cls(log, spec.index)
            )
            log.handles[spec.index] = handle
            task_status.started(handle)
            await stop_trigger()
            nursery.cancel_scope.cancel()
    else:
        async with open_supervisor(intensity=1000, period=1.0) as supervisor:
            handle = await supervisor.start(cls, log, spec.index)
            log.handles[spec.index] = handle
            task_status.started(handle)
            await stop_trigger()
    log.stop_done[spec.index] = log.next()
    log.stats[spec.index] = statistics(handle)


TIMERS_TASK = "trioserver: timers"


def all_tasks() -> list[trio.lowlevel.Task]:
    found: list[trio.lowlevel.Task] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        found.append(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


class ScenarioStuck(Exception):
    """Every task of a scenario waited with no deadline left: a permanent hang."""


def where_tasks_wait() -> str:
    """Each task of the run, with the frames it waits in (innermost last)."""
    lines = []
    for task in all_tasks():
        frames = []
        coro: Any = task.coro
        while coro is not None:
            frame = (
                getattr(coro, "cr_frame", None)
                or getattr(coro, "gi_frame", None)
                or getattr(coro, "ag_frame", None)
            )
            if frame is not None:
                frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = (
                getattr(coro, "cr_await", None)
                or getattr(coro, "gi_yieldfrom", None)
                or getattr(coro, "ag_await", None)
            )
        lines.append(f"  {task.name}: {' > '.join(frames)}")
    return "\n".join(lines)


async def scenario_main(log: Log) -> None:
    before = set(all_tasks())
    log.t0 = trio.current_time()
    scenario = log.scenario
    callers_done = trio.Event()
    remaining = len(scenario.callers)

    def one_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            callers_done.set()

    with trio.move_on_after(SCENARIO_LIMIT) as limit:
        async with trio.open_nursery() as nursery:
            # later servers first: a handler of S0 may call S1
            for spec in reversed(scenario.servers):
                await nursery.start(run_server, log, spec, callers_done)
            if not scenario.callers:
                callers_done.set()
            for spec in scenario.callers:
                nursery.start_soon(run_caller, log, spec, one_done)
    log.hang = limit.cancelled_caught
    me = trio.lowlevel.current_task()
    new = [task.name for task in all_tasks() if task not in before and task is not me]
    # The run's timer task (one per trio run, a system task; see trioserver._timers) may
    # start during the scenario: it is the run's, not a server's. A second would be a leak.
    if new.count(TIMERS_TASK) == 1:
        new.remove(TIMERS_TASK)
    log.leftover_tasks = new


SCENARIO_CPU_LIMIT = 5.0
"""CPU seconds a scenario may take (one takes milliseconds). When every task waits with no
deadline left, a MockClock spins without moving time, so SCENARIO_LIMIT never comes: this
catches that hang, and says where each task waits."""


@contextlib.contextmanager
def stuck_after(cpu_seconds: float) -> Iterator[None]:
    """Raise ScenarioStuck in the main thread every `cpu_seconds` of CPU time, until the
    block ends (again and again: the first may land in a task that then waits to unwind)."""

    def stuck(signum: int, frame: Any) -> None:
        raise ScenarioStuck(
            f"invariant 1 (HANG): the scenario ran {cpu_seconds:g} CPU-seconds with every "
            f"task waiting and no deadline left; where each task waits:\n" + where_tasks_wait()
        )

    previous = signal.signal(signal.SIGVTALRM, stuck)
    signal.setitimer(signal.ITIMER_VIRTUAL, cpu_seconds, cpu_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def run_scenario(scenario: Scenario) -> Log:
    log = Log(scenario)
    try:
        with stuck_after(SCENARIO_CPU_LIMIT):
            trio.run(scenario_main, log, clock=trio.testing.MockClock(autojump_threshold=0))
    except BaseException as error:  # a scenario must never raise: report it as a violation
        if isinstance(error, KeyboardInterrupt):
            raise
        stuck = error.__cause__ if isinstance(error, trio.TrioInternalError) else error
        if isinstance(stuck, ScenarioStuck):
            log.errors.append(str(stuck))
        else:  # (with its traceback and causes: a rare one must be told from one report)
            told = "".join(traceback.format_exception(error))
            log.errors.append(f"the scenario raised {error!r}:\n{told}")
    return log


# -- the invariants --------------------------------------------------------------------------


def check(log: Log) -> list[str]:
    """The violations of the invariants in one scenario's log, each naming its invariant."""
    scenario = log.scenario
    problems: list[str] = list(log.errors) + list(log.live)
    servers = {s.index: s for s in scenario.servers}
    runs_by_rid: dict[str, list[HandlerRun]] = {}
    for run in log.runs:
        runs_by_rid.setdefault(run.rid, []).append(run)

    def bad(invariant: str, message: str) -> None:
        problems.append(f"invariant {invariant}: {message}")

    # 1: hangs
    if log.hang:
        for record in log.calls:
            if record.finish is None:
                bad("1 (HANG)", f"{record.describe()} at t={SCENARIO_LIMIT}")
        for run in log.runs:
            if run.end is None:
                bad(
                    "1 (HANG)",
                    f"handler S{run.server}.{run.method} of {run.rid} started at "
                    f"t={run.start} never ended",
                )
    for record in log.calls:
        if record.finish is None:
            if not log.hang:
                bad("1", f"{record.describe()}, yet the scenario ended")
            continue
        spec = servers[record.server]
        method = spec.method(record.method)
        story = record.describe()
        runs = runs_by_rid.get(record.rid, [])
        # 1: exactly one allowed outcome
        outcome = record.outcome
        if record.outcome_kind == "value":
            if record.kind == "cast":
                if outcome is not None:
                    bad("1", f"{story}: a cast returned a value")
            elif not any(run.token is not None and run.token == outcome for run in runs):
                bad("1", f"{story}: not the value of any handler run of this request")
            if record.expect_deadlock:
                bad("1/2", f"{story}: a call from a handler's child task into its own server")
        elif record.outcome_kind == "cancelled":
            if not record.own_scope_caught:
                bad("1", f"{story}: a trio.Cancelled that was not the caller's own")
        elif isinstance(outcome, Boom):
            if not any(run.error is outcome for run in runs):
                bad("1", f"{story}: not the exception object its handler raised")
        elif isinstance(outcome, GuardBoom):
            raised = [
                inline
                for server, _, error, inline in log.guard_errors
                if error is outcome and server == record.server
            ]
            if not raised:
                bad("1/14", f"{story}: not the exception object its guard raised")
            elif raised[0] != record.inline:
                bad("14", f"{story}: a guard raised for {'an' if raised[0] else 'no'} inline call")
            elif record.inline and record.inline_guard != "raise":
                bad("14", f"{story}: its guard said {record.inline_guard} at the call")
            if runs and not record.inline:
                bad("14", f"{story}: its guard raised, yet its handler ran")
        elif isinstance(outcome, CallTimeout):
            if record.kind == "cast":
                bad("1", f"{story}: a cast waited for its handler")
            elif not runs:
                bad("1", f"{story}: CallTimeout but its handler never started")
            else:
                run = runs[-1]
                if record.finish != run.deadline:
                    bad(
                        "4 (CallTimeout at the deadline)",
                        f"{story}: its handler's deadline was t={run.deadline}",
                    )
        elif isinstance(outcome, ServerCrashed):
            if spec.lifetime != "supervised":
                bad("1", f"{story}: ServerCrashed from a server that is not supervised")
        elif isinstance(outcome, ServerStopped):
            stop = log.stop_time.get(record.server)
            if spec.lifetime != "supervised" and (stop is None or record.finish < stop):
                bad("1", f"{story}: ServerStopped before the server was stopped (at {stop})")
        elif isinstance(outcome, ServerOverloaded):
            # (admission's refusals end as the caller's deadline: its own scope is cancelled)
            if not (spec.mailbox_size is not None and spec.when_full == "refuse"):
                bad("1", f"{story}: ServerOverloaded without a bound that refuses")
        elif isinstance(outcome, DeadlockError):
            allowed = (
                record.expect_deadlock
                or record.inline_guard is False
                or record.cycle in ("yes", "maybe")
            )
            if not allowed:
                bad("1", f"{story}: DeadlockError, yet nothing waits on itself")
            if record.finish != record.start:
                bad("2/16 (DeadlockError at once)", f"{story}: not at once")
            if runs:
                bad("16", f"{story}: DeadlockError, yet its handler ran")
        else:
            bad("1", f"{story}: not an allowed outcome")
        # 14: an inline self-call to a guarded method (guarantees 2 and 14)
        if record.outcome_kind != "cancelled" and record.inline_guard is not None:
            wanted = {False: DeadlockError, "raise": GuardBoom}.get(record.inline_guard)
            if wanted is not None and not isinstance(outcome, wanted):
                bad(
                    "14 (inline call to a guarded method)",
                    f"{story}: its guard said {record.inline_guard} at the call, so "
                    f"{wanted.__name__} was expected",
                )
            if record.inline_guard is True and isinstance(outcome, DeadlockError | GuardBoom):
                bad("14 (inline call to a guarded method)", f"{story}: its guard held")
        # 16: a call that closes a cycle of waits
        if (
            CYCLES_DETECTED
            and record.cycle == "yes"
            and not isinstance(outcome, DeadlockError)
            and record.outcome_kind != "cancelled"
        ):
            bad("16 (cycle)", f"{story}: it closed a cycle of waits: DeadlockError expected")
        # 15: a call to its own server from a released block is queued, not run inline
        if record.in_block and not record.inline:
            for run in runs:
                if run.task is record.caller_task:
                    bad("15", f"{story}: its handler ran inline, in the released block's task")
        if (
            record.expect_deadlock
            and record.outcome_kind == "exception"
            and not isinstance(outcome, DeadlockError | ServerStopped | ServerCrashed)
        ):
            bad("1/2", f"{story}: expected DeadlockError")
        # 2: never past its own deadline or cancellation
        late = record.finish > max(record.own_limit, record.start)
        if late and not (record.inline and overruns(record.action)):
            bad("2", f"{story}: finished after its own limit t={record.own_limit}")
        # a request is run at most once
        top = [run for run in runs if not run.inline]
        if len(top) > 1:
            bad("1", f"{story}: its handler ran {len(top)} times")
        for run in runs:
            # 5: the handler's deadline
            if run.inline:
                if run.parent is not None and run.deadline > run.parent.deadline:
                    bad(
                        "5",
                        f"{story}: the inline handler's deadline t={run.deadline} is past "
                        f"its outer handler's t={run.parent.deadline}",
                    )
                continue
            stop = log.stop_time.get(record.server)
            if run.deadline == -math.inf and stop is not None and run.start >= stop:
                # The request met the stop at the same virtual instant: the stop had
                # cancelled the server's scope, the server had not yet acted on it, and the
                # handler started already cancelled. Not counted as a violation (trio
                # delivers a cancellation at the next checkpoint), but noted; a handler
                # starting at a *later* instant than the stop is one.
                log.notes.append("a handler started, already cancelled, as its server stopped")
                if record.start < stop and not run.inline:
                    bad(
                        "11 (queued request started by the stop)",
                        f"{story}: queued since t={record.start}, its handler started at "
                        f"t={run.start}, already cancelled (deadline -inf), after the stop "
                        f"began at t={stop}; a caller queued at the stop gets ServerStopped",
                    )
                elif run.start > stop:
                    bad(
                        "11 (handler started after the stop)",
                        f"{story}: its handler started at t={run.start}, already cancelled "
                        f"(deadline -inf); the server's stop began at t={stop}",
                    )
                continue
            budget = spec.budget(method)
            caller_deadline = math.inf if record.kind == "cast" else record.caller_deadline
            # the scenario's outer limit bounds the server's task (and so a cast) too
            expected = min(run.start + budget, caller_deadline, SCENARIO_LIMIT)
            if run.deadline != expected and not math.isclose(run.deadline, expected, abs_tol=1e-9):
                bad(
                    "5",
                    f"{story}: its handler started at t={run.start} with deadline "
                    f"t={run.deadline}, expected min({run.start} + {budget}, "
                    f"{caller_deadline}, {SCENARIO_LIMIT}) = {expected}",
                )
            if record.kind == "call" and run.start >= record.caller_deadline:
                bad(
                    "3 (expired request started)",
                    f"{story}: its handler started at t={run.start}, at or after the "
                    f"caller's deadline t={record.caller_deadline}",
                )
            if (
                record.kind == "call"
                and record.cancelled_at is not None
                and run.start > record.cancelled_at
            ):
                bad(
                    "7 (withdrawn request started)",
                    f"{story}: its handler started at t={run.start}, after its caller "
                    f"was cancelled at t={record.cancelled_at}",
                )
            cuttable = method.is_async and not shielded(record.action) and run.deadline > -math.inf
            if (
                cuttable
                and record.kind == "call"
                and record.cancelled_at is not None
                and run.start <= record.cancelled_at
                and run.end is not None
                and run.end > max(record.cancelled_at, run.late)  # (waiting to retake: 15)
            ):
                bad(
                    "7 (handler not cut when its caller left)",
                    f"{story}: its handler ran until t={run.end}",
                )
    # 3: handlers that ran past their deadline, and overlaps
    for run in log.runs:
        if run.overlap:
            bad("3", f"handler S{run.server}.{run.method} of {run.rid}: {run.overlap}")
        record = next((c for c in log.calls if c.rid == run.rid), None)
        spec = servers[run.server]
        method = spec.method(run.method)
        shields = record is not None and shielded(record.action)
        # (a released handler waits, shielded, to take the server back, then cleans up)
        if (
            method.is_async
            and not shields
            and run.end is not None
            and run.end > max(run.deadline, run.start, run.late)
        ):
            bad(
                "3/4 (handler not cut at its deadline)",
                f"handler S{run.server}.{run.method} of {run.rid} started at t={run.start}, "
                f"deadline t={run.deadline}, ended at t={run.end}",
            )
        # 15: its released block ends by its deadline, its caller's cancellation, the stop
        if run.block_out is not None and run.block_in is not None and not shields:
            limits = [run.deadline]
            if record is not None and record.cancelled_at is not None and record.kind == "call":
                limits.append(record.cancelled_at)
            stop = log.stop_time.get(run.server)
            if stop is not None and spec.lifetime != "supervised":
                limits.append(stop)
            if run.block_out > max(min(limits), run.block_in):
                bad(
                    "15 (released block not cut)",
                    f"handler S{run.server}.{run.method} of {run.rid}: its block ran from "
                    f"t={run.block_in} to t={run.block_out}, past t={min(limits)} (deadline "
                    f"t={run.deadline}, caller cancelled at "
                    f"{None if record is None else record.cancelled_at}, stop at {stop})",
                )
    # 4, 14, 15: start order, guards' liveness, retakes
    by_rid = {c.rid: c for c in log.calls}
    for spec in scenario.servers:
        if spec.bounded_wait():
            continue
        if spec.lifetime == "supervised":
            # restarts: only pairs of runs of one object, the older unguarded
            top = [r for r in log.runs if r.server == spec.index and not r.inline]
            for a, b in itertools.combinations(top, 2):
                if a.obj != b.obj:
                    continue
                first, second = (a, b) if by_rid[a.rid].start < by_rid[b.rid].start else (b, a)
                c_first, c_second = by_rid[first.rid], by_rid[second.rid]
                if (
                    c_first.start < c_second.start
                    and first.order > second.order
                    and spec.method(c_first.method).guard is None
                ):
                    bad(
                        "4 (FIFO)",
                        f"{c_second.rid} (arrived t={c_second.start}) started at "
                        f"t={second.start} before {c_first.rid} (arrived t={c_first.start}), "
                        f"started t={first.start}",
                    )
            continue
        if not log.hang:
            problems.extend(order_problems(log, spec))
    # 6: statistics
    if not log.hang:
        for spec in scenario.servers:
            stats = log.stats.get(spec.index)
            if stats is None or spec.lifetime == "supervised":
                continue
            mine = [r for r in log.runs if r.server == spec.index and not r.inline]
            # a guard that raised ended its request as a failed start, with no handler run
            guard_failures = sum(
                1
                for server, _, _, inline in log.guard_errors
                if server == spec.index and not inline
            )
            counted = stats.handled + stats.failed + stats.timed_out + stats.cancelled
            where = f"S{spec.index} after its stop: {stats!r}"
            if counted != len(mine) + guard_failures:
                bad(
                    "6",
                    f"{where}: handled+failed+timed_out+cancelled = {counted}, "
                    f"but {len(mine)} handlers started and {guard_failures} guards raised",
                )
            if stats.running != 0 or stats.queued != 0 or stats.released != 0:
                bad(
                    "6",
                    f"{where}: running={stats.running} queued={stats.queued} "
                    f"released={stats.released} after stop",
                )
            if stats.waiting_on_guard != 0:
                bad("6", f"{where}: waiting_on_guard={stats.waiting_on_guard} after stop")
            evaluations = sum(1 for e in log.guard_evals if e[0] == spec.index)
            if stats.guard_evaluations != evaluations:
                bad(
                    "6",
                    f"{where}: guard_evaluations={stats.guard_evaluations}, but the guards "
                    f"were called {evaluations} times",
                )
            blocks = [r for r in log.runs if r.server == spec.index and r.block_in is not None]
            spent = sum(
                (r.retake if r.retake is not None else math.nan) - (r.block_in or 0.0)
                for r in blocks
            )
            if not math.isclose(stats.released_seconds, spent, abs_tol=1e-9):
                bad(
                    "6",
                    f"{where}: released_seconds={stats.released_seconds}, but the blocks "
                    f"were released {spent} s in all (from entering to taking the server back)",
                )
            unfinished = [
                r.rid
                for r in mine
                if r.end_order is None or r.end_order > log.stop_done.get(spec.index, -1)
            ]
            if unfinished:
                bad(
                    "11/15 (handlers outlive the stop)",
                    f"S{spec.index}: the handlers of {unfinished} had not ended when its stop "
                    f"completed",
                )
            records = [c for c in log.calls if c.server == spec.index and not c.inline]
            overloaded = sum(isinstance(c.outcome, ServerOverloaded) for c in records)
            # A call admission refused ends as its caller's deadline would: its own scope is
            # cancelled at once (private trio access), or at the deadline (public trio). Only
            # a refusal ends a caller's scope before its own limit (a caller that is a handler,
            # whose limit is not its own, waits for its deadline).
            cancelled = [c for c in records if c.outcome_kind == "cancelled" and c.kind == "call"]
            early = [
                c
                for c in cancelled
                if c.finish is not None and c.finish < c.own_limit and re.fullmatch(r"c\d+", c.who)
            ]
            for c in early:
                if not admitted_by_deadline(spec, c):
                    bad("1", f"{c.describe()}: its scope was cancelled before its own limit")
                if runs_by_rid.get(c.rid):
                    bad("7", f"{c.describe()}: refused by admission, yet its handler ran")
            # (a refusal at the very instant of the caller's limit, or any refusal on public
            # trio, ends at the limit: it looks like a withdrawal from outside)
            at_limit = sum(not runs_by_rid.get(c.rid) for c in cancelled if c not in early)
            low = overloaded + len(early)
            if (early and not _private.ENABLED) or not low <= stats.shed <= low + at_limit:
                bad(
                    "6",
                    f"{where}: shed={stats.shed}, but {overloaded} ServerOverloaded, "
                    f"{len(early)} calls ended early by a refusal and {at_limit} cancelled "
                    f"calls that never ran seen",
                )
            values = sum(c.outcome_kind == "value" and c.kind == "call" for c in records)
            if stats.handled < values:
                bad("6", f"{where}: handled={stats.handled} < {values} values received")
            own_errors = sum(isinstance(c.outcome, Boom | GuardBoom) for c in records)
            if stats.failed < own_errors:
                bad("6", f"{where}: failed={stats.failed} < {own_errors} exceptions received")
            total = counted + stats.withdrawn + stats.shed + stats.dropped
            if total > len(records):
                bad("6", f"{where}: {total} requests counted, but only {len(records)} made")
    # 9: instruments
    if not log.hang:
        for index, seen in log.events.items():
            stats = log.stats.get(index)
            if stats is not None:
                for problem in instrument_problems(seen.events, stats):
                    bad("9", f"S{index}'s instrument: {problem}")
    # 7: no task left
    if log.leftover_tasks:
        bad("7", f"tasks left after the scenario: {log.leftover_tasks}")
    return problems


def admitted_by_deadline(spec: ServerSpec, record: CallRecord) -> bool:
    """Whether admission judges `record`'s call (so may refuse it, ending it at once)."""
    return bool(
        record.kind == "call"
        and spec.admission
        and spec.method(record.method).admission
        and record.caller_deadline != math.inf
    )


@attrs.frozen
class Waiter:
    """A request to a server as the start-order checks see it."""

    record: CallRecord
    run: HandlerRun | None  # its top-level handler run, if it started
    arrived: float
    left: float  # when it stopped waiting (its handler's start, or its end unstarted)
    guard: str | None

    def waiting_at(self, order: int, time: float) -> bool:
        """Whether it was waiting (arrived, not started, not gone) at event `order`, `time`."""
        if self.run is not None:
            return self.run.order > order
        return self.left > time


def order_problems(log: Log, spec: ServerSpec) -> list[str]:
    """Invariants 4, 14 and 15 for one server (not supervised, no callers waiting for room).

    From the hold events (who takes the server, who gives it back, with the tokens then):
    a start never passes an older request whose guard held (or would raise: it would have
    been evaluated first); the server is never free, for any time, while a waiting request's
    guard holds, nor while a released handler waits to take it back; no request starts while
    a released handler waits to take the server back.
    """
    problems: list[str] = []
    index = spec.index
    stop = log.stop_time.get(index, math.inf)
    runs = {r.rid: r for r in log.runs if r.server == index and not r.inline}
    records = {c.rid: c for c in log.calls}
    waiters: list[Waiter] = []
    for record in log.calls:
        if record.server != index or record.inline or record.finish is None:
            continue
        run = runs.get(record.rid)
        if run is not None:
            left = run.start
        elif record.kind == "cast" and record.outcome_kind == "value":
            left = stop  # queued, never started: dropped at the stop
        else:
            left = record.finish
        if record.start >= stop:
            continue
        if (
            run is None
            and (not _private.ENABLED or "handler" in record.who)
            and record.outcome_kind == "cancelled"
            and admitted_by_deadline(spec, record)
        ):
            # Maybe refused by admission at a moment not seen from outside: on public trio, or
            # when the caller is a handler (`_caller.end_as_deadline`), it then waits for its
            # deadline, holding nothing (not a waiting request).
            continue
        guard = spec.method(record.method).guard
        waiters.append(Waiter(record, run, record.start, left, guard))
    holds = [h for h in log.holds if h.server == index]
    # 4: each start, against the older requests still waiting
    for hold in holds:
        if hold.kind != "start":
            continue
        run = runs.get(hold.rid)
        if run is None:
            continue
        run_record = records[hold.rid]
        for waiter in waiters:
            if waiter.arrived >= run_record.start or not waiter.waiting_at(hold.order, hold.time):
                continue
            verdict = guard_verdict(waiter.guard, hold.tokens)
            if verdict is not False:
                what = "unguarded" if waiter.guard is None else f"its guard said {verdict}"
                problems.append(
                    f"invariant 4 (start order): {run_record.rid} (arrived "
                    f"t={run_record.start}) started at t={hold.time} with {hold.tokens} tokens "
                    f"before {waiter.record.rid} (arrived t={waiter.arrived}, {what}), "
                    f"which was still waiting"
                    + ("" if waiter.run is None else f" (it started at t={waiter.run.start})")
                )
    # the intervals where the server was free: (from event, to event or None, tokens)
    free: list[tuple[int, float, int | None, float, int]] = []
    holding = 0
    since: tuple[int, float, int] | None = (-1, 0.0, spec.tokens)
    for hold in holds:
        if hold.begins():
            if holding == 0 and since is not None:
                free.append((since[0], since[1], hold.order, hold.time, since[2]))
                since = None
            holding += 1
        else:
            holding -= 1
            if holding == 0:
                since = (hold.order, hold.time, hold.tokens)
    if since is not None:
        free.append((since[0], since[1], None, math.inf, since[2]))
    # 14: never free for a while when a waiting request could start
    for _, f_time, _, h_time, tokens in free:
        for waiter in waiters:
            verdict = guard_verdict(waiter.guard, tokens)
            if verdict is False:
                continue
            lo = max(waiter.arrived, f_time)
            hi = min(h_time, stop, waiter.left)
            if lo < hi:
                what = "unguarded" if waiter.guard is None else f"its guard said {verdict}"
                problems.append(
                    f"invariant 14 (free server, startable request): S{index} was free from "
                    f"t={lo} to t={hi} with {tokens} tokens while {waiter.record.rid} "
                    f"(arrived t={waiter.arrived}, {what}) waited"
                )
    # 15: a released handler waiting to take the server back waits only for its holder
    for run in log.runs:
        if run.server != index or run.block_out_order is None or run.retake_order is None:
            continue
        assert run.block_out is not None
        assert run.retake is not None
        for hold in holds:
            if hold.kind == "start" and run.block_out_order < hold.order < run.retake_order:
                problems.append(
                    f"invariant 15 (retake ahead of unstarted requests): {hold.rid} started "
                    f"at t={hold.time} while {run.rid}'s handler, out of its block since "
                    f"t={run.block_out}, waited to take S{index} back (it did at t={run.retake})"
                )
        for f_order, f_time, h_order, h_time, _ in free:
            if h_order is not None and h_order < run.block_out_order:
                continue
            if f_order > run.retake_order:
                continue
            lo, hi = max(f_time, run.block_out), min(h_time, run.retake)
            if lo < hi:
                problems.append(
                    f"invariant 15 (retake at once): {run.rid}'s handler left its block at "
                    f"t={run.block_out} and took S{index} back at t={run.retake}, but the "
                    f"server was free from t={lo} to t={hi}"
                )
    return problems


_LIVES = {
    ("queued", "started", "finished"),
    ("queued", "withdrawn"),  # withdrawn, or dropped at the stop
    ("queued", "shed"),  # refused by admission as it would start
    ("shed",),  # refused before it was queued
}


def instrument_problems(events: list[tuple[str, int, str | None]], stats: Any) -> list[str]:
    """Invariant 9 for one server: each request's events form one life; counts match."""
    problems: list[str] = []
    lives: dict[int, list[str]] = {}
    for hook, number, _ in events:
        lives.setdefault(number, []).append(hook)
    for number, hooks in lives.items():
        if tuple(hooks) not in _LIVES:
            problems.append(f"request #{number} was seen {hooks}")
    outcomes = [outcome for hook, _, outcome in events if hook not in ("queued", "started")]
    expected = {
        "handled": stats.handled,
        "failed": stats.failed,
        "timed_out": stats.timed_out,
        "cancelled": stats.cancelled,
        "withdrawn": stats.withdrawn,
        "dropped": stats.dropped,
        "shed": stats.shed,
    }
    for outcome, count in expected.items():
        if outcomes.count(outcome) != count:
            problems.append(f"{outcomes.count(outcome)} {outcome!r} events, statistics say {count}")
    return problems


def report(log: Log, problems: list[str]) -> str:
    lines = [str(log.scenario), "", "what happened:"]
    lines += [f"  {c.describe()}" for c in log.calls]
    for run in log.runs:
        end = "never ended" if run.end is None else f"{run.ending} at t={run.end}"
        inline = " (inline)" if run.inline else ""
        block = ""
        if run.block_in is not None:
            block = (
                f"; released t={run.block_in}, block left t={run.block_out}, "
                f"server taken back t={run.retake}"
            )
        lines.append(
            f"  handler S{run.server}#{run.obj}.{run.method} of {run.rid}{inline}: "
            f"started t={run.start} (#{run.order}, {run.tokens} tokens) deadline "
            f"t={run.deadline}, {end}{block}"
        )
    if log.holds:
        lines.append("  the servers taken and given back:")
        lines += [f"    {hold}" for hold in log.holds]
    if log.guard_evals:
        evals = [f"S{i} t={t} tokens={k} ({kind})" for i, _, t, k, kind in log.guard_evals]
        lines.append(f"  guards evaluated: {'; '.join(evals)}")
    for index, stop in sorted(log.stop_time.items()):
        lines.append(f"  S{index} stopped at t={stop}; statistics {log.stats.get(index)!r}")
    lines += ["", "violations:", *(f"  {p}" for p in problems)]
    lines.append(f"(TRIOSERVER_PRIVATE={os.environ.get('TRIOSERVER_PRIVATE', 'unset')})")
    return "\n".join(lines)


_VIOLATIONS: dict[str, type[AssertionError]] = {}


def violation_type(problem: str) -> type[AssertionError]:
    """One AssertionError subclass per invariant, so that Hypothesis reports (and shrinks)
    each kind of failure apart instead of only the first it meets."""
    match = re.match(r"invariant (\w+)", problem)
    name = f"Invariant{match.group(1)}Violated" if match else "ScenarioFailed"
    if "HANG" in problem:
        name = "Invariant1Hang"
    if name not in _VIOLATIONS:
        _VIOLATIONS[name] = type(name, (AssertionError,), {})
    return _VIOLATIONS[name]


def outcome_events(log: Log) -> None:
    """What the scenarios reached (``pytest --hypothesis-show-statistics``)."""
    for record in log.calls:
        if record.outcome_kind == "exception":
            hypothesis.event(f"outcome: {type(record.outcome).__name__}")
        else:
            hypothesis.event(f"outcome: {record.outcome_kind}")
    if len({run.obj for run in log.runs}) > len(log.scenario.servers):
        hypothesis.event("a supervisor restarted a server")
    for note in log.notes:
        hypothesis.event(f"note: {note}")
    runs = log.runs
    guarded = {
        (s.index, m.name) for s in log.scenario.servers for m in s.methods if m.guard is not None
    }
    started = {r.rid for r in runs if not r.inline}
    if any((r.server, r.method) in guarded and not r.inline for r in runs):
        hypothesis.event("14: a guarded handler ran")
    calls = {c.rid: c for c in log.calls}
    if any(
        (r.server, r.method) in guarded
        and not r.inline
        and any(
            h.server == r.server and not h.begins() and calls[r.rid].arrival < h.order < r.order
            for h in log.holds
        )
        for r in runs
    ):
        hypothesis.event("14: a guarded request waited a turn, then started")
    if any(not inline for *_, inline in log.guard_errors):
        hypothesis.event("14: a guard raised")
    if any(c.inline_guard is not None for c in log.calls):
        hypothesis.event("14: an inline call to a guarded method")
    if any((c.server, c.method) in guarded and c.rid not in started for c in log.calls):
        hypothesis.event("14: a guarded request never started")
    blocks = [r for r in runs if r.block_in is not None and r.block_out is not None]
    if blocks:
        hypothesis.event("15: a released block")
    if any(r.retake is not None and r.retake > (r.block_out or 0.0) for r in blocks):
        hypothesis.event("15: a handler waited to take the server back")
    if any(
        any(h.kind == "start" and h.server == r.server and r.block_in_order < h.order
            and h.order < (r.retake_order or 0) for h in log.holds)
        for r in blocks
    ):  # fmt: skip
        hypothesis.event("15: a request started during a block")
    if any((r.block_out or 0.0) >= r.deadline > (r.block_in or 0.0) for r in blocks):
        hypothesis.event("15: a block cut by its deadline")
    stops = log.stop_time
    if any(r.server in stops and (r.block_in or 0.0) <= stops[r.server] <= (r.block_out or 0.0)
           for r in blocks):  # fmt: skip
        hypothesis.event("15: a server stopped while a handler was in a block")
    if any(r.inline for r in blocks):
        hypothesis.event("15: an inline self-call entered a released block")
    if any(c.in_block for c in log.calls):
        hypothesis.event("15: a call from a block")
    for c in log.calls:
        if c.cycle in ("yes", "maybe"):
            name = type(c.outcome).__name__ if c.outcome_kind == "exception" else c.outcome_kind
            hypothesis.event(f"16: a call closing a cycle ({c.cycle}) got {name}")


def assert_invariants(scenario: Scenario) -> None:
    log = run_scenario(scenario)
    outcome_events(log)
    problems = check(log)
    if problems:
        raise violation_type(problems[0])("\n" + report(log, problems))


# -- thread handlers, on real time -----------------------------------------------------------

THREAD_BUDGET = 0.1
"""The budget of the thread handler, in real seconds."""

SLACK = 0.05
"""Real seconds a caller may finish after its limit (the scheduler, a busy 2-core machine)."""


@attrs.frozen
class ThreadCallerSpec:
    index: int
    method: str  # block (a thread handler) or ping (plain def)
    seconds: float  # how long `block` blocks its thread
    start: float
    deadline: float | None

    def __str__(self) -> str:
        limit = "" if self.deadline is None else f" under move_on_after({self.deadline})"
        what = f"block({self.seconds})" if self.method == "block" else "ping()"
        return f"caller c{self.index} at t+{self.start}{limit}: {what}"


@attrs.frozen
class ThreadScenario:
    max_abandoned: int
    stop_at: float | None  # the serve nursery cancelled then; None: once callers finish
    callers: tuple[ThreadCallerSpec, ...]

    def __str__(self) -> str:
        stop = "once every caller finished" if self.stop_at is None else f"at t+{self.stop_at}"
        return "\n".join(
            [
                f"@server(max_abandoned_threads={self.max_abandoned}) class Blocking, "
                f"served in a nursery cancelled {stop}:",
                f"    @call(timeout={THREAD_BUDGET}, thread=True) def block(seconds): "
                "time.sleep(seconds)",
                "    @call def ping()",
                *map(str, self.callers),
            ]
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("\n" + str(self))


@st.composite
def thread_scenarios(draw: st.DrawFn) -> ThreadScenario:
    count = draw(st.integers(1, 4))
    drawn = tuple(
        ThreadCallerSpec(
            index=index,
            method=draw(st.sampled_from(["block", "block", "ping"])),
            seconds=draw(st.sampled_from([0.0, 0.02, 0.25])),
            start=draw(st.sampled_from([0.0, 0.0, 0.05, 0.15])),
            deadline=draw(st.sampled_from([None, None, 0.05, 0.3])),
        )
        for index in range(count)
    )
    return ThreadScenario(
        max_abandoned=draw(st.sampled_from([1, 2, 8])),
        stop_at=draw(st.sampled_from([None, None, 0.12])),
        callers=drawn,
    )


@functools.lru_cache(maxsize=16)
def blocking_class(max_abandoned: int) -> type:
    class Blocking:
        def __init__(self, threads: dict[str, int], lock: threading.Lock) -> None:
            self.threads = threads
            self.lock = lock

        @call(timeout=THREAD_BUDGET, thread=True)
        def block(self, seconds: float) -> float:
            with self.lock:
                self.threads["started"] += 1
                self.threads["alive"] += 1
            try:
                time.sleep(seconds)
                return seconds
            finally:
                with self.lock:
                    self.threads["alive"] -= 1

        @call
        def ping(self) -> str:
            return "pong"

    return server(max_abandoned_threads=max_abandoned)(Blocking)


def busy_threads(baseline: set[threading.Thread]) -> list[str]:
    """Threads that did not run before, other than trio's idle cached workers.

    trio keeps an idle worker thread for 10 s after its job, named ``Trio thread N`` (while it
    runs a job it bears the job's name); those are trio's cache, not a leak.
    """
    return [
        thread.name
        for thread in threading.enumerate()
        if thread not in baseline and not thread.name.startswith("Trio thread ")
    ]


def check_threads(scenario: ThreadScenario) -> list[str]:
    """Run a thread scenario on real time; the violations of invariants 1, 2, 6 and 8."""
    baseline = set(threading.enumerate())
    count_before = threading.active_count()
    lock = threading.Lock()
    threads = {"started": 0, "alive": 0}
    results: list[tuple[ThreadCallerSpec, float, float, float, str, object]] = []
    stats: list[Any] = []
    problems: list[str] = []

    async def caller(handle: Any, spec: ThreadCallerSpec, t0: float) -> None:
        await trio.sleep_until(t0 + spec.start)
        start = trio.current_time()
        limit = math.inf if spec.deadline is None else start + spec.deadline
        kind, value = "cancelled", None
        with trio.move_on_after(math.inf if spec.deadline is None else spec.deadline):
            try:
                if spec.method == "block":
                    value = await handle.block(spec.seconds)
                else:
                    value = await handle.ping()
                kind = "value"
            except Exception as error:
                kind, value = "exception", error
        results.append((spec, start - t0, limit - t0, trio.current_time() - t0, kind, value))

    async def run_server(
        t0: float, done: trio.Event, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as servers:
            handle = await servers.start(
                serve, blocking_class(scenario.max_abandoned)(threads, lock)
            )
            task_status.started(handle)
            if scenario.stop_at is None:
                await done.wait()
            else:
                await trio.sleep_until(t0 + scenario.stop_at)
            servers.cancel_scope.cancel()
        stats.append(statistics(handle))

    async def main() -> None:
        t0 = trio.current_time()
        done = trio.Event()
        with trio.move_on_after(10) as limit:
            async with trio.open_nursery() as outer:
                handle = await outer.start(run_server, t0, done)
                async with trio.open_nursery() as nursery:
                    for spec in scenario.callers:
                        nursery.start_soon(caller, handle, spec, t0)
                done.set()
        if limit.cancelled_caught:
            problems.append("invariant 1 (HANG): the scenario had not ended after 10 s")

    trio.run(main)
    for spec, start, limit, finish, kind, value in results:
        story = f"c{spec.index} (started t+{start:.3f}): {kind} {value!r} at t+{finish:.3f}"
        if finish > limit + SLACK:
            problems.append(f"invariant 2: {story}, past its own limit t+{limit:.3f}")
        if kind == "value":
            expected = spec.seconds if spec.method == "block" else "pong"
            if value != expected:
                problems.append(f"invariant 1: {story}: not its handler's value")
        elif kind == "exception":
            if isinstance(value, CallTimeout):
                # at its budget after its start, which may wait behind the other callers'
                ahead = sum(c.method == "block" for c in scenario.callers)
                if spec.method != "block" or finish > start + ahead * THREAD_BUDGET + SLACK:
                    problems.append(f"invariant 1/4: {story}: CallTimeout, not at its budget")
            elif isinstance(value, ServerOverloaded):
                if spec.method != "block" and spec.deadline is None:
                    problems.append(f"invariant 1: {story}: ServerOverloaded")
            elif not isinstance(value, ServerStopped) or scenario.stop_at is None:
                problems.append(f"invariant 1: {story}: not an allowed outcome")
    if len(results) != len(scenario.callers):
        problems.append(f"invariant 1: {len(scenario.callers) - len(results)} callers never ended")
    if stats:
        final = stats[0]
        if final.running != 0 or final.queued != 0:
            problems.append(f"invariant 6: after the stop {final!r}")
    # 8: every thread handler ends (they block at most 0.25 s); then no thread is left
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and (threads["alive"] or busy_threads(baseline)):
        time.sleep(0.01)
    if threads["alive"] or busy_threads(baseline):
        problems.append(
            f"invariant 8: 2 s after the run, {threads['alive']} thread handlers still run; "
            f"threads left: {busy_threads(baseline)} (active_count {count_before} before, "
            f"{threading.active_count()} now)"
        )
    return problems


def assert_thread_invariants(scenario: ThreadScenario) -> None:
    problems = check_threads(scenario)
    if problems:
        lines = [str(scenario), "", "violations:", *(f"  {p}" for p in problems)]
        raise violation_type(problems[0])("\n" + "\n".join(lines))
