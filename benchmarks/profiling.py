"""Where a trioserver round trip spends its time: cProfile self time, and a pyinstrument tree.

``python -m benchmarks --only profile`` profiles ``@call async`` round trips at 1 and at 100
callers in a real `trio.run`. It prints the top self-time entries inside trioserver's modules
(the call path runs through ``_caller``, ``_handoff``, ``_mailbox``, ``_loop``, ``_reply``,
``_statistics``, ``_timers`` and ``_private``, and the generated handle method) and trio's
scheduler (``trio/_core/_run.py``), and writes pyinstrument's call tree to
``benchmarks/results/profile-<callers>.txt``. cProfile inflates small functions; read its
shares as relative, and check any change with the round-trip section.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import trio
from pyinstrument import Profiler

from ._common import RESULTS
from .contenders import ROUNDTRIP, Contender
from .roundtrip import measure_trio

CALL_PATH = ("trioserver/_", "<trioserver handle")  # (every module: the path spans most)
SCHEDULER = ("trio/_core/_run.py",)
TOP = 15


def _contender(name: str = "trioserver_async") -> Contender:
    return next(c for c in ROUNDTRIP if c.name == name)


def _where(filename: str) -> str | None:
    for part in CALL_PATH + SCHEDULER:
        if part in filename:
            return part
    return None


def cprofile(callers: int, calls: int) -> dict[str, Any]:
    contender = _contender()
    measure_trio(contender, callers, 2000)  # warm up imports and caches
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    measure_trio(contender, callers, calls)
    profiler.disable()
    seconds = time.perf_counter() - began
    profile = pstats.Stats(profiler).get_stats_profile()
    total = sum(f.tottime for f in profile.func_profiles.values())
    entries: list[dict[str, Any]] = []
    for function, f in profile.func_profiles.items():
        where = _where(f.file_name)
        if where is None:
            continue
        entries.append(
            {
                "function": f"{Path(f.file_name).name}:{f.line_number}({function})",
                "where": where,
                "calls": f.ncalls,
                "self_s": f.tottime,
                "self_share": f.tottime / total if total else 0.0,
                "self_us_per_round_trip": f.tottime / calls * 1e6,
                "cumulative_s": f.cumtime,
            }
        )
    entries.sort(key=lambda e: e["self_s"], reverse=True)
    inside = sum(e["self_s"] for e in entries)
    return {
        "callers": callers,
        "calls": calls,
        "seconds_under_profiler": seconds,
        "total_self_s": total,
        "share_in_call_path_and_scheduler": inside / total if total else 0.0,
        "top": entries[:TOP],
    }


def pyinstrument_tree(callers: int, calls: int) -> str:
    contender = _contender()
    profiler = Profiler(interval=0.0001, async_mode="disabled")
    profiler.start()
    measure_trio(contender, callers, calls)
    profiler.stop()
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"profile-{callers}.txt"
    path.write_text(text)
    return str(path.relative_to(RESULTS.parent.parent))


def run_profile(*, calls: int) -> dict[str, Any]:
    results: dict[str, Any] = {"contender": _contender().label, "trio": trio.__version__}
    for callers in (1, 100):
        print(f"  profile: {callers} caller(s)", file=sys.stderr, flush=True)
        results[f"callers_{callers}"] = cprofile(callers, calls)
        results[f"callers_{callers}"]["pyinstrument"] = pyinstrument_tree(callers, calls)
    return results


def format_profile(results: dict[str, Any]) -> str:
    lines: list[str] = []
    for callers in (1, 100):
        r = results[f"callers_{callers}"]
        lines.append(
            f"Profile: {results['contender']}, {callers} caller(s), {r['calls']} calls "
            f"(cProfile; {r['share_in_call_path_and_scheduler']:.0%} of all self time is in "
            f"these files; µs per round trip are inflated by cProfile, read the shares); "
            f"call tree: {r['pyinstrument']}"
        )
        lines.append(f"  {'self %':>6}  {'µs/trip':>7}  {'calls':>8}  function")
        for e in r["top"]:
            lines.append(
                f"  {e['self_share']:6.1%}  {e['self_us_per_round_trip']:7.2f}  "
                f"{e['calls']:>8}  {e['function']}"
            )
        lines.append("")
    return "\n".join(lines)
