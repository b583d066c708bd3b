"""Which server a task serves: set by the server's tasks, read by `released`."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._state import ServerState

SERVING: ContextVar[ServerState | None] = ContextVar("trioserver.serving", default=None)
"""The server whose task this context belongs to (set by `mark_serving` before the server's
first handler runs; tasks a handler starts inherit it, and are told apart by
`ServerState.task`)."""


def mark_serving(state: ServerState) -> None:
    """Set `SERVING` in the contextvars of `state`'s task, where its handlers run (call it
    there, before the first). Every later context of the server (the next task's, a released
    block's) is taken from one of them, and keeps it."""
    SERVING.set(state)
    state.serving_marked = True
