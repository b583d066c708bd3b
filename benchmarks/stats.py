"""The price of `trioserver.statistics`: one read, and reading it while calls go on.

*Reads*: a server with three handlers (`contenders.Triple`), each called 3,000 times (2,000 by
one caller, 1,000 by 10 callers at once, so some calls queued), then 2,000 reads of
``statistics(handle)``, each timed with `time.perf_counter_ns`; the median and p99 per read,
and the process's CPU time per read over all of them. One fresh `trio.run` a round.

*Reading while calling*: the same server, exercised the same way first, then callers loop
``await bump(1)`` through a wrapper that reads ``statistics(handle)`` every 100 calls, against
the same wrapper that never reads (interleaved as in `roundtrip`; ratio reading / never).
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from trioserver import open_server, statistics

from ._common import median, percentile
from .contenders import Bump, Contender, Opener, Triple, exercise
from .roundtrip import interleaved

CALLS_EACH = 3000
READS = 2000
EVERY = 100


async def _reads(reads: int) -> dict[str, float]:
    async with open_server(Triple()) as handle:
        await exercise(handle, CALLS_EACH)
        await trio.testing.wait_all_tasks_blocked()
        snapshot = statistics(handle)
        assert snapshot.handled >= 3 * CALLS_EACH, snapshot
        assert len(snapshot.methods) == 3, snapshot
        clock = time.perf_counter_ns
        took = [0] * reads
        cpu = time.process_time()
        for i in range(reads):
            start = clock()
            statistics(handle)
            took[i] = clock() - start
        cpu = time.process_time() - cpu
    took.sort()
    return {
        "p50_us": percentile(took, 0.5) / 1000,
        "p99_us": percentile(took, 0.99) / 1000,
        "cpu_us": cpu / reads * 1e6,
    }


def measure_reads(*, rounds: int, reads: int = READS) -> dict[str, Any]:
    samples = [trio.run(_reads, reads) for _ in range(rounds)]
    return {
        "reads": reads,
        "calls_each": CALLS_EACH,
        "p50_us": median([s["p50_us"] for s in samples]),
        "p99_us": median([s["p99_us"] for s in samples]),
        "cpu_us": median([s["cpu_us"] for s in samples]),
        "rounds": samples,
    }


def reading_opener(every: int) -> Opener:
    """`Triple.bump` after `exercise`, through a wrapper that reads statistics every `every`
    calls (0: never; the wrapper does the same counting either way)."""

    @asynccontextmanager
    async def opener() -> AsyncGenerator[Bump, None]:
        async with open_server(Triple()) as handle:
            await exercise(handle, CALLS_EACH)
            call = handle.bump
            calls = 0

            async def bump(n: int) -> int:
                nonlocal calls
                calls += 1
                if calls == every:
                    calls = 0
                    statistics(handle)
                return await call(n)

            yield bump

    return opener


NEVER = "stats_never"

READING: list[Contender] = [
    Contender(NEVER, "@call, never reading statistics (reference)", reading_opener(0), None, NEVER),
    Contender(
        "stats_every_100",
        f"@call, reading statistics every {EVERY} calls",
        reading_opener(EVERY),
        None,
        NEVER,
    ),
]


def run_statistics(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    reads = measure_reads(rounds=rounds)
    print(f"  statistics: {reads['p50_us']:.1f} us per read (median)", file=sys.stderr, flush=True)
    return {
        "reads": reads,
        "reading": interleaved(
            READING, callers=(1, 100), rounds=rounds, calls=calls, seed=seed, title="statistics"
        ),
    }
