"""Figures for the race hunts of property_tests/: how fast each race is found, how fast twins pass.

For every seeded race: examples to the first failure and wall time to the first failure
(Hypothesis' generate phase only, no shrinking, no example database), median and worst over
20 seeds, and whether the race was found on each seed. For every correct twin: wall time for
1,000 examples (seed 0). Prints a table and writes benchmarks/results/race_figures.json.

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
    counter_twin,
    hunt,
    lost_update,
    overdraft,
    split_theater_scenarios,
    theater_scenarios,
    wall_clock,
)
from trioserver.testing import NondeterministicTest, RaceFound, hook_available

RESULTS = Path(__file__).parent / "results" / "race_figures.json"

RACES: dict[str, tuple[Target, type[BaseException]]] = {
    "theater split check/reserve (machine)": (SplitTheaterMachine, RaceFound),
    "theater split check/reserve (scenarios)": (split_theater_scenarios(), RaceFound),
    "counter get/set lost update": (lost_update(), RaceFound),
    "bank balance/withdraw/deposit overdraft": (overdraft(), RaceFound),
    "wall-clock session ids (nondeterministic)": (wall_clock(), NondeterministicTest),
}

TWINS: dict[str, Target] = {
    "theater reserve in one @call, hung payments (machine)": TheaterMachine,
    "theater reserve in one @call, hung payments (scenarios)": theater_scenarios(),
    "counter @calls": counter_twin(),
    "bank @call transfer": bank_twin(),
}


def measure_race(target: Target, expected: type[BaseException], seeds: int) -> dict[str, Any]:
    examples: list[int] = []
    seconds: list[float] = []
    found = 0
    for seed in range(seeds):
        result = hunt(target, seed, max_examples=1000, shrink=False)
        if isinstance(result.error, expected):
            found += 1
            examples.append(result.examples)
            seconds.append(result.seconds)
    return {
        "seeds": seeds,
        "found": found,
        "examples_median": statistics.median(examples) if examples else None,
        "examples_worst": max(examples) if examples else None,
        "seconds_median": statistics.median(seconds) if seconds else None,
        "seconds_worst": max(seconds) if seconds else None,
    }


def measure_twin(target: Target, examples: int) -> dict[str, Any]:
    result = hunt(target, 0, max_examples=examples)
    return {
        "examples": result.examples,
        "passed": result.error is None,
        "seconds": result.seconds,
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

    print(f"Races ({args.seeds} seeds; examples and wall time to the first failure, no shrinking)")
    print(f"{'race':<44} {'found':>7} {'examples med/worst':>19} {'seconds med/worst':>18}")
    for name, r in races.items():
        ex = f"{r['examples_median']}/{r['examples_worst']}"
        sec = (
            f"{r['seconds_median']:.3f}/{r['seconds_worst']:.3f}"
            if r["seconds_median"] is not None
            else "-"
        )
        print(f"{name:<44} {r['found']:>3}/{r['seeds']:<3} {ex:>19} {sec:>18}")
    print()
    print(f"Correct twins ({args.examples} examples, seed 0)")
    print(f"{'twin':<56} {'passed':>6} {'examples':>8} {'seconds':>8}")
    for name, t in twins.items():
        print(f"{name:<56} {t['passed']!s:>6} {t['examples']:>8} {t['seconds']:>8.2f}")

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
