"""Deadline-aware admission: refuse at once what could not finish before its caller gives up.

A FIFO server under sustained overload delivers nothing: the queue wait grows to the
callers' timeout, so every request starts too late to finish. Refusing, when a request is
queued and again when it would start, any request whose caller's remaining time is shorter
than the expected wait plus the method's expected service time keeps the queue short enough
that what is admitted finishes in time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._statistics import MethodRecorder


def refusal_at_queue(
    runtime: Runtime, record: MethodRecorder, remaining: float, now: float
) -> str | None:
    """Why a call with `remaining` seconds left must be refused now, or None to queue it."""
    wait = runtime.mailbox.backlog
    current = runtime.current
    if current is not None:
        started = current.started_at
        expected = runtime.records[current.method.name].expected
        wait += max(0.0, expected - (now - started))
    needed = wait + record.expected
    if remaining > needed:
        return None
    return (
        f"its caller has {remaining:.3g} s left, and the expected wait ({wait:.3g} s) "
        f"plus service ({record.expected:.3g} s) is longer"
    )


def refusal_at_start(record: MethodRecorder, remaining: float) -> str | None:
    """Why a call about to start with `remaining` seconds left must be refused, or None."""
    if remaining > record.expected:
        return None
    return (
        f"its caller has {remaining:.3g} s left, less than its expected service "
        f"time ({record.expected:.3g} s)"
    )
