"""Hypothesis settings suited to race tests."""

from __future__ import annotations

from typing import Any

import hypothesis


def race_settings(**changes: Any) -> hypothesis.settings:
    """Hypothesis settings for race tests: no deadline, and no "explain" phase.

    Each example is a whole trio run, so Hypothesis' per-example deadline only
    makes tests flaky on a busy machine; the explain phase re-runs a failing
    example many times over to annotate lines, which the story already does
    better, at many times the cost of finding the race.

    Args:
      **changes: Any other settings (``max_examples=500``, ``database=None``...).

    Returns:
      The settings, on top of the current profile.
    """
    phases = [phase for phase in hypothesis.Phase if phase is not hypothesis.Phase.explain]
    options: dict[str, Any] = {"deadline": None, "phases": phases}
    options.update(changes)
    return hypothesis.settings(**options)
