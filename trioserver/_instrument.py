"""Instruments: hooks that see every request's life, per server or for every server in a run.

As with `trio.abc.Instrument`, a server with no instrument pays nothing but a
falsy check per event; nor does one whose instruments do not override that event's hook.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Literal

import attrs
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


@attrs.frozen
class CallInfo:
    """One request as an instrument sees it. Times are `trio.current_time` readings."""

    server: str
    """The server class's name."""
    method: str
    """``Class.method``."""
    kind: Literal["call", "cast"]
    number: int
    """Numbers the server's requests from 1, in arrival order (per run)."""
    queued_at: float
    """When it was queued (for one refused before queueing: when it was refused)."""
    started_at: float | None = None
    """When its handler started (`call_started`, `call_finished`)."""
    ended_at: float | None = None
    """When it ended: finished, withdrawn, dropped or shed."""
    outcome: str | None = None
    """``handled``, ``failed``, ``timed_out``, ``cancelled`` (`call_finished`);
    ``withdrawn``, ``dropped`` (`call_withdrawn`); ``shed`` (`call_shed`)."""
    reason: str | None = None
    """Why a request was shed or dropped, in words; for `Instrument.cast_retried` and
    `Instrument.cast_dead`, what its run raised."""
    stored_as: int | None = None
    """A durable cast's number in its store (commit order), else None. For
    `Instrument.cast_stored`, `~Instrument.cast_retried` and `~Instrument.cast_dead`,
    `number` is that number too."""
    server_id: int = 0
    """``id()`` of the server object: with `number`, it tells apart the requests of two
    servers of one class (each numbers its own from 1)."""


class Instrument:
    """Base class of instruments: override the hooks you need; the others do nothing.

    Hooks run synchronously in whichever task causes the event (a caller, or
    the server's task) and must not block. `call_queued` runs in the caller's
    task and contextvars; `call_started` and `call_finished` run in the
    handler's contextvars (the server's, on both paths), so a contextvar set in
    `call_started` is seen by the handler and can be reset in `call_finished`.
    An instrument whose hook raises is logged and removed, as trio does with
    its own instruments.
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
    """The hooks `instrument` does something in (those it does not override cost nothing)."""
    found: set[Hook] = set()
    for hook in HOOKS:
        method = getattr(instrument, hook, None)
        if method is not None and getattr(method, "__func__", method) is not getattr(
            Instrument, hook
        ):
            found.add(hook)
    return frozenset(found)


class InstrumentList:
    """Instruments in installation order, and `hooked`: the hooks any of them overrides.

    The call path asks ``hooked`` (one attribute read) before it builds a `CallInfo`: a
    server whose instruments override nothing pays nothing more than one with none.
    """

    __slots__ = ("hooked", "items")

    def __init__(self, items: Iterable[Instrument] = ()) -> None:
        self.items: list[Instrument] = []
        self.hooked: frozenset[Hook] = frozenset()
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
            self.hooked |= _overridden(instrument)

    def remove(self, instrument: Instrument) -> None:
        self.items.remove(instrument)
        self.hooked = frozenset().union(*(_overridden(i) for i in self.items))


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
    """A server's own instruments followed by the run's, read live (for servers that have own).

    A server with no own instruments uses the run's list itself.
    """

    __slots__ = ("own", "shared")

    def __init__(self, own: InstrumentList, shared: InstrumentList) -> None:
        self.own = own
        self.shared = shared

    @property
    def hooked(self) -> frozenset[Hook]:
        return self.own.hooked | self.shared.hooked

    def __bool__(self) -> bool:
        return bool(self.own or self.shared)

    def __iter__(self) -> Iterator[Instrument]:
        yield from self.own
        yield from (i for i in self.shared if i not in self.own)

    def remove(self, instrument: Instrument) -> None:
        if instrument in self.own:
            self.own.remove(instrument)


def add_instrument(instrument: Instrument) -> None:
    """Install `instrument` on every server of the current trio run, running or started later.

    Args:
      instrument: The instrument; installing it twice has no further effect.

    Raises:
      RuntimeError: outside a trio run.
    """
    run_instruments().add(instrument)


def remove_instrument(instrument: Instrument) -> None:
    """Remove an instrument installed with `add_instrument`.

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
