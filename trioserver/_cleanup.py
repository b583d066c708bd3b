"""Cleanup calls and casts (``@call(cleanup=True)``, ``@cast(cleanup=True)``): sent even from a
cancelled task.

trio's rule is that an operation raising `trio.Cancelled` did not happen, so a plain call or
cast from a cancelled task queues nothing: ``finally: await pool.release(conn)`` in a cancelled
task would leak the connection. A method marked as cleanup is sent, and its reply awaited,
inside a shielded cancel scope, as ``with trio.CancelScope(shield=True):`` around the call
would do: the caller's cancellation and deadline do not reach it (no withdrawal, no admission
refusal on its account), its handler keeps its own budget, and a stop still answers it. The
caller's cancellation is delivered at its next checkpoint after the call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ._spec import Method

Entry = Callable[["Method", tuple[Any, ...], Any], Awaitable[Any]]


async def sent_shielded(entry: Entry, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
    """``await entry(method, args, kwargs)`` (the state's ``call`` or ``cast``), shielded."""
    with trio.CancelScope(shield=True):
        return await entry(method, args, kwargs)
