"""Cross-server deadlocks: a call that would close a cycle of requests waiting on each other.

Requests wait for each other: a handler awaiting a call waits for that call's request
(`Request.awaiting`), and a queued request waits for the request holding its server. A call
that would close a cycle of such waits raises `DeadlockError` at once, in the caller that
would close it, naming the cycle, instead of waiting until a budget cuts it. A handler in a
released block holds no server (calls to its server never wait for it), but while it awaits
a call of its own it is a link like any handler. A request waiting on its guard waits for a
state, not a request: it never closes a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio.lowlevel import Task

from ._request import QUEUED, RUNNING, Request

if TYPE_CHECKING:
    from ._state import ServerState


def handling(state: ServerState, task: Task) -> Request | None:
    """The request whose handler `task` runs (holding `state`'s server, or released), or
    None; `state` is the server whose context `task` runs in (`SERVING`)."""
    if state.task is task:
        return state.current
    if state.blocks:
        for request, block in state.blocks.items():
            if block.task is task:
                return request
    return None


def closing_cycle(target: ServerState, mine: Request) -> list[Request] | None:
    """The requests a new call to `target` from `mine`'s handler would wait on, in order,
    if they lead back to `mine` (a cycle: it would wait on itself); else None."""
    chain: list[Request] = []
    node = target.current  # a queued request waits for the one holding its server
    while node is not None and len(chain) < 10_000:
        chain.append(node)
        if node is mine:
            return chain
        if node.state == RUNNING:  # its handler (holding, or released) waits for a call?
            node = node.awaiting
        elif node.state == QUEUED:  # it waits for its server's holder
            node = node.server.current
        else:  # waiting on its guard (a state), or over
            return None
    return None


def describe(chain: list[Request], label: str) -> str:
    return " -> ".join([request.method.label for request in chain] + [label])
