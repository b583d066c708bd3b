"""Machine instructions per call, counted by valgrind: ratios that do not move with the machine.

A ratio of calls per second moves with the machine: the same code measured the Event handler
at 100 callers at 1.16x the actor in a full run on an AMD EPYC, and at 0.92x to 1.10x in runs
on an Intel Xeon VM a day later. Counting instructions does not. ``valgrind --tool=cachegrind``
counts every instruction a process executes (``I refs``), whatever else the machine runs. This
section runs each contender in fresh processes under it, with `LOW` and with `HIGH` calls.
The difference of the two counts, divided by ``HIGH - LOW``, is what one more call costs.
That leaves out the interpreter's start, the imports and the warm-up.

An instruction is not a unit of time. A cache miss or a mispredicted branch costs more on one
CPU than on another, so a ratio of instructions is not a ratio of speed on any given machine.
What it gives is the work each path does, the same from run to run within about a percent.
That tells a change that removed work from a run that happened to be lucky. What would
still move it is made the same in every child: string hashing (``PYTHONHASHSEED=0``) and the
order in which trio's scheduler runs a batch of tasks (its random generator, which trio's own
Hypothesis hook seeds for the same reason, seeded with 0). Two runs of a point then differ by
a few tenths of a percent at most, and most by less; one point once moved by 0.85% (what is
left comes from the clock: the durations recorded differ, and so does counting them).

Once in a while a run does a lump of work besides its calls: a recorded run once counted the
channel handler at 1 caller at 225,782 instructions a call, where every other count of that
revision, before and after, gave 211,800 to 214,900. With only ``HIGH - LOW`` calls to
share it, one lump moves a point by thousands of instructions a call. Such work only adds
instructions to a run, so each count is taken `REPEATS` times, each in a fresh process, and
the least is kept: a lump would have to strike every repeat to stay.

Points:

- the bodies of `awaiting`: trioserver with a budget and without one, the hand-written actor
  (the reference), and the lowest-level mailbox running the same body. That mailbox has no
  deadline, no statistics and no checks, so it is about the least any server task adds to the
  body;
- `casts`: ``@cast`` and the actor's fire-and-forget send;
- `contenders`: the non-suspending ``@call`` and the plain ``def``, with the checkpoint floor,
  the uncontended `trio.Lock` and the actor;
- the Event body with a budget again, with parts of the contract removed (`ablation.removed`):
  what the per-method timings, the read of the caller's deadline and the run's timers cost in
  instructions.

``python -m benchmarks --only instructions``; skipped, saying so, where valgrind is not
installed. The child is ``python -m benchmarks.instructions NAME CALLERS CALLS [PART ...]``.

To judge a change of a percent or less, count one point on the old tree and on the new with
``python -m benchmarks.instructions point NAME CALLERS [PART ...] --step-clock --repeats 1``
(2,000 and 6,000 calls). ``--step-clock`` makes trio's clock advance 1 µs at every read
instead of following time: every run then records the same durations, and two runs of one
revision agree within a few instructions. A stepped clock is not the clock a user has (a read
costs less, and the durations counted are other ones), so the section itself keeps the real
one, and its figures and a stepped point's are not to be compared.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import attrs

from ._common import ROOT

if TYPE_CHECKING:
    from .contenders import Contender

LOW = 1000  # calls in the first run of a point
HIGH = 3000  # calls in the second: (count(HIGH) - count(LOW)) / (HIGH - LOW) per call
REPEATS = 2  # fresh processes counted for each, the least kept: a lump only adds instructions
CALLERS = (1, 100)
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")
STEP_CLOCK = "TRIOSERVER_BENCH_STEP_CLOCK"  # set to "1": the child's clock steps (`step_clock`)
STEP = 1e-6  # seconds a stepped clock advances at each read


@attrs.frozen
class Point:
    """One contender at one number of callers, maybe with parts of the contract removed."""

    name: str
    reference: str
    callers: int
    removed: tuple[str, ...] = ()
    stepped: bool = False  # trio's clock steps in its children (`step_clock`): `point` only

    @property
    def key(self) -> str:
        return "/".join((self.name, *self.removed))


def points() -> list[Point]:
    from .awaiting import BODIES, actor_name
    from .casts import ACTOR_CASTS
    from .contenders import ACTOR, FLOOR, LOCK

    found: list[Point] = []
    for callers in CALLERS:
        for body in BODIES:
            actor = actor_name(body)
            for name in (f"{body}_budget", f"{body}_none", f"{body}_lowlevel", actor):
                found.append(Point(name, actor, callers))
        for removed in (("timings",), ("timings", "deadline"), ("timers",)):
            found.append(Point("event_budget", actor_name("event"), callers, removed))
        found += [Point(name, ACTOR_CASTS, callers) for name in ("cast_budget", ACTOR_CASTS)]
        for name in ("trioserver_async", "trioserver_def", FLOOR, LOCK, ACTOR):
            found.append(Point(name, ACTOR, callers))
    return found


def contender(name: str) -> Contender:
    """The contender `name` from any of the sections this one counts."""
    from . import awaiting, casts, contenders

    pool = awaiting.contenders() + casts.CASTS + contenders.ROUNDTRIP
    pool += [awaiting.lowlevel(body) for body in awaiting.BODIES]
    by_name = {c.name: c for c in pool}
    if name not in by_name:
        raise KeyError(f"no contender named {name!r}: one of {', '.join(sorted(by_name))}")
    return by_name[name]


def child(argv: list[str]) -> None:
    """Measure ``CALLS`` calls of contender ``NAME`` by ``CALLERS`` callers, with the parts of
    the contract named after them removed (in this process, which valgrind counts)."""
    from trio._core import _run as trio_run

    from .ablation import removed
    from .roundtrip import measure_trio

    name, callers, calls, *parts = argv
    scheduling = getattr(trio_run, "_r", None)  # trio's scheduler's random order
    if scheduling is not None:
        scheduling.seed(0)
    if os.environ.get(STEP_CLOCK) == "1":
        step_clock(trio_run)
    with removed(tuple(parts)):
        measure_trio(contender(name), int(callers), int(calls))


def step_clock(trio_run: Any) -> None:
    """Make trio's system clock advance `STEP` at every read (from 1,000 s), not with time."""
    trio_run.perf_counter = functools.partial(next, itertools.count(1000.0, STEP))


def count(point: Point, calls: int) -> int:
    """Instructions a fresh process executes measuring `calls` calls at `point`."""
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.instructions",
        point.name, str(point.callers), str(calls), *point.removed,
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONHASHSEED": "0", STEP_CLOCK: "1" if point.stepped else "0"}
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False
    )
    found = _REFS.search(done.stderr)
    if done.returncode or found is None:
        raise RuntimeError(f"valgrind failed on {point.key} ({done.returncode}): {done.stderr}")
    return int(found.group(1).replace(",", ""))


def least(point: Point, calls: int, repeats: int = REPEATS) -> int:
    """The least of `repeats` counts of `calls` calls at `point` (see the module's doc)."""
    return min(count(point, calls) for _ in range(repeats))


def per_call(point: Point, low: int = LOW, high: int = HIGH, repeats: int = REPEATS) -> float:
    return (least(point, high, repeats) - least(point, low, repeats)) / (high - low)


def run_instructions() -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        print("  instructions: skipped: valgrind is not installed", file=sys.stderr)
        return {"error": "valgrind is not installed (apt-get install valgrind)"}
    began = time.perf_counter()
    todo = points()
    workers = max(1, min(len(todo), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        counted = list(pool.map(per_call, todo))
    rows: list[dict[str, Any]] = []
    by_key = {(p.key, p.callers): n for p, n in zip(todo, counted, strict=True)}
    for point, n in zip(todo, counted, strict=True):
        reference = by_key[(point.reference, point.callers)]
        rows.append({
            "name": point.key, "label": _label(point), "callers": point.callers,
            "reference": point.reference, "instructions": n, "x_reference": reference / n,
        })  # fmt: skip
    print(f"  instructions: {len(todo)} points in {time.perf_counter() - began:.0f} s")
    return {"low": LOW, "high": HIGH, "repeats": REPEATS, "rows": rows}


_REMOVED = {
    "timings": "without per-method timings",
    "deadline": "without the deadline read",
    "timers": "without the run's timers",
}


def _label(point: Point) -> str:
    label = contender(point.name).label
    if point.removed:
        label += ", " + ", ".join(_REMOVED[part] for part in point.removed)
    return label


def render_instructions(section: dict[str, Any], *, markdown: bool = False) -> str:
    """The section as text: instructions per call and the ratio to each row's reference."""
    from .report import table

    heading = "### " if markdown else "== "
    title = f"{heading}Instructions per call (valgrind)"
    if "error" in section:
        return f"{title}\nSkipped: {section['error']}.\n"
    repeats = section.get("repeats", 1)  # (runs recorded before repeats were counted: 1)
    least = f"least of {repeats} " if repeats > 1 else ""
    parts = [
        f"{title}: ({least}count{'s' if repeats > 1 else ''} at {section['high']:,} calls - "
        f"{least}at {section['low']:,}) / {section['high'] - section['low']:,}; "
        f"x reference = its instructions / these"
    ]
    for callers in CALLERS:
        rows = [row for row in section["rows"] if row["callers"] == callers]
        parts.append(f"{callers} caller{'s' if callers > 1 else ''}:")
        parts.append(
            table(
                ["contender", "instructions", "reference", "x reference"],
                [
                    [
                        row["label"],
                        f"{row['instructions']:,.0f}",
                        row["reference"],
                        f"{row['x_reference']:.2f}x",
                    ]
                    for row in rows
                ],
                markdown=markdown,
            )
        )
    return "\n\n".join(parts) + "\n"


def point_main(argv: list[str]) -> int:
    """``point NAME CALLERS [PART ...] [--step-clock] [--low N] [--high N] [--repeats N]``:
    print one point's instructions per call."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions point")
    parser.add_argument("name", help="a contender, as the section names it (event_budget, ...)")
    parser.add_argument("callers", type=int)
    parser.add_argument("parts", nargs="*", help=f"parts patched out: {', '.join(_REMOVED)}")
    parser.add_argument("--step-clock", action="store_true", help="trio's clock steps 1 µs a read")
    parser.add_argument("--low", type=int, default=2000)
    parser.add_argument("--high", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="counts of each, least kept")
    options = parser.parse_args(argv)
    unknown = [part for part in options.parts if part not in _REMOVED]
    if unknown:
        parser.error(f"no part named {', '.join(map(repr, unknown))}: {', '.join(_REMOVED)}")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    contender(options.name)  # (an unknown name fails here, not in a child)
    parts = tuple(options.parts)
    point = Point(options.name, options.name, options.callers, parts, options.step_clock)
    n = per_call(point, options.low, options.high, options.repeats)
    clock = "stepped clock" if options.step_clock else "trio's clock"
    print(f"{point.key} {point.callers} callers: {n:,.0f} instructions a call ({clock}, "
          f"{options.low:,} and {options.high:,} calls, least of {options.repeats})")  # fmt: skip
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["point"]:
        sys.exit(point_main(sys.argv[2:]))
    child(sys.argv[1:])
