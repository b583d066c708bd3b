"""The process that `test_durable_crash` kills: it enqueues durable casts, or drains them.

``python tests/durable_crash_child.py MODE DB RUNS [options]`` (the test runs it by path,
with ``PYTHONPATH`` naming the trioserver it imports). It opens a `Recorder` on
``SQLiteStore(DB)`` and then, by MODE:

- ``enqueue``: ``--callers`` tasks call ``await handle.record(n)`` as fast as they can, each
  with the next number from ``--base`` up, and write ``n`` to stdout (one ``os.write``, so
  unbuffered) right after the ``await`` returned: a line on stdout is an acknowledged cast.
  A first line ``ready`` says the handle was given out. With ``--hold``, the handler never
  returns (nothing runs to the end: the casts pile up stored); otherwise each run appends its
  number to RUNS. It runs until it is killed.
- ``ack-and-die``: ``--callers`` tasks each enqueue one cast (numbers from ``--base``, the
  handler holding); the first whose ``await`` returned writes its number to stdout and sends
  SIGKILL to its own process at once, with no step in between.
- ``drain``: the handler records every run in RUNS; it waits until no cast of the queue is
  left to run (none pending or claimed in the database, none in memory), stops the server
  cleanly and prints ``drained`` (or ``timeout`` after ``--within`` seconds).

Its store's lease is short (``--lease``, 0.3 s): where the system has no ``flock`` (which
frees a killed holder's lease at once), the next child takes the queue over that soon.

A run is recorded with one ``os.write`` of ``b"<n>\\n"`` to RUNS opened with ``O_APPEND``,
before the handler returns, so before its cast can be marked done. The test kills processes,
not the machine: what ``write`` handed to the kernel survives SIGKILL without ``fsync``
(only a power loss could lose it, and none is simulated here), so an fsync per run would only
slow the runs down.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sqlite3
import sys

import trio

import trioserver
from trioserver import SQLiteStore, cast, open_server, server

QUEUE = "crash"


@server
class Recorder:
    """One durable cast: ``record(n)`` appends `n` to the runs file (or holds, never done)."""

    def __init__(self, runs: int, hold: bool) -> None:
        self.runs = runs  # a file descriptor opened with O_APPEND
        self.hold = hold

    @cast(durable=True, timeout=None)
    async def record(self, n: int) -> None:
        if self.hold:
            await trio.sleep_forever()
        os.write(self.runs, b"%d\n" % n)


def left(path: str) -> int:
    """Casts of the queue still to run: pending, or claimed (by this run or a dead one)."""
    db = sqlite3.connect(path, timeout=5.0)
    try:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM trioserver_casts WHERE queue = ? AND state IN (?, ?)",
            (QUEUE, "pending", "running"),
        ).fetchone()
        return int(count)
    finally:
        db.close()


async def enqueue(handle: Recorder, callers: int, base: int) -> None:
    numbers = itertools.count(base)

    async def caller() -> None:
        while True:
            n = next(numbers)
            await handle.record(n)
            os.write(1, b"%d\n" % n)  # acknowledged

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
        os.write(1, b"ready\n")


async def ack_and_die(handle: Recorder, callers: int, base: int) -> None:
    async def caller(n: int) -> None:
        await handle.record(n)
        os.write(1, b"%d\n" % n)
        os.kill(os.getpid(), signal.SIGKILL)

    async with trio.open_nursery() as nursery:
        for i in range(callers):
            nursery.start_soon(caller, base + i)


async def drain(handle: Recorder, db: str, within: float) -> None:
    with trio.move_on_after(within):
        while True:
            await trio.sleep(0.05)
            if trioserver.statistics(handle).durable_running:
                continue
            if await trio.to_thread.run_sync(left, db) == 0:
                print("drained", flush=True)
                return
    print("timeout", flush=True)


async def main(args: argparse.Namespace) -> None:
    store = SQLiteStore(args.db, synchronous=args.synchronous, queue=QUEUE, lease=args.lease)
    runs = os.open(args.runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    hold = args.hold or args.mode == "ack-and-die"
    async with open_server(Recorder(runs, hold), store=store) as handle:
        if args.mode == "enqueue":
            await enqueue(handle, args.callers, args.base)
        elif args.mode == "ack-and-die":
            await ack_and_die(handle, args.callers, args.base)
        else:
            await drain(handle, args.db, args.within)
    os.close(runs)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("enqueue", "ack-and-die", "drain"))
    parser.add_argument("db")
    parser.add_argument("runs")
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--base", type=int, default=0)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--lease", type=float, default=0.3)
    parser.add_argument("--within", type=float, default=60.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse(sys.argv[1:]))
