"""Crash tests of the SQLite store (guarantee 17): SIGKILL loses no acknowledged cast.

Real processes, real files, real time, no mocks. A child process (`durable_crash_child`)
enqueues durable casts from 20 tasks as fast as it can, writing each cast's number to its
stdout once its ``await`` returned; this test kills it with SIGKILL at a random moment
(0.05-1.0 s after it said it is running), again and again, on one database. In some rounds the
server also runs the stored casts (each run appends its number to a runs file before the
handler returns); in others its handler holds, so they pile up. Then a fresh process drains
the store, recording every run, and stops. Every acknowledged number must have run at least
once; the counts (acknowledged, ran, duplicates, still pending, kills) are printed.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import attrs
import pytest

import trioserver

CHILD = Path(__file__).with_name("durable_crash_child.py")
PACKAGE_ROOT = Path(trioserver.__file__).resolve().parent.parent  # the trioserver under test
STRIDE = 10_000_000  # each round's numbers start at round * STRIDE
READY_WITHIN = 20.0  # seconds for a child to start (two CPUs, other tests may be running)

pytestmark = pytest.mark.crash  # (run once per `make test`: tests/conftest.py)


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return os.environ | {
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), *([path] if path else [])])
    }


def _command(mode: str, db: Path, runs: Path, *options: str) -> list[str]:
    return [sys.executable, str(CHILD), mode, str(db), str(runs), *options]


def _numbers(path: Path) -> list[int]:
    """The numbers of a file of lines (complete lines only), other lines skipped."""
    found: list[int] = []
    for line in path.read_bytes().split(b"\n")[:-1]:  # the last piece has no newline
        if line.isdigit():
            found.append(int(line))
    return found


def _wait_ready(child: subprocess.Popen[bytes], out: Path, err: Path) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while not out.read_bytes().startswith(b"ready\n"):
        if child.poll() is not None:
            raise AssertionError(f"the child exited ({child.returncode}): {err.read_text()}")
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            raise AssertionError(f"the child did not start in {READY_WITHIN} s: {err.read_text()}")
        time.sleep(0.005)


@attrs.define
class Crashes:
    """What the rounds of kills gave."""

    acknowledged: set[int] = attrs.Factory(set[int])
    kills: int = 0
    holding_rounds: int = 0  # rounds whose handler held (nothing ran to its end)


def kill_rounds(
    tmp: Path, db: Path, runs: Path, *, kills: int, synchronous: str, rng: random.Random
) -> Crashes:
    """`kills` rounds: start an enqueuing child, let it run 0.05-1.0 s, SIGKILL it."""
    crashes = Crashes()
    for round_ in range(kills):
        hold = rng.random() < 0.35
        out, err = tmp / f"acks-{round_}.txt", tmp / f"err-{round_}.txt"
        options = ["--synchronous", synchronous, "--callers", "20", "--base", str(round_ * STRIDE)]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            child = subprocess.Popen(
                _command("enqueue", db, runs, *options, *(["--hold"] if hold else [])),
                stdout=stdout,
                stderr=stderr,
                env=_env(),
            )
        try:
            _wait_ready(child, out, err)
            time.sleep(rng.uniform(0.05, 1.0))
            assert child.poll() is None, f"the child exited ({child.returncode}): {err.read_text()}"
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()  # (no-op if it was killed already)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        crashes.kills += 1
        crashes.holding_rounds += hold
        crashes.acknowledged.update(_numbers(out))
    return crashes


def drain(tmp: Path, db: Path, runs: Path, *, synchronous: str) -> None:
    """A fresh process runs every cast left in the store, and stops."""
    done = subprocess.run(
        _command("drain", db, runs, "--synchronous", synchronous, "--within", "60"),
        capture_output=True,
        env=_env(),
        timeout=120,
        check=False,
        cwd=tmp,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["drained"], done.stdout.decode()


def stored_states(db: Path) -> dict[str, int]:
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute(
            "SELECT state, COUNT(*) FROM trioserver_casts GROUP BY state"
        ).fetchall()
    finally:
        connection.close()
    return {state: count for state, count in rows}


def crash_and_drain(tmp: Path, *, kills: int, synchronous: str) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    db, runs = tmp / "casts.db", tmp / "runs.txt"
    began = time.monotonic()
    crashes = kill_rounds(tmp, db, runs, kills=kills, synchronous=synchronous, rng=rng)
    ran_before = len(_numbers(runs))
    drain(tmp, db, runs, synchronous=synchronous)
    ran = Counter(_numbers(runs))
    states = stored_states(db)
    lost = crashes.acknowledged - ran.keys()
    counts = {
        "synchronous": synchronous,
        "kills": crashes.kills,
        "holding rounds": crashes.holding_rounds,
        "acknowledged": len(crashes.acknowledged),
        "ran (distinct)": len(ran),
        "runs": ran.total(),
        "ran before the drain": ran_before,
        "duplicates": ran.total() - len(ran),
        "ran, not acknowledged": len(ran.keys() - crashes.acknowledged),
        "still pending": states.get("pending", 0) + states.get("running", 0),
        "dead": states.get("dead", 0),
        "lost": len(lost),
        "seconds": round(time.monotonic() - began, 1),
        "seed": seed,
    }
    print("\ndurable crash test: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    assert not lost, f"acknowledged casts that never ran: {sorted(lost)[:20]} ({counts})"
    assert crashes.acknowledged, counts  # (it did enqueue)
    assert counts["still pending"] == 0, counts
    assert counts["dead"] == 0, counts
    assert max(ran) // STRIDE < kills, counts  # (every run is a number some round enqueued)


def test_sigkill_at_random_moments_loses_no_acknowledged_cast(tmp_path: Path) -> None:
    crash_and_drain(tmp_path, kills=22, synchronous="FULL")


def test_synchronous_normal_survives_process_kills(tmp_path: Path) -> None:
    """NORMAL may lose the last commits to a power loss, never to a process crash: the WAL is
    written (not synced) at each commit, and the kernel keeps what the process wrote."""
    crash_and_drain(tmp_path, kills=8, synchronous="NORMAL")


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
@pytest.mark.parametrize("callers", [1, 20])
def test_a_cast_acknowledged_is_in_the_file_when_sigkill_follows_the_ack(
    tmp_path: Path, synchronous: str, callers: int
) -> None:
    """The child kills itself in the task whose ``await`` just returned: no time for a lagging
    write or fsync. The database (file and WAL, as the next opener reads them) has the cast."""
    db, runs = tmp_path / "casts.db", tmp_path / "runs.txt"
    for attempt in range(3):
        base = attempt * 1000
        done = subprocess.run(
            _command(
                "ack-and-die",
                db,
                runs,
                *("--synchronous", synchronous, "--callers", str(callers), "--base", str(base)),
            ),
            capture_output=True,
            env=_env(),
            timeout=60,
            check=False,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr.decode()
        (acked,) = _numbers_of(done.stdout)
        assert base <= acked < base + callers
        connection = sqlite3.connect(db)
        try:
            payloads = [p for (p,) in connection.execute("SELECT payload FROM trioserver_casts")]
        finally:
            connection.close()
        assert f'{{"args":[{acked}],"kwargs":{{}}}}' in payloads


def _numbers_of(data: bytes) -> list[int]:
    return [int(line) for line in data.split(b"\n")[:-1] if line.isdigit()]
