"""A trace of every request in Chrome's trace-event format (Perfetto, chrome://tracing)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from ._instrument import CallInfo, Instrument


def _micros(seconds: float) -> float:
    return round(seconds * 1e6, 3)


class TraceInstrument(Instrument):
    """Records each server's queue waits and service times as Chrome trace events.

    Each server is a row (a "thread") that shows its handlers' runs, one slice per
    request, named by method and coloured by outcome; each request's wait in the
    mailbox is an async slice on the same row ("queue: Class.method"), since waits
    overlap. Refusals and withdrawals are instant events. Times are the run's clock
    (`trio.current_time`), virtual or real, in microseconds.

    Colours are the trace events' ``cname``, a name from the palette of Chrome's trace
    viewer (chrome://tracing), one for each outcome (`COLOURS`): ``handled`` is
    ``good`` (green), ``failed`` ``terrible`` (red), ``timed_out`` ``bad`` (amber),
    ``cancelled`` ``grey``; the instants ``withdrawn`` ``yellow``, ``dropped``
    ``olive``, ``shed`` ``black``; queue waits ``thread_state_runnable`` (blue).
    Perfetto does not read ``cname`` (it colours slices by name); the outcome is also
    in each event's arguments.

    Use it with `add_instrument` or ``open_server(obj, instruments=[trace])``, then
    `write` the file and open it in https://ui.perfetto.dev or chrome://tracing.
    """

    COLOURS: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "handled": "good",
            "failed": "terrible",
            "timed_out": "bad",
            "cancelled": "grey",
            "withdrawn": "yellow",
            "dropped": "olive",
            "shed": "black",
        }
    )
    """Outcome (`CallInfo.outcome`) -> the ``cname`` of its slice or instant."""
    QUEUE_COLOUR: ClassVar[str] = "thread_state_runnable"
    """The ``cname`` of a request's wait in the mailbox: ready to run, not running."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._rows: dict[str, int] = {}
        self._waiting: set[str] = set()

    def _row(self, server: str) -> int:
        row = self._rows.get(server)
        if row is None:
            row = self._rows[server] = len(self._rows) + 1
            self.events.append(
                {"ph": "M", "name": "thread_name", "pid": 1, "tid": row, "args": {"name": server}}
            )
        return row

    def call_queued(self, call: CallInfo) -> None:
        key = _wait_id(call)
        self._waiting.add(key)
        self.events.append(
            {
                "ph": "b",
                "cat": "queue",
                "name": f"queue: {call.method}",
                "id": key,
                "pid": 1,
                "tid": self._row(call.server),
                "ts": _micros(call.queued_at),
                "cname": self.QUEUE_COLOUR,
            }
        )

    def _end_wait(self, call: CallInfo, at: float) -> None:
        key = _wait_id(call)
        if key not in self._waiting:
            return  # refused before it was queued
        self._waiting.discard(key)
        self.events.append(
            {
                "ph": "e",
                "cat": "queue",
                "name": f"queue: {call.method}",
                "id": key,
                "pid": 1,
                "tid": self._row(call.server),
                "ts": _micros(at),
            }
        )

    def _colour(self, call: CallInfo) -> str:
        # An outcome this map does not know (a newer one) gets the viewer's neutral grey.
        return self.COLOURS.get(call.outcome or "", "generic_work")

    def call_started(self, call: CallInfo) -> None:
        assert call.started_at is not None
        self._end_wait(call, call.started_at)

    def call_finished(self, call: CallInfo) -> None:
        assert call.started_at is not None
        assert call.ended_at is not None
        self.events.append(
            {
                "ph": "X",
                "cat": "service",
                "name": call.method,
                "pid": 1,
                "tid": self._row(call.server),
                "ts": _micros(call.started_at),
                "dur": _micros(call.ended_at - call.started_at),
                "cname": self._colour(call),
                "args": {"number": call.number, "outcome": call.outcome},
            }
        )

    def _instant(self, call: CallInfo) -> None:
        assert call.ended_at is not None
        self._end_wait(call, call.ended_at)
        self.events.append(
            {
                "ph": "i",
                "s": "t",
                "name": f"{call.outcome}: {call.method}",
                "pid": 1,
                "tid": self._row(call.server),
                "ts": _micros(call.ended_at),
                "cname": self._colour(call),
                "args": {"number": call.number, "reason": call.reason},
            }
        )

    def call_withdrawn(self, call: CallInfo) -> None:
        self._instant(call)

    def call_shed(self, call: CallInfo) -> None:
        self._instant(call)

    def to_json(self) -> dict[str, Any]:
        """The trace as a JSON-ready object (``{"traceEvents": [...]}``)."""
        return {"traceEvents": list(self.events), "displayTimeUnit": "ms"}

    def write(self, path: str | Path) -> None:
        """Write the trace to `path` as JSON."""
        Path(path).write_text(json.dumps(self.to_json()), encoding="utf-8")


def _wait_id(call: CallInfo) -> str:
    """A queue wait's id: requests are numbered per server, so two servers of one class need
    the server's identity too."""
    return f"{call.server}@{call.server_id:x}#{call.number}"
