"""The tasks of the current trio run: found by name, cancelled at a time, their scheduler
steps counted, and a message from another framework for them to yield."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import trio


async def cancel_at(when: float, scope: trio.CancelScope) -> None:
    """Cancel `scope` at `when` on trio's clock (start it in a nursery)."""
    await trio.sleep_until(when)
    scope.cancel()


def tasks_named(name: str) -> list[trio.lowlevel.Task]:
    """Every live task of this run named `name` (``"trioserver: Book"``), system tasks included."""
    found: list[trio.lowlevel.Task] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:  # pragma: no cover
            continue
        if task.name == name:
            found.append(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


class StepCounter(trio.abc.Instrument):
    """Counts the scheduler steps of tasks whose name starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith(self.prefix):
            self.steps += 1


class Foreign:
    """An awaitable from another framework: it yields a message trio does not know."""

    def __await__(self) -> Generator[Any, Any, None]:
        yield "a future from another event loop"
