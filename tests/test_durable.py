"""Guarantee 17: durable casts, on the SQLite store (a real file in a temp directory)."""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioserver import (
    CallInfo,
    Instrument,
    SQLiteStore,
    StoreError,
    call,
    cast,
    open_server,
    open_supervisor,
    serve,
    server,
    statistics,
)
from trioserver._store import Batch, Committed, Connection

from .expect import refused


@server
class Mailer:
    def __init__(self, failures: int = 0, *, hold: bool = False) -> None:
        self.sent: list[tuple[str, int]] = []
        self.runs: list[tuple[str, int, float]] = []
        self.failures = failures
        self.gate = trio.Event()  # `linger` waits for it: held shut, it runs until the stop
        if not hold:
            self.gate.set()

    @cast(durable=True, attempts=3, backoff=2.0)
    async def send(self, to: str, number: int) -> None:
        self.runs.append((to, number, trio.current_time()))
        if self.failures:
            self.failures -= 1
            raise ConnectionError("smtp down")
        self.sent.append((to, number))

    @cast(durable=True, timeout=1.0, attempts=2, backoff=1.0)
    async def slow(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.sent.append(("slow", 0))

    @cast(durable=True, key=lambda order, to: f"welcome:{order}")
    def welcome(self, order: int, to: str) -> None:
        self.sent.append((to, order))

    @cast(durable=True, thread=True)
    def in_thread(self, number: int) -> int:
        return number

    @cast(durable=True)
    def anything(self, *values: Any, **named: Any) -> None:
        self.sent.append(("anything", len(values) + len(named)))

    @call
    def count(self) -> int:
        return len(self.sent)

    @cast(durable=True, timeout=None)
    async def linger(self, seconds: float) -> None:
        await self.gate.wait()  # (no timer: however far virtual time jumps)
        await trio.sleep(seconds)
        self.sent.append(("linger", int(seconds)))

    @call
    async def send_from_handler(self, number: int) -> None:
        await self.send("self", number)  # waits for the commit, not for the server


def rows(path: Path, where: str = "1") -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            f"SELECT id, method, state, failed FROM trioserver_casts WHERE {where} ORDER BY id"
        ).fetchall()
    finally:
        db.close()


@pytest.fixture
def clock() -> trio.abc.Clock:
    """Virtual time that jumps only after 50 ms (real) with every task asleep: while the store
    commits in its worker thread (a millisecond or so), time stands still, as it would."""
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "casts.db"


async def until(check: Callable[[], object], tries: int = 400, step: float = 0.25) -> None:
    """Wait until `check()` holds, `step` virtual seconds at a time (each costs the clock's
    50 ms real threshold): the store works in a worker thread, wait for its effect."""
    for _ in range(tries):
        if check():
            return
        await trio.sleep(step)
    raise AssertionError(f"never happened: {check}")  # pragma: no cover


async def test_a_durable_cast_returns_once_committed_and_runs(
    clock: trio.abc.Clock, path: Path
) -> None:
    async with open_server(Mailer(), store=SQLiteStore(path)) as mailer:
        await mailer.send("ann", 1)
        # The await returned: the cast is on disk (claimed by this run, not yet run).
        assert [row[1:3] for row in rows(path)] == [("send", "running")]
        assert await mailer.count() == 1  # FIFO: it ran before this call
        await until(lambda: rows(path) == [])  # done: its row is gone (it had no key)
        stats = statistics(mailer)
        assert (stats.durable_stored, stats.durable_running) == (1, 0)
        assert (stats.durable_retried, stats.durable_dead) == (0, 0)
        assert stats.handled == 2


async def test_casts_arriving_together_share_a_commit_and_run_in_commit_order(
    clock: trio.abc.Clock, path: Path
) -> None:
    commits: list[Batch] = []

    class Counting(SQLiteStore):
        def connect(self, queue: str, holder: str) -> Connection:
            inner = super().connect(queue, holder)

            class Wrapped:
                def commit(self, batch: Batch) -> Committed:
                    commits.append(batch)
                    return inner.commit(batch)

                def close(self) -> None:
                    inner.close()

            return Wrapped()

    async with open_server(Mailer(), store=Counting(path)) as mailer:
        async with trio.open_nursery() as nursery:
            for number in range(100):
                nursery.start_soon(mailer.send, "ann", number)
        assert await mailer.count() == 100
        with_inserts = [batch for batch in commits if batch.inserts]
        assert sum(len(batch.inserts) for batch in with_inserts) == 100
        assert len(with_inserts) < 10  # group commit: one per round, not one per cast
    # Commit order is the order they ran in.
    sent = [number for _, number in mailer.sent]
    payloads = [new.payload for batch in with_inserts for new in batch.inserts]
    committed = [int(payload.split(",")[1].rstrip("]")) for payload in payloads]
    assert sent == committed


async def test_a_failing_cast_is_retried_with_backoff_then_succeeds(
    clock: trio.abc.Clock, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_server(Mailer(failures=2), store=SQLiteStore(path)) as mailer:
        await mailer.send("ann", 7)
        await until(lambda: mailer.sent)
        await until(lambda: rows(path) == [])
        assert mailer.sent == [("ann", 7)]
        times = [at for _, _, at in mailer.runs]
        assert len(times) == 3
        # backoff 2 s, doubled, with jitter: waits drawn from [1, 2] then [2, 4] (the runs
        # may come later: trio's virtual clock jumps while the store works in its thread)
        waits = [float(w) for w in re.findall(r"retried in ([0-9.]+) s", caplog.text)]
        assert len(waits) == 2
        assert 1.0 <= waits[0] <= 2.0
        assert 2.0 <= waits[1] <= 4.0
        # (logged to 3 digits)
        assert times[1] - times[0] >= waits[0] - 0.01
        assert times[2] - times[1] >= waits[1] - 0.01
        stats = statistics(mailer)
        assert (stats.durable_retried, stats.durable_dead, stats.failed) == (2, 0, 2)


async def test_a_cast_failing_on_every_attempt_is_kept_dead_listed_and_requeued(
    clock: trio.abc.Clock, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(path)
    async with open_server(Mailer(failures=10), store=store) as mailer:
        await mailer.send("bob", 3)
        await until(lambda: statistics(mailer).durable_dead)
        assert len(mailer.runs) == 3  # attempts=3
        assert mailer.sent == []
        assert statistics(mailer).durable_dead == 1
        assert "is dead (after 3 attempts)" in caplog.text
        await until(lambda: rows(path, "state = 'dead'"))
        dead = await store.dead_casts(Mailer)
        assert [(d.method, d.args, d.kwargs, d.attempts) for d in dead] == [
            ("send", ("bob", 3), {}, 3)
        ]
        assert "ConnectionError('smtp down')" in dead[0].error
        assert dead[0].queue == "Mailer"
        # Fixed (no more failures): requeue it; the running server runs it at once.
        mailer.failures = 0
        assert await store.requeue(Mailer, [dead[0].id]) == 1
        await until(lambda: mailer.sent)
        assert mailer.sent == [("bob", 3)]
        assert await store.dead_casts("Mailer") == []
        assert await store.requeue(Mailer) == 0


async def test_a_cast_cut_by_its_budget_is_retried(clock: trio.abc.Clock, path: Path) -> None:
    async with open_server(Mailer(), store=SQLiteStore(path)) as mailer:
        await mailer.slow(5.0)  # budget 1 s: cut twice (attempts=2), then dead
        await until(lambda: rows(path, "state = 'dead'"))
        stats = statistics(mailer)
        assert (stats.timed_out, stats.durable_retried, stats.durable_dead) == (2, 1, 1)
        assert [row[2:] for row in rows(path)] == [("dead", 2)]


async def test_stored_casts_left_at_stop_run_first_at_the_next_start(
    clock: trio.abc.Clock, path: Path
) -> None:
    store = SQLiteStore(path)
    first = Mailer(hold=True)
    async with open_server(first, store=store) as mailer:
        await mailer.linger(100)  # runs (held) while the others wait in the mailbox
        await until(lambda: statistics(mailer).running)
        for number in range(5):
            await mailer.send("ann", number)
    # Stopped at once: the running cast was cut, the queued ones dropped from memory.
    stats = statistics(first)
    assert stats.cancelled == 1
    assert stats.dropped == 5
    assert [row[2] for row in rows(path)] == ["pending"] * 6
    second = Mailer()
    async with open_server(second, store=store) as mailer:
        assert statistics(mailer).durable_running == 6  # claimed before the handle came
        assert await mailer.count() == 6  # they ran before this new call, in commit order
        assert second.sent == [("linger", 100)] + [("ann", number) for number in range(5)]
        await until(lambda: rows(path) == [])


async def test_an_idempotency_key_stores_a_cast_once(clock: trio.abc.Clock, path: Path) -> None:
    async with open_server(Mailer(), store=SQLiteStore(path)) as mailer:
        await mailer.welcome(42, "ann@example.com")
        await mailer.welcome(42, "ann@example.com")
        await until(lambda: rows(path, "state = 'done'"))
        await mailer.welcome(42, "other@example.com")  # after it ran: the key stays taken
        assert await mailer.count() == 1
        assert mailer.sent == [("ann@example.com", 42)]
        assert statistics(mailer).durable_stored == 1
    assert [row[1:3] for row in rows(path)] == [("welcome", "done")]


async def test_arguments_that_cannot_be_stored_are_a_type_error_naming_them(
    clock: trio.abc.Clock, path: Path
) -> None:
    async with open_server(Mailer(), store=SQLiteStore(path)) as mailer:
        with pytest.raises(TypeError, match=r"argument 'number' cannot be stored: it is a set"):
            await mailer.send("ann", {1, 2})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"a tuple would come back a list"):
            await mailer.anything((1, 2))
        with pytest.raises(TypeError, match=r"argument 'flag'.*\['x'\]\[0\] is nan"):
            await mailer.anything(flag={"x": [math.nan]})
        with pytest.raises(TypeError, match=r"argument '\*values\[1\]'.*key 3"):
            await mailer.anything("ok", {3: "three"})
        with pytest.raises(TypeError):
            await mailer.send("too", 1, 2)  # type: ignore[call-arg]
        assert rows(path) == []
        await mailer.anything("ok", [1.5, None, True], extra={"a": [1]})
        assert await mailer.count() == 1
        assert mailer.sent == [("anything", 3)]


async def test_a_key_function_must_return_a_str(clock: trio.abc.Clock, path: Path) -> None:
    @server
    class Keyed:
        @cast(durable=True, key=lambda n: n)
        def go(self, n: int) -> None:
            pass

    async with open_server(Keyed(), store=SQLiteStore(path)) as keyed:
        with pytest.raises(TypeError, match=r"Keyed.go: its key= function returned 1;"):
            await keyed.go(1)
    assert rows(path) == []


async def test_durable_casts_need_a_store(clock: trio.abc.Clock, path: Path) -> None:
    with pytest.raises(StoreError, match=r"Mailer has durable casts \(send, slow, .*no store"):
        async with open_server(Mailer()):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="store must be a trioserver store"):
        async with open_server(Mailer(), store=str(path)):  # type: ignore[arg-type]
            pass  # pragma: no cover
    async with trio.open_nursery() as nursery:
        with pytest.raises(StoreError):
            await nursery.start(serve, Mailer())


async def test_a_store_that_cannot_open_starts_nothing(
    clock: trio.abc.Clock, tmp_path: Path
) -> None:
    mailer = Mailer()
    with pytest.raises(sqlite3.OperationalError):
        async with open_server(mailer, store=SQLiteStore(tmp_path / "missing" / "casts.db")):
            pass  # pragma: no cover
    async with open_server(mailer, store=SQLiteStore(tmp_path / "casts.db")) as running:
        assert await running.count() == 0  # the object was left as it was: it starts now


async def test_serve_with_a_store(clock: trio.abc.Clock, path: Path) -> None:
    store = SQLiteStore(path)
    async with trio.open_nursery() as nursery:
        mailer = await nursery.start(partial(serve, store=store), Mailer(hold=True))
        assert isinstance(mailer, Mailer)
        await mailer.send("ann", 1)
        assert await mailer.count() == 1
        await mailer.linger(5)
        await until(lambda: statistics(mailer).running)
        nursery.cancel_scope.cancel()
    assert [row[1:3] for row in rows(path)] == [("linger", "pending")]
    async with trio.open_nursery() as nursery:
        mailer = await nursery.start(partial(serve, store=store), Mailer())
        await until(lambda: mailer.sent)
        assert mailer.sent == [("linger", 5)]
        nursery.cancel_scope.cancel()


async def test_a_failed_on_start_gives_the_claims_back(clock: trio.abc.Clock, path: Path) -> None:
    @server
    class Broken:
        async def on_start(self) -> None:
            raise RuntimeError("no start")

        @cast(durable=True)
        def go(self, n: int) -> None:
            pass

    store = SQLiteStore(path, queue="shared")
    with pytest.raises(RuntimeError, match="no start"):
        async with open_server(Broken(), store=store):
            pass  # pragma: no cover
    async with trio.open_nursery() as nursery:
        with pytest.raises(RuntimeError, match="no start"):
            await nursery.start(partial(serve, store=store), Broken())
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM trioserver_leases").fetchone() == (0,)
    db.close()


async def test_stored_casts_of_a_changed_handler_are_dead_at_once(
    clock: trio.abc.Clock, path: Path
) -> None:
    store = SQLiteStore(path, queue="mail")

    @server
    class Old:
        @cast(durable=True)
        def send(self, to: str) -> None:
            pass

        @cast(durable=True)
        def gone(self) -> None:
            pass

        @cast(timeout=None)
        async def hold(self) -> None:
            await trio.sleep_forever()  # until the stop, however far virtual time jumps

    @server
    class New:
        def __init__(self) -> None:
            self.sent: list[str] = []

        @cast(durable=True)
        def send(self, to: str, subject: str) -> None:  # a new required parameter
            self.sent.append(to)

    async with open_server(Old(), store=store) as old:
        await old.hold()
        await old.send("ann")
        await old.gone()  # both wait behind `hold` when the server stops
    async with open_server(New(), store=store) as new:
        await until(lambda: len(rows(path, "state = 'dead'")) == 2)
        assert new.sent == []
        assert statistics(new).durable_dead == 2
    dead = await store.dead_casts("mail")
    assert [(d.method, d.attempts) for d in dead] == [("send", 3), ("gone", 3)]
    assert "no longer fit" in dead[0].error
    assert "has no cast 'gone'" in dead[1].error


async def test_a_thread_handler_and_a_cast_from_a_handler(
    clock: trio.abc.Clock, path: Path
) -> None:
    async with open_server(Mailer(), store=SQLiteStore(path)) as mailer:
        await mailer.in_thread(3)
        await mailer.send_from_handler(9)
        await until(lambda: ("self", 9) in mailer.sent)
        assert ("self", 9) in mailer.sent
        stats = statistics(mailer)
        assert stats.durable_stored == 2
        assert stats.handled == 3


async def test_a_cancelled_caster_stores_nothing(clock: trio.abc.Clock, path: Path) -> None:
    async with open_server(Mailer(), store=SQLiteStore(path)) as mailer:
        with trio.CancelScope() as scope:
            scope.cancel()
            await mailer.send("never", 0)
        assert scope.cancelled_caught
        assert await mailer.count() == 0
        assert statistics(mailer).durable_stored == 0
    assert rows(path) == []


async def test_a_failed_commit_is_a_store_error_and_its_marks_are_kept(
    clock: trio.abc.Clock, path: Path
) -> None:
    failing = {"on": False}

    class Flaky(SQLiteStore):
        def connect(self, queue: str, holder: str) -> Connection:
            inner = super().connect(queue, holder)

            class Wrapped:
                def commit(self, batch: Batch) -> Committed:
                    if failing["on"] and not batch.release:
                        raise sqlite3.OperationalError("disk I/O error")
                    return inner.commit(batch)

                def close(self) -> None:
                    inner.close()

            return Wrapped()

    async with open_server(Mailer(), store=Flaky(path)) as mailer:
        await mailer.send("ann", 1)
        failing["on"] = True  # the done mark of the run fails, and the next cast's insert
        with pytest.raises(StoreError, match="may or may not be stored"):
            await mailer.send("bob", 2)
        failing["on"] = False
        await until(lambda: rows(path) == [])  # the kept done mark commits in a later round
    assert mailer.sent == [("ann", 1)]


async def test_instruments_see_durable_casts_stored_retried_and_dead(
    clock: trio.abc.Clock, path: Path
) -> None:
    seen: list[tuple[str, str, int | None, str | None]] = []

    class Seer(Instrument):
        def cast_stored(self, call: CallInfo) -> None:
            seen.append(("stored", call.method, call.stored_as, call.reason))

        def cast_retried(self, call: CallInfo) -> None:
            seen.append(("retried", call.method, call.stored_as, call.reason))

        def cast_dead(self, call: CallInfo) -> None:
            seen.append(("dead", call.method, call.stored_as, call.reason))

        def call_started(self, call: CallInfo) -> None:
            seen.append(("started", call.method, call.stored_as, None))

    failing = Mailer(failures=5)
    async with open_server(failing, store=SQLiteStore(path), instruments=[Seer()]) as mailer:
        await mailer.send("ann", 1)
        await until(lambda: statistics(mailer).durable_dead)
    error = "ConnectionError('smtp down')"
    assert seen == [
        ("stored", "Mailer.send", 1, None),
        ("started", "Mailer.send", 1, None),
        ("retried", "Mailer.send", 1, error),
        ("started", "Mailer.send", 1, None),
        ("retried", "Mailer.send", 1, error),
        ("started", "Mailer.send", 1, None),
        ("dead", "Mailer.send", 1, error),
    ]


async def test_two_runs_on_one_queue_the_lease_holder_runs_both_runs_casts(
    clock: trio.abc.Clock, path: Path
) -> None:
    store = SQLiteStore(path, queue="mail")
    first, second = Mailer(), Mailer()
    async with open_server(first, store=store) as one, open_server(second, store=store) as two:
        await two.send("to-the-holder", 1)  # `two` is not the holder: stored pending
        await one.send("ann", 2)
        await until(lambda: len(first.sent) == 2)
        assert first.sent == [("to-the-holder", 1), ("ann", 2)]
        assert second.sent == []
        assert statistics(two).durable_stored == 1
        await until(lambda: rows(path) == [])


async def test_the_lease_passes_when_its_holder_stops(clock: trio.abc.Clock, path: Path) -> None:
    store = SQLiteStore(path, queue="mail")
    first, second = Mailer(), Mailer()
    async with open_server(second, store=store):
        async with open_server(first, store=store) as one:
            pass
        async with open_server(first, store=store) as one:
            await one.send("ann", 1)
        # `two` took the lease when `first`'s first run released it; `first` never held it.
        await until(lambda: second.sent)
        assert second.sent == [("ann", 1)]
        assert first.sent == []


async def test_a_live_holder_keeps_the_queue_and_its_death_frees_it(path: Path) -> None:
    store = SQLiteStore(path, queue="mail", lease=0.3)
    connection = store.connect("mail", "another-run")
    assert connection.commit(Batch(lease=True)).holding
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO trioserver_casts (queue, method, payload, state, attempts, enqueued_at) "
        "VALUES ('mail', 'send', '{\"args\":[\"left\",5],\"kwargs\":{}}', 'running', 3, 0)"
    )
    db.commit()
    db.close()
    mailer = Mailer()
    async with open_server(mailer, store=store) as running:  # real time: a wall-clock lease
        await trio.sleep(0.5)  # its lease row expired, but the run is alive: it keeps its lock
        assert statistics(running).durable_running == 0
        connection.close()  # it ends (as a killed process's lock is freed by the system)
        with trio.fail_after(5):
            while not mailer.sent:  # noqa: ASYNC110 (taken over at a next try: lease / 3)
                await trio.sleep(0.02)
    assert mailer.sent == [("left", 5)]


def test_a_killed_holders_casts_run_before_new_requests(path: Path) -> None:
    script = f"""
import os, trio, trioserver
from tests.test_durable import Mailer
async def main():
    store = trioserver.SQLiteStore({str(path)!r})
    async with trioserver.open_server(Mailer(hold=True), store=store) as m:
        await m.linger(100)
        for n in range(3):
            await m.send("left", n)
        print("stored", flush=True)
        await trio.sleep_forever()
trio.run(main)
"""
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent
    ) as process:
        assert process.stdout is not None
        try:
            assert process.stdout.readline() == b"stored\n"
        finally:
            process.kill()  # SIGKILL: no stop, no release; its lease row stays
    mailer = Mailer()

    async def restart() -> None:
        async with open_server(mailer, store=SQLiteStore(path)) as running:
            assert statistics(running).durable_running == 4  # taken over at once, claimed
            assert await running.count() == 4  # after them: linger (100 s) included

    trio.run(restart, clock=trio.testing.MockClock(autojump_threshold=0.05))
    assert mailer.sent == [("linger", 100)] + [("left", n) for n in range(3)]


async def test_a_key_gets_keyword_only_arguments_by_name(clock: trio.abc.Clock, path: Path) -> None:
    @server
    class Receipts:
        def __init__(self) -> None:
            self.sent: list[str] = []

        @cast(durable=True, key=lambda order, lang: f"{order}:{lang}")
        def receipt(self, order: int, *, lang: str = "en") -> None:
            self.sent.append(f"{order}:{lang}")

        @call
        def read(self) -> list[str]:
            return self.sent

    async with open_server(Receipts(), store=SQLiteStore(path)) as receipts:
        await receipts.receipt(1)
        await receipts.receipt(1, lang="en")
        await receipts.receipt(1, lang="fr")
        assert await receipts.read() == ["1:en", "1:fr"]


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"durable": True, "crash": True}, ["crash=True", "choose one"]),
        ({"durable": True, "attempts": 0}, ["attempts must be a whole number >= 1"]),
        ({"durable": True, "attempts": True}, ["attempts"]),
        ({"durable": True, "backoff": -1}, ["backoff must be a finite number"]),
        ({"durable": True, "max_backoff": math.nan}, ["max_backoff"]),
        ({"durable": True, "key": "order"}, ["key must be a function"]),
        ({"durable": "yes"}, ["durable must be True or False"]),
        ({"attempts": 5}, ["attempts apply to durable casts only"]),
        ({"durable": True, "key": lambda a, b, c: "k"}, ["key=", "cannot take (to, cc=...)"]),
        ({"durable": True, "key": lambda to: "k"}, ["key=", "or **kwargs"]),
    ],
)
def test_durable_options_are_checked_at_definition(
    options: dict[str, Any], names: list[str]
) -> None:
    with refused("send", *names):

        class Bad:
            @cast(**options)
            def send(self, to: str, *, cc: str = "") -> None:
                pass


def test_an_async_key_is_refused() -> None:
    async def key(to: str) -> str:
        return to  # pragma: no cover

    with refused("Bad.send", "not async"):

        class Bad:
            @cast(durable=True, key=key)
            def send(self, to: str) -> None:
                pass


def test_a_subclass_keeps_durable_casts_and_guards() -> None:
    @server
    class Child(Mailer):
        pass

    spec = Child._trioserver_spec  # type: ignore[attr-defined]
    assert spec.methods["send"].durable is not None
    assert spec.durable == ("send", "slow", "welcome", "in_thread", "anything", "linger")


def test_store_options_are_checked(path: Path) -> None:
    with pytest.raises(TypeError, match="synchronous"):
        SQLiteStore(path, synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lease"):
        SQLiteStore(path, lease=0)
    with pytest.raises(TypeError, match="queue"):
        SQLiteStore(path, queue="")
    assert "casts.db" in repr(SQLiteStore(path))


async def test_a_logging_instrument_logs_durable_events(
    clock: trio.abc.Clock, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from trioserver import LoggingInstrument

    caplog.set_level(logging.INFO, logger="trioserver.calls")
    instrument = LoggingInstrument(logging.INFO)
    store = SQLiteStore(path)
    async with open_server(Mailer(failures=5), store=store, instruments=[instrument]) as m:
        await m.send("ann", 1)
        await until(lambda: statistics(m).durable_dead)
    assert "Mailer.send #1 stored" in caplog.text
    assert "failed, retried: ConnectionError" in caplog.text
    assert "dead: ConnectionError" in caplog.text


async def test_a_requeue_through_another_store_object_wakes_the_holder(
    clock: trio.abc.Clock, path: Path
) -> None:
    mailer = Mailer(failures=10)
    async with open_server(mailer, store=SQLiteStore(path)) as running:
        await running.send("bob", 1)
        await until(lambda: rows(path, "state = 'dead'"))
        mailer.failures = 0
        requeued_at = trio.current_time()
        assert await SQLiteStore(path).requeue(Mailer) == 1  # another object, same file
        # At once, not at the next renewal (3.3 s after the last; 1.9 s after the requeue when
        # the wake is removed): polled in small virtual steps, each taken only after 50 ms
        # (real) with every task asleep, so the 0.5 s allow 2.5 s (real) of slow commits on a
        # loaded machine (the claim round works in a thread), where 0.25 s steps allowed 0.2 s.
        await until(lambda: mailer.sent, tries=1000, step=0.01)
        assert trio.current_time() - requeued_at < 0.5


async def test_a_supervised_server_keeps_its_durable_casts_across_a_crash(
    clock: trio.abc.Clock, path: Path
) -> None:
    runs: list[int] = []

    @server
    class Fragile:
        @cast(durable=True)
        async def work(self, n: int) -> None:
            await trio.sleep(1)
            runs.append(n)

        @cast(crash=True)
        async def explode(self) -> None:
            await trio.sleep(1)
            raise RuntimeError("boom")

    async with open_supervisor(store=SQLiteStore(path), watchdog_grace=None) as supervisor:
        fragile = await supervisor.start(Fragile)
        await fragile.explode()
        await fragile.work(1)  # stored, queued behind the cast that crashes the server
        await fragile.work(2)
        await until(lambda: runs == [1, 2])  # the restarted server ran them
        assert supervisor.statistics().restarts == 1
    assert rows(path) == []


async def test_news_during_a_claim_in_flight_is_not_lost(path: Path) -> None:
    """A requeue arriving while a claim round is in flight: that claim could not see it."""
    claims: list[float] = []

    class SlowClaims(SQLiteStore):
        def connect(self, queue: str, holder: str) -> Connection:
            inner = super().connect(queue, holder)

            class Slow:
                def commit(self, batch: Batch) -> Committed:
                    done = inner.commit(batch)
                    if batch.claim:
                        claims.append(time.monotonic())
                        time.sleep(0.3)  # its answer comes back late
                    return done

                def close(self) -> None:
                    inner.close()

            return Slow()

    store = SlowClaims(path, lease=30.0)  # renewals every 10 s: out of this test's way
    jobs = Mailer(failures=10)
    async with open_server(jobs, store=store) as handle:  # real time
        await handle.slow(5.0)  # budget 1 s: cut (attempts=2), then dead
        with trio.fail_after(10):
            while not await store.dead_casts(Mailer):  # noqa: ASYNC110 (in the store)
                await trio.sleep(0.05)
        await trio.sleep(0.5)  # idle, caught up
        await store.requeue(Mailer, [999])  # news, nothing requeued: a claim round starts
        await trio.sleep(0.1)  # ... and is in flight
        assert await store.requeue(Mailer) == 1  # news: the dead cast is pending again
        with trio.fail_after(3):  # at once, not at the next renewal (10 s)
            while statistics(handle).durable_running == 0:  # noqa: ASYNC110 (polled)
                await trio.sleep(0.05)
