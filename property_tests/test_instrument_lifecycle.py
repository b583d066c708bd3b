"""Instruments installed, removed and raising at random moments, under generated callers
(deadlines, cancellations, failing handlers, casts, a bounded mailbox, admission, a stop
mid-flight): every instrument hears a request's whole life or none of it.

A witness, a recording instrument of the server's own that never raises, hears every request.
Every hook of every instrument and every installation, removal and raise goes into one log,
in order. Then, for each request the witness heard (its first event at position p):

- the witness heard a whole life: ``queued`` then ``started`` and ``finished``, or then
  ``withdrawn`` or ``shed``; or ``shed`` alone (refused before it was queued);
- an instrument installed at p heard that same life, but for what came after it raised;
  one not installed at p heard nothing of it;
- an instrument heard nothing between its raise and its next installation.

With an `OpenTelemetryInstrument` among them (added to the run and removed at random moments),
it ends every span it began (nothing live, the mailbox-depth gauge at 0), makes one span per
request it heard, and a handler's span is the current one in that handler only: a span a
handler opens is a child of its own request's span, or a root when the instrument did not hear
its request (never the child of another's).

Each example is one ``trio.run`` on a ``MockClock`` (autojump). Small by default;
``TRIOSERVER_FAULT_EXAMPLES=N`` runs N examples. Run it with the hand-off on and off:

    python -m pytest -q property_tests/test_instrument_lifecycle.py
    TRIOSERVER_PRIVATE=0 python -m pytest -q property_tests/test_instrument_lifecycle.py
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import defaultdict
from typing import Any, Literal

import attrs
import hypothesis
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind

from property_tests.scale import fault_settings
from property_tests.test_opentelemetry import Caller, cancel_later, eighths, make_class
from property_tests.test_opentelemetry import Scenario as CallerScenario
from property_tests.test_opentelemetry import scenarios as caller_scenarios
from tests.otel import Otel, make_otel
from trioserver import (
    CallInfo,
    CallTimeout,
    Instrument,
    ServerOverloaded,
    ServerStopped,
    add_instrument,
    open_server,
    remove_instrument,
    statistics,
)
from trioserver._instrument import run_instruments
from trioserver._statistics import ServerStatistics
from trioserver.opentelemetry import OpenTelemetryInstrument

BUDGET = 1.0
HOOKS = ("call_queued", "call_started", "call_finished", "call_withdrawn", "call_shed")
ENDINGS = frozenset({"call_finished", "call_withdrawn", "call_shed"})


@attrs.frozen
class InstrumentSpec:
    kind: Literal["record", "otel"]
    own: bool  # installed on the server at its opening (else on the run, toggled)
    installed_at_first: bool  # (a run's instrument) installed before the server opens
    toggles: tuple[float, ...]  # (a run's instrument) when it is added or removed, in turn
    raises: tuple[str, int] | None  # raise in this hook's n-th call (recording ones only)


@attrs.frozen
class Scenario:
    callers: CallerScenario  # (callers, a bounded mailbox, admission, a stop)
    instruments: tuple[InstrumentSpec, ...]


@st.composite
def instrument_specs(draw: st.DrawFn, kind: Literal["record", "otel"]) -> InstrumentSpec:
    own = kind == "record" and draw(st.booleans())
    toggles: tuple[float, ...] = ()
    if not own:
        toggles = tuple(sorted(draw(st.lists(eighths(0, 3), max_size=4))))
    raises = None
    if kind == "record":
        raises = draw(st.none() | st.tuples(st.sampled_from(HOOKS), st.integers(1, 3)))
    return InstrumentSpec(kind, own, not own and draw(st.booleans()), toggles, raises)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    base = draw(caller_scenarios())
    specs = draw(st.lists(instrument_specs("record"), min_size=1, max_size=3))
    if draw(st.booleans()):
        specs.insert(draw(st.integers(0, len(specs))), draw(instrument_specs("otel")))
    return Scenario(base, tuple(specs))


Entry = tuple[Any, ...]
"""A log entry: ("heard", instrument, hook, server id, number), ("added", instrument),
("removed", instrument) or ("raised", instrument)."""


def heard(name: int, hook: str, call: CallInfo) -> Entry:
    """The log entry of instrument `name` hearing `hook` of `call`."""
    return ("heard", name, hook, call.server_id, call.number)


class Recorder(Instrument):
    """Logs every hook it hears; raises in the n-th call of one hook, if told to."""

    def __init__(self, name: int, log: list[Entry], raises: tuple[str, int] | None) -> None:
        self.name = name
        self.log = log
        self.raises = raises
        self.counts: dict[str, int] = defaultdict(int)

    def _heard(self, hook: str, call: CallInfo) -> None:
        self.log.append(heard(self.name, hook, call))
        self.counts[hook] += 1
        if self.raises == (hook, self.counts[hook]):
            self.log.append(("raised", self.name))
            raise RuntimeError(f"instrument {self.name} raises in {hook}")

    def call_queued(self, call: CallInfo) -> None:
        self._heard("call_queued", call)

    def call_started(self, call: CallInfo) -> None:
        self._heard("call_started", call)

    def call_finished(self, call: CallInfo) -> None:
        self._heard("call_finished", call)

    def call_withdrawn(self, call: CallInfo) -> None:
        self._heard("call_withdrawn", call)

    def call_shed(self, call: CallInfo) -> None:
        self._heard("call_shed", call)


class LoggedOtel(OpenTelemetryInstrument):
    """The OpenTelemetry instrument, logging every hook it hears before it acts on it."""

    def __init__(self, name: int, log: list[Entry], **providers: Any) -> None:
        super().__init__(**providers)
        self.name = name
        self.log = log

    def call_queued(self, call: CallInfo) -> None:
        self.log.append(heard(self.name, "call_queued", call))
        super().call_queued(call)

    def call_started(self, call: CallInfo) -> None:
        self.log.append(heard(self.name, "call_started", call))
        super().call_started(call)

    def call_finished(self, call: CallInfo) -> None:
        self.log.append(heard(self.name, "call_finished", call))
        super().call_finished(call)

    def call_withdrawn(self, call: CallInfo) -> None:
        self.log.append(heard(self.name, "call_withdrawn", call))
        super().call_withdrawn(call)

    def call_shed(self, call: CallInfo) -> None:
        self.log.append(heard(self.name, "call_shed", call))
        super().call_shed(call)


@attrs.define
class Run:
    log: list[Entry] = attrs.Factory(list[Entry])
    caller_spans: dict[int, int] = attrs.Factory(dict[int, int])  # caller index -> span id
    stats: ServerStatistics | None = None


async def run_caller(index: int, spec: Caller, handle: Any, otel: Otel, run: Run) -> None:
    await trio.sleep(spec.start)
    with otel.tracer.start_as_current_span(f"caller {index}") as span:
        run.caller_spans[index] = span.get_span_context().span_id
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            if spec.cancel_after is not None:
                # cancelled by another task: a deadline of its own would be the call's deadline
                nursery.start_soon(cancel_later, scope, spec.cancel_after)
            with (
                scope,
                contextlib.suppress(
                    ValueError, ServerOverloaded, ServerStopped, CallTimeout, trio.TooSlowError
                ),
                trio.fail_after(math.inf if spec.deadline is None else spec.deadline),
            ):
                method = handle.note if spec.is_cast else handle.work
                await method(spec.seconds, spec.fails, index)
            nursery.cancel_scope.cancel()


async def toggle(instrument: Instrument, name: int, times: tuple[float, ...], run: Run) -> None:
    start = trio.current_time()
    for at in times:
        await trio.sleep_until(start + at)
        if instrument in run_instruments():
            remove_instrument(instrument)
            run.log.append(("removed", name))
        else:
            add_instrument(instrument)
            run.log.append(("added", name))


async def main(scenario: Scenario, otel: Otel, run: Run, made: list[Instrument]) -> None:
    witness = Recorder(0, run.log, None)
    own: list[Instrument] = [witness]
    for name, spec in enumerate(scenario.instruments, 1):
        instrument: Instrument = otel.instrument
        if spec.kind == "record":
            instrument = Recorder(name, run.log, spec.raises)
        made.append(instrument)
        if spec.own:
            own.append(instrument)
            run.log.append(("added", name))
        elif spec.installed_at_first:
            add_instrument(instrument)
            run.log.append(("added", name))
    cls = make_class(scenario.callers, otel)
    async with (
        trio.open_nursery() as callers,  # (outside the server: they see its stop)
        open_server(cls(), instruments=own) as handle,
    ):
        for name, spec in enumerate(scenario.instruments, 1):
            callers.start_soon(toggle, made[name - 1], name, spec.toggles, run)
        for index, spec in enumerate(scenario.callers.callers):
            callers.start_soon(run_caller, index, spec, handle, otel, run)
        # Without a stop: long enough for every request to end (6 at most, 1 s budgets).
        stop_at = scenario.callers.stop_at
        await trio.sleep(10.0 if stop_at is None else stop_at)
        run.stats = statistics(handle)
    for instrument in made:  # (the run's list ends with the run; tidy for clarity)
        if instrument in run_instruments():
            remove_instrument(instrument)


WHOLE_LIVES = {
    ("call_queued", "call_started", "call_finished"),
    ("call_queued", "call_withdrawn"),
    ("call_queued", "call_shed"),
    ("call_shed",),
}


def check(scenario: Scenario, run: Run) -> None:
    log = run.log
    # Each request, as the witness heard it: its events' positions in the log.
    lives: dict[tuple[int, int], list[int]] = defaultdict(list)
    for position, entry in enumerate(log):
        if entry[0] == "heard" and entry[1] == 0:
            lives[entry[3], entry[4]].append(position)
    for key, positions in lives.items():
        hooks = tuple(log[p][2] for p in positions)
        assert hooks in WHOLE_LIVES, f"the witness heard {key}: {hooks}"
    for name in range(1, len(scenario.instruments) + 1):
        installed = False
        # Its installation state after each log position, and what it heard, per request.
        state_at: list[bool] = []
        heard: dict[tuple[int, int], list[str]] = defaultdict(list)
        raised_at: list[int] = []
        for position, entry in enumerate(log):
            if entry[1] == name:
                if entry[0] == "added":
                    installed = True
                elif entry[0] in ("removed", "raised"):
                    installed = False
                    if entry[0] == "raised":
                        raised_at.append(position)
                else:
                    heard[entry[3], entry[4]].append(entry[2])
                    if not installed:
                        # it may hear a request it heard arrive (removed since), but nothing
                        # after its raise and before it was installed again
                        assert not raised_at or any(
                            log[p][0] == "added" and log[p][1] == name
                            for p in range(raised_at[-1], position)
                        ), f"instrument {name} heard {entry} after it raised"
            state_at.append(installed)
        for key, positions in lives.items():
            first = positions[0]
            was_installed = state_at[first - 1] if first > 0 else False
            mine = heard.pop(key, [])
            if not was_installed:
                assert mine == [], f"instrument {name} heard {key} ({mine}), not installed"
                continue
            cut = next((p for p in raised_at if p > first), None)
            expected = [log[p][2] for p in positions if cut is None or p < cut]
            assert mine == expected, f"instrument {name} heard {key}: {mine}, not {expected}"
        assert not heard, f"instrument {name} heard requests the witness did not: {heard}"
    if run.stats is not None and scenario.callers.stop_at is None:
        endings = [log[positions[-1]][2] for positions in lives.values()]
        stats = run.stats
        started = stats.handled + stats.failed + stats.timed_out + stats.cancelled
        assert endings.count("call_finished") == started
        assert endings.count("call_withdrawn") == stats.withdrawn + stats.dropped
        assert endings.count("call_shed") == stats.shed


def check_otel(scenario: Scenario, otel: Otel, run: Run, made: list[Instrument]) -> None:
    logged = [i for i in made if isinstance(i, LoggedOtel)]
    if not logged:
        return
    [instrument] = logged
    assert instrument._live == {}  # pyright: ignore[reportPrivateUsage]
    assert otel.total("trioserver.mailbox.depth") == 0
    heard = {(e[3], e[4]) for e in run.log if e[0] == "heard" and e[1] == instrument.name}
    spans = otel.spans()
    server_spans = {s.context.span_id: s for s in spans if s.kind == SpanKind.SERVER if s.context}
    assert len(server_spans) == len(heard)
    caller_of = {span_id: index for index, span_id in run.caller_spans.items()}
    rooted = 0
    for span in spans:
        if span.name != "inside":
            continue
        index = (span.attributes or {})["caller"]
        if span.parent is None:
            rooted += 1
            continue
        parent = server_spans.get(span.parent.span_id)
        assert parent is not None, f"inside {index}: its parent is not a request's span"
        assert parent.parent is not None
        assert caller_of[parent.parent.span_id] == index, f"inside {index}: another's span"
    started_unheard = sum(
        1
        for e in run.log
        if e[0] == "heard" and e[1] == 0 and e[2] == "call_started"
        if (e[3], e[4]) not in heard
    )
    assert rooted == started_unheard


@fault_settings(80)
@given(scenarios())
def test_every_instrument_hears_a_requests_whole_life_or_none(scenario: Scenario) -> None:
    run = Run()
    otel_names = [n for n, s in enumerate(scenario.instruments, 1) if s.kind == "otel"]
    otel = make_otel(functools.partial(LoggedOtel, otel_names[0] if otel_names else -1, run.log))
    made: list[Instrument] = []
    trio.run(main, scenario, otel, run, made, clock=trio.testing.MockClock(autojump_threshold=0))
    check(scenario, run)
    check_otel(scenario, otel, run, made)
    for found in moments(run):
        hypothesis.event(found)


def moments(run: Run) -> set[str]:
    """What happened in a run, for ``--hypothesis-show-statistics``: the suite is only as good
    as the moments it reaches."""
    log = run.log
    spans: dict[tuple[int, int], tuple[int, int]] = {}
    for position, entry in enumerate(log):
        if entry[0] == "heard" and entry[1] == 0:
            first, _ = spans.get((entry[3], entry[4]), (position, position))
            spans[entry[3], entry[4]] = (first, position)
    found: set[str] = set()
    for position, entry in enumerate(log):
        if entry[0] in ("added", "removed", "raised") and any(
            first < position < last for first, last in spans.values()
        ):
            found.add(f"{entry[0]} while requests were in flight")
    if any(entry[0] == "heard" and entry[1] != 0 and entry[2] == "call_started" for entry in log):
        found.add("an instrument heard a request start")
    return found
