"""A process of the PostgreSQL crash tests (tests/test_durable_postgres_crash.py).

``python -m tests.postgres_crash_worker CONNINFO RAN FIRST LEASE [enqueue|drain]``

Opens a `Recorder` server on a `PostgresStore`, prints ``ready``, then:

- ``enqueue``: enqueues durable casts numbered FIRST, FIRST+1, ... from many tasks at once,
  as fast as it can, and prints each number once its ``await`` returned (flushed: the test
  reads what was acknowledged before it killed the process). A `StoreError` is not an
  acknowledgement: that number is skipped. On SIGUSR1 it stops enqueuing, then drains.
- ``drain``: only drains: waits until the queue has no cast left (its lease holder, this
  process or another, ran them all), then stops its server and exits.

Each run of a cast appends its number to the file RAN (one ``write`` a line: a process killed
loses no line written).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from collections.abc import Iterator

import psycopg
import trio

from trioserver import StoreError, cast, open_server, server
from trioserver.postgres import PostgresStore

CALLERS = 64


@server
class Recorder:
    def __init__(self, ran: int) -> None:
        self.ran = ran

    @cast(durable=True)
    def record(self, n: int) -> None:
        os.write(self.ran, b"%d\n" % n)


async def enqueue(handle: Recorder, numbers: Iterator[int], stop: trio.Event) -> None:
    while not stop.is_set():
        n = next(numbers)
        try:
            await handle.record(n)
        except StoreError:
            await trio.sleep(0.01)  # (the database is down: not acknowledged)
            continue
        sys.stdout.write(f"{n}\n")
        sys.stdout.flush()


async def left(conninfo: str) -> int:
    def count() -> int:
        with psycopg.connect(conninfo, autocommit=True) as db:
            row = db.execute(
                "SELECT count(*) FROM trioserver_casts WHERE queue = %s",
                (Recorder.__qualname__,),
            ).fetchone()
            assert row is not None
            return int(row[0])

    try:
        return await trio.to_thread.run_sync(count)
    except psycopg.OperationalError:
        return -1  # the database is down


async def main(conninfo: str, ran_path: str, first: int, lease: float, mode: str) -> None:
    ran = os.open(ran_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = PostgresStore(conninfo, lease=lease)
    async with open_server(Recorder(ran), store=store) as handle:
        print("ready", flush=True)
        if mode == "enqueue":
            stop = trio.Event()
            with trio.open_signal_receiver(signal.SIGUSR1) as signals:
                async with trio.open_nursery() as nursery:
                    numbers = itertools.count(first)
                    for _ in range(CALLERS):
                        nursery.start_soon(enqueue, handle, numbers, stop)
                    async for _ in signals:
                        stop.set()
                        break
        while await left(conninfo) != 0:  # noqa: ASYNC110 (another process's doing, maybe)
            await trio.sleep(0.05)
    print("drained", flush=True)


if __name__ == "__main__":
    conninfo, ran_path, first, lease, mode = sys.argv[1:]
    trio.run(main, conninfo, ran_path, int(first), float(lease), mode)
