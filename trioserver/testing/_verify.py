"""From a finished run to a verdict: completeness, linearizability, then the determinism guard."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import attrs

from ._errors import IncompleteHistory, NondeterministicTest, RaceFound
from ._history import History
from ._linearizability import DEFAULT_BUDGET, Inconclusive, Violation, check_linearizable
from ._model import Model
from ._report import story, timeline
from ._scheduler import Decision


@attrs.frozen(eq=False)
class Checked:
    """A history with the model it is checked against."""

    history: History
    model: Model[Any]


@attrs.frozen(eq=False)
class Run:
    """What one run of an example produced: its histories and scheduling decisions."""

    checked: tuple[Checked, ...]
    decisions: tuple[Decision, ...]

    def signature(self) -> tuple[Hashable, ...]:
        """Everything a replay must reproduce exactly, as comparable text."""
        return (
            tuple(
                tuple(
                    (
                        e.caller,
                        str(e.operation),
                        e.invoked,
                        repr(e.invoked_at),  # repr: nan == nan
                        str(e.ending),
                        e.ended,
                        repr(e.ended_at),
                    )
                    for e in c.history.entries
                )
                for c in self.checked
            ),
            tuple(repr(d) for d in self.decisions),
        )


def verify(
    run: Run,
    *,
    rerun: Callable[[], Run] | None,
    replay: str,
    budget: int = DEFAULT_BUDGET,
) -> list[Inconclusive]:
    """Check a run; raise the failure it shows, after making sure the run is reproducible.

    Args:
      run: The run.
      rerun: Runs the same example again (same inputs, same schedule), for the
        determinism guard; ``None`` to skip it.
      replay: How the report says to replay the example.
      budget: The linearizability search budget per partition.

    Returns:
      The partitions whose check was inconclusive (the run passes otherwise).

    Raises:
      IncompleteHistory: A call did not end with exactly one outcome.
      NondeterministicTest: The run failed, and running it again gave another history.
      RaceFound: A history is not linearizable; the message tells the story.
    """
    inconclusive: list[Inconclusive] = []
    for checked in run.checked:
        history = checked.history
        broken = history.incomplete()
        if broken:
            lines = [f"  {e.describe()} (endings recorded: {e.endings})" for e in broken]
            raise IncompleteHistory(
                f"{history.name}: calls that did not end with exactly one outcome:\n"
                + "\n".join(lines)
            )
        verdict = check_linearizable(
            history.entries, checked.model, partition=history.partition, budget=budget
        )
        if isinstance(verdict, Inconclusive):
            inconclusive.append(verdict)
        elif isinstance(verdict, Violation):
            _guard(run, rerun)
            raise RaceFound(story(history.name, verdict, run.decisions, replay), history, verdict)
    return inconclusive


def _guard(run: Run, rerun: Callable[[], Run] | None) -> None:
    if rerun is None:
        return
    again = rerun()
    if again.signature() == run.signature():
        return
    raise NondeterministicTest(
        "this example failed, but running it again with the same inputs and schedule gave "
        "another history, so the test depends on something outside Hypothesis' control (the "
        "wall clock, unseeded randomness, I/O). No story is shown, as it could not be "
        "trusted.\n\nFirst run:\n" + _tables(run) + "\n\nSecond run:\n" + _tables(again)
    )


def _tables(run: Run) -> str:
    return "\n\n".join(timeline(c.history.entries) for c in run.checked)


def describe_inconclusive(results: Sequence[Inconclusive]) -> str:
    """A one-line note for Hypothesis' statistics."""
    return f"linearizability: inconclusive on {len(results)} partition(s)"
