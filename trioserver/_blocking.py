"""Finding handlers that block the event loop: a trio instrument that times each task step.

In trio a blocking call inside a handler (``time.sleep``, a synchronous HTTP
client, a long computation) freezes every task of the run, every server and
every caller with it; ``move_on_after`` cannot help, since it acts only at
checkpoints. `BlockDetector` measures, on the wall clock, how long each step of
each server's task held the loop, and how long each handler run in its caller's
step (an idle server's fast path) took, and reports those that held it longer
than a threshold.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from . import _loop
from ._state import ServerState, step_watch

logger = logging.getLogger("trioserver")


class BlockDetector(trio.abc.Instrument):
    """Reports server steps that held the event loop longer than `threshold` seconds.

    Install it for the run: ``trio.lowlevel.add_instrument(BlockDetector())``.
    Each report is a WARNING on the ``trioserver`` logger naming the server, the
    method that was running (or its hook) and how long the step took; the
    server's `statistics` count them (`ServerStatistics.loop_blocks`) and keep
    the longest (`ServerStatistics.longest_block`). It measures wall-clock time,
    also under a `trio.testing.MockClock`.

    Args:
      threshold: Seconds a step may hold the loop before it is reported (0.1).

    Cancellation:
      It does not cancel anything: a blocked loop cannot be interrupted from
      inside. Run blocking code with ``@call(thread=True)`` instead.
    """

    def __init__(self, threshold: float = 0.1) -> None:
        self.threshold = threshold
        self._started = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        step_watch.detector = self  # a handler run in its caller's step times itself
        step_watch.task = task
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        step_watch.detector = step_watch.task = None
        held = time.perf_counter() - self._started
        if held < self.threshold:
            return
        runtime = _server_of(task)
        if runtime is not None:
            runtime.loop_blocked(held, self.threshold)


def _server_of(task: trio.lowlevel.Task) -> ServerState | None:
    """The server whose task `task` is, if any: its coroutine is `_loop.run` (rarely asked)."""
    coro: Any = task.coro
    if getattr(coro, "cr_code", None) is not _loop.run.__code__:
        return None
    frame = coro.cr_frame
    if frame is None:  # the server's task ended in this step
        return None
    state: ServerState = frame.f_locals["state"]
    return state
