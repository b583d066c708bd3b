"""One round trip measured in a fresh process, on the trioserver of a given tree.

``python -P -m benchmarks._child TREE BODY CALLERS CALLS``, with ``PYTHONPATH=TREE:<repo>``
(`waiting` runs it so, for each tree it compares): checks that ``trioserver`` was imported from
TREE (exit status 3 if not), measures `CALLS` calls by `CALLERS` callers with
`roundtrip.measure_trio`, and prints the sample as one JSON line. It uses only what every tree
compared has: the servers of `contenders` and `awaiting`, as they were before guarded calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

BODIES = ("bump", "bump_def", "event")
"""``bump``: `contenders.Counter.bump` (async, returns at once); ``bump_def``: its plain ``def``;
``event``: `awaiting.Budgeted.event` (waits for a `trio.Event` the device task sets)."""


def main(argv: list[str]) -> int:
    tree, body, callers, calls = Path(argv[0]).resolve(), argv[1], int(argv[2]), int(argv[3])
    import trioserver  # first: from the tree under test, or nothing is measured

    found = Path(trioserver.__file__).resolve()
    if not found.is_relative_to(tree):
        print(f"trioserver imported from {found}, not from {tree}", file=sys.stderr)
        return 3
    from . import awaiting, contenders
    from .roundtrip import measure_trio

    if body == "event":
        opener = awaiting.trioserver_opener(awaiting.Budgeted, "event")
    else:
        opener = contenders.trioserver_opener(contenders.Counter, body)
    sample = measure_trio(contenders.Contender(body, body, opener), callers, calls)
    figures: dict[str, Any] = {
        "calls": sample.calls,
        "seconds": sample.seconds,
        "cpu_seconds": sample.cpu_seconds,
        "p50_us": sample.p50_us,
        "p99_us": sample.p99_us,
        "trioserver_file": str(found),
    }
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
