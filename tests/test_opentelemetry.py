"""Guarantee 19: OpenTelemetryInstrument exports a span per request (RPC conventions) and the
servers' metrics, checked against the SDK's in-memory span exporter and metric reader."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from trioserver import (
    CallTimeout,
    ServerOverloaded,
    ServerStopped,
    SQLiteStore,
    _private,
    add_instrument,
    call,
    cast,
    open_server,
    released,
    remove_instrument,
    server,
    statistics,
)
from trioserver import opentelemetry as opentelemetry_module
from trioserver._instrument import CallInfo, InstrumentList, run_instruments
from trioserver.opentelemetry import OpenTelemetryInstrument

from .otel import Otel, make_otel
from .tasks import StepCounter


@pytest.fixture
def otel() -> Otel:
    return make_otel()


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan | trace.Span) -> int:
    context = span.get_span_context() if isinstance(span, trace.Span) else span.context
    assert context is not None
    return context.span_id


def events(span: ReadableSpan) -> list[str]:
    return [e.name for e in span.events]


def seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None
    assert span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


@server(admission=False)
class Desk:
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.notes: list[str] = []
        self.at_stop: trace.Span | None = None

    @call(timeout=2.0)
    async def work(self, seconds: float) -> str:
        with self.tracer.start_as_current_span("inside work"):
            await trio.sleep(seconds)
        return "done"

    @call
    def peek(self) -> int:
        with self.tracer.start_as_current_span("inside peek"):
            return len(self.notes)

    @call
    def fail(self) -> None:
        raise ValueError("no")

    @cast
    def note(self, text: str) -> None:
        with self.tracer.start_as_current_span("inside note"):
            self.notes.append(text)

    async def on_stop(self) -> None:
        self.at_stop = trace.get_current_span()


@server(mailbox_size=1, when_full="refuse", admission=False)
class Narrow:
    @call(timeout=5.0)
    async def work(self, seconds: float) -> None:
        await trio.sleep(seconds)


async def test_a_handled_call_is_one_server_span_following_the_rpc_conventions(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    async with open_server(Desk(otel.tracer), instruments=[otel.instrument]) as desk:
        assert await desk.work(0.5) == "done"
    [span] = otel.spans("Desk/work")
    assert span.kind == SpanKind.SERVER
    assert dict(span.attributes or {}) == {
        "rpc.system.name": "trioserver",
        "rpc.method": "Desk/work",
        "rpc.service": "Desk",
        "trioserver.kind": "call",
        "rpc.response.status_code": "handled",
    }
    assert span.status.status_code == StatusCode.UNSET
    assert events(span) == ["queued", "started"]
    assert span.events[1].attributes == {"trioserver.queue_wait": 0.0}
    assert seconds(span) == pytest.approx(0.5)
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "trioserver"


@pytest.mark.parametrize("busy", [False, True], ids=["idle: hand-off", "busy: queued"])
@pytest.mark.parametrize("method", ["work", "peek"])
async def test_the_call_span_is_the_callers_child_and_the_handlers_parent(
    otel: Otel, autojump_clock: trio.abc.Clock, busy: bool, method: str
) -> None:
    """On an idle server the request is run in its caller's step (the hand-off, on the private
    path); on a busy one it is queued. Either way the handler runs in the server's contextvars,
    where the instrument makes the call span current, and the caller's are left as they were."""
    desk = Desk(otel.tracer)
    steps = StepCounter("trioserver: ")
    async with open_server(desk, instruments=[otel.instrument]) as handle:
        async with trio.open_nursery() as nursery:
            await handle.peek()  # (a server's task starts with its first request)
            await trio.testing.wait_all_tasks_blocked()  # it parks, idle
            if busy:
                nursery.start_soon(handle.work, 1.0)
                await trio.testing.wait_all_tasks_blocked()
            with otel.tracer.start_as_current_span("caller") as caller:
                trio.lowlevel.add_instrument(steps)
                try:
                    if method == "work":
                        await handle.work(0.5)
                    else:
                        await handle.peek()
                finally:
                    trio.lowlevel.remove_instrument(steps)
                assert trace.get_current_span() is caller
        if method == "peek" and not busy and _private.ENABLED:
            assert steps.steps == 0  # the hand-off: run in the caller's step
        assert trace.get_current_span() is trace.INVALID_SPAN
    [mine] = [s for s in otel.spans(f"Desk/{method}") if parent_id(s) == span_id(caller)]
    assert mine.context is not None
    assert mine.context.trace_id == caller.get_span_context().trace_id
    [inside] = [s for s in otel.spans(f"inside {method}") if parent_id(s) == span_id(mine)]
    assert inside.context is not None
    assert inside.context.trace_id == mine.context.trace_id
    wait = mine.events[1].attributes
    assert wait == {"trioserver.queue_wait": 1.0 if busy else 0.0}
    # Between requests the server's contextvars hold no call span: on_stop sees none.
    assert desk.at_stop is trace.INVALID_SPAN


@server(admission=False)
class Releasing:
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.at_stop: trace.Span | None = None

    @call(timeout=5.0)
    async def slow(self) -> None:
        async with released():
            with self.tracer.start_as_current_span("in block"):
                await trio.sleep(1.0)
        with self.tracer.start_as_current_span("after block"):
            pass

    @call(timeout=5.0)
    async def quick(self) -> None:
        with self.tracer.start_as_current_span("in quick"):
            await trio.sleep(0.125)

    async def on_stop(self) -> None:
        self.at_stop = trace.get_current_span()


async def test_a_released_block_keeps_its_span_while_another_request_is_served(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    """Guarantee 15: the server serves `quick` while `slow` is in its released block; each
    handler's spans stay children of its own request's span."""
    releasing = Releasing(otel.tracer)
    async with (
        open_server(releasing, instruments=[otel.instrument]) as handle,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(handle.slow)
        await trio.testing.wait_all_tasks_blocked()
        await handle.quick()
    [slow] = otel.spans("Releasing/slow")
    [quick] = otel.spans("Releasing/quick")
    for name, parent in (("in block", slow), ("after block", slow), ("in quick", quick)):
        [span] = otel.spans(name)
        assert parent_id(span) == span_id(parent), name
    assert releasing.at_stop is trace.INVALID_SPAN


async def test_a_failed_call_has_status_error_and_its_outcome(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    async with open_server(Desk(otel.tracer), instruments=[otel.instrument]) as desk:
        with pytest.raises(ValueError, match="no"):
            await desk.fail()
    [span] = otel.spans("Desk/fail")
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["rpc.response.status_code"] == "failed"
    assert span.attributes["error.type"] == "failed"


async def test_a_timed_out_call_ends_at_its_deadline_with_status_error(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    async with open_server(Desk(otel.tracer), instruments=[otel.instrument]) as desk:
        with pytest.raises(CallTimeout):
            await desk.work(5.0)
    [span] = otel.spans("Desk/work")
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["rpc.response.status_code"] == "timed_out"
    assert seconds(span) == pytest.approx(2.0)


async def test_a_caller_leaving_a_running_call_cancels_it(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    async with open_server(Desk(otel.tracer), instruments=[otel.instrument]) as desk:
        with trio.CancelScope() as scope:  # (cancelled, not its deadline: that is a timeout)

            async def leave() -> None:
                await trio.sleep(0.25)
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(leave)
                await desk.work(1.0)
    [span] = otel.spans("Desk/work")
    assert span.attributes is not None
    assert span.attributes["rpc.response.status_code"] == "cancelled"
    assert span.status.status_code == StatusCode.ERROR
    assert seconds(span) == pytest.approx(0.25)


async def test_a_withdrawn_request_has_a_withdrawn_event_and_is_counted(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    async with open_server(Desk(otel.tracer), instruments=[otel.instrument]) as desk:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(desk.work, 1.0)
            await trio.testing.wait_all_tasks_blocked()
            with otel.tracer.start_as_current_span("caller") as caller:
                with trio.move_on_after(0.25):
                    await desk.work(1.0)  # queued behind the first, then left
            # and one whose deadline passes while it is queued
            await trio.sleep(0.25)  # (the first now ends at 1.0)
            nursery.start_soon(desk.work, 1.0)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(0.5):
                    await desk.work(0.1)
        stats = statistics(desk)
    withdrawn = [
        s for s in otel.spans("Desk/work") if (s.attributes or {}).get("error.type") == "withdrawn"
    ]
    assert len(withdrawn) == 2 == stats.withdrawn
    left = [s for s in withdrawn if parent_id(s) == span_id(caller)]
    assert len(left) == 1
    assert events(left[0]) == ["queued", "withdrawn"]
    assert seconds(left[0]) == pytest.approx(0.25)
    assert left[0].status.status_code == StatusCode.ERROR
    assert left[0].events[1].attributes == {"trioserver.reason": "its caller left"}
    assert otel.total("trioserver.requests.withdrawn", **{"rpc.method": "Desk/work"}) == 2


async def test_a_request_dropped_by_a_stop_is_counted_apart(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    async with (
        trio.open_nursery() as nursery,
        open_server(Desk(otel.tracer), instruments=[otel.instrument]) as desk,
    ):

        async def stopped() -> None:
            with pytest.raises(ServerStopped):
                await desk.work(1.0)

        nursery.start_soon(stopped)  # running
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(stopped)  # queued
        await trio.testing.wait_all_tasks_blocked()
        stats = statistics(desk)
        assert stats.queued == 1
        assert otel.total("trioserver.mailbox.depth", **{"rpc.service": "Desk"}) == 1
    statuses = sorted(
        str((s.attributes or {})["rpc.response.status_code"]) for s in otel.spans("Desk/work")
    )
    assert statuses == ["cancelled", "dropped"]
    assert otel.total("trioserver.requests.withdrawn", **{"error.type": "dropped"}) == 1
    assert otel.total("trioserver.requests.withdrawn", **{"error.type": "withdrawn"}) == 0
    assert otel.total("trioserver.mailbox.depth") == 0


async def test_a_shed_request_is_a_span_of_its_caller_with_a_shed_event(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    async with open_server(Narrow(), instruments=[otel.instrument]) as narrow:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(narrow.work, 1.0)  # running
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(narrow.work, 1.0)  # queued: the mailbox is full
            await trio.testing.wait_all_tasks_blocked()
            with (
                otel.tracer.start_as_current_span("caller") as caller,
                pytest.raises(ServerOverloaded),
            ):
                await narrow.work(1.0)
        stats = statistics(narrow)
    [shed] = [s for s in otel.spans("Narrow/work") if parent_id(s) == span_id(caller)]
    assert events(shed) == ["shed"]
    assert shed.status.status_code == StatusCode.ERROR
    assert shed.attributes is not None
    assert shed.attributes["rpc.response.status_code"] == "shed"
    assert otel.total("trioserver.requests.shed") == 1 == stats.shed


@server
class Admitting:
    @call(timeout=5.0)
    async def work(self, seconds: float) -> None:
        await trio.sleep(seconds)


async def test_a_call_admission_refuses_is_shed_and_ends_as_its_deadline(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    async with open_server(Admitting(), instruments=[otel.instrument]) as admitting:
        await admitting.work(1.0)  # admission learns that `work` takes 1 s
        with otel.tracer.start_as_current_span("caller") as caller:
            with trio.move_on_after(0.5) as scope:
                await admitting.work(1.0)  # would not finish in time: refused at once
            assert scope.cancelled_caught
        stats = statistics(admitting)
    [shed] = [s for s in otel.spans("Admitting/work") if parent_id(s) == span_id(caller)]
    assert events(shed) == ["shed"]
    assert seconds(shed) == 0.0
    assert shed.status.status_code == StatusCode.ERROR
    assert otel.total("trioserver.requests.shed") == 1 == stats.shed


async def test_a_cast_is_a_span_too_child_of_the_caster(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    desk = Desk(otel.tracer)
    async with open_server(desk, instruments=[otel.instrument]) as handle:
        await handle.peek()  # (a server's task starts with its first request)
        await trio.testing.wait_all_tasks_blocked()  # it parks, idle
        with otel.tracer.start_as_current_span("caster") as caster:
            await handle.note("idle")  # the hand-off
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handle.work, 1.0)
                await trio.testing.wait_all_tasks_blocked()
                await handle.note("busy")  # queued
    casts = [s for s in otel.spans("Desk/note") if parent_id(s) == span_id(caster)]
    assert len(casts) == 2
    for span in casts:
        assert span.attributes is not None
        assert span.attributes["trioserver.kind"] == "cast"
        assert span.attributes["rpc.response.status_code"] == "handled"
        [inside] = [s for s in otel.spans("inside note") if parent_id(s) == span_id(span)]
        assert inside is not None
    assert desk.notes == ["idle", "busy"]


async def test_two_servers_of_one_class_are_told_apart(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    """Both number their requests from 1: each request still gets its own span and duration."""
    async with (
        open_server(Desk(otel.tracer), instruments=[otel.instrument]) as one,
        open_server(Desk(otel.tracer), instruments=[otel.instrument]) as two,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(one.work, 1.0)
        nursery.start_soon(two.work, 0.5)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(one.work, 0.25)
        nursery.start_soon(two.work, 0.125)
    durations = sorted(seconds(s) for s in otel.spans("Desk/work"))
    assert durations == pytest.approx([0.5, 0.625, 1.0, 1.25])


async def test_metrics_add_up_with_statistics(otel: Otel, autojump_clock: trio.abc.Clock) -> None:
    add_instrument(otel.instrument)
    try:
        async with open_server(Desk(otel.tracer)) as desk:
            async with trio.open_nursery() as nursery:

                async def work(seconds: float) -> None:
                    with contextlib.suppress(CallTimeout):
                        await desk.work(seconds)

                for delay in (0.5, 1.0, 3.0):  # the last one times out
                    nursery.start_soon(work, delay)
                await trio.testing.wait_all_tasks_blocked()
                stats = statistics(desk)
                depth = otel.total("trioserver.mailbox.depth", **{"rpc.service": "Desk"})
                assert depth == stats.queued + stats.waiting_on_guard == 2
                with trio.move_on_after(0.25):
                    await desk.work(1.0)  # withdrawn
                with pytest.raises(ValueError, match="no"):
                    await desk.fail()
            await desk.note("x")
            await desk.peek()  # (after the cast: it has run, on either path)
            stats = statistics(desk)
    finally:
        remove_instrument(otel.instrument)
    ended = (
        stats.handled + stats.failed + stats.timed_out + stats.cancelled
        + stats.withdrawn + stats.dropped + stats.shed
    )  # fmt: skip
    durations = otel.points("rpc.server.call.duration")
    assert (
        sum(p.count for p in durations)
        == ended
        == len([s for s in otel.spans() if s.kind == SpanKind.SERVER])
    )
    waits = otel.points("trioserver.queue.wait")
    started = [m.queue_wait for m in stats.methods.values()]
    assert sum(p.count for p in waits) == sum(t.count for t in started)
    assert sum(p.sum for p in waits) == pytest.approx(sum(t.count * t.mean for t in started))
    assert max(p.max for p in waits) == pytest.approx(max(t.max for t in started))
    # A started request's duration is its queue wait plus its service; a withdrawn one's, its wait.
    service = sum(m.service.count * m.service.mean for m in stats.methods.values())
    left = 0.25
    assert sum(p.sum for p in durations) == pytest.approx(
        sum(t.count * t.mean for t in started) + service + left
    )
    assert otel.total("trioserver.requests.withdrawn") == stats.withdrawn == 1
    assert otel.total("trioserver.requests.shed") == stats.shed == 0
    assert otel.total("trioserver.mailbox.depth") == stats.queued == 0
    by_status = {
        str(p.attributes["rpc.response.status_code"]): p.count
        for p in durations
        if p.attributes["rpc.method"] == "Desk/work"
    }
    assert by_status == {"handled": 2, "timed_out": 1, "withdrawn": 1}


async def test_an_instrument_installed_mid_flight_reports_only_the_requests_after(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    """An instrument hears a request's whole life or none of it: the running and the queued
    requests have no span, and the one queued after it was installed has its whole span."""
    async with open_server(Desk(otel.tracer)) as desk, trio.open_nursery() as nursery:
        nursery.start_soon(desk.work, 1.0)
        nursery.start_soon(desk.work, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        add_instrument(otel.instrument)  # one runs, one is queued
        try:
            nursery.start_soon(desk.work, 0.5)
            await trio.sleep(3.0)
        finally:
            remove_instrument(otel.instrument)
    [span] = otel.spans("Desk/work")
    assert events(span) == ["queued", "started"]
    assert seconds(span) == pytest.approx(2.5)  # queued at 0, behind two of 1 s
    assert otel.total("trioserver.mailbox.depth") == 0
    assert otel.instrument._live == {}  # pyright: ignore[reportPrivateUsage]


async def test_an_instrument_removed_mid_flight_still_ends_the_spans_it_began(
    otel: Otel, autojump_clock: trio.abc.Clock
) -> None:
    """Removed while a request runs and another waits, it still hears both end: their spans
    end, the depth gauge comes back to 0, and the running handler's span is current no longer
    once it ends (a later handler's span is a root, not its child). A request that arrives
    after the removal has no span."""
    add_instrument(otel.instrument)
    desk_obj = Desk(otel.tracer)
    async with open_server(desk_obj) as desk, trio.open_nursery() as nursery:
        nursery.start_soon(desk.work, 1.0)
        nursery.start_soon(desk.work, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        remove_instrument(otel.instrument)  # one runs, one is queued
        assert otel.total("trioserver.mailbox.depth") == 1
        await trio.sleep(3.0)
        assert await desk.peek() == 0
    spans = otel.spans("Desk/work")
    assert [events(s) for s in spans] == [["queued", "started"]] * 2
    assert sorted(seconds(s) for s in spans) == pytest.approx([1.0, 2.0])
    assert otel.total("trioserver.mailbox.depth") == 0
    assert otel.instrument._live == {}  # pyright: ignore[reportPrivateUsage]
    inside = otel.spans("inside work")
    assert sorted(parent_id(s) or 0 for s in inside) == sorted(span_id(s) for s in spans)
    [peek] = otel.spans("inside peek")
    assert peek.parent is None  # (not a child of the last span the instrument made current)
    assert not otel.spans("Desk/peek")
    assert desk_obj.at_stop is not None
    assert not desk_obj.at_stop.get_span_context().is_valid


def test_bad_providers_are_refused_at_construction() -> None:
    with pytest.raises(TypeError, match="tracer_provider must be an OpenTelemetry"):
        OpenTelemetryInstrument(tracer_provider=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="meter_provider must be an OpenTelemetry"):
        OpenTelemetryInstrument(meter_provider="prometheus")  # type: ignore[arg-type]


def test_importing_trioserver_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, trioserver, trioserver.testing\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "import trioserver.opentelemetry\n"
        "assert 'opentelemetry.trace' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_with_the_api_alone_it_is_dormant_until_an_sdk_is_set() -> None:
    """Made with no provider while OpenTelemetry's globals are the API's stand-ins, it costs
    one hook (`call_queued`) and reports nothing; once an SDK is set, the next request wakes
    it, in the run's list and in a server's own. That request, and those running or queued
    then, have no span (each was told to the instrument's dormant hook alone: a whole life or
    none); the requests after it have theirs. (A fresh interpreter: the global providers can
    be set once per process.)"""
    child = Path(__file__).with_name("otel_dormant_child.py")
    found = json.loads(
        subprocess.run(
            [sys.executable, str(child)], check=True, capture_output=True, text=True
        ).stdout
    )
    assert found["dormant_at_first"] == [True, True]
    assert found["hooked_dormant"] == ["call_queued"]
    assert found["dormant_after"] == [False, False]
    assert found["hooked_after"] == sorted(
        ["call_queued", "call_started", "call_finished", "call_withdrawn", "call_shed"]
    )
    qs = ["queued", "started"]
    assert found["spans"] == [
        # not other.quick, which woke both (its own instrument and the run's are installed on
        # it), nor the two works in flight then: desk.quick, and the work queued after it
        ["Desk/quick", qs],
        ["Desk/work", qs],
    ]
    assert found["metrics"] == [
        "rpc.server.call.duration",
        "trioserver.mailbox.depth",
        "trioserver.queue.wait",
    ]


async def test_a_dormant_instrument_wakes_every_list_that_holds_it(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    """In this process, with the SDK's presence stubbed (`_no_sdk`): dormant, it costs one hook;
    woken by a request, the run's list and the servers' own lists take up its hooks. A list
    that still calls its dormant hook (another run's, until its next request) does not get the
    request reported: its later events go to that list's listeners, where the instrument has
    no other hook."""
    monkeypatch.setattr(opentelemetry_module, "_no_sdk", lambda: True)
    wall = [100.0]
    monkeypatch.setattr(opentelemetry_module, "monotonic", lambda: wall[0])
    instrument = OpenTelemetryInstrument()
    assert instrument.dormant
    stale = InstrumentList([instrument])  # as another run's list would hold it
    assert stale.listeners.hooked == {"call_queued"}
    add_instrument(instrument)
    async with open_server(Desk(trace.get_tracer("t")), instruments=[instrument]) as desk:
        await desk.peek()
        assert run_instruments().listeners.hooked == {"call_queued"}
        assert instrument.dormant  # (looked at the first request: no SDK)
        monkeypatch.setattr(opentelemetry_module, "_no_sdk", lambda: False)
        wall[0] += 0.5
        await desk.peek()  # within the second: not looked yet
        assert instrument.dormant
        wall[0] += 0.6
        await desk.peek()
        assert not instrument.dormant
        full = {"call_queued", "call_started", "call_finished", "call_withdrawn", "call_shed"}
        assert run_instruments().listeners.hooked == full
        assert stale.listeners.hooked == {"call_queued"}
        [(_, dormant_hook)] = stale.listeners.calls["call_queued"]
        queued = trio.current_time()
        dormant_hook(
            CallInfo("Desk", "Desk.peek", "call", 99, queued, None, None, None, None, None, 1)
        )
        assert instrument._live == {}  # pyright: ignore[reportPrivateUsage]
    remove_instrument(instrument)


def test_without_the_apis_stand_in_class_it_is_never_dormant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The meter provider's stand-in is private to opentelemetry-api: if a version lacks it,
    the instrument reports to the API as it would to an SDK, as before dormancy."""
    monkeypatch.setattr(opentelemetry_module, "_StandInMeters", None)
    assert OpenTelemetryInstrument().dormant is False


def test_given_providers_it_is_never_dormant(otel: Otel) -> None:
    assert otel.instrument.dormant is False


@server
class Outbox:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[str] = []
        self.done = trio.Event()

    @cast(durable=True, attempts=3, backoff=1.0)
    async def send(self, to: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("smtp down")
        self.sent.append(to)
        self.done.set()

    @call
    def count(self) -> int:
        return len(self.sent)


@pytest.fixture
def store_clock() -> trio.abc.Clock:
    """Virtual time that jumps only after 50 ms (real) with every task asleep: time stands
    still while the store commits in its worker thread."""
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_each_run_of_a_durable_cast_is_a_root_span(
    otel: Otel, tmp_path: Path, store_clock: trio.abc.Clock
) -> None:
    """A durable cast is a request each time it runs: a failed run's span ends ``failed``, the
    retry's ``handled``. Each run is queued by the store once the cast is committed, and may
    come after a crash, in another process: its spans are roots, not the caster's children."""
    outbox = Outbox(failures=1)
    async with open_server(
        outbox, store=SQLiteStore(tmp_path / "casts.db"), instruments=[otel.instrument]
    ) as handle:
        with otel.tracer.start_as_current_span("caster") as caster:
            await handle.send("ann")
        with trio.fail_after(60):
            await outbox.done.wait()
    assert outbox.sent == ["ann"]
    runs = otel.spans("Outbox/send")
    statuses = [(s.attributes or {}).get("rpc.response.status_code") for s in runs]
    assert statuses == ["failed", "handled"]
    assert all((s.attributes or {}).get("trioserver.kind") == "cast" for s in runs)
    assert [parent_id(s) for s in runs] == [None, None]
    assert runs[0].status.status_code == StatusCode.ERROR
    assert span_id(caster) not in {parent_id(s) for s in otel.spans()}
