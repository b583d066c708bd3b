"""A running server as its handle methods see it: the state of one run, with its entry points.

``handle.method(...)`` calls ``obj._trioserver_state.call(method, args, kwargs)`` (or
``.cast``); while the server runs, that state is a `Runtime`. The call path, in order:
`_caller` (the caller's side) -> `_mailbox` -> `_loop` (the server's task), or `_handoff`
(an idle server runs the request in its caller's step) -> `_reply` (start, finish, answer).
"""

from __future__ import annotations

from . import _caller, _durable
from ._state import ServerState


class Runtime(ServerState):
    """One run of a server object, from `open_server` to its stop."""

    __slots__ = ()

    call = _caller.call
    cast = _caller.cast
    durable_cast = _durable.durable_cast
