"""Fault injection for durable casts (guarantee 17): scenarios drawn by Hypothesis, checked
against invariants.

A scenario is a sequence of runs of one server on one SQLite file (each run is a process's
life: `open_server` until its stop). In each run, casters send durable casts (some with an
idempotency key, some whose first runs raise or overrun their budget), some casters are
cancelled at random moments, the run stops at a random moment (cutting a running cast,
dropping queued ones), and the store may fail at chosen commits (nothing of that round
committed: its callers hear `StoreError`; a failed last round leaves the claims and the lease
as a killed process would). A last run with no fault drains what is left.

Invariants (`check`):
  1. Every durable cast's caller had exactly one outcome: returned (acknowledged), Cancelled,
     StoreError or ServerStopped; none hung.
  2. No acknowledged cast is lost: each ran and returned at least once, or is dead in the
     store after `attempts` runs that failed (one cast per idempotency key).
  3. First runs follow commit order (the store's numbers, across runs).
  4. In a run with no stop mid-flight and no store fault, no cast runs again after it
     returned (at least once is exactly once when nothing fails).
  5. Each run's counters add up: every stored cast queued in a run ends in one counter, and
     `durable_running` is 0 after its stop.
  6. After the drain, nothing is left claimed or pending: every row is dead or (keyed) done.
  7. No task is left behind by a run.
"""

from __future__ import annotations

import functools
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.lowlevel
from hypothesis import strategies as st

import trioserver
from property_tests.faults import all_tasks
from trioserver import (
    CallInfo,
    Instrument,
    ServerStopped,
    SQLiteStore,
    StoreError,
    call,
    cast,
    open_server,
    server,
    statistics,
)
from trioserver._store import Batch, Committed, Connection

BUDGET = 0.05  # each cast's budget (real seconds): an overrunning run sleeps past it


@attrs.frozen
class CastSpec:
    fails: int  # its first `fails` runs fail
    cut: bool  # failing runs overrun the budget (cut) instead of raising
    slot: int | None  # its idempotency key's slot (None: no key)


@attrs.frozen
class CasterSpec:
    casts: tuple[CastSpec, ...]
    delay: float
    cancel_after: float | None


@attrs.frozen
class RunSpec:
    casters: tuple[CasterSpec, ...]
    stop_after: float
    faults: frozenset[int]  # numbers of this run's commit rounds that raise (0: the first)


@attrs.frozen
class DurableScenario:
    attempts: int
    backoff: float
    runs: tuple[RunSpec, ...]


@st.composite
def cast_specs(draw: st.DrawFn) -> CastSpec:
    return CastSpec(
        fails=draw(st.integers(0, 3)),
        cut=draw(st.booleans()),
        slot=draw(st.none() | st.integers(0, 3)),
    )


@st.composite
def caster_specs(draw: st.DrawFn) -> CasterSpec:
    return CasterSpec(
        casts=tuple(draw(st.lists(cast_specs(), min_size=1, max_size=5))),
        delay=draw(st.sampled_from([0.0, 0.0, 0.005, 0.02])),
        cancel_after=draw(st.none() | st.sampled_from([0.0, 0.001, 0.01, 0.03])),
    )


@st.composite
def run_specs(draw: st.DrawFn) -> RunSpec:
    return RunSpec(
        casters=tuple(draw(st.lists(caster_specs(), min_size=0, max_size=4))),
        stop_after=draw(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3])),
        faults=frozenset(draw(st.sets(st.integers(0, 6), max_size=2))),
    )


@st.composite
def durable_scenarios(draw: st.DrawFn) -> DurableScenario:
    return DurableScenario(
        attempts=draw(st.integers(1, 3)),
        backoff=draw(st.sampled_from([0.0, 0.005, 0.02])),
        runs=tuple(draw(st.lists(run_specs(), min_size=1, max_size=3))),
    )


# -- the server and what it records ---------------------------------------------------------


@attrs.define
class Log:
    outcomes: dict[int, str] = attrs.Factory(dict)  # cast ident -> its caller's outcome
    specs: dict[int, CastSpec] = attrs.Factory(dict)
    # every run of a handler: (ident, run number, how it ended)
    runs: list[tuple[int, int, str]] = attrs.Factory(list)
    started: dict[int, int] = attrs.Factory(Counter)  # ident -> runs started
    first_starts: list[int] = attrs.Factory(list)  # store numbers, in order of first start
    seen: set[int] = attrs.Factory(set)
    ident_of: dict[int, int] = attrs.Factory(dict)  # store number -> ident
    problems: list[str] = attrs.Factory(list)


class Starts(Instrument):
    def __init__(self, log: Log) -> None:
        self.log = log

    def call_started(self, call: CallInfo) -> None:
        number = call.stored_as
        if number is not None and number not in self.log.seen:
            self.log.seen.add(number)
            self.log.first_starts.append(number)


@functools.lru_cache(maxsize=64)
def server_class(attempts: int, backoff: float) -> type:
    @server
    class Deliveries:
        def __init__(self, log: Log, run: int) -> None:
            self.log = log
            self.run = run

        @cast(
            durable=True,
            attempts=attempts,
            backoff=backoff,
            max_backoff=0.05,
            timeout=BUDGET,
            key=lambda ident, fails, cut, slot: None if slot is None else f"slot-{slot}",
        )
        async def deliver(self, ident: int, fails: int, cut: bool, slot: int | None) -> None:
            log = self.log
            log.started[ident] += 1
            attempt = log.started[ident]
            ending = "cancelled"
            try:
                if attempt <= fails:
                    if cut:
                        ending = "cut"
                        await trio.sleep(1.0)  # overruns the budget
                    ending = "raised"
                    raise RuntimeError(f"run {attempt} of {ident} fails")
                await trio.lowlevel.checkpoint()
                ending = "returned"
            finally:
                log.runs.append((ident, self.run, ending))

        @call
        def ping(self) -> None:
            pass

    return Deliveries


class FaultyStore(SQLiteStore):
    """The real SQLite store, whose commit rounds numbered in `faults` raise before writing."""

    def __init__(self, path: Path, faults: frozenset[int]) -> None:
        super().__init__(path, lease=5.0)
        self.faults = faults

    def connect(self, queue: str, holder: str) -> Connection:
        inner = super().connect(queue, holder)
        faults = self.faults
        rounds = [0]

        class Faulty:
            def commit(self, batch: Batch) -> Committed:
                number = rounds[0]
                rounds[0] += 1
                if number in faults:
                    raise sqlite3.OperationalError(f"injected fault in round {number}")
                return inner.commit(batch)

            def close(self) -> None:
                inner.close()

        return Faulty()


async def cast_all(handle: Any, log: Log, spec: CasterSpec, idents: list[int]) -> None:
    await trio.sleep(spec.delay)
    with trio.CancelScope() as scope:
        if spec.cancel_after is not None:
            scope.deadline = trio.current_time() + spec.cancel_after
        for ident, cast_spec in zip(idents, spec.casts, strict=True):
            log.outcomes[ident] = "pending"
            try:
                await handle.deliver(ident, cast_spec.fails, cast_spec.cut, cast_spec.slot)
            except trio.Cancelled:
                log.outcomes[ident] = "cancelled"
                raise
            except StoreError:
                log.outcomes[ident] = "store_error"
            except ServerStopped:
                log.outcomes[ident] = "stopped"
            except BaseException as exc:  # pragma: no cover (a failure of the invariants)
                log.outcomes[ident] = f"unexpected {exc!r}"
                raise
            else:
                log.outcomes[ident] = "acknowledged"
    for ident in idents:  # cancelled before its turn: never sent
        log.outcomes.setdefault(ident, "not sent")


async def one_run(
    scenario: DurableScenario, log: Log, path: Path, run: int, spec: RunSpec, next_ident: int
) -> tuple[int, bool]:
    """Run the server once; return the next ident and whether the run was clean (no fault
    happened and nothing was cut by its stop)."""
    cls = server_class(scenario.attempts, scenario.backoff)
    obj = cls(log, run)
    before = {task.name for task in all_tasks()}
    clean = True
    try:
        store = FaultyStore(path, spec.faults)
        async with open_server(obj, store=store, instruments=[Starts(log)]) as handle:
            async with trio.open_nursery() as nursery:
                nursery.cancel_scope.deadline = trio.current_time() + spec.stop_after
                for caster in spec.casters:
                    idents = list(range(next_ident, next_ident + len(caster.casts)))
                    for ident, cast_spec in zip(idents, caster.casts, strict=True):
                        log.specs[ident] = cast_spec
                    next_ident += len(caster.casts)
                    nursery.start_soon(cast_all, handle, log, caster, idents)
                await trio.sleep_forever()
            stats = statistics(handle)
    except sqlite3.OperationalError:
        return next_ident, False  # the first round failed: the run never started
    final = statistics(obj)
    if final.dropped or final.cancelled or final.durable_dead or spec.faults:
        clean = False
    started = stats.handled + stats.failed + stats.timed_out + stats.cancelled
    ended = final.handled + final.failed + final.timed_out + final.cancelled + final.dropped
    if final.running or final.queued:
        log.problems.append(f"run {run}: requests left after the stop: {final}")
    if started > ended:
        log.problems.append(f"run {run}: counters went down: {stats} then {final}")
    if final.durable_running != 0:
        log.problems.append(f"run {run}: durable_running {final.durable_running} after stop")
    # (the run's timers task, started at the first use, lives as long as the trio run)
    after = {task.name for task in all_tasks()} - before - {"trioserver: timers"}
    if after:
        log.problems.append(f"run {run}: tasks left behind: {sorted(after)}")
    return next_ident, clean


async def drain(scenario: DurableScenario, log: Log, path: Path, run: int) -> None:
    """A last run with no fault and no caster: until nothing is claimed or pending."""
    cls = server_class(scenario.attempts, scenario.backoff)
    store = SQLiteStore(path)
    async with open_server(cls(log, run), store=store, instruments=[Starts(log)]) as h:
        with trio.fail_after(30):
            # (the store works in its thread: poll for its effect)
            while statistics(h).durable_running or rows(path, "state IN ('pending', 'running')"):  # noqa: ASYNC110
                await trio.sleep(0.01)
            await h.ping()


def rows(path: Path, where: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            f"SELECT id, payload, state, failed, key FROM trioserver_casts WHERE {where}"
        ).fetchall()
    finally:
        db.close()


def run_scenario(scenario: DurableScenario) -> tuple[Log, Path, list[bool]]:
    log = Log()
    directory = tempfile.mkdtemp(prefix="trioserver-durable-")
    path = Path(directory) / "casts.db"
    cleans: list[bool] = []

    async def main() -> None:
        ident = 0
        for number, spec in enumerate(scenario.runs):
            with trio.fail_after(30):
                ident, clean = await one_run(scenario, log, path, number, spec, ident)
            cleans.append(clean)
        await drain(scenario, log, path, len(scenario.runs))

    trio.run(main)
    return log, path, cleans


def check(scenario: DurableScenario) -> None:
    log, path, cleans = run_scenario(scenario)
    problems = list(log.problems)
    # 1. one outcome per caller
    for ident, outcome in log.outcomes.items():
        if outcome not in ("acknowledged", "cancelled", "store_error", "stopped", "not sent"):
            problems.append(f"cast {ident}: outcome {outcome!r}")
    returned = {ident for ident, _, ending in log.runs if ending == "returned"}
    failed_runs = Counter(ident for ident, _, ending in log.runs if ending in ("raised", "cut"))
    dead = {}
    for _, payload, _, failed, _ in rows(path, "state = 'dead'"):
        ident = trioserver._store.decode(payload)[0][0]  # pyright: ignore[reportPrivateUsage]
        dead[ident] = failed
    # 2. no acknowledged cast lost (one per key: the one stored)
    stored_slots: dict[int, int] = {}
    for ident in sorted(log.outcomes):
        spec = log.specs[ident]
        if spec.slot is not None and (ident in returned or ident in dead or log.started[ident]):
            stored_slots.setdefault(spec.slot, ident)
    for ident, outcome in log.outcomes.items():
        if outcome != "acknowledged":
            continue
        spec = log.specs[ident]
        target = ident if spec.slot is None else stored_slots.get(spec.slot)
        if target is None:
            problems.append(f"cast {ident} (key slot {spec.slot}) acknowledged, none ran")
            continue
        if target in returned:
            continue
        if target in dead:
            if dead[target] != scenario.attempts or failed_runs[target] < scenario.attempts:
                problems.append(
                    f"cast {target} dead after {dead[target]} counted, "
                    f"{failed_runs[target]} failed runs (attempts {scenario.attempts})"
                )
            continue
        problems.append(f"cast {target} acknowledged, never returned, not dead (lost)")
    # 3. first runs in commit order
    if log.first_starts != sorted(log.first_starts):
        problems.append(f"first runs out of commit order: {log.first_starts}")
    # 4. exactly once while nothing fails
    if all(cleans):
        for ident in returned:
            endings = [ending for i, _, ending in log.runs if i == ident]
            if endings.index("returned") != len(endings) - 1:
                problems.append(f"cast {ident} ran again after it returned: {endings}")
    # 6. nothing left claimed or pending
    left = rows(path, "state NOT IN ('dead', 'done')")
    if left:
        problems.append(f"rows left after the drain: {left}")
    assert not problems, "\n".join([repr(scenario), *problems])
