"""OpenTelemetry spans and metrics for every request (the extra ``trioserver[opentelemetry]``).

`OpenTelemetryInstrument` is an `Instrument`: install it with `add_instrument` or
``open_server(obj, instruments=[...])``. It follows OpenTelemetry's RPC semantic conventions
(the stable ones, semconv 1.38 and later): one ``SERVER`` span per request, named
``Class/method``, from the moment it is queued to its end, a child of the caller's current
span; the handler runs with that span current, so spans it opens are its children.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from time import monotonic, time_ns
from typing import Any, Final

import attrs
import trio

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - the extra is installed for the tests
    raise ImportError(
        "trioserver.opentelemetry needs opentelemetry-api, which is not installed: install "
        "the extra with `pip install 'trioserver[opentelemetry]'`"
    ) from exc

from . import __version__
from ._instrument import HOOKS, CallInfo, Instrument, hooks_changed

__all__ = ["OpenTelemetryInstrument"]

SYSTEM: Final = "trioserver"
"""The value of ``rpc.system.name``: the RPC system is trioserver's own call protocol."""
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.38.0"

# Span and metric attribute names (OpenTelemetry's, and trioserver's own under its prefix).
RPC_SYSTEM_NAME: Final = "rpc.system.name"
RPC_METHOD: Final = "rpc.method"
RPC_SERVICE: Final = "rpc.service"
RPC_STATUS: Final = "rpc.response.status_code"
ERROR_TYPE: Final = "error.type"
KIND: Final = "trioserver.kind"
REASON: Final = "trioserver.reason"
QUEUE_WAIT: Final = "trioserver.queue_wait"

_NS: Final = 1_000_000_000
_current_root_task = trio.lowlevel.current_root_task

RECHECK_SECONDS = 1.0
"""How often (wall clock) a dormant instrument looks, as a request is queued, whether an SDK
has been set as OpenTelemetry's global providers since."""


def _stand_in_meters() -> type[Any] | None:
    """The class of the API's stand-in for a meter provider until one is set: private to
    opentelemetry-api (the tracer's, `trace.ProxyTracerProvider`, is public). Without it (None)
    the instrument is never dormant: it reports to the API as it would to an SDK."""
    try:
        internal = importlib.import_module("opentelemetry.metrics._internal")
    except ImportError:  # pragma: no cover - present in every opentelemetry-api this supports
        return None
    found: type[Any] | None = getattr(internal, "_ProxyMeterProvider", None)
    return found


_StandInMeters = _stand_in_meters()


def _no_sdk() -> bool:
    """Whether OpenTelemetry's global tracer and meter providers are both still the API's
    stand-ins (no SDK set: every span and measurement would be dropped)."""
    return (
        _StandInMeters is not None
        and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        and isinstance(metrics.get_meter_provider(), _StandInMeters)
    )


@attrs.define(eq=False, slots=True)
class _Names:
    """What every span and measurement of one method carries, computed once."""

    span_name: str
    span_attributes: dict[str, Any]
    metric_attributes: dict[str, Any]
    by_status: dict[str, dict[str, Any]] = attrs.field(factory=dict[str, dict[str, Any]])

    def ended_as(self, status: str) -> dict[str, Any]:
        found = self.by_status.get(status)
        if found is None:
            found = dict(self.metric_attributes)
            found[RPC_STATUS] = status
            if status != "handled":
                found[ERROR_TYPE] = status
            self.by_status[status] = found
        return found


@attrs.define(eq=False, slots=True)
class _Live:
    """A request between its queueing and its end: its span, and the context it replaced."""

    span: trace.Span
    names: _Names
    recording: bool  # `span.is_recording()`, asked once: without an SDK it is never
    queued: bool  # counted in the mailbox depth
    previous: otel_context.Context | None = None  # set while its handler runs


class OpenTelemetryInstrument(Instrument):
    """Exports every request as an OpenTelemetry span, and the servers' metrics.

    Spans follow OpenTelemetry's RPC semantic conventions: one span of kind ``SERVER`` per
    call or cast, named ``Class/method``, with ``rpc.system.name`` ``"trioserver"``,
    ``rpc.method`` ``"Class/method"``, ``rpc.service`` the class's name (the pre-1.38
    attribute, kept to group by server), ``trioserver.kind`` (``call`` or ``cast``) and
    ``rpc.response.status_code``, the request's outcome: ``handled``, ``failed``,
    ``timed_out``, ``cancelled``, ``withdrawn``, ``dropped`` or ``shed``. Every outcome but
    ``handled`` also sets the span's status to ``ERROR`` and ``error.type`` to the outcome.
    The span begins when the request is queued (event ``queued``) and ends when it ends;
    events ``started`` (with ``trioserver.queue_wait`` in seconds), ``withdrawn``,
    ``dropped`` and ``shed`` (with ``trioserver.reason``) mark the rest of its life. Times
    are the trio clock's, virtual or real, shifted once per run to the wall clock.

    The span is a child of the span current in the caller's task, and it is the current
    span while the handler runs (handlers run in the server's contextvars, not the
    caller's: the instrument sets OpenTelemetry's context there, and restores it when the
    handler ends), so spans the handler opens are its children, on the hand-off as through
    the mailbox.

    Metrics:

    - ``rpc.server.call.duration`` (histogram, s): queueing to end, for every request
      that ended, the span's duration; attributes ``rpc.system.name``, ``rpc.method``,
      ``rpc.service``, ``rpc.response.status_code`` (and ``error.type`` but on
      ``handled``).
    - ``trioserver.queue.wait`` (histogram, s): queueing to start, for each started request.
    - ``trioserver.mailbox.depth`` (observable up-down counter, ``{request}``): requests
      waiting in the mailboxes (queued or waiting on a guard), by ``rpc.service``.
    - ``trioserver.requests.withdrawn`` (counter): requests that left the mailbox without
      starting, with ``rpc.response.status_code`` ``withdrawn`` (their caller left or
      its deadline passed) or ``dropped`` (their server stopped).
    - ``trioserver.requests.shed`` (counter): requests refused: with `ServerOverloaded`, or
      by admission (which ends the call as its caller's deadline would).

    With the API alone (the global providers, and no SDK set as them: every span and
    measurement would be dropped), the instrument is ``dormant``: it reports nothing, and
    costs one hook, ``call_queued``, in which it looks, at most once every
    ``RECHECK_SECONDS`` (a module constant: 1.0) of wall clock, whether an SDK has been
    set since. The first request queued after that wakes it (``dormant`` is then False),
    and it reports the requests queued after that one as above. That request, and those
    in flight then, have no span: an instrument hears a request's whole life or none of it
    (as one installed while requests are in flight hears none of theirs).

    Args:
      tracer_provider: Where spans go; the global one (``opentelemetry.trace``) if None.
      meter_provider: Where metrics go; the global one (``opentelemetry.metrics``) if None.

    Raises:
      TypeError: a provider is not an OpenTelemetry ``TracerProvider`` / ``MeterProvider``.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(
                f"OpenTelemetryInstrument: tracer_provider must be an OpenTelemetry "
                f"TracerProvider, not {tracer_provider!r}"
            )
        if meter_provider is not None and not isinstance(meter_provider, metrics.MeterProvider):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(
                f"OpenTelemetryInstrument: meter_provider must be an OpenTelemetry "
                f"MeterProvider, not {meter_provider!r}"
            )
        self._tracer = trace.get_tracer(
            "trioserver", __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        meter = metrics.get_meter("trioserver", __version__, meter_provider, schema_url=SCHEMA_URL)
        self._duration = meter.create_histogram(
            "rpc.server.call.duration",
            unit="s",
            description="Time from a request's queueing to its end (the span's duration).",
        )
        self._queue_wait = meter.create_histogram(
            "trioserver.queue.wait",
            unit="s",
            description="Time a started request waited in its server's mailbox.",
        )
        self._withdrawn = meter.create_counter(
            "trioserver.requests.withdrawn",
            unit="{request}",
            description="Requests that left a mailbox without starting.",
        )
        self._shed = meter.create_counter(
            "trioserver.requests.shed",
            unit="{request}",
            description="Requests refused (ServerOverloaded, or by admission).",
        )
        meter.create_observable_up_down_counter(
            "trioserver.mailbox.depth",
            callbacks=[self._observe_depth],
            unit="{request}",
            description="Requests waiting in servers' mailboxes (queued or on a guard).",
        )
        self._live: dict[tuple[int, int], _Live] = {}
        self._names: dict[str, _Names] = {}
        self._depth: dict[str, int] = {}
        self._root: object = None  # the trio run whose clock `_offset` maps
        self._offset = 0
        # Dormant: the global providers (none given, or those given), no SDK set as them (the
        # API alone, whose stand-ins would drop everything): every hook but
        # `call_queued` is left out (set on the instance to the base class's, which reports
        # nothing), and `call_queued` only looks, once a RECHECK_SECONDS, for an SDK set since.
        self._recheck_at = -math.inf  # (the first request looks at once)
        self.dormant = (
            (tracer_provider is None or tracer_provider is trace.get_tracer_provider())
            and (meter_provider is None or meter_provider is metrics.get_meter_provider())
            and _no_sdk()
        )
        """True while the instrument waits for an SDK: it reports nothing and costs one hook."""
        if self.dormant:
            for hook in _ASLEEP:
                setattr(self, hook, getattr(Instrument, hook).__get__(self))
            setattr(self, "call_queued", self._queued_while_dormant)  # noqa: B010

    # -- what each request carries, and when ------------------------------------------------

    def _names_of(self, call: CallInfo) -> _Names:
        names = self._names.get(call.method)
        if names is None:
            method = call.method[len(call.server) + 1 :]
            qualified = f"{call.server}/{method}"
            metric = {RPC_SYSTEM_NAME: SYSTEM, RPC_METHOD: qualified, RPC_SERVICE: call.server}
            names = self._names[call.method] = _Names(
                qualified, {**metric, KIND: call.kind}, metric
            )
        return names

    def _ns(self, at: float) -> int:
        """A trio clock reading as OpenTelemetry's time: ns since the epoch."""
        root = _current_root_task()
        if root is not self._root:
            self._root = root
            self._offset = time_ns() - round(trio.lowlevel.current_clock().current_time() * _NS)
        return self._offset + round(at * _NS)

    def _open(self, call: CallInfo, queued: bool) -> _Live:
        """Start `call`'s span, a child of the current context's span (the caller's)."""
        names = self._names.get(call.method) or self._names_of(call)
        at = self._ns(call.queued_at)
        span = self._tracer.start_span(
            names.span_name,
            kind=SpanKind.SERVER,
            attributes=names.span_attributes,
            start_time=at,
        )
        recording = span.is_recording()
        if queued:
            if recording:
                span.add_event("queued", timestamp=at)
            self._depth[call.server] = self._depth.get(call.server, 0) + 1
        return _Live(span, names, recording, queued)

    def _close(self, call: CallInfo, live: _Live, event: str | None) -> None:
        """End `call`'s span with its outcome, and record its duration."""
        ended_at, status = call.ended_at, call.outcome
        assert ended_at is not None
        assert status is not None
        if live.recording:  # (a span that does not record ignores its end: no time needed)
            span = live.span
            end = self._ns(ended_at)
            if event is not None:
                span.add_event(event, {REASON: call.reason or ""}, timestamp=end)
            span.set_attribute(RPC_STATUS, status)
            if status != "handled":
                span.set_attribute(ERROR_TYPE, status)
                span.set_status(Status(StatusCode.ERROR, call.reason))
            span.end(end_time=end)
        self._duration.record(ended_at - call.queued_at, live.names.ended_as(status))

    def _unqueue(self, call: CallInfo, live: _Live) -> None:
        if live.queued:
            live.queued = False
            self._depth[call.server] -= 1

    # -- waiting for an SDK --------------------------------------------------------------------

    def _queued_while_dormant(self, call: CallInfo) -> None:
        if self.dormant:
            now = monotonic()
            if now < self._recheck_at:
                return
            self._recheck_at = now + RECHECK_SECONDS
            if _no_sdk():
                return
            self.dormant = False  # an SDK was set: report the requests that come after this one
            for hook in (*_ASLEEP, "call_queued"):
                vars(self).pop(hook, None)
        # (this run's lists; another run's, at its next request). This request keeps the
        # listeners it arrived with, where this instrument has only this hook: no span for it.
        hooks_changed(self)

    # -- the hooks ---------------------------------------------------------------------------

    def call_queued(self, call: CallInfo) -> None:
        self._live[call.server_id, call.number] = self._open(call, True)

    def call_started(self, call: CallInfo) -> None:
        assert call.started_at is not None
        live = self._live[call.server_id, call.number]  # (it heard the request arrive)
        self._unqueue(call, live)
        wait = call.started_at - call.queued_at
        if live.recording:
            live.span.add_event("started", {QUEUE_WAIT: wait}, timestamp=self._ns(call.started_at))
        self._queue_wait.record(wait, live.names.metric_attributes)
        # This hook runs in the handler's contextvars: the span is made current for the handler
        # (unless it is invalid: the API without an SDK makes only those, and they carry nothing).
        if live.recording or live.span.get_span_context().is_valid:
            live.previous = otel_context.get_current()
            otel_context.attach(trace.set_span_in_context(live.span, live.previous))

    def call_finished(self, call: CallInfo) -> None:
        live = self._live.pop((call.server_id, call.number))
        if live.previous is not None:  # (the handler's contextvars again: restore them)
            otel_context.attach(live.previous)
        self._close(call, live, None)

    def call_withdrawn(self, call: CallInfo) -> None:
        live = self._live.pop((call.server_id, call.number))
        self._unqueue(call, live)
        self._withdrawn.add(1, live.names.ended_as(call.outcome or "withdrawn"))
        self._close(call, live, call.outcome)

    def call_shed(self, call: CallInfo) -> None:
        live = self._live.pop((call.server_id, call.number), None)
        if live is None:  # refused before it was queued: in its caller's task
            live = self._open(call, False)
        self._unqueue(call, live)
        self._shed.add(1, live.names.ended_as("shed"))
        self._close(call, live, "shed")

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        # (a periodic reader calls this from its own thread: copy the dict in one step)
        depths = tuple(self._depth.items())
        return [
            Observation(depth, {RPC_SYSTEM_NAME: SYSTEM, RPC_SERVICE: server})
            for server, depth in depths
        ]


_ASLEEP: Final = tuple(
    hook for hook in HOOKS if hook != "call_queued" and hook in vars(OpenTelemetryInstrument)
)
"""The hooks a dormant instrument leaves out: every one it overrides but `call_queued`."""
