"""The errors trioserver raises: one base, each also the trio or built-in error it resembles."""

from __future__ import annotations

import trio


class TrioServerError(Exception):
    """Base class of every error that trioserver raises."""


class CallTimeout(TrioServerError, trio.TooSlowError):
    """Raised to a caller whose handler was cut off by its deadline (its budget or the caller's)."""


class ServerStopped(TrioServerError, trio.ClosedResourceError):
    """Raised to a caller when the server is not running: never started, stopping, or stopped."""


class ServerCrashed(TrioServerError, trio.BrokenResourceError):
    """Raised to the callers of a server that crashed: a handler marked to crash raised."""


class ServerOverloaded(TrioServerError):
    """Raised to a caller whose request the server refused to queue or to start."""


class DeadlockError(TrioServerError, RuntimeError):
    """Raised to a caller that would wait on itself: a task started by the running handler."""


class NotInHandlerError(TrioServerError, RuntimeError):
    """Raised by `released` used outside a handler holding its server."""


class InvalidServerDefinition(TrioServerError, TypeError):
    """Raised when a server class or one of its handlers is declared wrongly."""


class ForeignRunError(TrioServerError, RuntimeError):
    """Raised to a caller in another `trio.run` (another thread's) than its server's."""


class NotTrioError(TrioServerError, RuntimeError):
    """Raised when a handle is used outside trio (under asyncio, say): trioserver needs trio."""


class HandleNotCopyable(TrioServerError, TypeError):
    """Raised by ``copy.copy``, ``copy.deepcopy`` and ``pickle`` on a running server's handle."""


class StoreError(TrioServerError):
    """Raised about durable casts' store: a server with durable casts opened without a store,
    or a commit that failed (the cast may or may not be stored)."""


class NotSendable(TrioServerError, TypeError):
    """Raised to a caller of a server in a Ray actor (`trioserver.ray`) when its arguments, or
    what its handler returned or raised, could not be pickled (or rebuilt) to cross over."""
