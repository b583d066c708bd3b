"""Instruments: hooks that see every request's life, per server or for every server in a run.

As with `trio.abc.Instrument`, a server with no instrument pays nothing but a
falsy check per event; nor does one whose instruments do not override that event's hook.

An instrument hears a request's whole life or none of it: a request is told, event after
event, to the instruments of its server as they were when it arrived (its `Listeners`), even
if one is removed meanwhile; one installed later hears nothing of it. An instrument whose hook
raises is removed at once, and hears nothing more, of any request.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, NamedTuple

import trio

logger = logging.getLogger("trioserver")

Hook = Literal[
    "call_queued",
    "call_started",
    "call_finished",
    "call_withdrawn",
    "call_shed",
    "cast_stored",
    "cast_retried",
    "cast_dead",
]


class CallInfo(NamedTuple):
    """One request as an instrument sees it (an immutable named tuple, one per event). Times
    are `trio.current_time` readings."""

    server: str
    method: str
    kind: Literal["call", "cast"]
    number: int
    queued_at: float
    started_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None
    reason: str | None = None
    stored_as: int | None = None
    server_id: int = 0


# (a named tuple's fields are its class's properties: their docstrings, which autodoc shows)
_FIELD_DOCS = {
    "server": "The server class's name.",
    "method": "``Class.method``.",
    "kind": "``call`` or ``cast``.",
    "number": "Numbers the server's requests from 1, in arrival order (per run).",
    "queued_at": "When it was queued (for one refused before queueing: when it was refused).",
    "started_at": "When its handler started (`call_started`, `call_finished`).",
    "ended_at": "When it ended: finished, withdrawn, dropped or shed.",
    "outcome": (
        "``handled``, ``failed``, ``timed_out``, ``cancelled`` (`call_finished`); "
        "``withdrawn``, ``dropped`` (`call_withdrawn`); ``shed`` (`call_shed`)."
    ),
    "reason": (
        "Why a request was shed or dropped, in words; for `Instrument.cast_retried` and "
        "`Instrument.cast_dead`, what its run raised."
    ),
    "stored_as": (
        "A durable cast's number in its store (commit order), else None. For "
        "`Instrument.cast_stored`, `~Instrument.cast_retried` and `~Instrument.cast_dead`, "
        "`number` is that number too."
    ),
    "server_id": (
        "``id()`` of the server object: with `number`, it tells apart the requests of two "
        "servers of one class (each numbers its own from 1)."
    ),
}
for _field, _doc in _FIELD_DOCS.items():
    getattr(CallInfo, _field).__doc__ = _doc


class Instrument:
    """Base class of instruments: override the hooks you need; the others do nothing.

    Hooks run synchronously in whichever task causes the event (a caller, or
    the server's task) and must not block. `call_queued` runs in the caller's
    task and contextvars; `call_started` and `call_finished` run in the
    handler's contextvars (the server's, on both paths), so a contextvar set in
    `call_started` is seen by the handler and can be reset in `call_finished`.

    An instrument hears a request's whole life or none of it: a request is told
    to the instruments its server had when it arrived, even one removed since,
    and not to one installed later. An instrument whose hook raises is logged
    and removed, as trio does with its own instruments, from the run and from
    every server of it: it hears nothing more.
    """

    def call_queued(self, call: CallInfo) -> None:
        """A request entered the mailbox."""

    def call_started(self, call: CallInfo) -> None:
        """A handler started (`CallInfo.started_at` is set)."""

    def call_finished(self, call: CallInfo) -> None:
        """A started handler ended: `CallInfo.outcome` says how."""

    def call_withdrawn(self, call: CallInfo) -> None:
        """A request left the mailbox without starting: its caller left, or the server stopped."""

    def call_shed(self, call: CallInfo) -> None:
        """A request was refused, by admission or with `ServerOverloaded` (`CallInfo.reason`
        says why)."""

    def cast_stored(self, call: CallInfo) -> None:
        """A durable cast was committed to its server's store (in the store's task)."""

    def cast_retried(self, call: CallInfo) -> None:
        """A durable cast's run failed and it will run again after a backoff."""

    def cast_dead(self, call: CallInfo) -> None:
        """A durable cast failed on its last attempt, or cannot run: kept as dead."""


HOOKS: tuple[Hook, ...] = (
    "call_queued", "call_started", "call_finished", "call_withdrawn", "call_shed",
    "cast_stored", "cast_retried", "cast_dead",
)  # fmt: skip


def _overridden(instrument: Instrument) -> frozenset[Hook]:
    """The hooks `instrument` does something in (those it does not override cost nothing; nor
    does one it sets, on itself, to the base class's: an instrument may leave hooks out for a
    while, and tell `hooks_changed` when it takes them up)."""
    found: set[Hook] = set()
    for hook in HOOKS:
        method = getattr(instrument, hook, None)
        if method is not None and getattr(method, "__func__", method) is not getattr(
            Instrument, hook
        ):
            found.add(hook)
    return frozenset(found)


Calls = dict[Hook, tuple[tuple[Instrument, Callable[[CallInfo], None]], ...]]
"""Per hook, the instruments that override it, in installation order, each with its bound
hook."""


class Listeners:
    """What the call path reads of a list of instruments as it was at one moment: `hooked`,
    the hooks any of them overrides, and `calls`, per hook the instruments to call (built once
    per change, not per event).

    A request keeps the listeners of its server as they were when it arrived (`Request.heard`)
    and tells them, and only them, every event of its life: an instrument hears a request's
    whole life or none of it, whether installed or removed meanwhile. One that raises is
    dropped from all the listeners of the run (`remove_raising`): it hears nothing more.
    """

    __slots__ = ("__weakref__", "calls", "hooked")

    def __init__(self, instruments: tuple[Instrument, ...] = ()) -> None:
        overridden = [(instrument, _overridden(instrument)) for instrument in instruments]
        self.calls: Calls = {
            hook: tuple((i, getattr(i, hook)) for i, hooks in overridden if hook in hooks)
            for hook in HOOKS
        }
        self.hooked: frozenset[Hook] = frozenset(hook for hook in HOOKS if self.calls[hook])

    def drop(self, instrument: Instrument) -> None:
        """`instrument` raised: the requests that keep these listeners call it no more."""
        self.calls = {
            hook: tuple(pair for pair in pairs if pair[0] is not instrument)
            for hook, pairs in self.calls.items()
        }
        self.hooked = frozenset(hook for hook in HOOKS if self.calls[hook])


_LIVE: trio.lowlevel.RunVar[weakref.WeakSet[Listeners]] = trio.lowlevel.RunVar(
    "trioserver_listeners"
)


def _listen(instruments: tuple[Instrument, ...]) -> Listeners:
    """New listeners for `instruments`, known to the run (`_LIVE`, while something keeps them)
    if they call any."""
    listeners = Listeners(instruments)
    if listeners.hooked:
        try:
            live = _LIVE.get()
        except LookupError:
            live = weakref.WeakSet[Listeners]()
            _LIVE.set(live)
        live.add(listeners)
    return listeners


class InstrumentList:
    """Instruments in installation order, and `listeners`, what the call path reads of them.

    The call path asks ``listeners.hooked`` (its request's) before it builds a `CallInfo`: a
    server whose instruments override nothing pays nothing more than one with none. A change
    makes new listeners, here and in every `Instruments` that combines this list
    (`dependents`); the old ones stay with the requests that keep them.
    """

    __slots__ = ("dependents", "items", "listeners", "snapshot")

    def __init__(self, items: Iterable[Instrument] = ()) -> None:
        self.items: list[Instrument] = []
        self.snapshot: tuple[Instrument, ...] = ()  # `items` as a tuple
        self.listeners = Listeners()
        self.dependents: weakref.WeakSet[Instruments] = weakref.WeakSet()
        for instrument in items:
            self.add(instrument)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self.items)

    def __contains__(self, instrument: object) -> bool:
        return instrument in self.items

    def add(self, instrument: Instrument) -> None:
        if instrument not in self.items:
            self.items.append(instrument)
            self.changed()

    def remove(self, instrument: Instrument) -> None:
        self.items.remove(instrument)
        self.changed()

    def changed(self) -> None:
        """New listeners, here and in the lists combining this one."""
        self.snapshot = tuple(self.items)
        self.listeners = _listen(self.snapshot)
        for dependent in self.dependents:
            dependent.combine()


_RUN: trio.lowlevel.RunVar[InstrumentList] = trio.lowlevel.RunVar("trioserver_instruments")


def run_instruments() -> InstrumentList:
    """The instruments of every server in this trio run (one list, shared by the servers)."""
    try:
        return _RUN.get()
    except LookupError:
        shared = InstrumentList()
        _RUN.set(shared)
        return shared


class Instruments:
    """A server's own instruments followed by the run's (for servers that have own), with
    `listeners` and `snapshot` as `InstrumentList` has them, recombined when either list
    changes.

    A server with no own instruments uses the run's list itself.
    """

    __slots__ = ("__weakref__", "listeners", "own", "shared", "snapshot")

    def __init__(self, own: InstrumentList, shared: InstrumentList) -> None:
        self.own = own
        self.shared = shared
        self.snapshot: tuple[Instrument, ...] = ()
        self.listeners = own.listeners
        own.dependents.add(self)
        shared.dependents.add(self)
        self.combine()

    def combine(self) -> None:
        """Own instruments, then the run's not among them (after a change to either)."""
        own = self.own.snapshot
        self.snapshot = own + tuple(i for i in self.shared.snapshot if i not in own)
        self.listeners = _listen(self.snapshot)

    def __bool__(self) -> bool:
        return bool(self.own or self.shared)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self.snapshot)


def hooks_changed(instrument: Instrument) -> None:
    """`instrument` does something in other hooks than when it was installed (one that waited
    for something to report to: `OpenTelemetryInstrument` without an SDK): every list of the
    current trio run that holds it makes new listeners. Requests arriving from then on are told
    its new hooks; those in flight keep the ones they were told (a whole life or none)."""
    shared = run_instruments()
    if instrument in shared:
        shared.changed()  # (and the servers' lists that combine it)
    for combined in list(shared.dependents):
        if instrument in combined.own:
            combined.own.changed()


def remove_raising(instrument: Instrument) -> None:
    """`instrument` raised in a hook: remove it from this run's list and every server's own,
    and from the listeners that requests in flight keep. It hears nothing more."""
    shared = run_instruments()
    if instrument in shared:
        shared.remove(instrument)
    for combined in list(shared.dependents):  # (the servers with own instruments)
        if instrument in combined.own:
            combined.own.remove(instrument)
    for listeners in list(_LIVE.get()):  # (it was called: through listeners `_listen` made)
        listeners.drop(instrument)


def add_instrument(instrument: Instrument) -> None:
    """Install `instrument` on every server of the current trio run, running or started later.

    It hears every event of the requests that arrive from then on, and nothing of those
    already in flight: an instrument hears a request's whole life or none of it.

    Args:
      instrument: The instrument; installing it twice has no further effect.

    Raises:
      RuntimeError: outside a trio run.
    """
    run_instruments().add(instrument)


def remove_instrument(instrument: Instrument) -> None:
    """Remove an instrument installed with `add_instrument`.

    It still hears the rest of every request it heard arrive: an instrument hears a
    request's whole life or none of it.

    Raises:
      KeyError: it is not installed.
    """
    shared = run_instruments()
    if instrument not in shared:
        raise KeyError(instrument)
    shared.remove(instrument)


class LoggingInstrument(Instrument):
    """Logs every event of every request, one line each, on the ``trioserver.calls`` logger.

    Args:
      level: The logging level of the lines (``logging.DEBUG`` unless given).
    """

    def __init__(self, level: int = logging.DEBUG) -> None:
        self.level = level
        self.logger = logging.getLogger("trioserver.calls")

    def _log(self, call: CallInfo, what: str) -> None:
        self.logger.log(self.level, "%s #%d %s", call.method, call.number, what)

    def call_queued(self, call: CallInfo) -> None:
        self._log(call, f"queued at {call.queued_at:.6f}")

    def call_started(self, call: CallInfo) -> None:
        assert call.started_at is not None
        self._log(call, f"started after waiting {call.started_at - call.queued_at:.6f} s")

    def call_finished(self, call: CallInfo) -> None:
        assert call.started_at is not None
        assert call.ended_at is not None
        self._log(call, f"{call.outcome} after {call.ended_at - call.started_at:.6f} s")

    def call_withdrawn(self, call: CallInfo) -> None:
        self._log(call, f"{call.outcome}: {call.reason}")

    def call_shed(self, call: CallInfo) -> None:
        self._log(call, f"shed: {call.reason}")

    def cast_stored(self, call: CallInfo) -> None:
        self._log(call, "stored")

    def cast_retried(self, call: CallInfo) -> None:
        self._log(call, f"failed, retried: {call.reason}")

    def cast_dead(self, call: CallInfo) -> None:
        self._log(call, f"dead: {call.reason}")
