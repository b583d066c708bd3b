"""Guarantee 19 under generated scenarios: callers with deadlines, cancellations, failing
handlers, full mailboxes, admission and a stop mid-flight. With OpenTelemetryInstrument
installed, every request is exactly one span, a child of its caller's span, whose outcome
agrees with what the caller saw and with its own events, and the metrics add up with the
server's statistics.

Each example is one ``trio.run`` on a ``MockClock`` (autojump). Small by default;
``TRIOSERVER_FAULT_EXAMPLES=N`` runs N examples. Run it with the hand-off on and off:

    python -m pytest -q property_tests/test_opentelemetry.py
    TRIOSERVER_PRIVATE=0 python -m pytest -q property_tests/test_opentelemetry.py
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from property_tests.scale import fault_settings
from tests.otel import Otel, make_otel
from trioserver import (
    CallTimeout,
    ServerOverloaded,
    ServerStopped,
    call,
    cast,
    open_server,
    server,
    statistics,
)
from trioserver._statistics import ServerStatistics

BUDGET = 1.0
"""The handlers' budget, in seconds."""

STARTED = frozenset({"handled", "failed", "timed_out", "cancelled"})
"""The outcomes of a request whose handler started (its span has a ``started`` event)."""

ALLOWED: dict[str, frozenset[str]] = {
    "value": frozenset({"handled"}),
    "failed": frozenset({"failed"}),
    "shed": frozenset({"shed"}),
    "stopped": frozenset({"dropped", "cancelled"}),
    "call timeout": frozenset({"timed_out", "withdrawn"}),
    "own deadline": frozenset({"timed_out", "withdrawn", "shed"}),  # (shed: by admission)
    "cancelled": frozenset({"cancelled", "withdrawn"}),
    "cast": frozenset({"handled", "failed", "timed_out", "cancelled", "dropped"}),
}
"""What the caller saw -> the outcomes its request's span may have."""


@attrs.frozen
class Caller:
    start: float
    seconds: float  # how long the handler sleeps (the budget is 1 s)
    fails: bool
    is_cast: bool
    deadline: float | None  # the caller's fail_after, from its start
    cancel_after: float | None  # cancelled by another task, from its start


@attrs.frozen
class Scenario:
    callers: tuple[Caller, ...]
    mailbox_size: int | None
    admission: bool
    stop_at: float | None


def eighths(low: float, high: float) -> st.SearchStrategy[float]:
    # (multiples of 1/8: exact in binary, so that ties are real ties, not rounding)
    return st.integers(int(low * 8), int(high * 8)).map(lambda n: n / 8)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    callers = draw(
        st.lists(
            st.builds(
                Caller,
                start=eighths(0, 2),
                seconds=eighths(0, 1.5),
                fails=st.booleans(),
                is_cast=st.booleans(),
                deadline=st.none() | eighths(0.125, 2),
                cancel_after=st.none() | eighths(0.125, 2),
            ),
            min_size=1,
            max_size=6,
        )
    )
    return Scenario(
        tuple(callers),
        draw(st.none() | st.integers(1, 3)),
        draw(st.booleans()),
        draw(st.none() | eighths(0.5, 3)),
    )


def make_class(scenario: Scenario, otel: Otel) -> Any:
    """The server class of `scenario`; the span each handler opens, ``inside``, carries its
    caller's index (``caller``)."""
    bounded: dict[str, Any] = (
        {}
        if scenario.mailbox_size is None
        else {"mailbox_size": scenario.mailbox_size, "when_full": "refuse"}
    )

    @server(admission=scenario.admission, **bounded)
    class Worker:
        @call(timeout=BUDGET)
        async def work(self, seconds: float, fails: bool, index: int) -> str:
            with otel.tracer.start_as_current_span("inside", attributes={"caller": index}):
                await trio.sleep(seconds)
            if fails:
                raise ValueError("failed")
            return "done"

        @cast(timeout=BUDGET)
        async def note(self, seconds: float, fails: bool, index: int) -> None:
            with otel.tracer.start_as_current_span("inside", attributes={"caller": index}):
                await trio.sleep(seconds)
            if fails:
                raise ValueError("failed")

    return Worker


@attrs.define
class Run:
    saw: dict[int, str] = attrs.Factory(dict[int, str])  # caller index -> what it saw
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
            with scope:
                await call_once(index, spec, handle, run)
            nursery.cancel_scope.cancel()


async def cancel_later(scope: trio.CancelScope, seconds: float) -> None:
    await trio.sleep(seconds)
    scope.cancel()


async def call_once(index: int, spec: Caller, handle: Any, run: Run) -> None:
    run.saw[index] = "cancelled"
    try:
        with trio.fail_after(math.inf if spec.deadline is None else spec.deadline):
            if spec.is_cast:
                await handle.note(spec.seconds, spec.fails, index)
                run.saw[index] = "cast"
            else:
                await handle.work(spec.seconds, spec.fails, index)
                run.saw[index] = "value"
    except ValueError:
        run.saw[index] = "failed"
    except ServerOverloaded:
        run.saw[index] = "shed"
    except ServerStopped:
        run.saw[index] = "stopped"
    except CallTimeout:
        run.saw[index] = "call timeout"
    except trio.TooSlowError:
        run.saw[index] = "own deadline"


async def main(scenario: Scenario, otel: Otel, run: Run) -> None:
    cls = make_class(scenario, otel)
    async with (
        trio.open_nursery() as callers,  # (outside the server: they see its stop)
        open_server(cls(), instruments=[otel.instrument]) as handle,
    ):
        for index, spec in enumerate(scenario.callers):
            callers.start_soon(run_caller, index, spec, handle, otel, run)
        # Without a stop: long enough for every request to end (6 at most, 1 s budgets).
        await trio.sleep(10.0 if scenario.stop_at is None else scenario.stop_at)
        run.stats = statistics(handle)


def check(scenario: Scenario, otel: Otel, run: Run) -> None:
    spans = otel.spans()
    server_spans = [s for s in spans if s.kind == SpanKind.SERVER]
    by_parent: dict[int, list[ReadableSpan]] = {}
    for span in server_spans:
        assert span.parent is not None, f"{span.name} has no parent: {span.attributes}"
        by_parent.setdefault(span.parent.span_id, []).append(span)
    assert sorted(run.saw) == list(range(len(scenario.callers)))
    for index, saw in run.saw.items():
        mine = by_parent.get(run.caller_spans[index], [])
        if saw == "stopped" and not mine:
            continue  # called after the stop began: refused before it was a request
        assert len(mine) == 1, f"caller {index} ({saw}): {len(mine)} spans"
        span = mine[0]
        attributes = span.attributes or {}
        status = str(attributes["rpc.response.status_code"])
        allowed = ALLOWED[saw]
        names = [e.name for e in span.events]
        spec = scenario.callers[index]
        if saw == "cancelled" and spec.deadline is not None and spec.deadline == spec.cancel_after:
            # cancelled at its own deadline: the caller hears the outer scope's Cancelled,
            # while the request ended as at that deadline
            allowed |= ALLOWED["own deadline"]
        if saw == "cancelled" and spec.deadline is not None and scenario.admission:
            # shed by admission, it waits for its deadline (public trio cannot name the
            # deadline's scope to end it at once): a cancellation may come first
            allowed |= {"shed"}
        if saw == "cancelled" and "started" in names and cut_when_cancelled(scenario, index, span):
            # cancelled at the handler's deadline (its budget's or its caller's): the caller
            # hears its Cancelled, and the server counts the request cut at its deadline
            allowed |= {"timed_out"}
        assert status in allowed, f"caller {index} saw {saw}, its span says {status}"
        assert ("started" in names) == (status in STARTED), f"caller {index}: {names} {status}"
        assert (span.status.status_code == StatusCode.ERROR) == (status != "handled")
        inside = [s for s in spans if s.name == "inside" and s.parent == span.context]
        assert len(inside) == (1 if status in STARTED else 0), f"caller {index}: {inside}"
    assert len(server_spans) == sum(len(v) for v in by_parent.values())
    if run.stats is not None and scenario.stop_at is None:
        stats = run.stats
        seen = [str((s.attributes or {})["rpc.response.status_code"]) for s in server_spans]
        for outcome in ("handled", "failed", "timed_out", "cancelled", "withdrawn", "shed"):
            assert seen.count(outcome) == getattr(stats, outcome), outcome
        assert otel.total("trioserver.requests.withdrawn") == stats.withdrawn + stats.dropped
        assert otel.total("trioserver.requests.shed") == stats.shed
    assert otel.total("trioserver.mailbox.depth") == 0
    durations = otel.points("rpc.server.call.duration")
    assert sum(p.count for p in durations) == len(server_spans)


def cut_when_cancelled(scenario: Scenario, index: int, span: ReadableSpan) -> bool:
    """Whether caller `index` was cancelled at the very moment its handler's deadline passed."""
    spec = scenario.callers[index]
    if spec.cancel_after is None:
        return False
    assert span.start_time is not None
    [started] = [e for e in span.events if e.name == "started"]
    started_at = spec.start + (started.timestamp - span.start_time) / 1e9  # (queued at start)
    cut_at = started_at + BUDGET
    if spec.deadline is not None:
        cut_at = min(cut_at, spec.start + spec.deadline)
    return math.isclose(cut_at, spec.start + spec.cancel_after, abs_tol=1e-6)


@fault_settings(60)
@given(scenarios())
def test_every_request_is_one_span_with_the_outcome_its_caller_saw(scenario: Scenario) -> None:
    otel = make_otel()
    run = Run()
    trio.run(main, scenario, otel, run, clock=trio.testing.MockClock(autojump_threshold=0))
    check(scenario, otel, run)
