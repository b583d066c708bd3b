"""The demo (`make demo`) shows what it claims: its acts, run on virtual time, count a race when
check-then-reserve is split across calls, none when it is one handler, a CallTimeout for
exactly the hung payments while everyone else is served, and, with the seat held and the
payment in a released block, no seat sold twice, payments run concurrently and no one waiting
behind a hung payment."""

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
    assert result.waited_behind_hang > 0
    assert result.longest_wait >= demo.BUDGET  # someone waited out a whole hung payment
    assert result.peak_payments == 1  # the payments ran inside the server, one at a time
    assert result.given_back == 0  # (it holds nothing)
    assert result.seats_sold_twice == 0
    assert result.paid_for_nothing == 0
    stats = result.statistics
    assert stats.timed_out == len(result.hung)
    assert stats.handled == result.seats_sold
    assert stats.queued == stats.running == stats.withdrawn == stats.cancelled == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_a_held_seat_paid_for_in_a_released_block_is_never_sold_twice(seed: int) -> None:
    crowd = demo.make_customers(seed, hung_share=demo.HUNG_SHARE)
    result = play(demo.act_released, crowd)
    assert result.method == "reserve_released"
    assert result.seats_sold_twice == 0
    assert result.paid_for_nothing == 0
    assert 0 < result.seats_sold <= len({seat for c in crowd for seat in c.seats})
    # Exactly the hung payments are cut, at the budget, and each gives its seat back.
    assert result.hung, "the scenario should make some payments hang"
    assert result.timed_out == result.hung
    assert result.cut_after == pytest.approx([demo.BUDGET] * len(result.hung))
    assert result.given_back == len(result.hung)
    assert result.others == len(crowd) - len(result.hung)
    assert result.others_answered == result.others
    stats = result.statistics
    assert stats.timed_out == len(result.hung)
    assert stats.handled == result.seats_sold
    assert stats.queued == stats.running == stats.released == 0
    assert stats.withdrawn == stats.cancelled == 0
    assert stats.released_seconds > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_released_payments_run_concurrently_and_no_one_waits_behind_a_hang(seed: int) -> None:
    calm = demo.make_customers(seed)
    stormy = demo.make_customers(seed, hung_share=demo.HUNG_SHARE)
    atomic = play(demo.act_atomic, calm)
    hung = play(demo.act_hung, stormy)
    freed = play(demo.act_released, stormy)
    assert atomic.peak_payments == hung.peak_payments == 1
    assert freed.peak_payments > 1
    # Act 4 has act 3's hung payments (cut at 0.2 s) and still takes less than act 2, whose
    # payments never hang but run one at a time.
    assert freed.took < atomic.took < hung.took
    assert freed.waited_behind_hang < hung.waited_behind_hang
    # On virtual time a handler holds the server for no time at all once it pays in a
    # released block: no call waits for the server, so none waits behind a hung payment.
    assert freed.waited_behind_hang == 0
    assert freed.longest_wait == 0


def test_report_prints_the_counted_figures(capsys: pytest.CaptureFixture[str]) -> None:
    demo.main(["--virtual"])
    out = capsys.readouterr().out
    split = play(demo.act_split, demo.make_customers())
    hung = play(demo.act_hung, demo.make_customers(hung_share=demo.HUNG_SHARE))
    freed = play(demo.act_released, demo.make_customers(hung_share=demo.HUNG_SHARE))
    atomic = play(demo.act_atomic, demo.make_customers())
    assert "virtual time" in out
    assert f"split across calls, {split.seats_sold_twice} seats were sold twice" in out
    assert "in one handler, 0;" in out
    assert f"{len(hung.hung)} payments hung -> {len(hung.timed_out)} CallTimeout" in out
    assert f"timed_out={hung.statistics.timed_out}" in out
    assert f"{hung.waited_behind_hang} of them after waiting behind a hung payment" in out
    assert f"{freed.waited_behind_hang} of them after waiting behind a hung payment" in out
    assert f"{freed.seats_sold} seats sold, {freed.seats_sold_twice} of them twice" in out
    assert f"the {freed.given_back} seats they held were given back" in out
    assert f"up to {freed.peak_payments} at once" in out
    assert f"the act took {freed.took:.2f} s against act 2's {atomic.took:.2f} s" in out
    assert f"released_seconds={freed.statistics.released_seconds:.2f}" in out
    assert "NOT" not in out
