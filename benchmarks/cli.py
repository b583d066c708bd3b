"""``python -m benchmarks``: run the sections, print the tables, write the JSON."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from ._common import PARTIAL, RESULTS, machine
from .report import render, targets

SECTIONS = (
    "roundtrip",
    "budget",
    "awaiting",
    "casts",
    "ablation",
    "instructions",
    "instrument",
    "statistics",
    "memory",
    "overload",
    "waiting",
    "durable",
    "ray",
    "porcupine",
    "profile",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="trioserver against the alternatives: round trips, the price of time "
        "limits, handlers that await, casts, what the contract costs a call (parts of it "
        "patched out), instructions per call (valgrind), instruments and statistics reads, "
        "memory per idle server, overload, a profile of the call path, waiting without "
        "holding the server (guarded calls, released blocks, cycle detection), durable casts "
        "(SQLite FULL and NORMAL against an in-memory cast), servers in Ray actors (against a "
        "raw Ray call), the linearizability checker on Porcupine's histories (against "
        "Porcupine, if go is on PATH), and the targets they meet.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer rounds and calls; 10k servers only (100 busy ones)",
    )
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        metavar="NAME",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 7; quick 5)")
    parser.add_argument(
        "--calls", type=int, help="calls per measurement (default 20000; quick 4000)"
    )
    parser.add_argument("--seed", type=int, default=4, help="shuffle seed (default 4)")
    parser.add_argument(
        "--json",
        type=Path,
        help="where to write the figures (default: results/latest.json for a full run of "
        "every section, else results/partial.json)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="JSON",
        help="print the Markdown tables of a results file and exit (runs nothing)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.markdown is not None:
        recorded = json.loads(args.markdown.read_text())
        print(render(recorded, markdown=True), end="")
        if "instructions" in recorded:
            from .instructions import render_instructions

            print("\n" + render_instructions(recorded["instructions"], markdown=True), end="")
        if "porcupine" in recorded:
            from .porcupine import render_porcupine

            print("\n" + render_porcupine(recorded["porcupine"], markdown=True), end="")
        return 0
    sections = args.only or list(SECTIONS)
    rounds = args.rounds or (5 if args.quick else 7)
    calls = args.calls or (4000 if args.quick else 20000)
    results: dict[str, Any] = {"meta": machine() | {"quick": args.quick, "argv": sys.argv[1:]}}
    began = time.perf_counter()
    profile_text = ""
    # Imported here: each section pulls in what it measures, and `--only` stays quick.
    if "roundtrip" in sections:
        from .roundtrip import run_roundtrip

        results["roundtrip"] = run_roundtrip(rounds=rounds, calls=calls, seed=args.seed)
    if "budget" in sections:
        from .roundtrip import run_budget

        results["budget"] = run_budget(rounds=rounds, calls=calls, seed=args.seed + 1)
    if "awaiting" in sections:
        from .awaiting import run_awaiting

        results["awaiting"] = run_awaiting(rounds=rounds, calls=calls, seed=args.seed + 2)
    if "casts" in sections:
        from .casts import run_casts

        results["casts"] = run_casts(rounds=rounds, calls=calls, seed=args.seed + 3)
    if "ablation" in sections:
        from .ablation import run_ablation

        # (three times the rounds, half the calls: short measurements close together in time)
        results["ablation"] = run_ablation(rounds=3 * rounds, calls=calls // 2, seed=args.seed + 9)
    instructions_text = ""
    if "instructions" in sections:
        from .instructions import render_instructions, run_instructions

        results["instructions"] = run_instructions()
        instructions_text = render_instructions(results["instructions"])
    if "instrument" in sections:
        from .instruments import run_instruments

        results["instrument"] = run_instruments(rounds=rounds, calls=calls, seed=args.seed + 4)
    if "statistics" in sections:
        from .stats import run_statistics

        results["statistics"] = run_statistics(rounds=rounds, calls=calls, seed=args.seed + 5)
    if "memory" in sections:
        from .memory import run_memory

        if args.quick:
            results["memory"] = run_memory(counts=(10_000,), busy_servers=100)
        else:
            results["memory"] = run_memory(counts=(10_000, 100_000))
    if "overload" in sections:
        from .overload import run_overload

        results["overload"] = run_overload()
    if "waiting" in sections:
        from .waiting import run_waiting

        results["waiting"] = run_waiting(
            rounds=rounds, calls=calls, seed=args.seed + 6, quick=args.quick
        )
    if "durable" in sections:
        from .durable import run_durable

        results["durable"] = run_durable(rounds=rounds, calls=calls, seed=args.seed + 7)
    if "ray" in sections:
        if importlib.util.find_spec("ray") is None:  # Ray is in the dev extra, not a dependency
            results["ray"] = {"error": "Ray is not installed: pip install 'trioserver[ray]'"}
            print("  ray: skipped: Ray is not installed", file=sys.stderr)
        else:
            from .ray import run_ray

            results["ray"] = run_ray(rounds=rounds, calls=calls, seed=args.seed + 8)
    porcupine_text = ""
    if "porcupine" in sections:
        from .porcupine import render_porcupine, run_porcupine

        results["porcupine"] = run_porcupine(repeat=1 if args.quick else 3)
        porcupine_text = render_porcupine(results["porcupine"])
    if "profile" in sections:
        from .profiling import format_profile, run_profile

        results["profile"] = run_profile(calls=calls)
        profile_text = format_profile(results["profile"])
    results["meta"]["seconds"] = time.perf_counter() - began
    results["targets"] = targets(results)
    if "porcupine" in results:
        from .porcupine import targets_porcupine

        results["targets"]["issue_16"] = targets_porcupine(results)
    print(render(results), end="")
    if instructions_text:
        print("\n" + instructions_text, end="")
    if porcupine_text:
        print("\n" + porcupine_text, end="")
    if profile_text:
        print("\n" + profile_text, end="")
    full = set(sections) == set(SECTIONS) and not args.quick and args.rounds is None
    path: Path = args.json or RESULTS / ("latest.json" if full else PARTIAL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nFigures written to {path} ({results['meta']['seconds']:.0f} s)")
    if path.resolve().parent == RESULTS and path.name != PARTIAL:
        redraw_charts()
    return 0


def redraw_charts() -> None:
    """The docs' charts, from the recorded runs (this one now among them)."""
    if importlib.util.find_spec("matplotlib") is None:  # in the dev extra, not a dependency
        print("Charts not redrawn: matplotlib is not installed (pip install matplotlib)")
        return
    from .charts import redraw

    for chart in redraw():
        print(f"Chart drawn: {chart}")
