"""Figures for the race hunts of property_tests/: how fast each race is found, how fast twins pass.

For every seeded race: examples to the first failure, and wall and processor time to the
first failure (Hypothesis' generate phase only, no shrinking, no example database), median
and worst over 20 seeds, and whether the race was found on each seed; and, for the scenario
races, the size of the reported example (seed 0, shrunk by Hypothesis, then made minimal as
`ScenarioTest.hypothesis_test` does): operations in the replay against operations in the
story. For every correct twin: wall time for 1,000 examples (seed 0). Prints a table and
writes benchmarks/results/race_figures.json. (The machine is shared: processor time is the
steadier figure when it is busy.)

    .venv/bin/python -m benchmarks.race_figures            # everything (a few minutes)
    .venv/bin/python -m benchmarks.race_figures --seeds 5  # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import hypothesis
import trio

from property_tests.races import (
    SplitTheaterMachine,
    Target,
    TheaterMachine,
    bank_twin,
    cache_twin,
    counter_twin,
    hunt,
    lost_update,
    overdraft,
    shelf_twin,
    split_theater_scenarios,
    stale_cache,
    task_order,
    theater_scenarios,
    wall_clock,
)
from trioserver.testing import NondeterministicTest, RaceFound, ScenarioTest, hook_available

RESULTS = Path(__file__).parent / "results" / "race_figures.json"

RACES: dict[str, tuple[Target, type[BaseException]]] = {
    "theater split check/reserve (machine)": (SplitTheaterMachine, RaceFound),
    "theater split check/reserve (scenarios)": (split_theater_scenarios(), RaceFound),
    "counter get/set lost update": (lost_update(), RaceFound),
    "bank balance/withdraw/deposit overdraft": (overdraft(), RaceFound),
    "cache: slow fetch overwrites a newer write": (stale_cache(), RaceFound),
    "move counting on its tasks' order (non-FIFO)": (task_order(), RaceFound),
    "wall-clock session ids (nondeterministic)": (wall_clock(), NondeterministicTest),
}

TWINS: dict[str, Target] = {
    "theater reserve in one @call, hung payments (machine)": TheaterMachine,
    "theater reserve in one @call, hung payments (scenarios)": theater_scenarios(),
    "counter @calls": counter_twin(),
    "bank @call transfer": bank_twin(),
    "cache @call read_through/write_through": cache_twin(),
    "shelf @call move_to": shelf_twin(),
}


def measure_race(target: Target, expected: type[BaseException], seeds: int) -> dict[str, Any]:
    examples: list[int] = []
    seconds: list[float] = []
    cpu: list[float] = []
    found = 0
    for seed in range(seeds):
        result = hunt(target, seed, max_examples=1000, shrink=False)
        if isinstance(result.error, expected):
            found += 1
            examples.append(result.examples)
            seconds.append(result.seconds)
            cpu.append(result.cpu_seconds)
    return {
        "seeds": seeds,
        "found": found,
        "examples_median": statistics.median(examples) if examples else None,
        "examples_worst": max(examples) if examples else None,
        "seconds_median": statistics.median(seconds) if seconds else None,
        "seconds_worst": max(seconds) if seconds else None,
        "cpu_seconds_median": statistics.median(cpu) if cpu else None,
        "cpu_seconds_worst": max(cpu) if cpu else None,
        **measure_replay(target, expected),
    }


def measure_replay(target: Target, expected: type[BaseException]) -> dict[str, Any]:
    """Seed 0, shrunk, made minimal: operations in the replay and in the story."""
    if not isinstance(target, ScenarioTest) or expected is not RaceFound:
        return {"replay_operations": None, "story_operations": None}
    error = hunt(target, 0, max_examples=1000).error
    if not isinstance(error, RaceFound) or error.scenario is None:
        return {"replay_operations": None, "story_operations": None}
    minimal = target.minimal(error.scenario)
    if minimal is None:  # pragma: no cover (it failed once; a replay fails again)
        return {"replay_operations": None, "story_operations": None}
    scenario, race = minimal
    return {
        "replay_operations": scenario.operations,
        "story_operations": len(race.violation.entries),
    }


def measure_twin(target: Target, examples: int) -> dict[str, Any]:
    result = hunt(target, 0, max_examples=examples)
    return {
        "examples": result.examples,
        "passed": result.error is None,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "error": None if result.error is None else type(result.error).__name__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    races = {name: measure_race(t, e, args.seeds) for name, (t, e) in RACES.items()}
    twins = {name: measure_twin(t, args.examples) for name, t in TWINS.items()}

    print(f"Races ({args.seeds} seeds; examples and time to the first failure, no shrinking)")
    print(f"{'race':<46} {'found':>7} {'examples':>9} {'wall s':>13} {'cpu s':>13} {'replay':>7}")
    print(f"{'':<46} {'':>7} {'med/worst':>9} {'med/worst':>13} {'med/worst':>13} {'/story':>7}")
    for name, r in races.items():
        ex = f"{r['examples_median']}/{r['examples_worst']}"
        wall = cpu = "-"
        if r["seconds_median"] is not None:
            wall = f"{r['seconds_median']:.2f}/{r['seconds_worst']:.2f}"
            cpu = f"{r['cpu_seconds_median']:.2f}/{r['cpu_seconds_worst']:.2f}"
        replay = "-"
        if r["replay_operations"] is not None:
            replay = f"{r['replay_operations']}/{r['story_operations']}"
        print(
            f"{name:<46} {r['found']:>3}/{r['seeds']:<3} {ex:>9} {wall:>13} {cpu:>13} {replay:>7}"
        )
    print()
    print(f"Correct twins ({args.examples} examples, seed 0)")
    print(f"{'twin':<56} {'passed':>6} {'examples':>8} {'wall s':>7} {'cpu s':>7}")
    for name, t in twins.items():
        print(
            f"{name:<56} {t['passed']!s:>6} {t['examples']:>8} {t['seconds']:>7.2f} "
            f"{t['cpu_seconds']:>7.2f}"
        )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "command": "python -m benchmarks.race_figures " + " ".join(argv or sys.argv[1:]),
                "python": platform.python_version(),
                "trio": trio.__version__,
                "hypothesis": hypothesis.__version__,
                "scheduler_hook": hook_available(),
                "machine": platform.machine(),
                "races": races,
                "twins": twins,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
