"""Run by tests/test_opentelemetry.py in a fresh interpreter (OpenTelemetry's global providers
can be set once per process): an `OpenTelemetryInstrument` made with no SDK set is dormant, and
takes up its hooks when one is set. Prints what it saw as JSON."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import trioserver.opentelemetry as otel
from trioserver import add_instrument, call, open_server, server
from trioserver._instrument import run_instruments
from trioserver.opentelemetry import OpenTelemetryInstrument


@server
class Desk:
    def __init__(self) -> None:
        self.gate = trio.Event()

    @call
    async def work(self) -> str:
        await self.gate.wait()
        return "done"

    @call
    def quick(self) -> str:
        return "quick"


async def main() -> dict[str, Any]:
    seen: dict[str, Any] = {}
    shared = OpenTelemetryInstrument()  # the run's list
    own = OpenTelemetryInstrument()  # a server's own list
    seen["dormant_at_first"] = [shared.dormant, own.dormant]
    add_instrument(shared)
    desk_obj, other_obj = Desk(), Desk()
    async with (
        open_server(desk_obj) as desk,
        open_server(other_obj, instruments=[own]) as other,
        trio.open_nursery() as nursery,
    ):
        assert await desk.quick() == "quick"
        assert await other.quick() == "quick"
        seen["hooked_dormant"] = sorted(run_instruments().listeners.hooked)
        # One running and one queued while dormant; then an SDK is set.
        nursery.start_soon(desk.work)
        nursery.start_soon(desk.work)
        await trio.testing.wait_all_tasks_blocked()
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        otel.RECHECK_SECONDS = 0.0
        shared._recheck_at = own._recheck_at = 0.0  # pyright: ignore[reportPrivateUsage]
        assert await other.quick() == "quick"  # wakes `own` (the server's own list)
        desk_obj.gate.set()  # the running one ends, the queued one starts, and ends
        await trio.testing.wait_all_tasks_blocked()
        assert await desk.quick() == "quick"  # wakes `shared`
        desk_obj.gate = trio.Event()
        nursery.start_soon(desk.work)
        await trio.testing.wait_all_tasks_blocked()
        desk_obj.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        seen["dormant_after"] = [shared.dormant, own.dormant]
        seen["hooked_after"] = sorted(run_instruments().listeners.hooked)
    seen["spans"] = sorted(
        (span.name, [e.name for e in span.events]) for span in exporter.get_finished_spans()
    )
    data = reader.get_metrics_data()
    names: set[str] = set()
    if data is not None:
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                names.update(m.name for m in scope.metrics)
    seen["metrics"] = sorted(names)
    return seen


if __name__ == "__main__":
    print(json.dumps(trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))))
