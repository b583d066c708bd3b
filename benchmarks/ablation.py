"""What the contract costs a call that does not suspend: the same calls with its parts removed.

Issue 12 asks a non-suspending ``@call`` for 0.75x a bare checkpoint loop and a plain ``def``
handler for 1.0x an uncontended `trio.Lock`. This section measures how far removing the
bookkeeping that guarantees ask for would take them, to tell a cost of the implementation from
a cost of the contract. Each variant is the shipped code with parts patched out for the
length of its measurements (in this process, interleaved with the others):

- ``shipped``: as it is.
- ``no timings``: `MethodRecorder.ended` and `TimingRecorder.add` do nothing. Breaks the
  per-method timings of `statistics()` and admission's expected service time (the Overload
  page), which learn from them.
- ``no timings, no deadline``: also `_private.effective_deadline` returns infinity without
  reading the caller's cancel scopes. Breaks guarantee 3 (a handler's deadline is the caller's
  when that is sooner) and admission.

`removed` knows one more part, ``timers``, which only `instructions` removes (from the Event
handler, which suspends): `Timers.add` does nothing, so no suspended handler is cut at its
deadline and no idle server retires (guarantees 2 and 3).

What is left in the last variant is what guarantee 3 and 8 need whatever the bookkeeping: a
request record, the hand-off (the handler runs as the server's task, in its contextvars, under
its scope) and one checkpoint. ``python -m benchmarks --only ablation``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import Any

import attrs

from trioserver import _private
from trioserver._statistics import MethodRecorder, TimingRecorder
from trioserver._timers import Timers

from .contenders import FLOOR, LOCK, ROUNDTRIP, Contender
from .roundtrip import Sample, interleaved, measure_trio

VARIANTS: dict[str, tuple[str, ...]] = {
    "shipped": (),
    "no_timings": ("timings",),
    "no_timings_no_deadline": ("timings", "deadline"),
}
TITLES = {
    "shipped": "as shipped",
    "no_timings": "without per-method timings",
    "no_timings_no_deadline": "without timings and without reading the caller's deadline",
}
BODIES = {"trioserver_async": "@call async, returns at once", "trioserver_def": "@call def"}


def _nothing(*_: Any) -> None:
    return None


def _infinite(_: Any) -> float:
    return math.inf


@contextmanager
def removed(parts: tuple[str, ...]) -> Generator[None]:
    """The shipped code with `parts` (``timings``, ``deadline``, ``timers``) patched out, then
    restored."""
    patches: list[tuple[Any, str, Callable[..., Any]]] = []
    if "timings" in parts:
        patches += [(MethodRecorder, "ended", _nothing), (TimingRecorder, "add", _nothing)]
    if "deadline" in parts:
        patches.append((_private, "effective_deadline", _infinite))
    if "timers" in parts:
        patches.append((Timers, "add", _nothing))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def contenders() -> list[Contender]:
    """The floor and the Lock, then each body under each variant (named ``<body>/<variant>``)."""
    by_name = {c.name: c for c in ROUNDTRIP}
    found = [by_name[FLOOR], by_name[LOCK]]
    for body, label in BODIES.items():
        for variant, title in TITLES.items():
            found.append(
                attrs.evolve(by_name[body], name=f"{body}/{variant}", label=f"{label}, {title}")
            )
    return found


def measure_ablated(contender: Contender, callers: int, calls: int) -> Sample:
    variant = contender.name.partition("/")[2]
    with removed(VARIANTS.get(variant, ())):
        return measure_trio(contender, callers, calls)


def run_ablation(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    return interleaved(
        contenders(),
        callers=(1,),
        rounds=rounds,
        calls=calls,
        seed=seed,
        title="ablation",
        measure_one=measure_ablated,
    )
