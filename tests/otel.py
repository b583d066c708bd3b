"""An OpenTelemetry SDK wired to in-memory exporters, for the tests of guarantee 19."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trioserver.opentelemetry import OpenTelemetryInstrument


@attrs.define
class Otel:
    """An SDK wired to in-memory exporters, and an instrument that exports to it."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer: trace.Tracer
    instrument: OpenTelemetryInstrument

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for found in scope.metrics:
                    if found.name == metric:
                        return list(found.data.data_points)
        return []

    def total(self, metric: str, **attributes: str) -> float:
        """A counter's or up-down counter's value, summed over points with `attributes`."""
        return sum(
            p.value
            for p in self.points(metric)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )


def make_otel(
    instrument_class: Callable[..., OpenTelemetryInstrument] = OpenTelemetryInstrument,
) -> Otel:
    """An SDK, and an instrument exporting to it, made by calling `instrument_class` with the
    SDK's providers as keywords."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrument = instrument_class(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return Otel(exporter, reader, tracer_provider.get_tracer("tests"), instrument)
