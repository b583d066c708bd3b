"""Tables from a results dict: plain text for the terminal, Markdown for docs/performance.md."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .contenders import ACTOR, LOCK

TARGET_ASYNC = 1.3  # @call async with its budget, times the hand-written actor
TARGET_DEF = 0.8  # @call def, times trio.Lock
TARGET_BYTES = 2500  # an idle server


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    """Right-aligned columns except the first; Markdown pipes if asked."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out: list[str] = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _rate(x: float) -> str:
    return f"{x / 1000:,.1f}k"


def _us(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def _row(section: dict[str, Any], name: str, callers: int) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = section["rows"]
    for row in rows:
        if row["name"] == name and row["callers"] == callers:
            return row
    return None


def roundtrip_table(
    section: dict[str, Any], callers: int, *, markdown: bool, extra: str = LOCK
) -> str:
    """One row per contender at `callers` callers; ratios by wall clock and by CPU time."""
    header = ["contender", "calls/s", "p50 µs", "p99 µs", "calls/CPU-s", "x actor", "x actor CPU"]
    if extra == LOCK:
        header += ["x Lock", "x Lock CPU"]
    rows: list[list[str]] = []
    for row in section["rows"]:
        if row["callers"] != callers:
            continue
        cells = [
            row["label"],
            _rate(row["calls_per_s"]),
            _us(row["p50_us"]),
            _us(row["p99_us"]),
            _rate(row["calls_per_cpu_s"]),
            _ratio(row.get(f"ratio_to_{ACTOR}")),
            _ratio(row.get(f"ratio_to_{ACTOR}_cpu")),
        ]
        if extra == LOCK:
            cells += [_ratio(row.get(f"ratio_to_{LOCK}")), _ratio(row.get(f"ratio_to_{LOCK}_cpu"))]
        rows.append(cells)
    return table(header, rows, markdown=markdown)


def memory_table(section: dict[str, Any], *, markdown: bool) -> str:
    header = ["kind", "servers", "bytes/server", "tasks", "start s"]
    rows: list[list[str]] = []
    for row in section["rows"]:
        if "error" in row:
            rows.append(
                [row["kind"], f"{row['servers']:,}", "failed: " + row["error"][:60], "", ""]
            )
            continue
        rows.append(
            [
                row["kind"],
                f"{row['servers']:,}",
                f"{row['bytes_per_server']:,.0f}",
                f"{row['tasks']:,}",
                f"{row['start_seconds']:.1f}",
            ]
        )
    return table(header, rows, markdown=markdown)


def overload_table(section: dict[str, Any], *, markdown: bool) -> str:
    header = [
        "scenario / server",
        "ok",
        "timed out",
        "refused",
        "handler runs",
        "wasted runs",
        "wasted s",
        "steady goodput/s",
        "idle at s",
    ]
    rows: list[list[str]] = []
    for name, scenario in section["scenarios"].items():
        for row in scenario["rows"]:
            steady = row.get("steady_goodput")
            rows.append(
                [
                    f"{name} / {row['label']}",
                    str(row["successes"]),
                    str(row["timeouts"]),
                    str(row["refused"]),
                    str(row["handler_runs"]),
                    str(row["wasted_runs"]),
                    f"{row['wasted_handler_seconds']:.2f}",
                    "" if steady is None else f"{steady:.1f}",
                    f"{row['time_until_idle']:.2f}",
                ]
            )
    return table(header, rows, markdown=markdown)


Target = tuple[str, str, str, str, bool | None]  # what, goal, wall, CPU, met (by both)


def targets(results: dict[str, Any]) -> list[Target]:
    """Each of the issue's targets that this run measured, by wall clock and by CPU time."""
    found: list[Target] = []
    trip = results.get("roundtrip")
    goals = [
        ("trioserver_async", ACTOR, TARGET_ASYNC, "@call async (budget) vs hand-written actor"),
        ("trioserver_def", LOCK, TARGET_DEF, "@call def vs trio.Lock"),
    ]
    if trip is not None:
        for name, reference, goal, what in goals:
            for n in trip["callers"]:
                row = _row(trip, name, n)
                if row is None:
                    continue
                wall, cpu = row[f"ratio_to_{reference}"], row[f"ratio_to_{reference}_cpu"]
                found.append(
                    (
                        f"{what}, {n} caller{'s' if n > 1 else ''}",
                        f">= {goal}x",
                        f"{wall:.2f}x",
                        f"{cpu:.2f}x",
                        wall >= goal and cpu >= goal,
                    )
                )
    memory = results.get("memory")
    if memory is not None:
        for row in memory["rows"]:
            if row["kind"] != "trioserver":
                continue
            what = f"idle server, {row['servers']:,} servers"
            if "error" in row:
                found.append((what, f"<= {TARGET_BYTES:,} B", "failed", "", None))
                continue
            size = row["bytes_per_server"]
            found.append(
                (what, f"<= {TARGET_BYTES:,} B", f"{size:,.0f} B", "", size <= TARGET_BYTES)
            )
    return found


def targets_table(results: dict[str, Any], *, markdown: bool) -> str:
    rows = [
        [what, goal, wall, cpu, "n/a" if met is None else ("met" if met else "NOT met")]
        for what, goal, wall, cpu, met in targets(results)
    ]
    return table(["target", "goal", "measured", "by CPU time", "verdict"], rows, markdown=markdown)


def render(results: dict[str, Any], *, markdown: bool = False) -> str:
    """Every section present in `results`, as titled tables."""
    meta = results["meta"]
    parts: list[str] = []
    heading = "### " if markdown else "== "
    parts.append(
        f"Machine: {meta['machine']}, {meta['cpu']}, {meta['cpu_count']} CPUs; "
        f"Python {meta['python']}, trio {meta['trio']}, trioserver {meta['trioserver']} "
        f"(git {meta['git_commit']}"
        + (", with uncommitted core changes" if meta["trioserver_uncommitted_changes"] else "")
        + f"), Pykka {meta['pykka']}; {meta['date']}; "
        + f"`python -m benchmarks{''.join(' ' + a for a in meta.get('argv', []))}`"
    )
    if "roundtrip" in results:
        s = results["roundtrip"]
        parts.append(
            f"{heading}Round trip: median of {s['rounds']} interleaved rounds, "
            f"{s['calls_per_measurement']:,} calls each"
        )
        for n in s["callers"]:
            parts.append(f"{n} caller{'s' if n > 1 else ''}:")
            parts.append(roundtrip_table(s, n, markdown=markdown))
    if "budget" in results:
        s = results["budget"]
        parts.append(
            f"{heading}The price of time limits: median of {s['rounds']} interleaved rounds, "
            f"{s['calls_per_measurement']:,} calls each"
        )
        for n in s["callers"]:
            parts.append(f"{n} caller{'s' if n > 1 else ''}:")
            parts.append(roundtrip_table(s, n, markdown=markdown, extra=ACTOR))
    if "memory" in results:
        parts.append(f"{heading}Memory: RSS growth per idle server, fresh subprocess each")
        parts.append(memory_table(results["memory"], markdown=markdown))
    if "overload" in results:
        s = results["overload"]
        parts.append(
            f"{heading}Overload (virtual time): {s['service_seconds'] * 1000:g} ms handler, "
            f"callers give up after {s['patience_seconds']:g} s"
        )
        parts.append(overload_table(s, markdown=markdown))
    found = targets(results)
    if found:
        parts.append(f"{heading}Targets of issue 4")
        parts.append(targets_table(results, markdown=markdown))
    return "\n\n".join(parts) + "\n"
