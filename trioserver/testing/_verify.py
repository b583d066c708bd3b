"""From a finished run to a verdict: completeness, linearizability, then the determinism guard."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import attrs

from ._errors import IncompleteHistory, ModelMismatch, NondeterministicTest, RaceFound
from ._history import Entry, History, Refused, Result, Unknown, same_result
from ._linearizability import DEFAULT_BUDGET, Inconclusive, Violation, check_linearizable
from ._model import Model
from ._report import story, timeline
from ._scheduler import Decision


@attrs.frozen(eq=False)
class Checked:
    """A history with the model it is checked against.

    Attributes:
      history: The history (its ``entries`` are the recorded calls).
      model: The sequential model it is checked against.
    """

    history: History
    model: Model[Any]


@attrs.frozen(eq=False)
class Run:
    """What one run of an example produced (`ScenarioTest.run`): its histories, each with
    its model, and the scheduling decisions taken.

    Attributes:
      checked: One `Checked` per history (a scenario has one: ``run.checked[0].history``).
      decisions: The scheduling decisions, in order (see `Decision`).
    """

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
      ModelMismatch: It is not, but already on a call that ran alone: the model and
        the server disagree without any interleaving (and in the canonical task order: a
        history that departed from it is a race, perhaps inside one operation).
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
            alone = mismatch_alone(history.entries, checked.model)
            if alone is not None and not run.decisions:
                entry, expected = alone
                raise ModelMismatch(
                    _mismatch_report(history.name, entry, expected, replay),
                    history,
                    entry,
                    expected,
                )
            report = story(history.name, verdict, run.decisions, replay)
            if alone is not None:  # sequential, but not in the canonical task order
                report = report.replace(
                    "\n\nScheduling decisions", _INSIDE + "Scheduling decisions", 1
                )
            raise RaceFound(report, history, verdict)
    return inconclusive


_INSIDE = (
    "\n\nNo two operations overlapped, yet no order explains the history: the scheduling "
    "decisions below ran tasks in another order than the canonical one, so this is not "
    "reported as a model mismatch. Most likely an operation runs tasks of its own at once "
    "and counts on their order: a race inside one operation.\n\n"
)


def mismatch_alone(entries: Sequence[Entry], model: Model[Any]) -> tuple[Entry, Result] | None:
    """The first call of the history's sequential beginning on which `model` disagrees.

    The sequential beginning: the entries, in the order they were invoked, as long as each
    ended before the next began (no concurrency yet), up to the first whose effect is
    unknown. Its order is the only one possible, so a disagreement there is no race.

    Returns:
      The entry and the model's result for it, or None if the model agrees throughout.
    """
    ordered = sorted(entries, key=lambda e: e.invoked)
    state = model.initial()
    for index, entry in enumerate(ordered):
        if entry.ended is None or isinstance(entry.ending, Unknown):
            return None
        later = ordered[index + 1] if index + 1 < len(ordered) else None
        if later is not None and later.invoked < entry.ended:
            return None  # it overlaps the next: concurrency from here on
        if isinstance(entry.ending, Refused):
            continue  # it had no effect
        state, result = model.apply(state, entry.operation)
        assert entry.ending is not None
        if not same_result(result, entry.ending):
            return entry, result
    return None


def _mismatch_report(name: str, entry: Entry, expected: Result, replay: str) -> str:
    return (
        f"{name}: the server and the model disagree on a call that ran alone: no other "
        f"operation overlapped it or anything before it, so this is not a race. Look at the "
        f"model (or the client operation, or the test):\n"
        f"  {entry.caller}: {entry.operation}\n"
        f"    the server: {entry.ending}\n"
        f"    the model:  {expected}\n"
        f"(An exception matches only one of the same type with equal arguments; a cast "
        f"returns None to its caller.)\n\n{replay}"
    )


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
