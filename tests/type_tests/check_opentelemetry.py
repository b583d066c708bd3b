# pyright: reportUnnecessaryTypeIgnoreComment=true
"""Type tests for the OpenTelemetry instrument: it takes the SDK's providers (or the API's),
keyword only, and is an `Instrument` for ``open_server`` and ``add_instrument``. Checked by
``mypy --strict`` and pyright strict, never run."""

from __future__ import annotations

from typing import assert_type

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from trioserver import Instrument, add_instrument, call, open_server, server
from trioserver.opentelemetry import OpenTelemetryInstrument


@server
class Counter:
    @call
    def bump(self) -> int:
        return 1


async def check_opentelemetry() -> None:
    instrument = OpenTelemetryInstrument(
        tracer_provider=TracerProvider(), meter_provider=MeterProvider()
    )
    assert_type(instrument, OpenTelemetryInstrument)
    as_instrument: Instrument = instrument
    assert_type(OpenTelemetryInstrument().dormant, bool)  # the global providers
    OpenTelemetryInstrument(
        tracer_provider=trace.get_tracer_provider(), meter_provider=metrics.get_meter_provider()
    )
    add_instrument(instrument)
    async with open_server(Counter(), instruments=[as_instrument]) as counter:
        assert_type(await counter.bump(), int)


def check_opentelemetry_must_fail() -> None:
    OpenTelemetryInstrument(TracerProvider())  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    OpenTelemetryInstrument(tracer_provider=MeterProvider())  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    OpenTelemetryInstrument(meter_provider="prometheus")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
