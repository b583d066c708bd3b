"""Servers in Ray actors (guarantee 18): a call through `trioserver.ray` against a raw Ray call.

A local Ray cluster is started once for the section (``ray.init(num_cpus=2,
include_dashboard=False)``, on the loopback interface, token authentication with a token of its
own) and shut down with ``ray.shutdown()`` at its end. Four contenders serve the round trip's
request, ``bump(1)``: add 1 to a counter and return it.

- ``trioserver_ray``: ``await handle.bump(1)`` on a handle from ``trioserver.ray.start(Counter)``
  (`benchmarks._ray_server.Counter`, a ``@call`` handler): the request goes to the actor, where
  trioserver runs it under trio on a thread of its own, and the reply comes back.
- ``raw_ray``: the same body as a method of a plain async Ray actor
  (`benchmarks._ray_raw.RawCounter`), called from trio as trioserver.ray calls its actor:
  ``await wait_for(actor.bump.remote(1))``, with trioserver.ray's own `wait_for` (a done-callback
  on the reference's future into the trio run; no thread per call). The ratio of the two is
  what trioserver.ray adds: its handle, the deadline it sends, the crossing from the actor's
  asyncio loop to its trio thread and back, the server, the reply's envelope.
- ``trio_thread``: the raw actor with trio on a thread of its own and no server
  (`benchmarks._ray_server.TrioThreadCounter`): each call crosses into the trio run and back,
  as in trioserver.ray's host. It splits what trioserver.ray adds into the crossing and the rest.
- ``in_process``: the same server opened in this process (`trioserver.open_server`), for scale.

The actors are started once, before the rounds, and serve every measurement; each measurement is
one fresh `trio.run` that warms up, releases its callers together and times each call, as in
`roundtrip`. Measurements interleave in rounds (`roundtrip.interleaved`). A Ray measurement makes
a tenth of ``--calls`` (a Ray call takes about a millisecond here); the in-process one all of
them. CPU time is this process's (the caller's side: trio, and Ray's own threads in this
process) and, apart, the actor process's (read from /proc), each per call.

Also measured: how long ``ray.init`` takes; how long ``await trioserver.ray.start(Counter)``
takes (it returns once ``on_start`` finished in the actor), its first call, and
``trioserver.ray.stop``, against starting a raw actor until its first reply; the memory of each
actor's process (RSS, PSS, and USS: the memory no other process shares) after the rounds, and
of the cluster's processes just after ``ray.init``.

Target (issue 15): trioserver.ray's p50 latency at most 1.2x the raw Ray call's, at 1 and 20
callers.

Ray reads its settings from the environment when it is imported: this module sets them, unless
they are set already, before it imports Ray (they stay set for the rest of the process).
"""

from __future__ import annotations

import gc
import os
import secrets
import statistics
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

# The cluster's processes bind to this host's address unless told otherwise: keep them on the
# loopback interface (Ray's switch for this is named for Windows and macOS, where it is the
# default; it works on Linux too). Ray 2.60 turns on token authentication for a new local
# cluster and writes a token to ~/.ray unless one is given: give it one of its own.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
if "RAY_AUTH_MODE" not in os.environ:
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

import ray

import trioserver.ray
from trioserver import open_server
from trioserver._ray_caller import wait_for  # how trioserver.ray awaits a reference

from ._common import median, percentile
from ._ray_raw import RawCounter
from ._ray_server import Counter, TrioThreadCounter
from .contenders import Bump, Contender, Opener
from .roundtrip import Sample, interleaved

CALLERS = (1, 20)
WARMUP = 200  # calls before the timed ones, in each measurement
RAY_SHARE = 10
"""A Ray measurement makes ``--calls // RAY_SHARE`` calls (2,000 unless ``--calls`` is given)."""
STARTS = 5  # start/stop cycles timed, for each kind of actor
TARGET_RAY = 1.2  # trioserver.ray's p50 latency, times the raw Ray call's (issue 15)

TRIOSERVER_RAY = "trioserver_ray"
RAW_RAY = "raw_ray"
TRIO_THREAD = "trio_thread"
IN_PROCESS = "in_process"
NAMESPACE = "trioserver-benchmarks"

# Ray's `remote` is typed loosely: the actor classes are used through `Any`.
_RAW: Any = ray.remote(RawCounter)
_TRIO_THREAD: Any = ray.remote(TrioThreadCounter)


@attrs.frozen
class RaySample(Sample):
    """A `Sample`, with the CPU time the actor's process spent meanwhile (0 in process)."""

    actor_cpu_seconds: float


# -- processes ------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int | None) -> float:
    """The CPU time (user and system) process `pid` has used; 0 for None."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _memory(pid: int) -> dict[str, float]:
    """Process `pid`'s RSS, PSS and USS (private pages), in MiB (/proc/PID/smaps_rollup)."""
    kib: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        kib[key] = int(value.split()[0])
    uss = kib["Private_Clean"] + kib["Private_Dirty"]
    return {"rss_mib": kib["Rss"] / 1024, "pss_mib": kib["Pss"] / 1024, "uss_mib": uss / 1024}


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (Linux's /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cluster_memory() -> dict[str, Any]:
    """The Ray processes this one started (and this one): how many, and their memory."""
    processes: list[dict[str, Any]] = []
    for pid in _descendants(os.getpid()):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            processes.append({"pid": pid, "name": name} | _memory(pid))
        except OSError:  # it ended meanwhile
            continue
    return {
        "processes": len(processes),
        "rss_mib": sum(p["rss_mib"] for p in processes),
        "pss_mib": sum(p["pss_mib"] for p in processes),
        "uss_mib": sum(p["uss_mib"] for p in processes),
        "each": processes,
        "driver": _memory(os.getpid()),
    }


# -- one measurement ------------------------------------------------------------------------


async def _measure(bump_opener: Opener, callers: int, calls: int, pid: int | None) -> RaySample:
    async with bump_opener() as bump:
        for _ in range(WARMUP):
            await bump(1)
        latencies = [[0] * (calls // callers) for _ in range(callers)]
        go = trio.Event()

        async def caller(mine: list[int]) -> None:
            clock = time.perf_counter_ns
            await go.wait()
            for i in range(len(mine)):
                began = clock()
                await bump(1)
                mine[i] = clock() - began

        gc.collect()
        async with trio.open_nursery() as nursery:
            for mine in latencies:
                nursery.start_soon(caller, mine)
            await trio.testing.wait_all_tasks_blocked()
            actor_cpu = _cpu_seconds(pid)
            cpu = time.process_time()
            start = time.perf_counter()
            go.set()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        actor_cpu = _cpu_seconds(pid) - actor_cpu
    ordered = sorted(x for mine in latencies for x in mine)
    return RaySample(
        calls=len(ordered),
        seconds=seconds,
        cpu_seconds=cpu,
        p50_us=percentile(ordered, 0.50) / 1000,
        p99_us=percentile(ordered, 0.99) / 1000,
        actor_cpu_seconds=actor_cpu,
    )


def _serving(bump: Bump) -> Opener:
    """An opener for an actor started before the rounds: it only hands out `bump`."""

    @asynccontextmanager
    async def opener() -> AsyncGenerator[Bump]:
        yield bump

    return opener


@asynccontextmanager
async def _in_process() -> AsyncGenerator[Bump]:
    async with open_server(Counter()) as handle:
        yield handle.bump


def raw_bump(actor: Any) -> Bump:
    """A plain Ray actor's ``bump``, awaited from trio as trioserver.ray awaits its actor."""

    async def bump(n: int) -> object:
        return await wait_for(actor.bump.remote(n))

    return bump


def ray_calls(calls: int) -> int:
    return max(max(CALLERS), calls // RAY_SHARE)


# -- start-up -------------------------------------------------------------------------------


async def _startups(times: int) -> dict[str, Any]:
    """Start and stop each kind of actor `times` times, alternating; seconds of each step."""
    found: dict[str, list[float]] = {"start": [], "first_call": [], "stop": [], "raw_start": []}
    clock = time.perf_counter
    for _ in range(times):
        began = clock()
        handle = await trioserver.ray.start(Counter)
        found["start"].append(clock() - began)
        began = clock()
        await handle.bump(1)
        found["first_call"].append(clock() - began)
        began = clock()
        await trioserver.ray.stop(handle)
        found["stop"].append(clock() - began)
        await trio.sleep(1.0)  # the pool replaces the worker: let it settle
        began = clock()
        raw = _RAW.remote()
        await wait_for(raw.pid.remote())  # created once it replied
        found["raw_start"].append(clock() - began)
        ray.kill(raw)
        await trio.sleep(1.0)
    return {
        "times": times,
        "seconds": found,
        "median_seconds": {key: statistics.median(values) for key, values in found.items()},
    }


# -- the section ----------------------------------------------------------------------------


def contenders(handle: Any, raw: Any, trio_thread: Any) -> list[Contender]:
    return [
        Contender(
            TRIOSERVER_RAY,
            "trioserver.ray: await handle.bump(1)",
            _serving(handle.bump),
            baseline=RAW_RAY,
        ),
        Contender(
            RAW_RAY,
            "raw Ray async actor: await wait_for(actor.bump.remote(1))",
            _serving(raw_bump(raw)),
        ),
        Contender(
            TRIO_THREAD,
            "raw Ray async actor + trio thread (the crossing alone)",
            _serving(raw_bump(trio_thread)),
            baseline=RAW_RAY,
        ),
        Contender(
            IN_PROCESS,
            "trioserver in process: open_server, await handle.bump(1)",
            _in_process,
            baseline=RAW_RAY,
        ),
    ]


def _summarize(section: dict[str, Any]) -> None:
    """Add to each row its CPU per call (caller, actor), and its latency ratios to the raw call's
    and to the trio thread's at the same number of callers (of the medians, and the median of
    the per-round ones)."""
    rows: list[dict[str, Any]] = section["rows"]
    for row in rows:
        rounds = row["rounds"]
        row["cpu_us_per_call"] = median([r["cpu_seconds"] / r["calls"] * 1e6 for r in rounds])
        row["actor_cpu_us_per_call"] = median(
            [r["actor_cpu_seconds"] / r["calls"] * 1e6 for r in rounds]
        )
        for reference in (RAW_RAY, TRIO_THREAD):
            theirs = next(
                r for r in rows if r["name"] == reference and r["callers"] == row["callers"]
            )
            for q in ("p50", "p99"):
                key = f"{q}_ratio_to_{reference}"
                row[key] = row[f"{q}_us"] / theirs[f"{q}_us"]
                row[f"{key}_per_round_median"] = median(
                    [
                        a[f"{q}_us"] / b[f"{q}_us"]
                        for a, b in zip(rounds, theirs["rounds"], strict=True)
                    ]
                )


def run_ray(*, rounds: int, calls: int, seed: int, starts: int = STARTS) -> dict[str, Any]:
    began = time.perf_counter()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace=NAMESPACE,
        logging_level="WARNING",
        log_to_driver=False,
    )
    try:
        cluster_start = time.perf_counter() - began
        time.sleep(2.0)  # let the cluster's processes finish starting
        cluster = _cluster_memory()
        startup = trio.run(_startups, starts)
        handle = trio.run(trioserver.ray.start, Counter)
        raw = _RAW.remote()
        trio_thread = _TRIO_THREAD.remote()
        pids: dict[str, int | None] = {
            TRIOSERVER_RAY: trio.run(handle.pid),
            RAW_RAY: ray.get(raw.pid.remote()),
            TRIO_THREAD: ray.get(trio_thread.pid.remote()),
            IN_PROCESS: None,
        }
        some = ray_calls(calls)

        def measure(contender: Contender, callers: int, calls: int) -> RaySample:
            assert contender.open is not None
            mine = calls if contender.name == IN_PROCESS else some
            return trio.run(_measure, contender.open, callers, mine, pids[contender.name])

        section = interleaved(
            contenders(handle, raw, trio_thread),
            callers=CALLERS,
            rounds=rounds,
            calls=calls,
            seed=seed,
            title="ray",
            measure_one=measure,
        )
        _summarize(section)
        section["calls_per_measurement"] = {"ray": some, IN_PROCESS: calls}
        section["memory"] = {name: _memory(pid) for name, pid in pids.items() if pid is not None}
        section["cluster"] = cluster | {"start_seconds": cluster_start}
        section["startup"] = startup
        section["ray"] = ray.__version__
        trio.run(trioserver.ray.stop, handle)
        ray.kill(raw)
        ray.kill(trio_thread)
    finally:
        began = time.perf_counter()
        ray.shutdown()
    section["cluster"]["shutdown_seconds"] = time.perf_counter() - began
    return section
