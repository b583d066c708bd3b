"""What a failing race test raises: each an `AssertionError`, so test runners report a failure."""

from __future__ import annotations


class RaceFound(AssertionError):
    """Raised when a history is not linearizable; the message is the story (see `report`).

    Attributes:
      report: The story, as text.
    """

    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report


class NondeterministicTest(AssertionError):
    """Raised instead of `RaceFound` when a failing example, run again, gave another history.

    The test reads something outside Hypothesis' control (the wall clock,
    unseeded randomness, the network), so no story about it can be trusted.
    """


class IncompleteHistory(AssertionError):
    """Raised when a call did not end with exactly one outcome (trioserver's guarantee 6)."""
