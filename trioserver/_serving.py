"""Which server a task serves: set by the server's tasks, read by `released`."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._state import ServerState

SERVING: ContextVar[ServerState | None] = ContextVar("trioserver.serving", default=None)
"""The server whose task this context belongs to (set by `_loop.run`; tasks a handler starts
inherit it, and are told apart by `ServerState.task`)."""
