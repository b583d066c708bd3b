"""Memory: bytes per idle server, as the RSS change of a fresh subprocess.

Both a trioserver and the hand-written actor serve one method (`contenders.Idle`, `Actor`).
The child builds N objects first (the user's state, not the server's cost), reads its RSS,
starts N servers, calls them if the kind says so, lets every task park and idle servers'
tasks retire (0.3 s: the runtime retires a server's task 0.1-0.2 s after its last request),
collects garbage, and reads its RSS again: (after - before) / N. It prints its figures and
exits without tearing the servers down (``os._exit``): that is not measured. Kinds:

- ``trioserver``: N ``open_server`` contexts entered on one `contextlib.AsyncExitStack`.
- ``trioserver_called``: the same, then each server called 3 times.
- ``trioserver_serve``: ``await nursery.start(serve, obj)`` N times in one nursery.
- ``trioserver_serve_called``: the same, then each server called 3 times.
- ``trioserver_busy``: ``open_server`` on servers with three handlers (`contenders.Triple`),
  each handler called 3,000 times (`contenders.exercise`: some calls queued); run with fewer
  servers (200; 100 with ``--quick``).
- ``actor``: N hand-written actors (a task reading a memory channel) in one nursery.
- ``task``: N bare tasks parked in `trio.sleep_forever`, for scale.

Run one by hand: ``python -m benchmarks.memory trioserver_called 10000``; see where an idle
server's bytes go (tracemalloc, per allocation site): ``python -m benchmarks.memory --where
trioserver 2000``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import trio
import trio.testing

from trioserver import open_server, serve

from .contenders import Actor, Idle, Plain, Triple, exercise

KINDS = (
    "trioserver",
    "trioserver_called",
    "trioserver_serve",
    "trioserver_serve_called",
    "trioserver_busy",
    "actor",
    "task",
)
SERVE_KINDS = ("trioserver_serve", "trioserver_serve_called")
BUSY = "trioserver_busy"
BUSY_SERVERS = 200  # 9,000 calls each: 200 servers take about 25 s on a 2-core box
CALLS_WHEN_CALLED = 3
IDLE_SECONDS = 0.3  # more than the 0.1-0.2 s after which an idle server's task retires
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


async def _call_each(handles: Sequence[Any], done: trio.Event) -> None:
    for handle in handles:
        if isinstance(handle, Triple):
            await exercise(handle)
        else:
            for _ in range(CALLS_WHEN_CALLED):
                await handle.bump(1)
    done.set()


async def _child(kind: str, n: int) -> None:
    objs: list[Any] = [
        Plain() if kind == "actor" else Triple() if kind == BUSY else Idle() for _ in range(n)
    ]
    gc.collect()
    before = rss()
    began = time.perf_counter()
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        if kind in ("trioserver", "trioserver_called", BUSY):
            for obj in objs:
                await stack.enter_async_context(open_server(obj))
        elif kind in SERVE_KINDS:
            for obj in objs:
                await nursery.start(serve, obj)
        elif kind == "actor":
            objs = [Actor(obj) for obj in objs]  # its channel is part of the server's cost
            for obj in objs:
                nursery.start_soon(obj.serve)
        elif kind == "task":
            for _ in objs:
                nursery.start_soon(trio.sleep_forever)
        else:
            raise ValueError(kind)
        await trio.testing.wait_all_tasks_blocked()
        seconds = time.perf_counter() - began
        called = kind.endswith("_called") or kind == BUSY
        if called:
            # From a task of the outer nursery: the body of N nested open_server blocks sits
            # under N cancel scopes, deeper than some of trio's recursive walks can go.
            done = trio.Event()
            nursery.start_soon(_call_each, objs, done)
            await done.wait()
        if kind.startswith("trioserver"):
            await trio.sleep(IDLE_SECONDS)  # idle server tasks end (their retire timer)
            await trio.testing.wait_all_tasks_blocked()
        if kind != "task" and not called:
            # They really serve (called from the outer nursery, as above).
            nursery.start_soon(objs[-1].bump, 1)
            await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = rss()
        result = {
            "kind": kind,
            "servers": n,
            "rss_before": before,
            "rss_after": after,
            "bytes_per_server": (after - before) / n,
            "tasks": len(_all_tasks()),
            "start_seconds": seconds,
        }
        print(json.dumps(result), flush=True)
        # Leave without tearing N servers down: not measured, slow, and N nested
        # open_server scopes are deeper than trio's recursive cancel-status cleanup goes.
        os._exit(0)


def _all_tasks() -> list[trio.lowlevel.Task]:
    found: list[trio.lowlevel.Task] = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:  # pragma: no cover
            continue
        found.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


def measure(kind: str, n: int, timeout: float) -> dict[str, Any]:
    """Run one child; its figures, or why there are none."""
    command = [sys.executable, "-m", "benchmarks.memory", kind, str(n)]
    began = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "servers": n, "error": f"did not finish within {timeout:g} s"}
    if done.returncode != 0:
        return {"kind": kind, "servers": n, "error": done.stderr.strip()[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout)
    result["wall_seconds"] = time.perf_counter() - began
    return result


def run_memory(
    *,
    counts: tuple[int, ...],
    kinds: tuple[str, ...] = KINDS,
    busy_servers: int = BUSY_SERVERS,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Each kind at each count, one fresh subprocess apiece.

    The ``serve`` kinds run at 10k only: at 100k they take over a minute on a 2-core box.
    ``trioserver_busy`` runs once, at `busy_servers` servers.
    """
    runs: list[tuple[str, int]] = []
    for n in counts:
        for kind in kinds:
            if kind == BUSY or (kind in SERVE_KINDS and n > 10_000):
                continue
            runs.append((kind, n))
    if BUSY in kinds:
        runs.append((BUSY, busy_servers))
    rows: list[dict[str, Any]] = []
    for kind, n in runs:
        row = measure(kind, n, timeout)
        print(
            f"  memory: {kind} x {n}: "
            + (f"{row['bytes_per_server']:.0f} B" if "error" not in row else row["error"]),
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return {"counts": list(counts), "timeout_seconds": timeout, "rows": rows}


async def _where(kind: str, n: int, top: int = 15) -> None:
    """Where an idle server's bytes go: tracemalloc's allocation sites, per server (kinds
    ``trioserver``, ``trioserver_called``, ``actor``)."""
    import tracemalloc

    objs: list[Any] = [Plain() if kind == "actor" else Idle() for _ in range(n)]
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        for obj in objs:
            if kind == "actor":
                it = Actor(obj)
                nursery.start_soon(it.serve)
            else:
                await stack.enter_async_context(open_server(obj))
        await trio.testing.wait_all_tasks_blocked()
        if kind.endswith("_called"):
            done = trio.Event()
            nursery.start_soon(_call_each, objs, done)
            await done.wait()
            await trio.sleep(IDLE_SECONDS)  # idle server tasks end (their retire timer)
            await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = tracemalloc.take_snapshot()
        diff = after.compare_to(before, "lineno")
        total = sum(d.size_diff for d in diff)
        try:
            print(f"{kind}: {total / n:,.0f} traced bytes per idle server; top sites:")
            for d in diff[:top]:
                frame = d.traceback[0]
                where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
                print(f"  {d.size_diff / n:8,.0f} B  {d.count_diff / n:5.1f} blocks  {where}")
            sys.stdout.flush()
        finally:
            os._exit(0)  # as in _child: never tear down N nested servers


def main() -> None:
    if sys.argv[1] == "--where":
        trio.run(_where, sys.argv[2], int(sys.argv[3]))
    trio.run(_child, sys.argv[1], int(sys.argv[2]))


if __name__ == "__main__":
    main()
