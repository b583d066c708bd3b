"""The examples of waiting without holding the server (examples/waiting/) show what they claim,
on virtual time: guarantee 14 (guarded calls) in the pool and the rate limiter, guarantee 15
(released blocks) in the theater. Each example's `main` is run here and its figures checked
exactly; the scripts are also run as a user would, with ``python examples/waiting/X.py``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "waiting"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"trioserver_example_{name}", EXAMPLES / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pool = load("pool.py")
rate_limiter = load("rate_limiter.py")
theater = load("theater.py")


# -- the pool: a guarded checkout -------------------------------------------------------------


async def test_pool_story(autojump_clock: trio.abc.Clock) -> None:
    result = await pool.main()
    assert result.lines == (
        (0.0, "conn1 to ann"),
        (0.1, "conn2 to bob"),
        (0.8, "dan gave up waiting: request withdrawn"),
        (1.1, "conn2 back from bob"),
        (1.1, "conn2 to cat"),  # the release was served while cat waited: cat gets it at once
        (2.1, "conn2 back from cat"),
        (2.1, "conn2 to eve"),  # eve is older than fay: the oldest waiter first
        (2.5, "eve cancelled, holding conn2"),
        (2.5, "conn2 back from eve"),  # the shielded release
        (2.5, "conn2 to fay"),
        (3.0, "conn2 back from fay"),
        (3.2, "conn1 back from ann"),
    )
    assert result.elapsed == 3.2


async def test_pool_waiter_past_its_deadline_withdraws(autojump_clock: trio.abc.Clock) -> None:
    result = await pool.main()
    assert result.withdrawn == 1
    assert not any(line.endswith("to dan") for _, line in result.lines)
    assert result.checkouts == len(pool.USERS) - 1  # dan's checkout never started
    assert result.longest_wait == 2.0  # fay's: 0.5 to 2.5 (eve's, 0.4 to 2.1, is next)


async def test_pool_shielded_release_leaks_nothing(autojump_clock: trio.abc.Clock) -> None:
    result = await pool.main()
    assert result.leaked == {}


async def test_pool_unshielded_release_of_a_cancelled_holder_leaks(
    autojump_clock: trio.abc.Clock,
) -> None:
    result = await pool.main(shield=False)
    assert result.leaked == {"conn2": "eve"}
    assert (2.5, "conn2 back from eve") not in result.lines
    assert (3.0, "fay gave up waiting: request withdrawn") in result.lines
    assert result.withdrawn == 2


async def test_pool_guards_are_evaluated_on_events_not_polled(
    autojump_clock: trio.abc.Clock,
) -> None:
    result = await pool.main()
    # Evaluated when a checkout arrives and when a handler ends (5 checkouts, 5 releases):
    # never while waiting. Polling every millisecond would have taken thousands.
    arrivals = len(pool.USERS)
    handlers = 2 * result.checkouts
    assert 0 < result.guard_evaluations <= arrivals + handlers


def test_pool_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    trio.run(pool.main, clock=trio.testing.MockClock(autojump_threshold=0))
    out = capsys.readouterr().out
    assert " 2.5  conn2 back from eve\n" in out
    assert "leaked: none; free at the end: 2 of 2\n" in out
    assert "checkouts 5, withdrawn 1, longest wait 2.0 s" in out


# -- the rate limiter: a guard on tokens, refilled by casts ----------------------------------


async def test_rate_limiter_grants(autojump_clock: trio.abc.Clock) -> None:
    result = await rate_limiter.main()
    assert result.granted == {
        "a": 0.0,  # the full bucket: on arrival
        "b": 0.03,
        "c": 0.06,
        "d": 0.2,  # then one at each refill
        "e": 0.4,
        "f": 0.6,
        "h": 0.8,  # g gave up at 0.48 and took no token
        "i": 1.0,
        "j": 1.2,
    }
    assert (0.48, "g gave up waiting: request withdrawn, no token taken") in result.lines
    assert result.withdrawn == 1
    assert result.tokens_left == 0
    assert result.elapsed == 1.2


async def test_rate_limiter_oldest_waiter_first(autojump_clock: trio.abc.Clock) -> None:
    result = await rate_limiter.main()
    arrival = {client.name: client.arrives for client in rate_limiter.CLIENTS}
    by_grant = sorted(result.granted, key=result.granted.__getitem__)
    assert by_grant == sorted(result.granted, key=arrival.__getitem__)


async def test_rate_limiter_never_exceeds_the_rate(autojump_clock: trio.abc.Clock) -> None:
    result = await rate_limiter.main()
    times = sorted(result.granted.values())
    for n, when in enumerate(times, start=1):
        refills_so_far = int(round(when / rate_limiter.PERIOD, 6))
        assert n <= rate_limiter.BURST + refills_so_far
    assert result.refills == round(result.elapsed / rate_limiter.PERIOD)


async def test_rate_limiter_guards_are_evaluated_on_events_not_polled(
    autojump_clock: trio.abc.Clock,
) -> None:
    result = await rate_limiter.main()
    arrivals = len(rate_limiter.CLIENTS)
    handlers = len(result.granted) + result.refills
    assert 0 < result.guard_evaluations <= arrivals + handlers


def test_rate_limiter_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    trio.run(rate_limiter.main, clock=trio.testing.MockClock(autojump_threshold=0))
    out = capsys.readouterr().out
    assert " 0.20  token to d (0 left)\n" in out
    assert "9 tokens granted in 1.20 s: 3 from the full bucket, then one every 0.20 s" in out
    assert "withdrawn 1, tokens left 0\n" in out


# -- the theater: holds, and payments in released blocks --------------------------------------


async def test_theater_what_each_customer_was_told(autojump_clock: trio.abc.Clock) -> None:
    result = await theater.main()
    assert result.told == {
        "ann": ("A1", 2.0),
        "bob": ("SeatTaken", 0.1),  # at once: A1 is held, and ann's payment holds no server
        "cat": ("A2", 1.2),
        "dan": ("CallTimeout", 0.3 + theater.BUDGET),  # the hung payment, cut at the budget
        "eve": ("PaymentDeclined", 0.9),
        "fay": ("A4", 2.5),  # eve's seat, given back when her payment failed
        "gus": ("A3", 6.5),  # dan's seat, given back when his payment was cut
    }


async def test_theater_sells_no_seat_twice(autojump_clock: trio.abc.Clock) -> None:
    result = await theater.main()
    assert sorted(result.sales) == sorted(set(result.sales)) == ["A1", "A2", "A3", "A4"]
    assert sorted(result.charged) == sorted(result.sold.values())  # nobody paid for nothing
    assert result.sold == {"A1": "ann", "A2": "cat", "A3": "gus", "A4": "fay"}
    assert (0.9, "A4 back on sale (eve's payment: PaymentDeclined)") in result.lines
    assert (4.3, "A3 back on sale (dan's payment: cut)") in result.lines


async def test_theater_payments_run_concurrently(autojump_clock: trio.abc.Clock) -> None:
    result = await theater.main()
    assert result.peak_payments == 4  # ann, cat, dan and eve at 0.4
    # 2.0 + 1.0 + 4.0 (dan's, until the cut) + 0.5 + 1.5 + 1.5 s of payments, in 6.5 s
    assert result.payment_seconds == 10.5
    assert result.elapsed == 6.5
    assert (result.handled, result.failed, result.timed_out) == (4, 2, 1)


def test_theater_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    trio.run(theater.main, clock=trio.testing.MockClock(autojump_threshold=0))
    out = capsys.readouterr().out
    assert "dan asked for A3 at 0.3: CallTimeout at 4.3\n" in out
    assert "sales 4, seats sold twice 0, paid for nothing 0\n" in out
    assert "payments: peak 4 in flight, 10.5 s of them in 6.5 s\n" in out
    assert "handled 4, failed 2, timed out 1\n" in out


# -- the scripts, as a user runs them ---------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "last_line"),
    [
        ("pool.py", "checkouts 5, withdrawn 1, longest wait 2.0 s, guard evaluations"),
        ("rate_limiter.py", "withdrawn 1, tokens left 0"),
        ("theater.py", "handled 4, failed 2, timed out 1"),
    ],
)
def test_script_runs(script: str, last_line: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's trioserver
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stderr == ""
    assert done.stdout.splitlines()[-1].startswith(last_line)
