"""Thread handlers (``thread=True``): blocking code in a worker thread, abandoned when cut."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import trio


class WorkerThreads:
    """The worker threads of one server: how many still run after being abandoned.

    A thread cannot be killed: when its handler is cut, trio stops waiting for it
    (``abandon_on_cancel=True``) and the server goes on, while the thread runs to
    its end. These counts are shared with those threads, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[object] = set()
        self._abandoned: set[object] = set()
        self.abandoned_total = 0

    @property
    def abandoned(self) -> int:
        """Threads abandoned by their handler's cut and still running."""
        with self._lock:
            return len(self._abandoned)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker thread; abandon it if cancelled."""
        token = object()

        def work() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self._running.discard(token)
                    self._abandoned.discard(token)

        with self._lock:
            self._running.add(token)
        try:
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        except BaseException:
            with self._lock:
                if token in self._running:  # cut while the thread still runs
                    self._abandoned.add(token)
                    self.abandoned_total += 1
            raise
