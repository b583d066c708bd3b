"""Charts from recorded results (nothing is measured here), as SVG for the docs.

``python -m benchmarks.charts`` redraws every chart from ``benchmarks/results/*.json`` into
``docs/_static/charts/``; ``python -m benchmarks`` does the same after it records a run. Each
section is drawn from the newest recorded run that has it (by the ``date`` in its ``meta``;
``partial.json``, not checked in, is left out), and each chart names that run under it.

- ``overload.svg``: goodput and queue wait over (virtual) time, burst and sustained overload:
  trioserver's defaults, ``admission=False`` and the hand-written FIFO actor.
- ``performance-<section>.svg``: a same-run ratio table (``roundtrip``, ``budget``,
  ``awaiting``, ``casts``, ``instrument``) as bars from 1x (on a log scale when the ratios
  span more than `LOG_ABOVE`), one bar per number of callers, with the targets the issues set
  drawn as dashed lines.

The SVG is deterministic: the same results give the same bytes with the same matplotlib
(``svg.hashsalt`` fixed, no date in the metadata, text kept as text). It needs matplotlib,
in the ``dev`` extra.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import matplotlib
import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.typing import RcKeyType

from ._common import PARTIAL, RESULTS, ROOT
from .contenders import ACTOR, LOCK
from .report import (
    TARGET_ASYNC,
    TARGET_AWAITING,
    TARGET_CASTS,
    TARGET_DEF,
    TARGET_DEF_LOCK,
    TARGET_INSTRUMENT,
)

CHARTS = ROOT / "docs" / "_static" / "charts"

STYLE: dict[RcKeyType, Any] = {
    "svg.hashsalt": "trioserver-charts",  # ids from a fixed salt, not a random one
    "svg.fonttype": "none",  # text stays text: smaller files, searchable, styled by the page
    # the metrics of matplotlib's own font; in the page, the reader's sans-serif if it is absent
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
METADATA: dict[str, Any] = {"Date": None}

# The overload chart's servers: (row in the results, legend, colour, line style, width).
OVERLOAD_SERVERS = (
    ("trioserver", "trioserver (default: admission)", "#1f77b4", "-", 2.2),
    ("trioserver_no_admission", "trioserver, admission=False", "#ff7f0e", "--", 1.6),
    ("fifo", "plain FIFO actor (like a GenServer)", "#7f7f7f", ":", 1.8),
)
CALLERS_COLOURS = {1: "#6baed6", 100: "#08519c"}
TARGET_COLOUR = "#d62728"
TARGET_STYLES = ("--", ":", "-.")
LOG_ABOVE = 4.0  # a ratio chart is drawn on a log scale if its largest / smallest ratio > this


@attrs.frozen
class Panel:
    """One ratio column of a table: ``ratio_to_<key>``, its axis title, and its targets."""

    key: str
    title: str
    targets: tuple[tuple[float, str], ...] = ()


@attrs.frozen
class RatioChart:
    section: str
    title: str
    panels: tuple[Panel, ...]

    @property
    def name(self) -> str:
        return f"performance-{self.section}"


RATIO_CHARTS = (
    RatioChart(
        "roundtrip",
        "Round trip: calls/s, times each reference",
        (
            Panel(ACTOR, "x hand-written actor", ((TARGET_ASYNC, "@call async (issue 4)"),)),
            Panel(
                LOCK,
                "x trio.Lock",
                (
                    (TARGET_DEF, "@call def (issue 4)"),
                    (TARGET_DEF_LOCK, "@call def, 1 caller (issue 12)"),
                ),
            ),
        ),
    ),
    RatioChart(
        "budget",
        "The price of time limits: calls/s, times the hand-written actor",
        (Panel(ACTOR, "x hand-written actor"),),
    ),
    RatioChart(
        "awaiting",
        "Handlers that await another task: calls/s, times the actor running the same body",
        (Panel("baseline", "x actor, same body", ((TARGET_AWAITING, "@call (issue 12)"),)),),
    ),
    RatioChart(
        "casts",
        "Casts, until the server ran each: casts/s, times the actor's fire-and-forget send",
        (Panel("baseline", "x actor's send", ((TARGET_CASTS, "@cast (issue 12)"),)),),
    ),
    RatioChart(
        "instrument",
        "A no-op Instrument: calls/s, times the same server without one",
        (
            Panel(
                "baseline", "x no instrument", ((TARGET_INSTRUMENT, "no-op Instrument (issue 12)"),)
            ),
        ),
    ),
)


Sections = dict[str, tuple[Any, dict[str, Any]]]


def recorded(directory: Path = RESULTS) -> Sections:
    """Each section of the recorded runs in `directory`, from the newest run that has it:
    section name -> (its figures, the run's ``meta``)."""
    found: Sections = {}
    for path in sorted(directory.glob("*.json")):
        if path.name == PARTIAL:
            continue
        results = json.loads(path.read_text())
        meta = results.get("meta") if isinstance(results, dict) else None
        if not isinstance(meta, dict) or "date" not in meta:
            continue  # not a run of `python -m benchmarks`
        for name, figures in results.items():
            if name in ("meta", "targets"):
                continue
            if name not in found or found[name][1]["date"] < meta["date"]:
                found[name] = (figures, meta)
    return found


def _source(meta: dict[str, Any]) -> str:
    argv = "".join(" " + a for a in meta.get("argv", []))
    return f"python -m benchmarks{argv} (git {meta['git_commit']}, {meta['date'][:10]})"


def _save(figure: Figure, directory: Path, name: str) -> Path:
    path = directory / f"{name}.svg"
    figure.savefig(path, format="svg", metadata=METADATA)
    return path


def overload_chart(section: dict[str, Any], meta: dict[str, Any]) -> Figure | None:
    """Goodput (top) and mean queue wait (bottom) per bin, burst (left) and sustained (right);
    None if the run recorded no time series."""
    scenarios: dict[str, Any] = section["scenarios"]
    rows = {(name, row["server"]): row for name, s in scenarios.items() for row in s["rows"]}
    if not all("series" in row for row in rows.values()):
        return None
    patience = section["patience_seconds"]
    figure = Figure(figsize=(9.0, 5.6), layout="constrained")
    figure.set_gid("overload")
    axes = figure.subplots(2, len(scenarios), sharex="col", squeeze=False)
    for column, (name, scenario) in enumerate(scenarios.items()):
        goodput: Axes = axes[0][column]
        wait: Axes = axes[1][column]
        goodput.set_title(scenario["label"])
        end = 0.0
        for server, label, colour, style, width in OVERLOAD_SERVERS:
            row = rows.get((name, server))
            if row is None:
                continue
            series = row["series"]
            step = series["bin_seconds"]
            rates: list[float] = series["goodput_rate"]
            waits = [math.nan if w is None else w for w in series["queue_wait_mean"]]
            edges = [i * step for i in range(len(rates) + 1)]
            end = max(end, edges[-1])
            # steps-post: each value holds over its bin; the last one is repeated to close it
            (line,) = goodput.plot(
                edges,
                [*rates, rates[-1]],
                drawstyle="steps-post",
                color=colour,
                linestyle=style,
                linewidth=width,
                label=label,
            )
            line.set_gid(f"goodput-{name}-{server}")
            (line,) = wait.plot(
                edges,
                [*waits, waits[-1]],
                drawstyle="steps-post",
                color=colour,
                linestyle=style,
                linewidth=width,
                label=label,
            )
            line.set_gid(f"queue-wait-{name}-{server}")
        wait.axhline(patience, color=TARGET_COLOUR, linewidth=0.8, linestyle=(0, (4, 3)))
        wait.annotate(
            f"callers give up after {patience:g} s",
            (end, patience),
            xytext=(0, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            color=TARGET_COLOUR,
            fontsize=8,
        )
        goodput.set_xlim(0, end)
        goodput.set_ylim(bottom=0)
        wait.set_ylim(bottom=0)
        wait.set_xlabel("virtual time (s)")
        if column == 0:
            goodput.set_ylabel("goodput (successes/s)")
            wait.set_ylabel("mean queue wait of\nthe runs started (s)")
    axes[0][0].legend(loc="upper right", fontsize=8, frameon=False)
    step = next(iter(rows.values()))["series"]["bin_seconds"]
    figure.suptitle(
        f"Overload: a {section['service_seconds'] * 1000:g} ms handler (capacity "
        f"{1 / section['service_seconds']:g}/s), bins of {step:g} s"
    )
    figure.supxlabel(_source(meta), x=1.0, ha="right", fontsize=7, color="#555555")
    return figure


def _times(value: float, _position: object = None) -> str:
    return f"{value:g}x"


def ratio_chart(chart: RatioChart, section: dict[str, Any], meta: dict[str, Any]) -> Figure:
    """One horizontal bar per contender and number of callers, from 1x (on a log scale if the
    ratios span more than `LOG_ABOVE`)."""
    callers: list[int] = section["callers"]
    labels: list[str] = []
    for row in section["rows"]:
        if row["label"] not in labels:
            labels.append(row["label"])
    by_key = {(row["label"], row["callers"]): row for row in section["rows"]}
    height = 0.8 / len(callers)
    figure = Figure(
        figsize=(4.2 + 3.4 * len(chart.panels), 0.9 + 0.36 * len(labels) * len(callers)),
        layout="constrained",
    )
    figure.set_gid(chart.name)
    axes = figure.subplots(1, len(chart.panels), sharey=True, squeeze=False)[0]
    for panel, ax in zip(chart.panels, axes, strict=True):
        ratios = [
            row[f"ratio_to_{panel.key}"]
            for row in section["rows"]
            if row.get(f"ratio_to_{panel.key}") is not None
        ]
        low = min([*ratios, *(t for t, _ in panel.targets), 1.0])
        high = max([*ratios, *(t for t, _ in panel.targets), 1.0])
        for index, n in enumerate(callers):
            ys: list[float] = []
            values: list[float] = []
            for position, label in enumerate(labels):
                row = by_key.get((label, n))
                value = None if row is None else row.get(f"ratio_to_{panel.key}")
                if value is None:
                    continue
                ys.append(position + (index - (len(callers) - 1) / 2) * height)
                values.append(value)
            bars = ax.barh(
                ys,
                [v - 1.0 for v in values],
                left=1.0,
                height=height * 0.9,
                color=CALLERS_COLOURS.get(n, "#999999"),
                label=f"{n} caller{'s' if n > 1 else ''}",
            )
            for number, bar in enumerate(bars.patches):
                bar.set_gid(f"bar-{chart.name}-{panel.key}-{n}-{number}")
            for y, value in zip(ys, values, strict=True):
                ax.annotate(
                    f"{value:.2f}x",
                    (value, y),
                    xytext=(3 if value >= 1 else -3, 0),
                    textcoords="offset points",
                    ha="left" if value >= 1 else "right",
                    va="center",
                    fontsize=7,
                )
        ax.axvline(1.0, color="black", linewidth=0.8)
        for (value, what), style in zip(panel.targets, TARGET_STYLES, strict=False):
            line = ax.axvline(
                value,
                color=TARGET_COLOUR,
                linewidth=1.0,
                linestyle=style,
                label=f"target {value:g}x: {what}",
            )
            line.set_gid(f"target-{chart.name}-{panel.key}-{value:g}")
        if high / low > LOG_ABOVE:
            ax.set_xscale("log")
            ax.set_xlim(low / 1.6, high * 1.6)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            scale = "; log scale"
        else:
            pad = 0.1 * (high - low) + 0.05
            ax.set_xlim(low - pad, high + pad)
            scale = ""
        ax.xaxis.set_major_formatter(FuncFormatter(_times))
        ax.set_xlabel(f"{panel.title} (wall clock{scale})")
        ax.grid(axis="x", which="major", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
    first = axes[0]
    first.set_yticks(range(len(labels)), labels)
    first.invert_yaxis()
    # one legend for the figure: the numbers of callers, then each panel's targets
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    names = sorted(legend, key=lambda name: not name.endswith(("caller", "callers")))
    figure.legend(
        [legend[name] for name in names],
        names,
        loc="outside lower center",
        ncols=min(len(names), 3),
        fontsize=8,
        frameon=False,
    )
    figure.suptitle(f"{chart.title}\n{_source(meta)}", fontsize=10)
    return figure


def draw(sections: Sections, directory: Path = CHARTS) -> list[Path]:
    """Every chart whose section is in `sections`, written to `directory`; the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with matplotlib.style.context("default"), matplotlib.rc_context(STYLE):
        if "overload" in sections:
            figure = overload_chart(*sections["overload"])
            if figure is not None:
                written.append(_save(figure, directory, "overload"))
        for chart in RATIO_CHARTS:
            if chart.section in sections:
                figures, meta = sections[chart.section]
                written.append(_save(ratio_chart(chart, figures, meta), directory, chart.name))
    return written


def redraw(results: Path = RESULTS, directory: Path = CHARTS) -> list[Path]:
    """Draw every chart from the recorded runs in `results` into `directory`."""
    return draw(recorded(results), directory)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.charts",
        description="Redraw the charts of the docs from the recorded results (runs nothing).",
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help=f"recorded runs (default {RESULTS})"
    )
    parser.add_argument(
        "--out", type=Path, default=CHARTS, help=f"where the SVG files go (default {CHARTS})"
    )
    args = parser.parse_args(argv)
    for path in redraw(args.results, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
