"""Released blocks: ``async with trioserver.released():`` gives the server back for a while.

The handler's task stops being the server's task: a new one is started in the server's
nursery and serves the requests behind (`_loop.spawn`), while the block runs concurrently,
under its request's deadline and its caller's cancellation (its cancel scope stays the one it
had: `Block.scope`). Leaving the block, by any path, the handler waits, shielded, to take the
server back, ahead of every request not yet started (`ServerState.retakers`): at once if the
server is free, else when the handler holding it ends or enters a released block of its own
(`_loop.hand_back`). Then its task is the server's task again, and the rest of the handler
runs holding the server.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import trio
from trio.lowlevel import Abort, current_task

from . import _private
from ._errors import NotInHandlerError
from ._loop import free_the_server, hand_back, spawn
from ._request import Request
from ._serving import SERVING
from ._state import Block, ServerState

_INF = math.inf


@asynccontextmanager
async def released() -> AsyncGenerator[None]:
    """Give the server back for the block: it serves other requests meanwhile.

    Use it inside a handler, around a wait that does not need the server's state (a payment,
    a network call): the requests behind run concurrently with the block. The block stays
    under its request's deadline and its caller's cancellation. On leaving the block, by any
    path (return, exception, cancellation), the handler waits, shielded, to take the server
    back, ahead of requests that have not started; the rest of the handler holds it again.

    What the handler checked before the block may have changed after it: check again, or
    hold what you need (take it out of the shared state before, put it back after).

    Cancellation:
      Entering is a schedule point (not a cancel point). Leaving waits shielded: the wait
      for the server cannot be cancelled (the deadline of the handler still cuts what comes
      after the block, at its next checkpoint).

    Raises:
      NotInHandlerError: outside a handler holding its server (in a plain task, in a task a
        handler started, in ``on_start`` or ``on_stop``, or in a released block already).
    """
    state = SERVING.get()
    task = current_task()
    if state is None or state.task is not task or state.current is None:
        raise NotInHandlerError(
            "trioserver.released() is for a handler holding its server: use it in the body "
            "of a @call or @cast handler (not in a task it started, not in on_start or "
            "on_stop, not inside another released block)"
        )
    request = state.current
    await _private.schedule_point()  # (a handler run in its caller's step is now in its own)
    block = _release(state, request, task)
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await _retake(state, block)


def _release(state: ServerState, request: Request, task: trio.lowlevel.Task) -> Block:
    block = Block(request, task, state.scope, state.scope_cancelled, state.now())
    if state.blocks is None:
        state.blocks = {}
    state.blocks[request] = block
    state.current = None
    if request.cut_at != _INF:  # (the server's entry looks only at the handler holding it)
        state.timers.add(request.cut_at, request)
    state.turns += 1  # (what guards read may have changed: the next choice looks again)
    state.task = None
    state.context = block.snapshot  # the server's contextvars, for the task that serves next
    if state.retakers:  # a released handler waits to take the server back: it comes first
        hand_back(state, block.snapshot)
    elif not state.stopping:
        spawn(state, here=True)  # a task serves the requests behind, from the next batch
    return block


async def _retake(state: ServerState, block: Block) -> None:
    """Take the server back for `block`'s handler: now if it is free, else in turn."""
    if not free_the_server(state, block):
        if state.retakers is None:
            state.retakers = []
        state.retakers.append(block)
        await _private.park(_refuse_abort)  # (`_loop.hand_back` wakes it)
    assert state.blocks is not None
    del state.blocks[block.request]
    seconds = state.now() - block.entered_at
    state.released_seconds += seconds
    block.request.released_for += seconds
    state.task = block.task
    state.scope = block.scope
    state.scope_cancelled = block.cancelled
    state.current = block.request
    state.parked = False
    _adopt(block)


def _adopt(block: Block) -> None:
    """The contextvars the requests served during the block set stay set: the handler takes
    them over (those it set itself in the block stay, where the others did not set them)."""
    source, snapshot = block.source, block.snapshot
    if source is None:
        return
    missing = object()
    for var, value in source.items():
        if snapshot.get(var, missing) is not value:
            var.set(value)


def _refuse_abort(_: object) -> Abort:
    return Abort.FAILED  # (never called: the wait is shielded)
