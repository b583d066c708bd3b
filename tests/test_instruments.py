"""Instruments see every request's life; the shipped ones log it or trace it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from trioserver import (
    CallInfo,
    Instrument,
    LoggingInstrument,
    ServerOverloaded,
    TraceInstrument,
    _private,
    _state,
    add_instrument,
    call,
    cast,
    open_server,
    remove_instrument,
    server,
)

from .tasks import StepCounter


class Recording(Instrument):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, float | None]] = []

    def _add(self, hook: str, call: CallInfo) -> None:
        self.events.append((hook, call.method, call.outcome, call.ended_at))

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


@server(mailbox_size=1, when_full="refuse", admission=False)
class Desk:
    @call(timeout=2.0)
    async def work(self, seconds: float) -> None:
        await trio.sleep(seconds)

    @cast
    def note(self) -> None:
        raise ValueError("cast failure")

    @call
    def peek(self) -> int:
        return 1


async def test_instrument_sees_each_event_with_its_outcome(
    autojump_clock: trio.abc.Clock,
) -> None:
    rec = Recording()
    async with open_server(Desk(), instruments=[rec]) as desk, trio.open_nursery() as nursery:
        await desk.work(1.0)  # handled
        with pytest.raises(trio.TooSlowError):
            await desk.work(5.0)  # timed out at 2 s
        nursery.start_soon(desk.work, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.5):
            await desk.work(1.0)  # queued, then withdrawn
        await desk.note()  # queued (the mailbox has room again)
        with pytest.raises(ServerOverloaded):
            await desk.work(1.0)  # shed: the mailbox is full
    assert rec.events == [
        ("queued", "Desk.work", None, None),
        ("started", "Desk.work", None, None),
        ("finished", "Desk.work", "handled", 1.0),
        ("queued", "Desk.work", None, None),
        ("started", "Desk.work", None, None),
        ("finished", "Desk.work", "timed_out", 3.0),
        ("queued", "Desk.work", None, None),
        ("started", "Desk.work", None, None),
        ("queued", "Desk.work", None, None),
        ("withdrawn", "Desk.work", "withdrawn", 3.5),
        ("queued", "Desk.note", None, None),
        ("shed", "Desk.work", "shed", 3.5),
        ("finished", "Desk.work", "handled", 4.0),
        ("started", "Desk.note", None, None),
        ("finished", "Desk.note", "failed", 4.0),
    ]


async def test_add_instrument_covers_every_server_of_the_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    rec = Recording()
    async with open_server(Desk()) as first:
        add_instrument(rec)  # a server that is already running
        async with open_server(Desk()) as second:  # and one started later
            await first.work(0.0)
            await second.work(0.0)
        remove_instrument(rec)
        await first.work(0.0)
    assert [hook for hook, *_ in rec.events] == ["queued", "started", "finished"] * 2
    with pytest.raises(KeyError):
        remove_instrument(rec)


async def test_an_instrument_that_raises_is_logged_and_removed(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Instrument):
        calls = 0

        def call_queued(self, call: CallInfo) -> None:
            Broken.calls += 1
            raise RuntimeError("broken instrument")

    async with open_server(Desk(), instruments=[Broken()]) as desk:
        await desk.work(0.0)
        await desk.work(0.0)  # the server went on, without the instrument
    assert Broken.calls == 1
    assert any("broken instrument" in r.exc_text for r in caplog.records if r.exc_text)


@server(admission=False)
class Worker:
    @call(timeout=5.0)
    async def work(self, seconds: float) -> None:
        await trio.sleep(seconds)


def lives(rec: Recording) -> list[str]:
    return [hook for hook, *_ in rec.events]


async def test_an_instrument_hears_a_requests_whole_life_or_none_of_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Installed while one request runs and one waits (#1, #2), it hears nothing of them, and
    all of the next (#3); removed while one runs and one waits (#4, #5), it hears both to
    their ends, and nothing of the one after (#6)."""

    class ByRequest(Recording):
        def __init__(self) -> None:
            super().__init__()
            self.lives: dict[int, list[str]] = {}

        def _add(self, hook: str, call: CallInfo) -> None:
            self.lives.setdefault(call.number, []).append(hook)

    rec = ByRequest()
    async with open_server(Worker()) as counter, trio.open_nursery() as nursery:
        nursery.start_soon(counter.work, 1.0)
        nursery.start_soon(counter.work, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        add_instrument(rec)
        await counter.work(0.5)  # queued behind both
        nursery.start_soon(counter.work, 1.0)
        nursery.start_soon(counter.work, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        remove_instrument(rec)
        await counter.work(0.5)
    whole = ["queued", "started", "finished"]
    assert rec.lives == {3: whole, 4: whole, 5: whole}


async def test_an_instrument_that_raises_hears_nothing_more_of_requests_in_flight(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """It heard three requests arrive, on two servers; it raises as the first ends, and hears
    nothing more: of the other two, nor of later ones, whether it was installed on the run,
    on the servers, or was removed already."""

    class FinishFails(Recording):
        def call_finished(self, call: CallInfo) -> None:
            self._add("finished", call)
            raise RuntimeError("broken instrument")

    for where in ("run", "own", "removed"):
        broken = FinishFails()
        own = [broken] if where == "own" else []
        async with (
            open_server(Worker(), instruments=own) as counter,
            open_server(Worker(), instruments=own) as other,
            trio.open_nursery() as nursery,
        ):
            if where != "own":
                add_instrument(broken)
            for handle in (counter, counter, other):
                nursery.start_soon(handle.work, 1.0)
                await trio.testing.wait_all_tasks_blocked()
            if where == "removed":
                remove_instrument(broken)  # it still hears the three: until it raises
            assert lives(broken) == ["queued", "started", "queued", "queued", "started"]
            await trio.sleep(3.0)  # the first ends at 1 s
            await counter.work(0.0)
            await other.work(0.0)
        heard = ["queued", "started", "queued", "queued", "started", "finished"]
        assert lives(broken) == heard, where
        with pytest.raises(KeyError):
            remove_instrument(broken)
    assert len([r for r in caplog.records if "broken instrument" in (r.exc_text or "")]) == 3


async def test_a_hook_set_as_a_plain_function_that_raises_is_removed(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook need not be a method: one set on the instance as a function is called, and
    removed as any other when it raises (its instrument is known without ``__self__``)."""
    seen: list[int] = []

    def queued(call: CallInfo) -> None:
        seen.append(call.number)
        raise RuntimeError("broken hook")

    instrument = Instrument()
    instrument.call_queued = queued  # type: ignore[method-assign]
    async with open_server(Worker(), instruments=[instrument]) as counter:
        await counter.work(0.0)
        await counter.work(0.0)
    assert seen == [1]
    assert any("broken hook" in (r.exc_text or "") for r in caplog.records)


async def test_logging_instrument_logs_one_line_per_event(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserver.calls")
    async with open_server(Desk(), instruments=[LoggingInstrument(logging.INFO)]) as desk:
        await desk.work(0.25)
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserver.calls"]
    assert lines == [
        "Desk.work #1 queued at 0.000000",
        "Desk.work #1 started after waiting 0.000000 s",
        "Desk.work #1 handled after 0.250000 s",
    ]


async def test_trace_instrument_writes_chrome_trace_events(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    trace = TraceInstrument()
    async with open_server(Desk(), instruments=[trace]) as desk, trio.open_nursery() as nursery:
        nursery.start_soon(desk.work, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        await desk.work(0.5)  # waits 1 s, runs 0.5 s
    path = tmp_path / "trace.json"
    trace.write(path)
    events = json.loads(path.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert [(e["name"], e["ts"], e["dur"]) for e in slices] == [
        ("Desk.work", 0.0, 1_000_000.0),
        ("Desk.work", 1_000_000.0, 500_000.0),
    ]
    waits = [
        (e["ph"], e["ts"])
        for e in events
        if e.get("cat") == "queue" and e["id"].startswith("Desk@") and e["id"].endswith("#2")
    ]
    assert waits == [("b", 0.0), ("e", 1_000_000.0)]
    assert {
        "ph": "M",
        "name": "thread_name",
        "pid": 1,
        "tid": 1,
        "args": {"name": "Desk"},
    } in events


@pytest.mark.skipif(not _private.ENABLED, reason="no hand-off without private trio access")
async def test_instruments_see_requests_run_in_their_callers_step(
    autojump_clock: trio.abc.Clock,
) -> None:
    rec = Recording()
    steps = StepCounter("trioserver: Desk")
    async with open_server(Desk(), instruments=[rec]) as desk:
        await desk.work(0.0)  # the server's task starts, then parks idle
        await trio.testing.wait_all_tasks_blocked()
        rec.events.clear()
        trio.lowlevel.add_instrument(steps)
        try:
            assert await desk.peek() == 1  # handed off: the server's task takes no step
            await desk.note()
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert steps.steps == 0
    assert rec.events == [
        ("queued", "Desk.peek", None, None),
        ("started", "Desk.peek", None, None),
        ("finished", "Desk.peek", "handled", 0.0),
        ("queued", "Desk.note", None, None),
        ("started", "Desk.note", None, None),
        ("finished", "Desk.note", "failed", 0.0),
    ]


async def test_only_the_hooks_an_instrument_overrides_cost_a_call_info(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []

    def counting(cls: type[CallInfo], fields: tuple[object, ...]) -> CallInfo:
        info: CallInfo = tuple.__new__(cls, fields)  # type: ignore[type-var]
        built.append(info.method)
        return info

    class FinishedOnly(Instrument):
        def __init__(self) -> None:
            self.outcomes: list[str | None] = []

        def call_finished(self, call: CallInfo) -> None:
            self.outcomes.append(call.outcome)

    monkeypatch.setattr(_state, "build_info", counting)
    async with open_server(Desk(), instruments=[Instrument()]) as desk:
        for _ in range(3):
            await desk.work(0.0)
    assert built == []  # a no-op instrument: nothing is built, nothing called
    finished = FinishedOnly()
    async with open_server(Desk(), instruments=[finished]) as desk:
        for _ in range(3):
            await desk.work(0.0)
        add_instrument(rec := Recording())  # the run's, read live by a running server
        await desk.work(0.0)
        remove_instrument(rec)
        await desk.work(0.0)
    assert finished.outcomes == ["handled"] * 5
    assert built == ["Desk.work"] * 3 + ["Desk.work"] * 3 + ["Desk.work"]
    assert [hook for hook, *_ in rec.events] == ["queued", "started", "finished"]


# Chrome's trace viewer accepts only these `cname` values (its reserved colour names,
# catapult's tracing/base/color_scheme.html); anything else is ignored.
CHROME_PALETTE = {
    "thread_state_uninterruptible", "thread_state_iowait", "thread_state_running",
    "thread_state_runnable", "thread_state_sleeping", "thread_state_unknown",
    "background_memory_dump", "light_memory_dump", "detailed_memory_dump",
    "vsync_highlight_color", "generic_work", "good", "bad", "terrible", "black", "grey",
    "white", "yellow", "olive", "rail_response", "rail_animation", "rail_idle", "rail_load",
    "startup", "heap_dump_stack_frame", "heap_dump_object_type", "heap_dump_child_node_arrow",
    "cq_build_running", "cq_build_passed", "cq_build_failed", "cq_build_abandoned",
    "cq_build_attempt_runnig", "cq_build_attempt_passed", "cq_build_attempt_failed",
}  # fmt: skip


@server(mailbox_size=2, when_full="refuse", admission=False)
class Counter:
    @call(timeout=2.0)
    async def work(self, seconds: float) -> None:
        await trio.sleep(seconds)

    @call
    def fail(self) -> None:
        raise ValueError("no")

    @cast
    async def note(self, seconds: float) -> None:
        await trio.sleep(seconds)


async def test_trace_instrument_colours_each_outcome_with_its_own_cname(
    autojump_clock: trio.abc.Clock,
) -> None:
    trace = TraceInstrument()
    async with open_server(Counter(), instruments=[trace]) as counter:
        await counter.work(0.0)  # handled
        with pytest.raises(ValueError, match="no"):
            await counter.fail()  # failed
        with pytest.raises(trio.TooSlowError):
            await counter.work(5.0)  # timed_out: cut at its 2 s budget
        async with trio.open_nursery() as nursery:
            running = trio.CancelScope()

            async def cancelled_caller() -> None:
                with running:
                    await counter.work(1.0)

            nursery.start_soon(cancelled_caller)
            await trio.testing.wait_all_tasks_blocked()
            running.cancel()  # cancelled: its caller's scope is cancelled while it runs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.work, 1.0)  # runs for 1 s
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.5):
                await counter.work(0.0)  # withdrawn: its caller left while it was queued
            nursery.start_soon(counter.work, 0.0)  # queued (1 of 2)
            await trio.testing.wait_all_tasks_blocked()
            await counter.note(0.0)  # queued (2 of 2)
            with pytest.raises(ServerOverloaded):
                await counter.work(0.0)  # shed: the mailbox is full
        await counter.note(3.0)  # runs when the server stops...
        await counter.note(0.0)  # ...dropped: still queued when it stops
        await trio.sleep(0.5)
    colours = {
        e["args"].get("outcome") or e["name"].split(":")[0]: e["cname"]
        for e in trace.events
        if e["ph"] in ("X", "i")
    }
    assert colours == {
        "handled": "good",
        "failed": "terrible",
        "timed_out": "bad",
        "cancelled": "grey",
        "withdrawn": "yellow",
        "shed": "black",
        "dropped": "olive",
    }
    assert dict(TraceInstrument.COLOURS) == colours  # every outcome is coloured, no other
    queue = {e["cname"] for e in trace.events if e["ph"] == "b"}
    assert queue == {TraceInstrument.QUEUE_COLOUR}
    used = [*colours.values(), TraceInstrument.QUEUE_COLOUR]
    assert len(set(used)) == len(used)  # distinct
    assert set(used) <= CHROME_PALETTE


async def test_trace_instrument_keeps_apart_two_servers_of_one_class(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server(admission=False)
    class Counter:
        @call(timeout=5)
        async def work(self, seconds: float) -> None:
            await trio.sleep(seconds)

    trace = TraceInstrument()
    async with (
        open_server(Counter(), instruments=[trace]) as a,
        open_server(Counter(), instruments=[trace]) as b,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(a.work, 1.0)
        nursery.start_soon(b.work, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(a.work, 0.5)  # request #2 of server a, queued until t=1
        await trio.sleep(0.25)
        nursery.start_soon(b.work, 0.5)  # request #2 of server b, queued at t=0.25
    waits: dict[str, list[str]] = {}
    for event in trace.events:
        if event.get("cat") == "queue":
            waits.setdefault(event["id"], []).append(event["ph"])
    assert len(waits) == 4  # two requests of each server, each its own wait
    assert all(phases == ["b", "e"] for phases in waits.values())
