"""Deadline-aware admission: refuse at once what could not finish before its caller gives up.

A FIFO server under sustained overload delivers nothing: the queue wait grows to the
callers' timeout, so every request starts too late to finish. Refusing, when a request is
queued and again when it would start, any request whose caller's remaining time is shorter
than the expected wait plus the method's expected service time keeps the queue short enough
that what is admitted finishes in time.

The expected wait counts what the requests ahead will *hold* the server: a handler's time in
released blocks (`trioserver.released`) is not a wait for the others, and a guarded call
waiting for its guard holds nothing (it is not in the mailbox's backlog; when its guard
holds it starts, and is judged then, as any request that starts). A request's own need is
its method's whole expected service time, released blocks included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._state import ServerState
    from ._statistics import MethodRecorder


PROBE_AFTER = 1.0
"""Seconds without a run that taught a method's expectation, after which (or after ten times
the expected service time, if longer) admission lets one request through as a probe: a method
whose every request is refused would otherwise never learn that it got faster."""


def _probe(record: MethodRecorder, now: float) -> bool:
    """Whether to admit this request as a probe: the expectation is stale, and none is out."""
    if record.probing or now - record.learned_at <= max(PROBE_AFTER, 10 * record.expected):
        return False
    record.probing = True
    return True


def refusal_at_queue(
    runtime: ServerState, record: MethodRecorder, deadline: float, now: float
) -> str | None:
    """Why a call with `deadline` must be refused now, or None to queue it."""
    wait = runtime.mailbox.backlog
    current = runtime.current
    if current is not None:
        hold = runtime.records[current.method.name].hold
        wait += max(0.0, hold - (now - current.started_at - current.released_for))
    needed = wait + record.expected
    remaining = deadline - now
    if remaining > needed or _probe(record, now):
        return None
    return (
        f"its caller has {remaining:.3g} s left, and it needs about {needed:.3g} s "
        f"(expected wait {wait:.3g} s, expected service {record.expected:.3g} s)"
    )


def refusal_at_start(record: MethodRecorder, deadline: float, now: float) -> str | None:
    """Why a call about to start must be refused, or None to start it."""
    remaining = deadline - now
    if remaining > record.expected or record.probing or _probe(record, now):
        return None  # (a probe admitted when queued also starts)
    return (
        f"its caller has {remaining:.3g} s left, and it needs about {record.expected:.3g} s "
        f"(expected service)"
    )
