"""One round trip measured in a fresh process, on the trioserver of a given tree.

``python -P -m benchmarks._child TREE BODY CALLERS CALLS``, with ``PYTHONPATH=TREE:<repo>``
(`waiting` runs it so, for each tree it compares): checks that ``trioserver`` was imported from
TREE (exit status 3 if not), measures `CALLS` calls by `CALLERS` callers with
`roundtrip.measure_trio`, counts the Python-level calls a call makes (`count_calls`), and prints
the figures as one JSON line. It uses only what every tree compared has: the servers of
`contenders` and `awaiting`, as they were before guarded calls.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

if TYPE_CHECKING:
    from .contenders import Opener

BODIES = ("bump", "bump_def", "event")
"""``bump``: `contenders.Counter.bump` (async, returns at once); ``bump_def``: its plain ``def``;
``event``: `awaiting.Budgeted.event` (waits for a `trio.Event` the device task sets)."""
COUNTED = 1000  # calls counted by `count_calls`


def count_calls(opener: Opener, callers: int, calls: int = COUNTED) -> float:
    """Python-level calls (functions called, C functions included, and coroutines resumed:
    `sys.setprofile`'s ``call`` and ``c_call`` events) per call, `callers` callers making
    `calls` calls in all, after a warm-up. Unlike time, machine load does not move it."""
    return trio.run(_count, opener, callers, calls)


async def _count(opener: Opener, callers: int, calls: int) -> float:
    counted = [0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" or event == "c_call":
            counted[0] += 1

    async with opener() as bump:
        for _ in range(100):
            await bump(1)
        go = trio.Event()

        async def caller() -> None:
            await go.wait()
            for _ in range(calls // callers):
                await bump(1)

        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            on: Callable[..., object] = profile
            sys.setprofile(on)
            go.set()
        sys.setprofile(None)
    return counted[0] / (calls // callers * callers)


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
    python_calls = count_calls(opener, callers)
    figures: dict[str, Any] = {
        "calls": sample.calls,
        "seconds": sample.seconds,
        "cpu_seconds": sample.cpu_seconds,
        "p50_us": sample.p50_us,
        "p99_us": sample.p99_us,
        "python_calls_per_call": python_calls,
        "trioserver_file": str(found),
    }
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
