"""The price of an instrument: a no-op `trioserver.Instrument` installed, against none.

Two handlers, each with the default budget: ``bump`` (returns without suspending,
`contenders.Counter`) and the ``event`` body of `awaiting` (waits for another task). Each runs
with ``open_server(obj, instruments=[Instrument()])`` and with no instrument; the ratio is
instrumented / none, at 1 and at 100 callers.
"""

from __future__ import annotations

from typing import Any

from . import awaiting, contenders
from .contenders import Contender
from .roundtrip import interleaved

INSTRUMENTS: list[Contender] = [
    Contender(
        "bump_bare",
        "@call async bump, no instrument (reference)",
        contenders.trioserver_opener(contenders.Counter, "bump"),
        baseline="bump_bare",
    ),
    Contender(
        "bump_instrumented",
        "@call async bump, a no-op Instrument",
        contenders.trioserver_opener(contenders.Counter, "bump", instrumented=True),
        baseline="bump_bare",
    ),
    Contender(
        "event_bare",
        "@call awaiting an Event, no instrument (reference)",
        awaiting.trioserver_opener(awaiting.Budgeted, "event"),
        baseline="event_bare",
    ),
    Contender(
        "event_instrumented",
        "@call awaiting an Event, a no-op Instrument",
        awaiting.trioserver_opener(awaiting.Budgeted, "event", instrumented=True),
        baseline="event_bare",
    ),
]


def run_instruments(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    return interleaved(
        INSTRUMENTS, callers=(1, 100), rounds=rounds, calls=calls, seed=seed, title="instrument"
    )
