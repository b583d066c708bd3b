"""Round trips: calls/s, p50 and p99 latency, contenders interleaved in one process run.

Each measurement is one fresh `trio.run` (real clock): open the contender, warm up, park
every caller on an event, then release them all and time until the last call returns.
Callers loop ``await bump(1)``, timing each call with `time.perf_counter_ns`; the process's
CPU time over the whole measurement gives calls per CPU-second too (steadier on a shared
machine). With 100 callers each makes ``calls // 100`` calls. A round measures every
(contender, callers) pair once, in a shuffled order; ratios are to the hand-written actor
and to `trio.Lock`.

Pykka is measured in its natural setting, without trio: plain threads (the main thread for
one caller; 100 threads released by a barrier) call ``actor_ref.ask(n)`` (and, as a second
entry, ``proxy.bump(n).get()``) on one `pykka.ThreadingActor`.
"""

from __future__ import annotations

import gc
import random
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pykka
import trio
import trio.testing

from ._common import median, percentile
from .contenders import (
    ACTOR,
    BUDGET_CONTENDERS,
    FLOOR,
    LOCK,
    ROUNDTRIP,
    Bump,
    Contender,
    Settle,
)

WARMUP = 500


@attrs.frozen
class Sample:
    """One measurement: `calls` round trips by all callers in `seconds`, using `cpu_seconds`.

    CPU time (`time.process_time`, all threads of this process) leaves out the time other
    processes took the CPU from us: on a shared machine it is the steadier figure.
    """

    calls: int
    seconds: float
    cpu_seconds: float
    p50_us: float
    p99_us: float

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds

    @property
    def calls_per_cpu_s(self) -> float:
        return self.calls / self.cpu_seconds

    @classmethod
    def of(cls, latencies_ns: list[list[int]], seconds: float, cpu_seconds: float) -> Sample:
        ordered = sorted(x for per_caller in latencies_ns for x in per_caller)
        return cls(
            calls=len(ordered),
            seconds=seconds,
            cpu_seconds=cpu_seconds,
            p50_us=percentile(ordered, 0.50) / 1000,
            p99_us=percentile(ordered, 0.99) / 1000,
        )


async def _loop(bump: Bump, latencies: list[int]) -> None:
    clock = time.perf_counter_ns
    for i in range(len(latencies)):
        start = clock()
        await bump(1)
        latencies[i] = clock() - start


@asynccontextmanager
async def _opened(contender: Contender) -> AsyncGenerator[tuple[Bump, Settle | None], None]:
    """The contender's request, and how to wait until its server has done them all (casts)."""
    if contender.open_casts is not None:
        async with contender.open_casts() as (cast, settle):
            yield cast, settle
        return
    assert contender.open is not None
    async with contender.open() as bump:
        yield bump, None


async def _measure(contender: Contender, callers: int, calls: int) -> Sample:
    async with _opened(contender) as (bump, settle):
        for _ in range(WARMUP):
            await bump(1)
        if settle is not None:
            await settle()
        latencies = [[0] * (calls // callers) for _ in range(callers)]
        go = trio.Event()
        deadline = contender.caller_deadline

        async def caller(mine: list[int]) -> None:
            await go.wait()
            if deadline is None:
                await _loop(bump, mine)
            else:
                with trio.move_on_after(deadline):
                    await _loop(bump, mine)

        gc.collect()
        async with trio.open_nursery() as nursery:
            for mine in latencies:
                nursery.start_soon(caller, mine)
            await trio.testing.wait_all_tasks_blocked()
            cpu = time.process_time()
            start = time.perf_counter()
            go.set()
        if settle is not None:
            await settle()  # casts count once done, not once sent
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return Sample.of(latencies, seconds, cpu)


def measure_trio(contender: Contender, callers: int, calls: int) -> Sample:
    return trio.run(_measure, contender, callers, calls)


# -- Pykka ----------------------------------------------------------------------------------------


class PykkaCounter(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        self.count += message
        return self.count

    def bump(self, n: int) -> int:
        self.count += n
        return self.count


def _pykka_loop(ask: Callable[[int], object], latencies: list[int]) -> None:
    clock = time.perf_counter_ns
    for i in range(len(latencies)):
        start = clock()
        ask(1)
        latencies[i] = clock() - start


def measure_pykka(callers: int, calls: int, *, proxy: bool) -> Sample:
    ref = PykkaCounter.start()
    try:
        if proxy:
            handle = ref.proxy()

            def ask(n: int) -> object:
                return handle.bump(n).get()
        else:

            def ask(n: int) -> object:
                return ref.ask(n)

        for _ in range(WARMUP):
            ask(1)
        latencies = [[0] * (calls // callers) for _ in range(callers)]
        gc.collect()
        if callers == 1:
            cpu = time.process_time()
            start = time.perf_counter()
            _pykka_loop(ask, latencies[0])
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu
        else:
            barrier = threading.Barrier(callers + 1)

            def run(mine: list[int]) -> None:
                barrier.wait()
                _pykka_loop(ask, mine)

            threads = [threading.Thread(target=run, args=(mine,)) for mine in latencies]
            for thread in threads:
                thread.start()
            barrier.wait()
            cpu = time.process_time()
            start = time.perf_counter()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu
    finally:
        ref.stop()
    return Sample.of(latencies, seconds, cpu)


PYKKA_ASK = Contender("pykka_ask", "Pykka ask (threads; actor_ref.ask)", None)
PYKKA_PROXY = Contender("pykka_proxy", "Pykka proxy (threads; proxy.bump().get())", None)


def measure(contender: Contender, callers: int, calls: int) -> Sample:
    if contender.open is None and contender.open_casts is None:
        return measure_pykka(callers, calls, proxy=contender is PYKKA_PROXY)
    return measure_trio(contender, callers, calls)


# -- interleaving and summary -------------------------------------------------------------------


def _references(contender: Contender) -> list[tuple[str, str]]:
    """(key, name) of each contender its ratios are to: the usual ones, then its own baseline."""
    found = [(reference, reference) for reference in (ACTOR, LOCK, FLOOR)]
    if contender.baseline is not None:
        found.append(("baseline", contender.baseline))
    return found


def interleaved(
    contenders: Sequence[Contender],
    *,
    callers: Sequence[int],
    rounds: int,
    calls: int,
    seed: int,
    title: str,
    measure_one: Callable[[Contender, int, int], Sample] = measure,
) -> dict[str, Any]:
    """Measure every (contender, callers) pair once a round, in a shuffled order; summarize.

    `measure_one(contender, callers, calls)` makes one measurement (default: `measure`).
    """
    rng = random.Random(seed)
    pairs = [(c, n) for c in contenders for n in callers]
    samples: dict[tuple[str, int], list[Sample]] = {(c.name, n): [] for c, n in pairs}
    began = time.perf_counter()
    for round_ in range(rounds):
        order = pairs[:]
        rng.shuffle(order)
        for contender, n in order:
            samples[contender.name, n].append(measure_one(contender, n, calls))
        print(
            f"  {title}: round {round_ + 1}/{rounds} done ({time.perf_counter() - began:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    rows: list[dict[str, Any]] = []
    for contender, n in sorted(pairs, key=lambda p: (p[1], contenders.index(p[0]))):
        mine = samples[contender.name, n]
        row: dict[str, Any] = {
            "name": contender.name,
            "label": contender.label,
            "callers": n,
            "calls_per_s": median([s.calls_per_s for s in mine]),
            "calls_per_cpu_s": median([s.calls_per_cpu_s for s in mine]),
            "p50_us": median([s.p50_us for s in mine]),
            "p99_us": median([s.p99_us for s in mine]),
        }
        for key, reference in _references(contender):
            if (reference, n) not in samples:
                continue
            theirs = samples[reference, n]
            row[f"ratio_to_{key}"] = row["calls_per_s"] / median([s.calls_per_s for s in theirs])
            row[f"ratio_to_{key}_cpu"] = row["calls_per_cpu_s"] / median(
                [s.calls_per_cpu_s for s in theirs]
            )
            row[f"ratio_to_{key}_per_round_median"] = median(
                [a.calls_per_s / b.calls_per_s for a, b in zip(mine, theirs, strict=True)]
            )
        if contender.baseline is not None:
            row["baseline"] = contender.baseline
        row["rounds"] = [
            attrs.asdict(s) | {"calls_per_s": s.calls_per_s, "calls_per_cpu_s": s.calls_per_cpu_s}
            for s in mine
        ]
        rows.append(row)
    return {
        "rounds": rounds,
        "calls_per_measurement": calls,
        "callers": list(callers),
        "shuffle_seed": seed,
        "seconds": time.perf_counter() - began,
        "rows": rows,
    }


def run_roundtrip(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    return interleaved(
        [*ROUNDTRIP, PYKKA_ASK, PYKKA_PROXY],
        callers=(1, 100),
        rounds=rounds,
        calls=calls,
        seed=seed,
        title="roundtrip",
    )


def run_budget(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    return interleaved(
        BUDGET_CONTENDERS, callers=(1, 100), rounds=rounds, calls=calls, seed=seed, title="budget"
    )
