"""Overload, on virtual time: a burst, and sustained arrivals above capacity.

Each scenario is one `trio.run` on `trio.testing.MockClock(autojump_threshold=0)`: handler
"work" is ``await trio.sleep(SERVICE)`` (10 ms, so capacity is 100 requests/s), callers give
up after ``PATIENCE`` (0.5 s) with `trio.move_on_after`. Servers:

- ``trioserver``: ``@call async def work`` (default budget; the callers' deadline is shorter).
- ``trioserver_no_admission``: the same with ``@server(admission=False)``: callers that leave
  still withdraw their requests, and handlers are still cut when their caller leaves.
- ``fifo``: the hand-written actor (channel + Event): it runs every request it received.
- ``fifo_admission``: a hand-written reference for what a later issue asks of trioserver:
  a request whose caller has less than ``SERVICE`` left when it reaches the front is refused
  at once instead of started.

A handler run is *wasted* when its caller did not get its result: it finished after the
caller gave up (``fifo``), or was cut because the caller left (trioserver).

Besides the totals, each row keeps its time series in bins of ``BIN`` virtual seconds
(``series``): goodput (successes per second, by when the caller got its result) and the mean
queue wait of the handler runs that started in the bin (from the caller's arrival to the
run's start). `benchmarks.charts` draws them.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

from trioserver import CallTimeout, ServerOverloaded, call, open_server, server, statistics

from ._common import percentile

SERVICE = 0.010
PATIENCE = 0.5
HORIZON = 60.0  # virtual seconds to let a server drain before looking at its runs
BIN = 0.1  # virtual seconds per bin of the time series

Work = Callable[[int], Awaitable[object]]


@attrs.define
class Run:
    """One handler run: for which caller, when it started and ended, whether it finished."""

    caller: int
    start: float
    end: float = math.nan
    finished: bool = False


@attrs.define
class Log:
    runs: list[Run] = attrs.Factory(list[Run])

    async def work(self, caller: int) -> int:
        run = Run(caller, trio.current_time())
        self.runs.append(run)
        try:
            await trio.sleep(SERVICE)
            run.finished = True
        finally:
            run.end = trio.current_time()
        return caller


class _Work:
    def __init__(self, log: Log) -> None:
        self.log = log

    @call
    async def work(self, caller: int) -> int:
        return await self.log.work(caller)


@server
class Worker(_Work):
    """trioserver's defaults."""


@server(admission=False)
class NotAdmitting(_Work):
    """FIFO, but callers that leave withdraw their requests."""


class Fifo:
    """The hand-written actor, with the caller's deadline in the request for admission."""

    class Request:
        __slots__ = ("caller", "deadline", "done", "refused", "result")

        def __init__(self, caller: int, deadline: float) -> None:
            self.caller = caller
            self.deadline = deadline
            self.done = trio.Event()
            self.result: object = None
            self.refused = False

    def __init__(self, log: Log, *, admission: bool) -> None:
        self.log = log
        self.admission = admission
        self.send, self.receive = trio.open_memory_channel[Fifo.Request](math.inf)

    async def serve(self) -> None:
        async for request in self.receive:
            if self.admission and request.deadline - trio.current_time() < SERVICE:
                request.refused = True
            else:
                request.result = await self.log.work(request.caller)
            request.done.set()

    async def work(self, caller: int) -> object:
        request = Fifo.Request(caller, trio.current_effective_deadline())
        await self.send.send(request)
        await request.done.wait()
        if request.refused:
            raise ServerOverloaded("refused: too little time left")
        return request.result


Opener = Callable[[Log], AbstractAsyncContextManager[tuple[Work, Callable[[], Any]]]]


def _trioserver(cls: type[_Work]) -> Opener:
    @asynccontextmanager
    async def opener(log: Log) -> AsyncGenerator[tuple[Work, Callable[[], Any]], None]:
        async with open_server(cls(log)) as handle:
            yield handle.work, lambda: attrs.asdict(statistics(handle))

    return opener


def _fifo(admission: bool) -> Opener:
    @asynccontextmanager
    async def opener(log: Log) -> AsyncGenerator[tuple[Work, Callable[[], Any]], None]:
        async with trio.open_nursery() as nursery:
            it = Fifo(log, admission=admission)
            nursery.start_soon(it.serve)
            yield it.work, lambda: None
            nursery.cancel_scope.cancel()

    return opener


SERVERS: dict[str, tuple[str, Opener]] = {
    "trioserver": ("trioserver @call", _trioserver(Worker)),
    "trioserver_no_admission": ("trioserver @call, admission=False", _trioserver(NotAdmitting)),
    "fifo": ("hand-written FIFO actor", _fifo(False)),
    "fifo_admission": ("hand-written FIFO + deadline-aware admission (reference)", _fifo(True)),
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "burst": {"label": "burst: 200 callers at t=0", "arrivals": [0.0] * 200},
    "sustained": {
        "label": "sustained: 150 arrivals/s for 4 s (capacity 100/s)",
        "arrivals": [i / 150 for i in range(600)],
        "steady": (2.0, 4.0),
    },
}


async def _scenario(opener: Opener, arrivals: list[float]) -> dict[str, Any]:
    log = Log()
    outcomes: list[tuple[str, float, float]] = []  # (outcome, arrival, end)
    arrived: dict[int, float] = {}  # caller -> arrival

    async def caller(index: int, work: Work) -> None:
        arrival = arrived[index] = trio.current_time()
        outcome = "timeout"
        with trio.move_on_after(PATIENCE):
            try:
                await work(index)
                outcome = "ok"
            except CallTimeout:
                pass
            except ServerOverloaded:
                outcome = "refused"
        outcomes.append((outcome, arrival, trio.current_time()))

    async with opener(log) as (work, stats):
        async with trio.open_nursery() as nursery:
            for index, at in enumerate(arrivals):
                await trio.sleep_until(at)
                nursery.start_soon(caller, index, work)
        await trio.sleep_until(HORIZON)
        server_statistics = stats()
    return {
        "outcomes": outcomes,
        "arrived": arrived,
        "runs": log.runs,
        "statistics": server_statistics,
    }


def _round(seconds: float) -> float:
    return round(seconds, 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def _bin(seconds: float) -> int:
    return math.floor(seconds / BIN + 1e-9)  # 1e-9: 0.3 / 0.1 is 2.9999999999999996


def time_series(raw: dict[str, Any]) -> dict[str, Any]:
    """Goodput and queue wait per bin of `BIN` seconds, until the last caller left or the last
    run ended (whichever is later)."""
    outcomes: list[tuple[str, float, float]] = raw["outcomes"]
    arrived: dict[int, float] = raw["arrived"]
    runs: list[Run] = raw["runs"]
    until = max([end for _, _, end in outcomes] + [r.end for r in runs], default=0.0)
    bins = _bin(until) + 1
    successes = [0] * bins
    for outcome, _, end in outcomes:
        if outcome == "ok":
            successes[_bin(end)] += 1
    waits: list[list[float]] = [[] for _ in range(bins)]
    for run in runs:
        waits[_bin(run.start)].append(run.start - arrived[run.caller])
    return {
        "bin_seconds": BIN,
        "goodput_rate": [_round(n / BIN) for n in successes],
        "queue_wait_mean": [_round(sum(w) / len(w)) if w else None for w in waits],
    }


def _summarize(raw: dict[str, Any], steady: tuple[float, float] | None) -> dict[str, Any]:
    outcomes: list[tuple[str, float, float]] = raw["outcomes"]
    runs: list[Run] = raw["runs"]
    ok = [o for o in outcomes if o[0] == "ok"]
    wasted = len(runs) - len(ok)
    latencies = sorted(end - arrival for _, arrival, end in ok)
    summary: dict[str, Any] = {
        "callers": len(outcomes),
        "successes": len(ok),
        "timeouts": sum(o[0] == "timeout" for o in outcomes),
        "refused": sum(o[0] == "refused" for o in outcomes),
        "handler_runs": len(runs),
        "handler_runs_finished": sum(r.finished for r in runs),
        "wasted_runs": wasted,
        "wasted_handler_seconds": _round(sum(r.end - r.start for r in runs) - SERVICE * len(ok)),
        "time_until_idle": _round(max((r.end for r in runs), default=0.0)),
        "success_latency_p50": _round(percentile(latencies, 0.5)) if latencies else None,
        "success_latency_p99": _round(percentile(latencies, 0.99)) if latencies else None,
        "goodput_per_second": [
            sum(1 for _, _, end in ok if second <= end < second + 1)
            for second in range(math.ceil(max((e for _, _, e in outcomes), default=0)) or 1)
        ],
        "statistics": raw["statistics"],
        "series": time_series(raw),
    }
    if steady is not None:
        start, stop = steady
        summary["steady_window"] = [start, stop]
        summary["steady_goodput"] = sum(1 for _, _, end in ok if start <= end < stop) / (
            stop - start
        )
    return summary


def run_overload() -> dict[str, Any]:
    results: dict[str, Any] = {
        "service_seconds": SERVICE,
        "patience_seconds": PATIENCE,
        "clock": "trio.testing.MockClock(autojump_threshold=0)",
        "scenarios": {},
    }
    for name, scenario in SCENARIOS.items():
        rows: list[dict[str, Any]] = []
        for server_name, (label, opener) in SERVERS.items():
            raw = trio.run(
                _scenario,
                opener,
                scenario["arrivals"],
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
            rows.append(
                {"server": server_name, "label": label} | _summarize(raw, scenario.get("steady"))
            )
        results["scenarios"][name] = {"label": scenario["label"], "rows": rows}
    return results
