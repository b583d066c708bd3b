"""The instruction-count benchmark (benchmarks/instructions.py): every point it counts has a
reference counted beside it, it reads valgrind's count as valgrind prints it, and the ceiling
it adds (the lowest-level mailbox running a handler body) serves that body."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import trio
import trio.testing

from benchmarks import awaiting, instructions
from benchmarks.instructions import Point, contender, per_call, points, render_instructions


def test_every_point_has_its_reference_at_the_same_callers() -> None:
    found = points()
    keys = {(p.key, p.callers) for p in found}
    assert len(keys) == len(found)  # no point counted twice
    for point in found:
        assert (point.reference, point.callers) in keys
        assert contender(point.name).name == point.name
    assert {p.callers for p in found} == set(instructions.CALLERS)
    with pytest.raises(KeyError, match="no contender named 'nothing'"):
        contender("nothing")


def test_a_point_costs_the_difference_of_two_counts_each_the_least_of_its_repeats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[list[str]] = []

    def fake(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        assert options["env"]["PYTHONHASHSEED"] == "0"  # (the same hashing in every child)
        assert options["env"][instructions.STEP_CLOCK] == "0"  # (the section: trio's own clock)
        calls = int(command[command.index("benchmarks.instructions") + 3])
        lump = 7_000_000 if len(ran) in (1, 4) else 0  # one run of each size does more work
        refs = f"{1_000_000 + 150 * calls + lump:,}"
        return subprocess.CompletedProcess(command, 0, "", f"==7== I   refs:      {refs}\n")

    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(instructions, "REPEATS", 2)
    point = Point("event_budget", "event_actor", 100, ("timings", "deadline"))
    assert per_call(point) == 150
    assert [c[:2] for c in ran] == [["valgrind", "--tool=cachegrind"]] * 4
    assert sorted(c[-5:] for c in ran) == [
        ["event_budget", "100", str(calls), "timings", "deadline"]
        for calls in sorted((instructions.HIGH, instructions.LOW) * 2, key=str)
    ]


def test_a_failed_count_says_which_point(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "valgrind: no such tool\n")

    monkeypatch.setattr(subprocess, "run", fails)
    with pytest.raises(RuntimeError, match=r"event_budget/timings.*no such tool"):
        per_call(Point("event_budget", "event_actor", 1, ("timings",)))


def test_the_section_renders_its_rows_and_says_why_it_was_skipped() -> None:
    rows = [
        {"name": "event_budget", "label": "event: @call, budget 5 s", "callers": callers,
         "reference": "event_actor", "instructions": 150_000.0, "x_reference": 1.2}
        for callers in instructions.CALLERS
    ]  # fmt: skip
    text = render_instructions(
        {"low": 1000, "high": 3000, "repeats": 2, "rows": rows}, markdown=True
    )
    assert text.count("| event: @call, budget 5 s | 150,000 | event_actor | 1.20x |") == 2
    assert "(least of 2 counts at 3,000 calls - least of 2 at 1,000) / 2,000" in text
    once = render_instructions({"low": 1000, "high": 3000, "rows": rows})  # (recorded before)
    assert "(count at 3,000 calls - at 1,000) / 2,000" in once
    skipped = render_instructions({"error": "valgrind is not installed"})
    assert "Skipped: valgrind is not installed." in skipped


@pytest.mark.parametrize("body", awaiting.BODIES)
def test_the_lowest_level_mailbox_serves_a_handler_body(body: str) -> None:
    async def main() -> list[object]:
        async with awaiting.lowlevel_opener(body)() as bump:
            return [await bump(n) for n in (1, 2, 3)]

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == [1, 3, 6]


def test_markdown_prints_the_recorded_counts(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks._common import RESULTS
    from benchmarks.cli import main

    recorded = json.loads((RESULTS / "instructions.json").read_text())["instructions"]["rows"]
    actor = next(r for r in recorded if r["name"] == "event_actor" and r["callers"] == 1)
    assert main(["--markdown", str(RESULTS / "instructions.json")]) == 0
    printed = capsys.readouterr().out
    assert "### Instructions per call (valgrind)" in printed
    figure = f"{actor['instructions']:,.0f}"
    line = f"| event: hand-written actor (reference) | {figure} | event_actor | 1.00x |"
    assert line in printed


def test_the_child_seeds_the_order_trios_scheduler_runs_tasks_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio._core import _run as trio_run

    import benchmarks.roundtrip

    drawn: list[float] = []

    def draw(*_: object) -> None:
        drawn.append(trio_run._r.random())  # pyright: ignore[reportPrivateUsage]

    monkeypatch.setattr(benchmarks.roundtrip, "measure_trio", draw)
    instructions.child(["event_budget", "1", "10"])
    instructions.child(["event_budget", "1", "10"])
    assert drawn[0] == drawn[1]


def test_a_stepped_clock_advances_a_microsecond_a_read_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio._core import _run as trio_run

    import benchmarks.roundtrip

    monkeypatch.setattr(trio_run, "perf_counter", trio_run.perf_counter)  # (restored after)
    read: list[list[float]] = []

    def reads(*_: object) -> None:
        async def main() -> list[float]:
            return [trio.current_time() for _ in range(3)]

        read.append(trio.run(main))

    monkeypatch.setattr(benchmarks.roundtrip, "measure_trio", reads)
    monkeypatch.delenv(instructions.STEP_CLOCK, raising=False)
    instructions.child(["event_budget", "1", "10"])
    assert read[0][1] - read[0][0] != pytest.approx(instructions.STEP, abs=1e-12)  # real time
    monkeypatch.setenv(instructions.STEP_CLOCK, "1")
    instructions.child(["event_budget", "1", "10"])
    steps = [b - a for a, b in zip(read[1], read[1][1:], strict=False)]
    assert steps == [pytest.approx(instructions.STEP, abs=1e-9)] * 2


def test_one_point_is_counted_on_its_own_with_the_clock_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    ran: list[tuple[list[str], str | None]] = []

    def fake(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        ran.append((command, options["env"][instructions.STEP_CLOCK]))
        calls = int(command[command.index("benchmarks.instructions") + 3])
        refs = f"{5_000_000 + 120 * calls:,}"
        return subprocess.CompletedProcess(command, 0, "", f"==7== I   refs:      {refs}\n")

    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(shutil, "which", lambda _: "/usr/bin/valgrind")
    monkeypatch.setenv(instructions.STEP_CLOCK, "1")  # (a parent's setting is not passed on)
    argv = ["event_budget", "100", "timings", "--step-clock", "--low", "10", "--high", "30"]
    assert instructions.point_main(argv) == 0
    assert capsys.readouterr().out == (
        "event_budget/timings 100 callers: 120 instructions a call (stepped clock, 10 and 30 "
        f"calls, least of {instructions.REPEATS})\n"
    )
    assert {env for _, env in ran} == {"1"}  # every child steps its clock
    counted = sorted(int(c[c.index("benchmarks.instructions") + 3]) for c, _ in ran)
    assert counted == sorted([10, 30] * instructions.REPEATS)
    ran.clear()
    assert instructions.point_main(["event_budget", "1", "--repeats", "1"]) == 0
    assert {env for _, env in ran} == {"0"}  # trio's own clock unless asked
    assert len(ran) == 2
    assert "(trio's clock, 2,000 and 6,000 calls, least of 1)" in capsys.readouterr().out
    with pytest.raises(KeyError, match="no contender named 'nothing'"):
        instructions.point_main(["nothing", "1"])
    with pytest.raises(SystemExit):
        instructions.point_main(["event_budget", "1", "everything"])
    assert "no part named 'everything': timings, deadline, timers" in capsys.readouterr().err
