"""The docs' charts (benchmarks/charts.py): drawn from recorded results as valid, deterministic
SVG with the expected series and titles, and the checked-in ones up to date with the
checked-in results. The overload benchmark's time series: its binning, on a made-up run."""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "matplotlib", reason="matplotlib (the dev extra) draws the charts; not installed"
)

import matplotlib

from benchmarks import charts
from benchmarks._common import RESULTS, ROOT
from benchmarks.overload import Run, time_series

SVG = "{http://www.w3.org/2000/svg}"


def _overload_row(server: str, rates: list[float], waits: list[float | None]) -> dict[str, Any]:
    return {
        "server": server,
        "label": server,
        "series": {"bin_seconds": 0.1, "goodput_rate": rates, "queue_wait_mean": waits},
    }


def _ratio_rows(key: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for callers, factor in ((1, 1.0), (100, 1.6)):
        rows += [
            {
                "name": "mine",
                "label": "my server",
                "callers": callers,
                f"ratio_to_{key}": 1.25 * factor,
            },
            {"name": "ref", "label": "the reference", "callers": callers, f"ratio_to_{key}": 1.0},
        ]
    return rows


def _results(date: str, *, series: bool = True) -> dict[str, Any]:
    """A small recorded run: overload (burst and sustained), roundtrip and casts."""
    burst = [
        _overload_row("trioserver", [90.0, 100.0, 0.0], [0.04, 0.14, None]),
        _overload_row("trioserver_no_admission", [90.0, 100.0, 0.0], [0.04, 0.14, 0.2]),
        _overload_row("fifo", [90.0, 100.0, 0.0, 0.0], [0.04, 0.14, 0.24, 0.34]),
    ]
    sustained = [
        _overload_row("trioserver", [90.0, 100.0, 100.0], [0.02, 0.3, 0.49]),
        _overload_row("fifo", [90.0, 100.0, 0.0, 0.0], [0.02, 0.3, 0.6, 0.9]),
    ]
    if not series:
        for row in burst + sustained:
            del row["series"]
    roundtrip = _ratio_rows("actor")
    for row in roundtrip:
        row["ratio_to_trio_lock"] = row["ratio_to_actor"] * 0.64
    return {
        "meta": {"date": date, "git_commit": "abc1234", "argv": ["--only", "overload"]},
        "overload": {
            "service_seconds": 0.01,
            "patience_seconds": 0.5,
            "scenarios": {
                "burst": {"label": "a small burst", "rows": burst},
                "sustained": {"label": "a small sustained overload", "rows": sustained},
            },
        },
        "roundtrip": {"callers": [1, 100], "rows": roundtrip},
        "casts": {"callers": [1, 100], "rows": _ratio_rows("baseline")},
        "targets": {},
    }


def _write(directory: Path, name: str, results: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(results))


def _svg(path: Path) -> tuple[ET.Element, set[str], set[str]]:
    """The root of a valid SVG file, the texts it shows and the ids of its groups."""
    root = ET.fromstring(path.read_bytes())  # raises on XML that is not well formed
    assert root.tag == f"{SVG}svg"
    texts = {"".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")}
    ids = {g.get("id", "") for g in root.iter(f"{SVG}g")}
    return root, texts, ids


def test_charts_from_recorded_results(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results, "new.json", _results("2026-02-01T00:00:00+00:00"))
    # an older run without time series, and a partial run (not recorded): both left out
    _write(results, "old.json", _results("2026-01-01T00:00:00+00:00", series=False))
    partial = _results("2026-03-01T00:00:00+00:00")
    partial["meta"]["git_commit"] = "partial"
    _write(results, "partial.json", partial)
    (results / "race_figures.json").write_text('{"command": "not a run of the benchmarks"}')

    written = charts.redraw(results, tmp_path / "charts")

    names = sorted(p.name for p in written)
    assert names == ["overload.svg", "performance-casts.svg", "performance-roundtrip.svg"]
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == names

    _, texts, ids = _svg(tmp_path / "charts" / "overload.svg")
    assert {"a small burst", "a small sustained overload"} <= texts
    assert "Overload: a 10 ms handler (capacity 100/s), bins of 0.1 s" in texts
    assert {label for _, label, *_ in charts.OVERLOAD_SERVERS} <= texts  # the legend
    assert "callers give up after 0.5 s" in texts
    assert "python -m benchmarks --only overload (git abc1234, 2026-02-01)" in texts
    for kind in ("goodput", "queue-wait"):
        assert {
            f"{kind}-burst-trioserver",
            f"{kind}-burst-trioserver_no_admission",
            f"{kind}-burst-fifo",
            f"{kind}-sustained-trioserver",
            f"{kind}-sustained-fifo",
        } <= ids
    assert "goodput-sustained-trioserver_no_admission" not in ids  # not in the results

    _, texts, ids = _svg(tmp_path / "charts" / "performance-roundtrip.svg")
    assert {"my server", "the reference", "1 caller", "100 callers"} <= texts
    assert {"1.25x", "2.00x", "0.80x", "1.28x"} <= texts  # bars' values, both panels
    assert "target 1.3x: @call async (issue 4)" in texts
    assert "target 0.8x: @call def (issue 4)" in texts
    assert {
        "target-performance-roundtrip-actor-1.3",
        "target-performance-roundtrip-trio_lock-0.8",
    } <= ids
    assert {f"bar-performance-roundtrip-actor-{n}-0" for n in (1, 100)} <= ids
    assert any(t.startswith("Round trip: calls/s") for t in texts)
    assert not any("partial" in t for t in texts)

    _, texts, ids = _svg(tmp_path / "charts" / "performance-casts.svg")
    assert "target 1.3x: @cast (issue 12)" in texts
    assert "target-performance-casts-baseline-1.3" in ids


def test_charts_are_deterministic_and_undated(tmp_path: Path) -> None:
    _write(tmp_path / "results", "run.json", _results("2026-02-01T00:00:00+00:00"))
    first = charts.redraw(tmp_path / "results", tmp_path / "a")
    second = charts.redraw(tmp_path / "results", tmp_path / "b")
    for one, other in zip(first, second, strict=True):
        text = one.read_text()
        assert one.read_bytes() == other.read_bytes(), one.name
        assert "<dc:date>" not in text
        assert re.search(r"20\d\d-\d\d-\d\dT", text) is None  # no time of drawing anywhere


def test_no_overload_chart_without_time_series(tmp_path: Path) -> None:
    _write(tmp_path / "results", "run.json", _results("2026-01-01T00:00:00+00:00", series=False))
    written = charts.redraw(tmp_path / "results", tmp_path / "charts")
    assert "overload.svg" not in {p.name for p in written}
    assert written  # the ratio charts still are


def _pinned_matplotlib() -> str:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in pyproject["project"]["optional-dependencies"]["dev"]:
        if requirement.startswith("matplotlib=="):
            return str(requirement.removeprefix("matplotlib=="))
    raise AssertionError("matplotlib is not pinned in the dev extra")


def test_checked_in_charts_are_up_to_date(tmp_path: Path) -> None:
    pinned = _pinned_matplotlib()
    if matplotlib.__version__ != pinned:
        pytest.skip(f"the charts are drawn with matplotlib {pinned}, not {matplotlib.__version__}")
    written = charts.redraw(RESULTS, tmp_path)
    checked_in = sorted(p.name for p in charts.CHARTS.glob("*.svg"))
    assert sorted(p.name for p in written) == checked_in
    for path in written:
        assert path.read_bytes() == (charts.CHARTS / path.name).read_bytes(), (
            f"docs/_static/charts/{path.name} is not what the recorded results draw: "
            "run `python -m benchmarks.charts` and commit the result"
        )
    assert "overload.svg" in checked_in  # the recorded overload run has its time series


def test_overload_series_bins() -> None:
    """Goodput by when the caller got its result; queue wait by when the run started."""
    raw: dict[str, Any] = {
        "outcomes": [("ok", 0.0, 0.01), ("ok", 0.0, 0.02), ("timeout", 0.0, 0.5), ("ok", 0.1, 0.3)],
        "arrived": {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.1},
        "runs": [
            Run(0, 0.0, 0.01, True),
            Run(1, 0.01, 0.02, True),
            Run(2, 0.02, 0.03, True),  # finished, but its caller had left: no goodput
            Run(3, 0.29, 0.3, True),
        ],
    }
    series = time_series(raw)
    assert series["bin_seconds"] == 0.1
    # bins [0, 0.1), ..., [0.5, 0.6): the last caller left at 0.5
    assert series["goodput_rate"] == [20.0, 0.0, 0.0, 10.0, 0.0, 0.0]
    assert series["queue_wait_mean"] == [0.01, None, 0.19, None, None, None]
