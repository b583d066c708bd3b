"""What a server has done, as a frozen snapshot: `statistics(handle)`."""

from __future__ import annotations

import attrs

from ._server import STATE, spec_of


@attrs.frozen
class ServerStatistics:
    """A snapshot of one server's counters, taken by `statistics`.

    Every request ends in exactly one counter: those that never started in
    `withdrawn`, `shed` or `dropped`; those that started in `handled`,
    `failed`, `timed_out` or `cancelled`. Calls a handler makes to its own
    server run inline, as part of that handler, and are not counted.
    """

    queued: int = 0
    """Requests waiting in the mailbox now."""
    running: int = 0
    """1 while a handler runs, else 0."""
    peak_queued: int = 0
    """The most requests ever waiting at once."""
    withdrawn: int = 0
    """Never started: the caller left (was cancelled or reached its deadline) while queued."""
    shed: int = 0
    """Never started: refused by admission with `ServerOverloaded`."""
    dropped: int = 0
    """Never started: the server stopped while they were queued."""
    handled: int = 0
    """Started and returned."""
    failed: int = 0
    """Started and raised an exception (passed to the caller, or logged for a cast)."""
    timed_out: int = 0
    """Started and cut by their deadline: their budget, or their caller's deadline if earlier."""
    cancelled: int = 0
    """Started and cut because their caller was cancelled (not by its deadline) or the server
    stopped."""


def statistics(handle: object) -> ServerStatistics:
    """A frozen snapshot of what the server behind `handle` has done.

    Works on a running server, and on one that stopped (its last run); a
    server never started reports zeros. Reading it never blocks.

    Raises:
      InvalidServerDefinition: `handle`'s class is not a server.
    """
    spec_of(handle)
    snapshot: ServerStatistics = getattr(handle, STATE).statistics()
    return snapshot
