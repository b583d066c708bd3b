"""Durable casts (guarantee 17): how many a second are acknowledged, against an in-memory cast.

Callers loop ``await handle.add(1)`` on a ``@cast(durable=True)`` of a server opened with a
`trioserver.SQLiteStore` (``synchronous="FULL"``, the default, and ``"NORMAL"``), and, as the
reference, on a plain in-memory ``@cast`` of the same handler (nothing stored). Each call is
timed from its start to the return of its ``await`` (for a durable cast: once it is committed,
its round's fsync included with FULL), so p50 and p99 are the enqueue latency. The rate is
acknowledged casts per second of wall time, and per second of the process's CPU time (its
worker threads, where SQLite commits, included), while the server also runs the casts: the
timed region ends when the last caller's ``await`` returned. How long until the server had run
every one (``ran/s``) is recorded too: the handler counts its runs.

Two handlers: ``noop`` only counts its run (to know when all ran); ``sleep0`` awaits
``trio.sleep(0)`` first. 1, 20 and 200 callers, released together. Each measurement is one
fresh `trio.run` with a fresh database in a new temporary directory (``tempfile``: set
``TMPDIR`` to measure another disk; the section records the directory's file system, since
on tmpfs an fsync costs nothing). A durable measurement makes fewer casts than an in-memory
one (`DURABLE_SHARE` of ``--calls``: FULL at one caller manages about a thousand a second).
Measurements interleave in rounds as elsewhere (`roundtrip.interleaved`); ratios are to the
in-memory cast of the same handler at the same number of callers, in the same run.

Target (issue 14): at least 10,000 durable casts/s at 200 callers with SQLite FULL, by wall
clock (durability is I/O: CPU time is shown, not judged).
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from trioserver import SQLiteStore, Store, cast, open_server, server

from ._common import median, percentile
from .contenders import Contender
from .roundtrip import Sample, interleaved

CALLERS = (1, 20, 200)
WARMUP = 200  # casts before the timed ones (run to the end before timing)
DURABLE_SHARE = {1: 1 / 20, 20: 1 / 4, 200: 1 / 2}
"""A durable measurement's casts, as a share of ``--calls`` (20,000 unless given)."""
TARGET_DURABLE = 10_000.0  # durable casts/s at 200 callers, SQLite FULL (issue 14)

BODIES = {"noop": "handler does nothing", "sleep0": "handler awaits trio.sleep(0)"}
STORES = {
    "memory": "in-memory @cast (reference)",
    "sqlite_full": "durable, SQLite FULL",
    "sqlite_normal": "durable, SQLite NORMAL",
    "postgres": "durable, PostgreSQL (fsync on)",
}


def _store(kind: str, directory: Path) -> Store | None:
    """The store of a measurement of `kind`, in a fresh `directory` (None: in memory)."""
    if kind == "memory":
        return None
    if kind == "sqlite_full":
        return SQLiteStore(directory / "casts.db", synchronous="FULL")
    if kind == "sqlite_normal":
        return SQLiteStore(directory / "casts.db", synchronous="NORMAL")
    if kind == "postgres":
        from trioserver.postgres import PostgresStore

        return PostgresStore(_postgres().create_database())  # a fresh database each time
    raise ValueError(f"no store {kind!r}")


_SERVER: list[Any] = []  # the PostgreSQL server of this section (started at its first use)


def _postgres() -> Any:
    """The section's PostgreSQL server (``fsync=on``, a unix socket in a temporary directory),
    started as the tests start theirs (tests/postgres.py: initdb and pg_ctl), stopped by
    `run_durable` when the section ends."""
    if not _SERVER:
        from tests.postgres import PostgresServer

        _SERVER.append(PostgresServer(fsync=True))
    return _SERVER[0]


# -- the servers ----------------------------------------------------------------------------


class Tally:
    """Counts the runs, and says when `target` of them are done (`reached`)."""

    def __init__(self) -> None:
        self.ran = 0
        self.target = math.inf
        self.reached = trio.Event()

    def count(self) -> None:
        self.ran += 1
        if self.ran >= self.target:
            self.reached.set()

    async def wait_for(self, target: int) -> None:
        """Until `target` runs are done (the measurement reads the object, not the server)."""
        self.target = target
        if self.ran < target:
            await self.reached.wait()
        self.reached = trio.Event()
        self.target = math.inf


async def noop_body(self: Tally, n: int) -> None:
    self.count()


async def sleep0_body(self: Tally, n: int) -> None:
    await trio.sleep(0)  # noqa: ASYNC115 (the body under test is written so)
    self.count()


@server
class MemoryNoop(Tally):
    add = cast(noop_body)


@server
class MemorySleep0(Tally):
    add = cast(sleep0_body)


@server
class DurableNoop(Tally):
    add = cast(durable=True)(noop_body)


@server
class DurableSleep0(Tally):
    add = cast(durable=True)(sleep0_body)


SERVERS: dict[tuple[bool, str], type[Tally]] = {
    (False, "noop"): MemoryNoop,
    (False, "sleep0"): MemorySleep0,
    (True, "noop"): DurableNoop,
    (True, "sleep0"): DurableSleep0,
}


# -- one measurement ------------------------------------------------------------------------


@attrs.frozen
class DurableSample(Sample):
    """A `Sample` (acknowledged casts: `seconds` until the last ``await`` returned), and the
    seconds from the start until the server had run every one."""

    ran_seconds: float


def _name(body: str, kind: str) -> str:
    return f"{body}_{kind}"


def _parse(name: str) -> tuple[str, str]:
    body, _, kind = name.partition("_")
    return body, kind


def casts_for(kind: str, callers: int, calls: int) -> int:
    """Casts in one measurement: `calls` in memory, a share of it durable; whole per caller."""
    total = calls if kind == "memory" else round(calls * DURABLE_SHARE.get(callers, 0.5))
    return max(callers, total // callers * callers)


async def _measure(body: str, kind: str, callers: int, casts: int) -> DurableSample:
    with tempfile.TemporaryDirectory(prefix="trioserver-durable-") as directory:
        store = _store(kind, Path(directory))
        cls = SERVERS[store is not None, body]
        obj = cls()
        async with open_server(obj, store=store) as opened:
            handle: Any = opened
            add = handle.add
            for _ in range(WARMUP):
                await add(1)
            await obj.wait_for(WARMUP)
            latencies = [[0] * (casts // callers) for _ in range(callers)]
            go = trio.Event()

            async def caller(mine: list[int]) -> None:
                clock = time.perf_counter_ns
                await go.wait()
                for i in range(len(mine)):
                    began = clock()
                    await add(1)
                    mine[i] = clock() - began

            gc.collect()
            async with trio.open_nursery() as nursery:
                for mine in latencies:
                    nursery.start_soon(caller, mine)
                await trio.testing.wait_all_tasks_blocked()
                cpu = time.process_time()
                start = time.perf_counter()
                go.set()
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu
            await obj.wait_for(WARMUP + casts)
            ran_seconds = time.perf_counter() - start
    ordered = sorted(x for mine in latencies for x in mine)
    return DurableSample(
        calls=len(ordered),
        seconds=seconds,
        cpu_seconds=cpu,
        p50_us=percentile(ordered, 0.50) / 1000,
        p99_us=percentile(ordered, 0.99) / 1000,
        ran_seconds=ran_seconds,
    )


def measure(contender: Contender, callers: int, calls: int) -> DurableSample:
    body, kind = _parse(contender.name)
    return trio.run(_measure, body, kind, callers, casts_for(kind, callers, calls))


# -- the section ----------------------------------------------------------------------------


def contenders() -> list[Contender]:
    return [
        Contender(
            _name(body, kind),
            f"{body}: {label}",
            None,
            baseline=_name(body, "memory"),
        )
        for body in BODIES
        for kind, label in STORES.items()
    ]


def filesystem(path: str) -> str:
    """The type of the file system holding `path` (from /proc/mounts; "" if unknown)."""
    try:
        with open("/proc/mounts") as mounts:
            entries = [line.split() for line in mounts]
    except OSError:  # pragma: no cover (not Linux)
        return ""
    path = os.path.realpath(path)
    best, found = "", ""
    for entry in entries:
        if len(entry) < 3:
            continue
        point = entry[1]
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, found = point, entry[2]
    return found


def run_durable(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    try:
        section = interleaved(
            contenders(),
            callers=CALLERS,
            rounds=rounds,
            calls=calls,
            seed=seed,
            title="durable",
            measure_one=measure,
        )
    finally:
        while _SERVER:
            _SERVER.pop().close()
    for row in section["rows"]:
        row["ran_per_s"] = median([r["calls"] / r["ran_seconds"] for r in row["rounds"]])
    directory = tempfile.gettempdir()
    section["casts_per_measurement"] = {
        kind: {str(n): casts_for(kind, n, calls) for n in CALLERS} for kind in STORES
    }
    section["database_directory"] = directory
    section["filesystem"] = filesystem(directory)
    return section
