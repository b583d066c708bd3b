"""What a failing race test raises: each an `AssertionError`, so test runners report a failure."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._history import Entry, History, Result
    from ._linearizability import Violation
    from ._steps import Scenario


class RaceFound(AssertionError):
    """Raised when a history is not linearizable; the message is the story (see `report`).

    Attributes:
      report: The story, as text.
      history: The history that is not linearizable.
      violation: The checker's verdict on it.
      scenario: The example that failed, from a `ScenarioTest` (a `Scenario`, to give to
        its ``replay`` or ``minimal``); ``None`` from a `ServerMachine`.
    """

    def __init__(
        self,
        report: str,
        history: History,
        violation: Violation,
        scenario: Scenario | None = None,
    ) -> None:
        super().__init__(report)
        self.report = report
        self.history = history
        self.violation = violation
        self.scenario = scenario


class NondeterministicTest(AssertionError):
    """Raised instead of `RaceFound` when a failing example, run again, gave another history.

    The test reads something outside Hypothesis' control (the wall clock,
    unseeded randomness, the network), so no story about it can be trusted.
    """


class IncompleteHistory(AssertionError):
    """Raised when a call did not end with exactly one outcome (trioserver's guarantee 6)."""


class RunStuck(IncompleteHistory):
    """Raised when an example's trio run stopped for good: every task waits, no deadline is
    pending (virtual time cannot move on), and no task has run for a while of real time. A
    deadlock (a lost wake-up, waits in a cycle): the calls in flight would never end, nor
    would the run, so it is abandoned and reported instead of hanging the test.

    Attributes:
      report: The message, as text: when it stopped, the tasks that wait and where, the calls
        that never ended, and how to replay it.
      history: The history as far as it went.
      waiting: One line per task that waits (its name, and the innermost function it waits in).
    """

    def __init__(self, report: str, history: History, waiting: tuple[str, ...]) -> None:
        super().__init__(report)
        self.report = report
        self.history = history
        self.waiting = waiting


class ModelMismatch(AssertionError):
    """Raised instead of `RaceFound` when the server and the model disagree on a call that ran
    alone: no other operation overlapped it or anything before it, so no interleaving is
    involved. The model (or the client operation, or the test's harness) is what to look at.

    Attributes:
      report: The message, as text.
      history: The history.
      entry: The call on which they disagree, as recorded (the server's answer).
      expected: What the model says the call does.
    """

    def __init__(self, report: str, history: History, entry: Entry, expected: Result) -> None:
        super().__init__(report)
        self.report = report
        self.history = history
        self.entry = entry
        self.expected = expected
