"""What a scenario test draws: lanes of steps, and a schedule."""

from __future__ import annotations

from typing import Any

import attrs

from ._scheduler import Deviation


@attrs.frozen
class Step:
    """One step of a lane: wait `delay` virtual seconds, then invoke operation `name` with
    `args`; a step whose `name` is ``None`` only waits (shrinking turns an operation that
    only lines a race up in time into such a wait)."""

    delay: float
    name: str | None
    args: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        return f"Step({self.delay!r}, {self.name!r}, {self.args!r})"


@attrs.frozen
class Scenario:
    """A drawn example: each lane's steps, and the schedule (``None`` in fallback scheduling).

    Its ``repr`` is Python that rebuilds it, for `ScenarioTest.replay`.
    """

    lanes: tuple[tuple[Step, ...], ...]
    schedule: tuple[Deviation, ...] | None

    def __repr__(self) -> str:
        return f"Scenario(lanes={self.lanes!r}, schedule={self.schedule!r})"

    @property
    def operations(self) -> int:
        """How many operations all lanes make together (pure waits are no operations)."""
        return sum(step.name is not None for lane in self.lanes for step in lane)
