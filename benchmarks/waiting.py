"""Waiting without holding the server (guarantees 14-16): what it costs, and what it buys.

Five parts, each measured in interleaved rounds (every entry once a round, in a shuffled order)
by wall clock and by CPU time, and summarized as `roundtrip.interleaved` does (medians, ratios
of medians in the same run):

- ``trees``: what plain calls pay for guards, released blocks and cycle detection. Three
  bodies (`contenders.Counter.bump`, async and returning at once; its plain ``def``; and the
  ``event`` body of `awaiting`, waiting for a `trio.Event` set by a device task), at 1 and 100
  callers, on this tree and on the tree before that work (`BASE_REVISION`, unpacked from git
  into a temporary directory). Each measurement is a fresh subprocess (`benchmarks._child`)
  importing ``trioserver`` from one tree, which it checks; a round runs every (tree, body,
  callers) once. Ratio: this tree / the base. The child also counts the Python-level calls a
  call makes (`_child.count_calls`), which machine load does not move.
- ``detection``: the price of cycle detection on calls that close no cycle, in one process:
  `trioserver._caller.handling` replaced by a stub that finds no handler (so no chain is ever
  walked) against the real one, for calls from a plain task to a server, and for calls from a
  handler of server A to server B (the path where the chain walk runs). Ratio: real / stub,
  measured twice: in interleaved rounds of separate trio runs, as elsewhere, and paired, in
  alternating blocks within one trio run (`_paired`), which separate runs' differences (up to
  a tenth on the relay path) do not blur; the target is judged on the paired figure. Python-level
  calls per call counted too.
- ``pool``: a guarded wake-up. A pool with one connection: ``acquire`` is
  ``@call(when=lambda self: bool(self.free))``, ``release`` a plain ``@call``. Workers loop
  ``conn = await acquire(); await release(conn)``: one holds the connection while the others
  wait in ``acquire``, so every release hands it over to the oldest waiter. Figures per
  hand-over; latency from the call of ``release`` to the return of the next ``acquire``.
  Against the same pool written by hand: the hand-written actor of `contenders.Actor` with a
  queue of waiting acquires (the reference), a `trio.Condition`, and a `trio.Semaphore` beside
  a list. 2 workers (one holds, one waits) and 10.
- ``released``: a released block's round trip: a ``@call`` handler whose body is
  ``async with released(): pass``, against the same handler without it (the reference) and
  with one ``await trio.lowlevel.checkpoint()`` instead; 1 and 100 callers.
- ``theater``: callers whose handler waits 10 ms on ``trio.sleep``, inside ``released()``
  (they wait together) against holding the server (one after another); real clock, 20 callers
  making a few calls each. Ratio: calls/s released / holding (20 at best).
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from pathlib import Path
from typing import Any

import trio
import trio.testing

import trioserver
import trioserver._caller
from trioserver import call, open_server, server

from . import contenders
from ._child import count_calls
from ._common import ROOT, median
from .contenders import Bump, Contender, Opener
from .roundtrip import Sample, interleaved

BASE_REVISION = "72668b1"
"""The tree before guarded calls, released blocks and cycle detection."""

TREE_BODIES = {
    "bump": "@call async, returns at once",
    "bump_def": "@call def",
    "event": "@call awaiting an Event set by a device task",
}
CHILD_TIMEOUT = 120.0  # seconds, for one subprocess's measurement

THEATER_CALLERS = 20
THEATER_SLEEP = 0.010  # seconds a handler waits, as for a payment
POOL_WARMUP = 200  # hand-overs before the timed ones


# -- trees: this one against the base, one subprocess per measurement ---------------------------


def unpack_base(into: Path, revision: str = BASE_REVISION) -> Path:
    """``git archive <revision> trioserver | tar -x``: the base tree, without the network."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "trioserver"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    return into


def measure_in(tree: Path, body: str, callers: int, calls: int) -> tuple[Sample, float]:
    """One round trip measured by a fresh process that imports ``trioserver`` from `tree`;
    and the Python-level calls it counted per call (`_child.count_calls`)."""
    tree = tree.resolve()
    command = [
        sys.executable,
        "-P",  # (not the current directory first: the tree comes first)
        "-m",
        "benchmarks._child",
        str(tree),
        body,
        str(callers),
        str(calls),
    ]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)])}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    if not Path(figures["trioserver_file"]).is_relative_to(tree):  # (the child checked too)
        raise RuntimeError(f"measured {figures['trioserver_file']}, not the tree {tree}")
    sample = Sample(
        calls=figures["calls"],
        seconds=figures["seconds"],
        cpu_seconds=figures["cpu_seconds"],
        p50_us=figures["p50_us"],
        p99_us=figures["p99_us"],
    )
    return sample, figures["python_calls_per_call"]


def tree_contenders(revision: str) -> list[Contender]:
    found: list[Contender] = []
    for body, label in TREE_BODIES.items():
        found += [
            Contender(f"{body}_this", f"{label}: this tree", None, baseline=f"{body}_base"),
            Contender(
                f"{body}_base",
                f"{label}: {revision} (reference)",
                None,
                baseline=f"{body}_base",
            ),
        ]
    return found


def run_trees(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"trioserver-{BASE_REVISION}-") as directory:
        try:
            base = unpack_base(Path(directory))
        except (OSError, subprocess.SubprocessError) as exc:
            return {"error": f"could not unpack {BASE_REVISION}: {exc}"}
        where = {"this": ROOT, "base": base}
        counts: dict[tuple[str, int], list[float]] = {}

        def measure_one(contender: Contender, callers: int, calls: int) -> Sample:
            body, tree = contender.name.rsplit("_", 1)
            sample, count = measure_in(where[tree], body, callers, calls)
            counts.setdefault((contender.name, callers), []).append(count)
            return sample

        found = interleaved(
            tree_contenders(BASE_REVISION),
            callers=(1, 100),
            rounds=rounds,
            calls=calls,
            seed=seed,
            title="waiting: trees",
            measure_one=measure_one,
        )
    _add_counts(found, {key: median(values) for key, values in counts.items()})
    full = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", BASE_REVISION],
        capture_output=True,
        text=True,
        check=False,
    )
    return found | {"base_revision": BASE_REVISION, "base_commit": full.stdout.strip()}


def _add_counts(section: dict[str, Any], counts: dict[tuple[str, int], float]) -> None:
    """Add each row's Python-level calls per call, and how many more than its baseline's."""
    rows: list[dict[str, Any]] = section["rows"]
    for row in rows:
        count = counts.get((row["name"], row["callers"]))
        if count is None:
            continue
        row["python_calls_per_call"] = count
        reference = counts.get((row.get("baseline", ""), row["callers"]))
        if reference is not None:
            row["python_calls_more_than_baseline"] = count - reference


# -- detection: cycle detection stubbed out, against the real one -------------------------------


def _no_handler(state: object, task: trio.lowlevel.Task) -> None:
    """The stub: no task runs a handler, so no call is a link of a chain. (From a plain task
    `call` reads `SERVING` and finds no server, and calls neither the real one nor this: the
    stub changes nothing there, and the tree comparison above is the plain path's cost.)"""
    return None


@contextmanager
def detection_stubbed() -> Generator[None]:
    """`trioserver._caller.handling` replaced by `_no_handler`, restored on leaving.

    (The module's global, which `call` looks up on every call: `_cycles.handling` stays.)"""
    namespace = trioserver._caller.__dict__
    real = namespace["handling"]
    namespace["handling"] = _no_handler
    try:
        yield
    finally:
        namespace["handling"] = real


@server
class Relay:
    """Server A: its handler calls server B (a `contenders.Counter`) and returns its answer."""

    def __init__(self, target: contenders.Counter) -> None:
        self.target = target

    @call
    async def bump(self, n: int) -> int:
        return await self.target.bump(n)


def detection_opener(*, relay: bool, stubbed: bool) -> Opener:
    @asynccontextmanager
    async def opener() -> AsyncGenerator[Bump, None]:
        with detection_stubbed() if stubbed else nullcontext():
            async with open_server(contenders.Counter()) as b:
                if not relay:
                    yield b.bump
                    return
                async with open_server(Relay(b)) as a:
                    yield a.bump

    return opener


DETECTION: list[Contender] = [
    Contender(
        "plain_real",
        "plain task calls @call async: detection on",
        detection_opener(relay=False, stubbed=False),
        baseline="plain_stub",
    ),
    Contender(
        "plain_stub",
        "plain task calls @call async: detection stubbed out (reference)",
        detection_opener(relay=False, stubbed=True),
        baseline="plain_stub",
    ),
    Contender(
        "relay_real",
        "plain task calls A, A's handler calls B: detection on",
        detection_opener(relay=True, stubbed=False),
        baseline="relay_stub",
    ),
    Contender(
        "relay_stub",
        "plain task calls A, A's handler calls B: detection stubbed out (reference)",
        detection_opener(relay=True, stubbed=True),
        baseline="relay_stub",
    ),
]


def run_detection(*, rounds: int, calls: int, seed: int, blocks: int) -> dict[str, Any]:
    found = interleaved(
        DETECTION,
        callers=(1, 100),
        rounds=rounds,
        calls=calls,
        seed=seed,
        title="waiting: detection",
    )
    counts: dict[tuple[str, int], float] = {}
    for contender in DETECTION:
        assert contender.open is not None
        for n in found["callers"]:
            counts[contender.name, n] = count_calls(contender.open, n)
    _add_counts(found, counts)
    block_calls = max(1000, calls // 10)
    found["paired"] = [
        trio.run(_paired, path, n, block_calls, blocks)
        for path in ("plain", "relay")
        for n in found["callers"]
    ]
    return found


async def _paired(path: str, callers: int, calls: int, blocks: int) -> dict[str, Any]:
    """Real and stubbed detection in one trio run, in alternating blocks of `calls` calls
    (real then stub, then stub then real, ...): whatever differs from run to run weighs on
    both alike. Ratios: per pair of blocks,
    the stub's time over the real one's (the real one's speed, x the stub's); their median."""
    async with open_server(contenders.Counter()) as b, AsyncExitStack() as stack:
        bump: Bump = b.bump
        if path == "relay":
            bump = (await stack.enter_async_context(open_server(Relay(b)))).bump
        for _ in range(500):
            await bump(1)
        times: dict[str, list[tuple[float, float]]] = {"real": [], "stub": []}
        for i in range(blocks):
            for which in ("stub", "real") if i % 2 else ("real", "stub"):
                with detection_stubbed() if which == "stub" else nullcontext():
                    gc.collect()
                    times[which].append(await _block(bump, callers, calls))
    real, stub = times["real"], times["stub"]
    return {
        "path": path,
        "callers": callers,
        "blocks": blocks,
        "calls_per_block": calls,
        "real_us": median([wall for wall, _ in real]) / calls * 1e6,
        "real_cpu_us": median([cpu for _, cpu in real]) / calls * 1e6,
        "stub_us": median([wall for wall, _ in stub]) / calls * 1e6,
        "stub_cpu_us": median([cpu for _, cpu in stub]) / calls * 1e6,
        "ratio": median([s[0] / r[0] for r, s in zip(real, stub, strict=True)]),
        "ratio_cpu": median([s[1] / r[1] for r, s in zip(real, stub, strict=True)]),
    }


async def _block(bump: Bump, callers: int, calls: int) -> tuple[float, float]:
    """`calls` calls by `callers` callers started together: (seconds, CPU seconds)."""

    async def caller(times: int) -> None:
        for _ in range(times):
            await bump(1)

    cpu = time.process_time()
    start = time.perf_counter()
    if callers == 1:
        await caller(calls)
    else:
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller, calls // callers)
    return time.perf_counter() - start, time.process_time() - cpu


# -- pool: a guarded wake-up against the same pool by hand --------------------------------------

Connection = object
Acquire = Callable[[], Awaitable[Connection]]
Release = Callable[[Connection], Awaitable[object]]
PoolOpener = Callable[[], AbstractAsyncContextManager[tuple[Acquire, Release]]]


@server
class GuardedPool:
    """The pool as a server: ``acquire`` waits, in the mailbox, until a connection is free."""

    def __init__(self) -> None:
        self.free: list[Connection] = [Connection()]

    @call(when=lambda self: bool(self.free))
    def acquire(self) -> Connection:
        return self.free.pop()

    @call
    def release(self, conn: Connection) -> None:
        self.free.append(conn)


class Ask:
    """One request to the pool actor: what it asks, and the slot its answer comes back in."""

    __slots__ = ("conn", "done")

    def __init__(self, conn: Connection | None) -> None:
        self.conn = conn  # None: acquire; else the connection released
        self.done = trio.Event()


class PoolActor:
    """`contenders.Actor` extended with a queue of waiting acquires, handed a released
    connection in arrival order."""

    def __init__(self) -> None:
        self.free: list[Connection] = [Connection()]
        self.waiting: deque[Ask] = deque()
        self.send, self.receive = trio.open_memory_channel[Ask](math.inf)

    async def serve(self) -> None:
        free, waiting = self.free, self.waiting
        async for ask in self.receive:
            if ask.conn is None:  # acquire
                if free:
                    ask.conn = free.pop()
                    ask.done.set()
                else:
                    waiting.append(ask)
                continue
            if waiting:  # release: to the oldest waiter, else back to the free list
                waiter = waiting.popleft()
                waiter.conn = ask.conn
                waiter.done.set()
            else:
                free.append(ask.conn)
            ask.done.set()

    async def acquire(self) -> Connection:
        ask = Ask(None)
        await self.send.send(ask)
        await ask.done.wait()
        assert ask.conn is not None
        return ask.conn

    async def release(self, conn: Connection) -> None:
        ask = Ask(conn)
        await self.send.send(ask)
        await ask.done.wait()


class ConditionPool:
    """The textbook pool: a list under a `trio.Condition` (whose lock hands over fairly)."""

    def __init__(self) -> None:
        self.free: list[Connection] = [Connection()]
        self.condition = trio.Condition()

    async def acquire(self) -> Connection:
        async with self.condition:
            while not self.free:
                await self.condition.wait()
            return self.free.pop()

    async def release(self, conn: Connection) -> None:
        async with self.condition:
            self.free.append(conn)
            self.condition.notify()


class SemaphorePool:
    """The least a pool can do in trio: a `trio.Semaphore` (a parking lot that hands its unit
    to the oldest waiter) counting the free connections of a list."""

    def __init__(self) -> None:
        self.free: list[Connection] = [Connection()]
        self.semaphore = trio.Semaphore(1)

    async def acquire(self) -> Connection:
        await self.semaphore.acquire()
        return self.free.pop()

    async def release(self, conn: Connection) -> None:
        self.free.append(conn)
        self.semaphore.release()


@asynccontextmanager
async def guarded_pool() -> AsyncGenerator[tuple[Acquire, Release], None]:
    async with open_server(GuardedPool()) as pool:
        yield pool.acquire, pool.release


@asynccontextmanager
async def actor_pool() -> AsyncGenerator[tuple[Acquire, Release], None]:
    async with trio.open_nursery() as nursery:
        it = PoolActor()
        nursery.start_soon(it.serve)
        yield it.acquire, it.release
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def condition_pool() -> AsyncGenerator[tuple[Acquire, Release], None]:
    it = ConditionPool()
    yield it.acquire, it.release


@asynccontextmanager
async def semaphore_pool() -> AsyncGenerator[tuple[Acquire, Release], None]:
    it = SemaphorePool()
    yield it.acquire, it.release


POOL_ACTOR = "pool_actor"
POOL_CONDITION = "pool_condition"
POOLS: dict[str, PoolOpener] = {
    "pool_guarded": guarded_pool,
    POOL_ACTOR: actor_pool,
    POOL_CONDITION: condition_pool,
    "pool_semaphore": semaphore_pool,
}
POOL_CONTENDERS: list[Contender] = [
    Contender(
        "pool_guarded",
        "trioserver: @call(when=...) acquire, @call release",
        None,
        baseline=POOL_ACTOR,
    ),
    Contender(
        POOL_ACTOR,
        "hand-written actor + queue of waiting acquires (reference)",
        None,
        baseline=POOL_ACTOR,
    ),
    Contender(POOL_CONDITION, "trio.Condition + list", None, baseline=POOL_ACTOR),
    Contender("pool_semaphore", "trio.Semaphore + list", None, baseline=POOL_ACTOR),
]


async def _measure_pool(opener: PoolOpener, workers: int, handovers: int) -> Sample:
    async with opener() as (acquire, release):
        stamp = [0]  # when the last release was called (one holder: one release at a time)

        async def work(latencies: list[int]) -> None:
            clock = time.perf_counter_ns
            for i in range(len(latencies)):
                conn = await acquire()
                latencies[i] = clock() - stamp[0]
                stamp[0] = clock()
                await release(conn)

        async def together(per_worker: int, go: trio.Event | None) -> list[list[int]]:
            latencies = [[0] * per_worker for _ in range(workers)]

            async def worker(mine: list[int]) -> None:
                if go is not None:
                    await go.wait()
                await work(mine)

            async with trio.open_nursery() as nursery:
                for mine in latencies:
                    nursery.start_soon(worker, mine)
                if go is not None:
                    await trio.testing.wait_all_tasks_blocked()
                    stamp[0] = time.perf_counter_ns()
                    go.set()
            return latencies

        await together(max(1, POOL_WARMUP // workers), None)
        gc.collect()
        go = trio.Event()
        cpu = time.process_time()
        start = time.perf_counter()
        latencies = await together(handovers // workers, go)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return Sample.of(latencies, seconds, cpu)


def measure_pool(contender: Contender, workers: int, handovers: int) -> Sample:
    return trio.run(_measure_pool, POOLS[contender.name], workers, handovers)


def run_pool(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    found = interleaved(
        POOL_CONTENDERS,
        callers=(2, 10),
        rounds=rounds,
        calls=calls,
        seed=seed,
        title="waiting: pool",
        measure_one=measure_pool,
    )
    _ratios_to(found, POOL_CONDITION, "condition")
    return found


def _ratios_to(section: dict[str, Any], reference: str, key: str) -> None:
    """Add ``ratio_to_<key>`` (and ``_cpu``) to every row: its rates / `reference`'s."""
    rows: list[dict[str, Any]] = section["rows"]
    for row in rows:
        theirs = [r for r in rows if r["name"] == reference and r["callers"] == row["callers"]]
        if theirs:
            row[f"ratio_to_{key}"] = row["calls_per_s"] / theirs[0]["calls_per_s"]
            row[f"ratio_to_{key}_cpu"] = row["calls_per_cpu_s"] / theirs[0]["calls_per_cpu_s"]


# -- released: a block's round trip, and waits that overlap -------------------------------------


@server
class Releasing:
    """One body three ways: without a block, with a checkpoint, with an empty released block."""

    def __init__(self) -> None:
        self.count = 0

    @call
    async def bump(self, n: int) -> int:
        self.count += n
        return self.count

    @call
    async def bump_checkpoint(self, n: int) -> int:
        await trio.lowlevel.checkpoint()
        self.count += n
        return self.count

    @call
    async def bump_released(self, n: int) -> int:
        async with trioserver.released():
            pass
        self.count += n
        return self.count

    @call
    async def sleep_holding(self, n: int) -> int:
        await trio.sleep(THEATER_SLEEP)
        self.count += n
        return self.count

    @call
    async def sleep_released(self, n: int) -> int:
        async with trioserver.released():
            await trio.sleep(THEATER_SLEEP)
        self.count += n
        return self.count


def releasing_opener(method: str) -> Opener:
    @asynccontextmanager
    async def opener() -> AsyncGenerator[Bump, None]:
        async with open_server(Releasing()) as handle:
            bump: Bump = getattr(handle, method)
            yield bump

    return opener


RELEASED: list[Contender] = [
    Contender(
        "no_block",
        "@call async, no block (reference)",
        releasing_opener("bump"),
        baseline="no_block",
    ),
    Contender(
        "checkpoint",
        "@call async, await checkpoint() instead",
        releasing_opener("bump_checkpoint"),
        baseline="no_block",
    ),
    Contender(
        "released",
        "@call async, async with released(): pass",
        releasing_opener("bump_released"),
        baseline="no_block",
    ),
]

THEATER: list[Contender] = [
    Contender(
        "sleep_holding",
        f"{THEATER_SLEEP * 1000:g} ms trio.sleep holding the server (reference)",
        releasing_opener("sleep_holding"),
        baseline="sleep_holding",
    ),
    Contender(
        "sleep_released",
        f"{THEATER_SLEEP * 1000:g} ms trio.sleep inside released()",
        releasing_opener("sleep_released"),
        baseline="sleep_holding",
    ),
]


async def _measure_sleeping(contender: Contender, callers: int, calls: int) -> Sample:
    """`roundtrip`'s measurement with one warm-up call, not 500 (each takes 10 ms), and a
    time limit: thrice the calls one after another, and 5 s more."""
    with trio.fail_after(5.0 + 3 * (calls + 1) * THEATER_SLEEP):
        return await _sleeping(contender, callers, calls)


async def _sleeping(contender: Contender, callers: int, calls: int) -> Sample:
    assert contender.open is not None
    async with contender.open() as bump:
        await bump(1)
        latencies = [[0] * (calls // callers) for _ in range(callers)]
        go = trio.Event()

        async def caller(mine: list[int]) -> None:
            await go.wait()
            clock = time.perf_counter_ns
            for i in range(len(mine)):
                begun = clock()
                await bump(1)
                mine[i] = clock() - begun

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
    return Sample.of(latencies, seconds, cpu)


def measure_sleeping(contender: Contender, callers: int, calls: int) -> Sample:
    return trio.run(_measure_sleeping, contender, callers, calls)


def run_released(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    return interleaved(
        RELEASED,
        callers=(1, 100),
        rounds=rounds,
        calls=calls,
        seed=seed,
        title="waiting: released",
    )


def run_theater(*, rounds: int, calls_each: int, seed: int) -> dict[str, Any]:
    found = interleaved(
        THEATER,
        callers=(THEATER_CALLERS,),
        rounds=rounds,
        calls=THEATER_CALLERS * calls_each,
        seed=seed,
        title="waiting: theater",
        measure_one=measure_sleeping,
    )
    return found | {"sleep_seconds": THEATER_SLEEP}


# -- the section --------------------------------------------------------------------------------


def run_waiting(*, rounds: int, calls: int, seed: int, quick: bool = False) -> dict[str, Any]:
    """Every part, one after another (each interleaves its own entries). A part that fails
    is kept as ``{"error": why}``; the others still run."""
    began = time.perf_counter()
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "trees": lambda: run_trees(rounds=rounds, calls=calls, seed=seed),
        "detection": lambda: run_detection(
            rounds=rounds, calls=calls, seed=seed + 1, blocks=16 if quick else 40
        ),
        "pool": lambda: run_pool(rounds=rounds, calls=calls, seed=seed + 2),
        "released": lambda: run_released(rounds=rounds, calls=calls, seed=seed + 3),
        "theater": lambda: run_theater(rounds=rounds, calls_each=2 if quick else 5, seed=seed + 4),
    }
    found: dict[str, Any] = {}
    for name, part in parts.items():
        try:
            found[name] = part()
        except Exception as exc:
            found[name] = {"error": _why(exc)}
            print(f"  waiting: {name} failed: {found[name]['error']}", file=sys.stderr)
    found["seconds"] = time.perf_counter() - began
    return found


def _why(exc: BaseException) -> str:
    """One line: the exception (the first of a group's, for a group), type and message."""
    while isinstance(exc, BaseExceptionGroup):
        group: BaseExceptionGroup[BaseException] = exc  # pyright: ignore[reportUnknownVariableType]
        exc = group.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:2000]
