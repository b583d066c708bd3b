"""The tasks of the current trio run, found by name (tests count servers', keepers', timers')."""

from __future__ import annotations

import trio


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
