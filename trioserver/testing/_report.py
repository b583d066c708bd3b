"""The failure report: a story with one column per caller, on virtual time."""

from __future__ import annotations

from collections.abc import Sequence

from ._history import Entry
from ._linearizability import Violation
from ._scheduler import Decision

WIDTH = 72
"""The widest a column gets: a longer cell is cut, ending in ``...``."""


def _cell(text: str) -> str:
    return text if len(text) <= WIDTH else text[: WIDTH - 3] + "..."


def timeline(entries: Sequence[Entry]) -> str:
    """The entries as a table: one column per caller, one row per invocation or ending.

    Args:
      entries: Recorded entries.

    Returns:
      The table, as lines of text.
    """
    callers = list(dict.fromkeys(entry.caller for entry in entries))
    rows: list[tuple[int, float, str, str]] = []
    for entry in entries:
        rows.append((entry.invoked, entry.invoked_at, entry.caller, f"{entry.operation} ..."))
        if entry.ending is None:
            rows.append((1 << 62, float("nan"), entry.caller, "(never ended)"))
        else:
            assert entry.ended is not None
            assert entry.ended_at is not None
            rows.append((entry.ended, entry.ended_at, entry.caller, f"  {entry.ending}"))
    rows.sort()
    # Each column as wide as what it shows (up to WIDTH).
    widths = {caller: len(_cell(caller)) for caller in callers}
    for _, _, caller, text in rows:
        widths[caller] = max(widths[caller], len(_cell(text)))
    header = "    time | " + " | ".join(f"{_cell(c):<{widths[c]}}" for c in callers)
    lines = [header.rstrip(), "-" * len(header.rstrip())]
    for _, time, caller, text in rows:
        cells = [f"{_cell(text) if c == caller else '':<{widths[c]}}" for c in callers]
        lines.append((f"{time:8.3f} | " + " | ".join(cells)).rstrip())
    return "\n".join(lines)


def story(
    name: str,
    violation: Violation,
    decisions: Sequence[Decision],
    replay: str,
) -> str:
    """The report of a violation: what each caller saw, and why no serial order explains it.

    Args:
      name: The checked object's name.
      violation: The checker's verdict.
      decisions: The scheduling decisions that departed from the canonical order.
      replay: How to replay the example.

    Returns:
      The report, as text.
    """
    where = "" if violation.partition is None else f" (partition {violation.partition!r})"
    lines = [
        f"{name}{where}: not linearizable. No order of these calls, one at a time, gives what "
        f"the callers saw.",
        "",
        timeline(violation.entries),
        "",
        "Scheduling decisions (departures from oldest-task-first):",
    ]
    lines += [f"  {d.describe()}" for d in decisions] or ["  none: the canonical order"]
    lines += ["", f"Longest linearizable prefix ({len(violation.prefix)} operations):"]
    lines += [f"  {i}. {e.describe()}" for i, e in enumerate(violation.prefix, 1)] or ["  (empty)"]
    stuck = violation.stuck
    lines += [
        "Cannot be placed next:",
        f"  {stuck.describe()}",
        f"  but after the prefix, the model says: {violation.expected}",
        "",
        f"Replay: {replay}",
    ]
    return "\n".join(lines)
