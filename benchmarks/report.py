"""Tables from a results dict: plain text for the terminal, Markdown for docs/performance.md."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from .contenders import ACTOR, FLOOR, LOCK

TARGET_ASYNC = 1.3  # @call async with its budget, times the hand-written actor
TARGET_DEF = 0.8  # @call def, times trio.Lock
TARGET_BYTES = 2500  # an idle server

# Issue 12's targets.
TARGET_AWAITING = 1.3  # a handler that awaits another task, times the actor running it
TARGET_FLOOR = 0.75  # @call async that does not suspend, times a bare checkpoint loop
TARGET_DEF_LOCK = 1.0  # @call def, times trio.Lock, 1 caller
TARGET_CASTS = 1.3  # casts, times the actor's fire-and-forget send
TARGET_INSTRUMENT = 0.8  # a no-op Instrument installed, times none
TARGET_STATISTICS_US = 20.0  # one statistics() read
TARGET_BUSY_BYTES = 8000  # a server after 3,000 calls on each of 3 methods
IDLE_KINDS = {
    "trioserver": "open_server, before any call",
    "trioserver_called": "open_server, after calls",
    "trioserver_serve": "serve, before any call",
    "trioserver_serve_called": "serve, after calls",
}
BUSY_KIND = "trioserver_busy"
BODIES = ("event", "channel", "sleep0")

# Issue 14's target (guarantee 17): durable casts acknowledged per second, by wall clock.
TARGET_DURABLE = 10_000.0
DURABLE_TARGET_ROWS = (
    ("noop_sqlite_full", 200, "a handler that does nothing"),
    ("sleep0_sqlite_full", 200, "a handler awaiting trio.sleep(0)"),
)

# Issue 15's target (guarantee 18): a call through trioserver.ray, p50 latency, times the raw
# Ray async-actor call's from trio (the section's own constant, repeated: importing the section
# imports Ray).
TARGET_RAY = 1.2
RAY_TARGET_ROW = ("trioserver_ray", "raw_ray")

# Guarantees 14-16's targets (waiting without holding the server), met by CPU time.
TARGET_UNCHANGED = 0.97  # plain calls on this tree, times the tree before guarantees 14-16
TARGET_DETECTION = 0.97  # calls with cycle detection, times the same with it stubbed out
TREE_BODIES = {
    "bump": "@call async, returns at once",
    "bump_def": "@call def",
    "event": "@call awaiting an Event",
}
DETECTION_PATHS = {
    "plain": "a plain task calls a server",
    "relay": "A's handler calls B",
}


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


ACTOR_AND_LOCK = (("x actor", ACTOR), ("x Lock", LOCK))


def roundtrip_table(
    section: dict[str, Any],
    callers: int,
    *,
    markdown: bool,
    ratios: Sequence[tuple[str, str]] = ACTOR_AND_LOCK,
) -> str:
    """One row per contender at `callers` callers; ratios by wall clock and by CPU time.

    `ratios`: (column title, key) for each reference, the key of ``ratio_to_<key>`` in a row.
    """
    header = ["contender", "calls/s", "p50 µs", "p99 µs", "calls/CPU-s"]
    for title, _ in ratios:
        header += [title, f"{title} CPU"]
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
        ]
        for _, key in ratios:
            cells += [_ratio(row.get(f"ratio_to_{key}")), _ratio(row.get(f"ratio_to_{key}_cpu"))]
        rows.append(cells)
    return table(header, rows, markdown=markdown)


def cost_table(
    section: dict[str, Any],
    callers: int,
    *,
    markdown: bool,
    each: str = "call",
    ratios: Sequence[tuple[str, str]] = (("x ref", "baseline"),),
) -> str:
    """One row per entry at `callers`: time and CPU time per `each` (the inverse of the
    rates), the rate, latency, and the rates' ratios to each reference, wall and CPU; and the
    Python-level calls per call, and how many more than the baseline's, where counted."""
    counted = any("python_calls_per_call" in row for row in section["rows"])
    header = [
        "contender",
        f"µs/{each}",
        f"CPU µs/{each}",
        f"{each}s/s",
        "p50 µs",
        "p99 µs",
    ]
    for title, _ in ratios:
        header += [title, f"{title} CPU"]
    if counted:
        header += ["Py calls/call", "Δ Py calls"]
    rows: list[list[str]] = []
    for row in section["rows"]:
        if row["callers"] != callers:
            continue
        cells = [
            row["label"],
            _us(1e6 / row["calls_per_s"]),
            _us(1e6 / row["calls_per_cpu_s"]),
            _rate(row["calls_per_s"]) if row["calls_per_s"] >= 10_000 else _us(row["calls_per_s"]),
            _us(row["p50_us"]),
            _us(row["p99_us"]),
        ]
        for _, key in ratios:
            cells += [_ratio(row.get(f"ratio_to_{key}")), _ratio(row.get(f"ratio_to_{key}_cpu"))]
        if counted:
            count = row.get("python_calls_per_call")
            more = row.get("python_calls_more_than_baseline")
            cells += [
                "" if count is None else f"{count:.1f}",
                "" if more is None else f"{more:+.1f}",
            ]
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


@attrs.frozen
class Target:
    """One target and what this run measured of it, by wall clock and by CPU time."""

    what: str
    goal: str
    measured: str
    by_cpu: str
    met: bool | None  # by both measures (guarantees 14-16: by CPU time); None: not measured
    value: float | None = None
    value_cpu: float | None = None

    @property
    def verdict(self) -> str:
        return "n/a" if self.met is None else ("met" if self.met else "NOT met")


def _callers(n: int) -> str:
    return f"{n} caller{'s' if n > 1 else ''}"


def _at_least(what: str, row: dict[str, Any] | None, key: str, goal: float) -> Iterator[Target]:
    """A ratio target (``ratio_to_<key>`` of `row` >= `goal`), if `row` was measured."""
    if row is None or f"ratio_to_{key}" not in row:
        return
    wall, cpu = row[f"ratio_to_{key}"], row[f"ratio_to_{key}_cpu"]
    met = wall >= goal and cpu >= goal
    yield Target(what, f">= {goal}x", f"{wall:.2f}x", f"{cpu:.2f}x", met, wall, cpu)


def _bytes(what: str, row: dict[str, Any], goal: int) -> Target:
    if "error" in row:
        return Target(what, f"<= {goal:,} B", "failed", "", None)
    size = row["bytes_per_server"]
    return Target(what, f"<= {goal:,} B", f"{size:,.0f} B", "", size <= goal, size)


def targets_issue_4(results: dict[str, Any]) -> list[Target]:
    """Issue 4's targets that this run measured."""
    found: list[Target] = []
    trip = results.get("roundtrip")
    goals = [
        ("trioserver_async", ACTOR, TARGET_ASYNC, "@call async (budget) vs hand-written actor"),
        ("trioserver_def", LOCK, TARGET_DEF, "@call def vs trio.Lock"),
    ]
    if trip is not None:
        for name, reference, goal, what in goals:
            for n in trip["callers"]:
                found += _at_least(f"{what}, {_callers(n)}", _row(trip, name, n), reference, goal)
    memory = results.get("memory")
    if memory is not None:
        for row in memory["rows"]:
            if row["kind"] == "trioserver":
                found.append(_bytes(f"idle server, {row['servers']:,} servers", row, TARGET_BYTES))
    return found


def targets_issue_12(results: dict[str, Any]) -> list[Target]:
    """Issue 12's targets that this run measured, in the issue's order."""
    found: list[Target] = []
    awaiting = results.get("awaiting")
    if awaiting is not None:
        for variant, title in (("budget", "budget 5 s"), ("none", "timeout=None")):
            for body in BODIES:
                for n in awaiting["callers"]:
                    found += _at_least(
                        f"@call awaiting ({body}), {title}, x actor, {_callers(n)}",
                        _row(awaiting, f"{body}_{variant}", n),
                        "baseline",
                        TARGET_AWAITING,
                    )
    trip = results.get("roundtrip")
    if trip is not None:
        found += _at_least(
            "@call async, not suspending, x checkpoint floor, 1 caller",
            _row(trip, "trioserver_async", 1),
            FLOOR,
            TARGET_FLOOR,
        )
        found += _at_least(
            "@call def x uncontended trio.Lock, 1 caller",
            _row(trip, "trioserver_def", 1),
            LOCK,
            TARGET_DEF_LOCK,
        )
    casts = results.get("casts")
    if casts is not None:
        for n in casts["callers"]:
            found += _at_least(
                f"@cast x actor (fire-and-forget send), {_callers(n)}",
                _row(casts, "cast_budget", n),
                "baseline",
                TARGET_CASTS,
            )
    instrument = results.get("instrument")
    if instrument is not None:
        priced = (
            ("instrumented", "no-op Instrument"),
            ("hooks", "Instrument with empty call hooks"),
            ("otel_sdk", "OpenTelemetryInstrument (SDK recording)"),
            ("otel_sampled", "OpenTelemetryInstrument (SDK, 1% sampled)"),
            ("otel_api", "OpenTelemetryInstrument (API only)"),
        )
        for suffix, which in priced:
            for name, what in (("bump", "not awaiting"), ("event", "awaiting an Event")):
                for n in instrument["callers"]:
                    found += _at_least(
                        f"{which} x none, @call {what}, {_callers(n)}",
                        _row(instrument, f"{name}_{suffix}", n),
                        "baseline",
                        TARGET_INSTRUMENT,
                    )
    stats = results.get("statistics")
    if stats is not None:
        reads = stats["reads"]
        p50, cpu = reads["p50_us"], reads["cpu_us"]
        found.append(
            Target(
                "statistics() read (3 methods x 3,000 calls), median; CPU: mean",
                f"<= {TARGET_STATISTICS_US:g} µs",
                f"{_us(p50)} µs",
                f"{_us(cpu)} µs",
                p50 <= TARGET_STATISTICS_US and cpu <= TARGET_STATISTICS_US,
                p50,
                cpu,
            )
        )
    memory = results.get("memory")
    if memory is not None:
        for kind, what in IDLE_KINDS.items():
            for row in memory["rows"]:
                if row["kind"] == kind:
                    found.append(
                        _bytes(
                            f"bytes per idle server, {what} ({row['servers']:,} servers)",
                            row,
                            TARGET_BYTES,
                        )
                    )
        for row in memory["rows"]:
            if row["kind"] == BUSY_KIND:
                found.append(
                    _bytes(
                        f"bytes per server after 3 x 3,000 calls ({row['servers']:,} servers)",
                        row,
                        TARGET_BUSY_BYTES,
                    )
                )
    if awaiting is not None and 100 in awaiting["callers"]:
        for variant, title in (("budget", "budget 5 s"), ("none", "timeout=None")):
            for body in BODIES:
                mine = _row(awaiting, f"{body}_{variant}", 100)
                theirs = _row(awaiting, f"{body}_actor", 100)
                if mine is None or theirs is None:
                    continue
                found.append(
                    Target(
                        f"p50 / p99 latency, @call awaiting ({body}), {title}, 100 callers",
                        f"<= actor's {_us(theirs['p50_us'])} / {_us(theirs['p99_us'])} µs",
                        f"{_us(mine['p50_us'])} / {_us(mine['p99_us'])} µs",
                        "",
                        mine["p50_us"] <= theirs["p50_us"] and mine["p99_us"] <= theirs["p99_us"],
                    )
                )
    return found


def _at_least_cpu(what: str, row: dict[str, Any] | None, key: str, goal: float) -> Iterator[Target]:
    """As `_at_least`, met by the CPU-time ratio alone (the steadier one on a shared machine);
    three decimals, since the goal is near 1."""
    if row is None or f"ratio_to_{key}" not in row:
        return
    wall, cpu = row[f"ratio_to_{key}"], row[f"ratio_to_{key}_cpu"]
    yield Target(what, f">= {goal}x", f"{wall:.3f}x", f"{cpu:.3f}x", cpu >= goal, wall, cpu)


def targets_waiting(results: dict[str, Any]) -> list[Target]:
    """Guarantees 14-16's targets that this run measured; met by CPU time."""
    found: list[Target] = []
    waiting = results.get("waiting")
    if waiting is None:
        return found
    trees = waiting.get("trees", {})
    base = trees.get("base_revision", "the base")
    if "error" in trees:
        found.append(Target(f"plain calls x {base}", f">= {TARGET_UNCHANGED}x", "failed", "", None))
    elif "rows" in trees:
        for body, what in TREE_BODIES.items():
            for n in trees["callers"]:
                found += _at_least_cpu(
                    f"{what}, this tree x {base}, {_callers(n)}",
                    _row(trees, f"{body}_this", n),
                    "baseline",
                    TARGET_UNCHANGED,
                )
    detection = waiting.get("detection", {})
    if "error" in detection:
        found.append(
            Target("cycle detection x stubbed out", f">= {TARGET_DETECTION}x", "failed", "", None)
        )
    elif "paired" in detection:
        for p in detection["paired"]:
            wall, cpu = p["ratio"], p["ratio_cpu"]
            found.append(
                Target(
                    f"cycle detection x stubbed out (paired), {DETECTION_PATHS[p['path']]}, "
                    f"{_callers(p['callers'])}",
                    f">= {TARGET_DETECTION}x",
                    f"{wall:.3f}x",
                    f"{cpu:.3f}x",
                    cpu >= TARGET_DETECTION,
                    wall,
                    cpu,
                )
            )
    return found


def targets_durable(results: dict[str, Any]) -> list[Target]:
    """Issue 14's target, if measured: >= 10,000 durable casts/s at 200 callers with SQLite
    FULL (wall clock: a commit waits for the disk; casts per CPU-second shown beside)."""
    found: list[Target] = []
    durable = results.get("durable")
    if durable is None:
        return found
    for name, callers, what in DURABLE_TARGET_ROWS:
        row = _row(durable, name, callers)
        if row is None:
            continue
        rate, cpu = row["calls_per_s"], row["calls_per_cpu_s"]
        found.append(
            Target(
                f"durable casts/s, SQLite FULL, {_callers(callers)}, {what}",
                f">= {TARGET_DURABLE:,.0f}/s",
                f"{rate:,.0f}/s",
                f"{cpu:,.0f}/CPU-s",
                rate >= TARGET_DURABLE,
                rate,
                cpu,
            )
        )
    return found


def durable_table(section: dict[str, Any], callers: int, *, markdown: bool) -> str:
    """One row per (handler, store) at `callers`: acknowledged casts per second (wall, CPU),
    enqueue latency, the ratios to the in-memory cast of the same handler, and how fast the
    server ran them."""
    header = [
        "contender",
        "casts/s",
        "p50 µs",
        "p99 µs",
        "casts/CPU-s",
        "x in-memory",
        "x in-memory CPU",
        "ran/s",
    ]
    rows: list[list[str]] = []
    for row in section["rows"]:
        if row["callers"] != callers:
            continue
        rows.append(
            [
                row["label"],
                _rate(row["calls_per_s"]),
                _us(row["p50_us"]),
                _us(row["p99_us"]),
                _rate(row["calls_per_cpu_s"]),
                _ratio(row.get("ratio_to_baseline")),
                _ratio(row.get("ratio_to_baseline_cpu")),
                _rate(row["ran_per_s"]),
            ]
        )
    return table(header, rows, markdown=markdown)


def durable_parts(durable: dict[str, Any], heading: str, *, markdown: bool) -> list[str]:
    """The section "durable": a table per number of callers."""
    casts = durable["casts_per_measurement"]
    memory, full = casts["memory"], casts["sqlite_full"]
    where = f"{durable['database_directory']} ({durable['filesystem'] or 'unknown file system'})"
    parts = [
        f"{heading}Durable casts (SQLite, PostgreSQL) against an in-memory cast: median of "
        f"{durable['rounds']} interleaved rounds; casts per measurement: in memory "
        f"{', '.join(f'{int(v):,}' for v in memory.values())}, durable "
        f"{', '.join(f'{int(v):,}' for v in full.values())} (at "
        f"{', '.join(memory)} callers); a fresh database in {where} each; casts/s counts "
        f"acknowledged casts (the await returned) while the server runs them"
    ]
    if durable.get("filesystem") == "tmpfs":
        parts.append("(tmpfs: an fsync costs nothing there; FULL is not measured on a disk)")
    for n in durable["callers"]:
        parts.append(f"{_callers(n)}:")
        parts.append(durable_table(durable, n, markdown=markdown))
    return parts


def targets_ray(results: dict[str, Any]) -> list[Target]:
    """Issue 15's target, if measured: trioserver.ray's p50 latency at most 1.2x the raw Ray
    call's, at each number of callers (the CPU column: caller's and actor's CPU per call, the
    same ratio; shown, not judged)."""
    found: list[Target] = []
    section = results.get("ray")
    if section is None or "rows" not in section:
        return found
    mine, theirs = RAY_TARGET_ROW
    for n in section["callers"]:
        row, raw = _row(section, mine, n), _row(section, theirs, n)
        if row is None or raw is None:
            continue
        ratio = row[f"p50_ratio_to_{theirs}"]
        cpu = (row["cpu_us_per_call"] + row["actor_cpu_us_per_call"]) / (
            raw["cpu_us_per_call"] + raw["actor_cpu_us_per_call"]
        )
        found.append(
            Target(
                f"trioserver.ray p50 latency x raw Ray call, {_callers(n)} "
                f"({_us(row['p50_us'])} / {_us(raw['p50_us'])} µs)",
                f"<= {TARGET_RAY}x",
                f"{ratio:.2f}x",
                f"{cpu:.2f}x",
                ratio <= TARGET_RAY,
                ratio,
                cpu,
            )
        )
    return found


def ray_table(section: dict[str, Any], callers: int, *, markdown: bool) -> str:
    """One row per contender at `callers`: rate, latency, the latency ratios to the raw Ray
    call and to the raw actor with a trio thread, and CPU per call in each process."""
    header = [
        "contender",
        "calls/s",
        "p50 µs",
        "p99 µs",
        "p50 x raw",
        "p99 x raw",
        "p50 x trio thread",
        "caller CPU µs/call",
        "actor CPU µs/call",
    ]
    rows: list[list[str]] = []
    for row in section["rows"]:
        if row["callers"] != callers:
            continue
        rows.append(
            [
                row["label"],
                _us(row["calls_per_s"])
                if row["calls_per_s"] < 10_000
                else _rate(row["calls_per_s"]),
                _us(row["p50_us"]),
                _us(row["p99_us"]),
                _ratio(row["p50_ratio_to_raw_ray"]),
                _ratio(row["p99_ratio_to_raw_ray"]),
                _ratio(row["p50_ratio_to_trio_thread"]),
                _us(row["cpu_us_per_call"]),
                _us(row["actor_cpu_us_per_call"]) if row["actor_cpu_us_per_call"] else "",
            ]
        )
    return table(header, rows, markdown=markdown)


def _mib(figures: dict[str, float]) -> str:
    return (
        f"RSS {figures['rss_mib']:.0f} MiB, PSS {figures['pss_mib']:.0f}, "
        f"USS {figures['uss_mib']:.0f}"
    )


RAY_ACTORS = {
    "trioserver_ray": "trioserver.ray actor",
    "raw_ray": "raw async actor",
    "trio_thread": "raw actor + trio thread",
}


def ray_parts(section: dict[str, Any], heading: str, *, markdown: bool) -> list[str]:
    """The section "ray": start-up, memory, and a table per number of callers."""
    if "error" in section:
        return [f"{heading}Servers in Ray actors: not run: {section['error']}"]
    calls = section["calls_per_measurement"]
    cluster, startup = section["cluster"], section["startup"]
    median_s = startup["median_seconds"]
    parts = [
        f"{heading}Servers in Ray actors (Ray {section['ray']}, a local cluster of 2 CPUs): "
        f"median of {section['rounds']} interleaved rounds, {calls['ray']:,} calls per Ray "
        f"measurement, {calls['in_process']:,} in process",
        f"Cluster: ray.init {cluster['start_seconds']:.1f} s, ray.shutdown "
        f"{cluster.get('shutdown_seconds', float('nan')):.1f} s; {cluster['processes']} "
        f"processes after ray.init: {_mib(cluster)} (this driver: {_mib(cluster['driver'])})",
        f"Start-up (median of {startup['times']}): trioserver.ray.start "
        f"{median_s['start'] * 1000:,.0f} ms, its first call {median_s['first_call'] * 1000:.1f} "
        f"ms, stop {median_s['stop'] * 1000:,.0f} ms; a raw actor until its first reply "
        f"{median_s['raw_start'] * 1000:,.0f} ms",
        "Memory per actor process, after the rounds: "
        + "; ".join(
            f"{label}: {_mib(section['memory'][name])}"
            for name, label in RAY_ACTORS.items()
            if name in section["memory"]
        ),
    ]
    for n in section["callers"]:
        parts.append(f"{_callers(n)}:")
        parts.append(ray_table(section, n, markdown=markdown))
    return parts


def targets(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every target this run measured, by issue, for the JSON file."""
    return {
        "issue_4": [attrs.asdict(t) | {"verdict": t.verdict} for t in targets_issue_4(results)],
        "issue_12": [attrs.asdict(t) | {"verdict": t.verdict} for t in targets_issue_12(results)],
        "guarantees_14_16": [
            attrs.asdict(t) | {"verdict": t.verdict} for t in targets_waiting(results)
        ],
        "issue_14": [attrs.asdict(t) | {"verdict": t.verdict} for t in targets_durable(results)],
        "issue_15": [attrs.asdict(t) | {"verdict": t.verdict} for t in targets_ray(results)],
    }


def targets_table(found: Sequence[Target], *, markdown: bool) -> str:
    rows = [[t.what, t.goal, t.measured, t.by_cpu, t.verdict] for t in found]
    return table(["target", "goal", "measured", "by CPU time", "verdict"], rows, markdown=markdown)


WAITING_PARTS = (
    # (part, title, the column of its ratios to its reference)
    ("trees", "Plain calls, this tree x {base} (a fresh subprocess per measurement)", "x base"),
    ("detection", "Cycle detection on calls that close no cycle, x stubbed out", "x stub"),
    ("pool", "A guarded wake-up: one connection handed over, release -> acquire", "x actor"),
    ("released", "A released block's round trip: async with released(): pass", "x no block"),
    ("theater", "Handlers that sleep, inside released() or holding the server", "x holding"),
)


def waiting_parts(waiting: dict[str, Any], heading: str, *, markdown: bool) -> list[str]:
    """The section "waiting": a titled table per part and number of callers."""
    parts = [f"{heading}Waiting without holding the server (CPU-time ratios are the main figure)"]
    for name, title, column in WAITING_PARTS:
        s = waiting.get(name)
        if s is None:
            continue
        title = title.format(base=s.get("base_revision", "base"))
        if "error" in s:
            parts.append(f"{title}: failed: {s['error']}")
            continue
        parts.append(
            f"{title}: median of {s['rounds']} interleaved rounds, "
            f"{s['calls_per_measurement']:,} {'hand-overs' if name == 'pool' else 'calls'} each"
        )
        ratios = [(column, "baseline")]
        if name == "pool":
            ratios.append(("x Condition", "condition"))
        for n in s["callers"]:
            who = f"{n} workers" if name == "pool" else _callers(n)
            parts.append(f"{who}:")
            each = "hand-over" if name == "pool" else "call"
            parts.append(cost_table(s, n, markdown=markdown, each=each, ratios=ratios))
        if "paired" in s:
            first = s["paired"][0]
            parts.append(
                f"Paired in one trio run: {first['blocks']} blocks of "
                f"{first['calls_per_block']:,} calls each way, alternating; median of the "
                f"per-pair ratios"
            )
            parts.append(paired_table(s["paired"], markdown=markdown))
    return parts


def paired_table(paired: Sequence[dict[str, Any]], *, markdown: bool) -> str:
    header = [
        "path",
        "µs/call real",
        "µs/call stub",
        "CPU µs real",
        "CPU µs stub",
        "x stub",
        "x stub CPU",
    ]
    rows = [
        [
            f"{DETECTION_PATHS[p['path']]}, {_callers(p['callers'])}",
            _us(p["real_us"]),
            _us(p["stub_us"]),
            _us(p["real_cpu_us"]),
            _us(p["stub_cpu_us"]),
            _ratio(p["ratio"]),
            _ratio(p["ratio_cpu"]),
        ]
        for p in paired
    ]
    return table(header, rows, markdown=markdown)


def ablation_table(section: dict[str, Any], *, markdown: bool) -> str:
    """Each variant's ratios to the floor and to the Lock, as the median of the rounds' own
    ratios (each round measures every contender back to back: on a machine whose speed
    drifts from round to round, the steadier figure), then as the ratio of the medians."""
    header = ["contender", "calls/s", "x floor", "x Lock", "x floor (medians)", "x Lock (medians)"]
    rows: list[list[str]] = []
    for row in section["rows"]:
        rows.append(
            [
                row["label"],
                _rate(row["calls_per_s"]),
                _ratio(row.get(f"ratio_to_{FLOOR}_per_round_median")),
                _ratio(row.get(f"ratio_to_{LOCK}_per_round_median")),
                _ratio(row.get(f"ratio_to_{FLOOR}")),
                _ratio(row.get(f"ratio_to_{LOCK}")),
            ]
        )
    return table(header, rows, markdown=markdown)


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
            parts.append(roundtrip_table(s, n, markdown=markdown, ratios=ACTOR_AND_LOCK[:1]))
    for name, title, column in (
        ("awaiting", "Handlers that await another task (x actor: the same body's)", "x actor"),
        ("casts", "Casts, timed until the server ran every one", "x actor"),
        ("instrument", "The price of an instrument (no-op, empty hooks, OpenTelemetry)", "x none"),
    ):
        if name in results:
            s = results[name]
            parts.append(
                f"{heading}{title}: median of {s['rounds']} interleaved rounds, "
                f"{s['calls_per_measurement']:,} calls each"
            )
            for n in s["callers"]:
                parts.append(f"{_callers(n)}:")
                ratios = ((column, "baseline"),)
                parts.append(roundtrip_table(s, n, markdown=markdown, ratios=ratios))
    if "ablation" in results:
        s = results["ablation"]
        parts.append(
            f"{heading}What the contract costs a call that does not suspend (parts of it "
            f"patched out; see benchmarks/ablation.py): {s['rounds']} interleaved rounds, "
            f"{s['calls_per_measurement']:,} calls each, 1 caller"
        )
        parts.append(ablation_table(s, markdown=markdown))
    if "statistics" in results:
        reads = results["statistics"]["reads"]
        s = results["statistics"]["reading"]
        parts.append(
            f"{heading}statistics(): one read, after {reads['calls_each']:,} calls on each of "
            f"3 methods: median {_us(reads['p50_us'])} µs, p99 {_us(reads['p99_us'])} µs, "
            f"CPU {_us(reads['cpu_us'])} µs a read (median of {len(reads['rounds'])} rounds "
            f"of {reads['reads']:,} reads)"
        )
        parts.append(
            f"Calls while reading statistics every 100 calls: median of "
            f"{s['rounds']} interleaved rounds, {s['calls_per_measurement']:,} calls each"
        )
        for n in s["callers"]:
            parts.append(f"{_callers(n)}:")
            ratios = (("x never", "baseline"),)
            parts.append(roundtrip_table(s, n, markdown=markdown, ratios=ratios))
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
    if "waiting" in results:
        parts += waiting_parts(results["waiting"], heading, markdown=markdown)
    if "durable" in results:
        parts += durable_parts(results["durable"], heading, markdown=markdown)
    if "ray" in results:
        parts += ray_parts(results["ray"], heading, markdown=markdown)
    for issue, found in (("4", targets_issue_4(results)), ("12", targets_issue_12(results))):
        if found:
            parts.append(f"{heading}Targets of issue {issue}")
            parts.append(targets_table(found, markdown=markdown))
    found = targets_waiting(results)
    if found:
        parts.append(f"{heading}Targets of guarantees 14-16 (met by CPU time; wall clock shown)")
        parts.append(targets_table(found, markdown=markdown))
    found = targets_durable(results)
    if found:
        parts.append(f"{heading}Target of issue 14 (durable casts; met by wall clock)")
        parts.append(targets_table(found, markdown=markdown))
    found = targets_ray(results)
    if found:
        parts.append(
            f"{heading}Target of issue 15 (servers in Ray actors; met by p50 latency; CPU: "
            f"caller's and actor's CPU per call, the same ratio)"
        )
        parts.append(targets_table(found, markdown=markdown))
    return "\n\n".join(parts) + "\n"
