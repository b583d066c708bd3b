"""The price of an instrument: a no-op `trioserver.Instrument` installed, against none; and
`trioserver.opentelemetry.OpenTelemetryInstrument`, against none.

Two handlers, each with the default budget: ``bump`` (returns without suspending,
`contenders.Counter`) and the ``event`` body of `awaiting` (waits for another task). Each runs
with ``open_server(obj, instruments=[...])`` and with no instrument; the ratio is
instrumented / none, at 1 and at 100 callers. An instrument that overrides the call hooks and
does nothing in them prices the runtime's reports alone. The OpenTelemetry instrument is priced
three times:
with the SDK recording every span (a batch span processor and an exporter that discards,
a meter provider with a metric reader), with the SDK sampling 1% of traces (the metrics
still count every request), and with the API alone (no SDK configured: what a library's
user pays when the application exports nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from trioserver import CallInfo, Instrument
from trioserver.opentelemetry import OpenTelemetryInstrument

from . import awaiting, contenders
from .contenders import Contender
from .roundtrip import interleaved


class _Discard(SpanExporter):
    """Exports nowhere: the price is the instrument's and the SDK's, not a collector's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Hooked(Instrument):
    """Overrides the hooks OpenTelemetryInstrument uses, and does nothing in them: the price of
    the runtime's reports alone (a `CallInfo` per event), apart from what is done with them."""

    def call_queued(self, call: CallInfo) -> None:
        pass

    def call_started(self, call: CallInfo) -> None:
        pass

    def call_finished(self, call: CallInfo) -> None:
        pass

    def call_withdrawn(self, call: CallInfo) -> None:
        pass

    def call_shed(self, call: CallInfo) -> None:
        pass


@cache
def _sdk() -> tuple[trace.TracerProvider, metrics.MeterProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))
    return tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()])


def otel_sdk() -> Instrument:
    tracer_provider, meter_provider = _sdk()
    return OpenTelemetryInstrument(tracer_provider=tracer_provider, meter_provider=meter_provider)


@cache
def _sampled() -> trace.TracerProvider:
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01)))
    tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))
    return tracer_provider


def otel_sampled() -> Instrument:
    return OpenTelemetryInstrument(tracer_provider=_sampled(), meter_provider=_sdk()[1])


def otel_api() -> Instrument:
    # (no SDK installed as the global providers: the API's no-op tracer and meter)
    return OpenTelemetryInstrument()


# (key suffix, label, instrument factory) for the instrumented contenders after the no-op one
_PRICED: tuple[tuple[str, str, Any], ...] = (
    ("hooks", "an Instrument with empty call hooks", _Hooked),
    ("otel_sdk", "OpenTelemetryInstrument, SDK recording", otel_sdk),
    ("otel_sampled", "OpenTelemetryInstrument, SDK sampling 1% of traces", otel_sampled),
    ("otel_api", "OpenTelemetryInstrument, API only (no SDK)", otel_api),
)
# (key prefix, label, opener maker) for the two handlers
_HANDLERS: tuple[tuple[str, str, Any], ...] = (
    ("bump", "@call async bump", lambda **kw: contenders.trioserver_opener(
        contenders.Counter, "bump", **kw)),
    ("event", "@call awaiting an Event", lambda **kw: awaiting.trioserver_opener(
        awaiting.Budgeted, "event", **kw)),
)  # fmt: skip

INSTRUMENTS: list[Contender] = [
    *(
        Contender(f"{key}_{suffix}", f"{label}, {what}", opener(**options), baseline=f"{key}_bare")
        for key, label, opener in _HANDLERS
        for suffix, what, options in (
            ("bare", "no instrument (reference)", {}),
            ("instrumented", "a no-op Instrument", {"instrumented": True}),
        )
    ),
    *(
        Contender(
            f"{key}_{suffix}",
            f"{label}, {what}",
            opener(instrumented=factory),
            baseline=f"{key}_bare",
        )
        for key, label, opener in _HANDLERS
        for suffix, what, factory in _PRICED
    ),
]


def run_instruments(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    return interleaved(
        INSTRUMENTS, callers=(1, 100), rounds=rounds, calls=calls, seed=seed, title="instrument"
    )
