"""The demo (`make demo`) shows what it claims: its acts, run on virtual time, count a race when
check-then-reserve is split across calls, none when it is one handler, and a CallTimeout for
exactly the hung payments while everyone else is served."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trio.testing

DEMO_PATH = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trioserver_demo", DEMO_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


demo = load_demo()
SEEDS = [demo.SEED, 1, 2, 3, 4]


def play(act: Any, crowd: Any) -> Any:
    return trio.run(act, crowd, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("seed", SEEDS)
def test_split_check_then_reserve_sells_seats_twice(seed: int) -> None:
    result = play(demo.act_split, demo.make_customers(seed))
    assert result.seats_sold_twice > 0
    assert result.paid_for_nothing >= result.seats_sold_twice
    # Every payment bought a sale; every sale beyond a seat's first is someone paying for nothing.
    assert result.payments == result.seats_sold + result.paid_for_nothing


@pytest.mark.parametrize("seed", SEEDS)
def test_reserve_in_one_handler_never_sells_twice(seed: int) -> None:
    crowd = demo.make_customers(seed)
    result = play(demo.act_atomic, crowd)
    assert result.seats_sold_twice == 0
    assert result.paid_for_nothing == 0
    assert result.payments == result.seats_sold
    assert result.seats_sold + result.refused == len(crowd)


@pytest.mark.parametrize("seed", SEEDS)
def test_hung_payments_time_out_at_the_budget_and_the_rest_are_served(seed: int) -> None:
    crowd = demo.make_customers(seed, hung_share=demo.HUNG_SHARE)
    result = play(demo.act_hung, crowd)
    assert result.hung, "the scenario should make some payments hang"
    assert result.timed_out == result.hung
    assert result.cut_after == pytest.approx([demo.BUDGET] * len(result.hung))
    assert result.others == len(crowd) - len(result.hung)
    assert result.others_answered == result.others
    assert result.queued_behind_hang > 0
    assert result.seats_sold_twice == 0
    assert result.paid_for_nothing == 0
    stats = result.statistics
    assert stats.timed_out == len(result.hung)
    assert stats.handled == result.seats_sold
    assert stats.queued == stats.running == stats.withdrawn == stats.cancelled == 0


def test_report_prints_the_counted_figures(capsys: pytest.CaptureFixture[str]) -> None:
    demo.main(["--virtual"])
    out = capsys.readouterr().out
    split = play(demo.act_split, demo.make_customers())
    hung = play(demo.act_hung, demo.make_customers(hung_share=demo.HUNG_SHARE))
    assert "virtual time" in out
    assert f"split across calls, {split.seats_sold_twice} seats were sold twice" in out
    assert "in one handler, 0;" in out
    assert f"{len(hung.hung)} payments hung -> {len(hung.timed_out)} CallTimeout" in out
    assert f"timed_out={hung.statistics.timed_out}" in out
    assert "NOT" not in out
