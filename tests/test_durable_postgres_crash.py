"""Guarantee 17 with PostgreSQL, under crashes: killing the process at any moment, or the
database server, loses no cast whose ``await`` returned; a cast may run twice.

Real processes (tests/postgres_crash_worker.py) on a real PostgreSQL server with
``fsync=on``, killed with SIGKILL (or the server with ``pg_ctl stop -m immediate``) at
random moments. Each prints the casts acknowledged to it; each run of a cast is appended to
a file. The counts (acknowledged, ran, duplicates, lost) are printed: ``pytest -s`` shows
them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from .postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
LEASE = 1.0  # seconds: a killed holder's queue waits this long for a takeover
ROUND = 1_000_000  # each process numbers its casts from its own multiple of this

pytestmark = [pytest.mark.timeout(240), pytest.mark.crash]


class Worker:
    """A worker process; its stdout (acknowledged casts) and stderr go to files."""

    def __init__(self, tmp: Path, name: str, conninfo: str, first: int, mode: str) -> None:
        self.name = name
        self.out = tmp / f"{name}.out"
        self.err = tmp / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            arguments = [conninfo, str(tmp / "ran"), str(first), str(LEASE), mode]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.postgres_crash_worker", *arguments],
                cwd=ROOT,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines()

    def wait_for(self, line: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while line not in self.lines():
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.process.returncode}):\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not print {line!r} in {within} s:\n{self.stderr()}")
            time.sleep(0.01)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def drain(self, within: float = 60.0) -> None:
        """SIGUSR1: it stops enqueuing, and exits once the queue is empty."""
        self.process.send_signal(signal.SIGUSR1)
        self.finish(within)

    def finish(self, within: float = 60.0) -> None:
        try:
            code = self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not drain in {within} s:\n{self.stderr()}")
        assert code == 0, self.stderr()
        assert self.lines()[-1] == "drained"

    def acknowledged(self) -> list[int]:
        return [int(line) for line in self.lines() if line.isdigit()]

    def stderr(self) -> str:
        return self.err.read_text()[-5000:]


def check(tmp: Path, workers: list[Worker], what: str) -> None:
    """Every acknowledged cast ran at least once; print the counts."""
    acknowledged = [n for worker in workers for n in worker.acknowledged()]
    runs = Counter(int(line) for line in (tmp / "ran").read_text().split())
    lost = sorted(set(acknowledged) - set(runs))
    duplicates = sum(count - 1 for count in runs.values())
    unacknowledged = len(set(runs) - set(acknowledged))  # committed, killed before it printed
    print(
        f"\n{what}: acknowledged {len(acknowledged)}, ran {len(runs)} "
        f"({sum(runs.values())} runs, {unacknowledged} not acknowledged), "
        f"duplicates {duplicates}, lost {len(lost)}"
    )
    assert len(acknowledged) == len(set(acknowledged))
    assert len(acknowledged) > 1000  # the kills hit a busy enqueuer
    assert lost == [], f"{len(lost)} acknowledged casts never ran: {lost[:20]}"


def test_sigkill_of_the_enqueuing_process_loses_no_acknowledged_cast(
    postgres_fsync: PostgresServer, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    print(f"\nseed {seed}")
    rng = random.Random(seed)
    conninfo = postgres_fsync.create_database()
    workers: list[Worker] = []
    for round_ in range(22):
        worker = Worker(tmp_path, f"enqueue{round_}", conninfo, round_ * ROUND, "enqueue")
        workers.append(worker)
        worker.wait_for("ready")
        time.sleep(rng.uniform(0.1, 1.5))
        worker.kill()
    drain = Worker(tmp_path, "drain", conninfo, 0, "drain")  # a fresh process runs the rest
    drain.finish()
    check(tmp_path, workers, "SIGKILL x22")


def test_a_database_crash_loses_no_acknowledged_cast(
    postgres_fsync: PostgresServer, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    print(f"\nseed {seed}")
    rng = random.Random(seed)
    conninfo = postgres_fsync.create_database()
    worker = Worker(tmp_path, "enqueue", conninfo, 0, "enqueue")
    worker.wait_for("ready")
    crashes = 20
    try:
        for _ in range(crashes):
            time.sleep(rng.uniform(0.1, 1.5))
            postgres_fsync.stop("immediate")  # a crash: recovery from the WAL at the start
            postgres_fsync.start()
            assert worker.process.poll() is None, worker.stderr()
    finally:
        if worker.process.poll() is None and not postgres_fsync.running():
            postgres_fsync.start()
    worker.drain()  # the same process, through every crash, runs what is left
    check(tmp_path, [worker], f"PostgreSQL crashed x{crashes}")


def test_when_the_lease_holder_is_killed_the_other_process_takes_over(
    postgres_fsync: PostgresServer, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    print(f"\nseed {seed}")
    rng = random.Random(seed)
    conninfo = postgres_fsync.create_database()
    ran = tmp_path / "ran"
    holder = Worker(tmp_path, "process0", conninfo, 0, "enqueue")
    holder.wait_for("ready")  # it holds the lease
    workers = [holder]
    takeovers: list[float] = []
    for round_ in range(1, 6):
        other = Worker(tmp_path, f"process{round_}", conninfo, round_ * ROUND, "enqueue")
        workers.append(other)
        other.wait_for("ready")  # it stores casts, the holder runs them
        time.sleep(rng.uniform(0.1, 1.5))
        holder.kill()
        killed = time.monotonic()
        size = ran.stat().st_size
        while ran.stat().st_size == size:  # the other process alone may run casts now
            assert time.monotonic() - killed < 10, other.stderr()
            time.sleep(0.005)
        takeovers.append(time.monotonic() - killed)
        holder = other
    holder.drain()  # the last holder runs every cast left by the killed ones
    print(f"takeovers after {', '.join(f'{t:.2f}' for t in takeovers)} s (lease {LEASE} s)")
    # once its lease expired: renewed every third of it, it had 2/3 to 3/3 of it left (less
    # a commit's latency); then the other's next try (every third of it) took it
    assert all(LEASE / 2 < t < LEASE + LEASE / 3 + 1.0 for t in takeovers)
    check(tmp_path, workers, "lease holder SIGKILLed x5")
