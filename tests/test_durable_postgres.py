"""Guarantee 17 with PostgreSQL: durable casts stored and run at least once, retries and dead
casts, idempotency keys, and one queue shared by several servers (one holds the lease, the
others store for it, NOTIFY wakes it; the lease passes on at a stop or when it expires).

Against a real PostgreSQL server started by the test run (tests/postgres.py), a fresh database
each test. The lease is on the database's clock, so these tests run on real time: their
waits are short and bounded.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
import trio

from trioserver import DeadCast, StoreError, call, cast, open_server, server, statistics
from trioserver.postgres import RETRY_LISTEN, PostgresStore, channel

from .postgres import PostgresServer


@server
class Jobs:
    """Records each durable cast it runs; `gate` holds `slow` until set."""

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.gate = trio.Event()
        self.failing: set[int] = set()  # these raise
        self.failures = 0

    @cast(durable=True)
    def job(self, n: int) -> None:
        self.ran.append(n)

    @cast(durable=True)
    async def slow(self, n: int) -> None:
        await self.gate.wait()
        self.ran.append(n)

    @cast(durable=True, attempts=2, backoff=0.01)
    def flaky(self, n: int) -> None:
        if n in self.failing:
            self.failures += 1
            raise ValueError(f"job {n} failed")
        self.ran.append(n)

    @cast(durable=True, key=lambda order, amount: f"order-{order}")
    def pay(self, order: int, amount: int) -> None:
        self.ran.append(amount)

    @cast(durable=True)
    def note(self, data: Any) -> None:
        self.ran.append(len(data))

    @call
    def seen(self) -> list[int]:
        return list(self.ran)


SETTLE = 0.3
"""Seconds for a server to finish its first rounds. A NOTIFY reaching the holder while one of
its claims is in flight is lost (`Durable._committed` then sets `caught_up` from a claim that
could not see the casts notified: a runtime race, reported); these tests store a cast from
another server while the holder is idle."""


async def run_server(
    obj: Jobs, store: PostgresStore, stop: trio.Event, *, task_status: trio.TaskStatus[Jobs]
) -> None:
    """Run `obj`'s server until `stop` is set (``await nursery.start(...)``: its handle)."""
    async with open_server(obj, store=store) as handle:
        task_status.started(handle)
        await stop.wait()


async def query(conninfo: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    def run() -> list[tuple[Any, ...]]:
        with psycopg.connect(conninfo, autocommit=True) as db:
            cursor = db.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    return await trio.to_thread.run_sync(run)


async def stored(conninfo: str) -> list[tuple[int, str]]:
    """The casts in the store: (number, state), oldest first."""
    rows = await query(conninfo, "SELECT id, state FROM trioserver_casts ORDER BY id")
    return [(id_, state) for id_, state in rows]


async def until(predicate: Any, within: float = 5.0) -> float:
    """Wait (polling every millisecond) until `predicate()`; how long it took."""
    start = trio.current_time()
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 (handlers on real time change what it reads)
            await trio.sleep(0.001)
    return trio.current_time() - start


async def test_durable_casts_are_stored_then_run_and_deleted(pg: str) -> None:
    store = PostgresStore(pg)
    jobs = Jobs()
    async with open_server(jobs, store=store) as handle:
        for n in range(5):
            await handle.job(n)
        async with trio.open_nursery() as nursery:  # arriving together: they share commits
            for n in range(5, 100):
                nursery.start_soon(handle.job, n)
        await until(lambda: len(jobs.ran) == 100)
        assert jobs.ran[:5] == [0, 1, 2, 3, 4]
        assert sorted(jobs.ran) == list(range(100))
        assert statistics(handle).durable_stored == 100
        await until(lambda: statistics(handle).durable_running == 0)
    assert await stored(pg) == []  # each deleted once its handler returned
    assert await query(pg, "SELECT count(*) FROM trioserver_leases") == [(0,)]  # given back


async def test_casts_left_at_a_stop_run_at_the_next_start_before_new_requests(pg: str) -> None:
    store = PostgresStore(pg)
    first = Jobs()
    async with open_server(first, store=store) as handle:
        await handle.slow(0)  # holds the server until the stop cuts it
        for n in range(1, 6):
            await handle.job(n)
        await until(lambda: statistics(handle).running == 1)
    assert first.ran == []
    assert [state for _, state in await stored(pg)] == ["pending"] * 6

    second = Jobs()
    second.gate.set()
    async with open_server(second, store=store) as handle:
        assert await handle.seen() == [0, 1, 2, 3, 4, 5]  # the first request: after them
        await handle.job(100)
        await until(lambda: len(second.ran) == 7)
        assert second.ran == [0, 1, 2, 3, 4, 5, 100]
        await until(lambda: statistics(handle).durable_running == 0)
    assert await stored(pg) == []


async def test_a_failing_cast_is_retried_then_kept_dead_then_requeued(
    pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(pg)
    jobs = Jobs()
    jobs.failing = {1, 2}
    async with open_server(jobs, store=store) as handle:
        for n in range(4):
            await handle.flaky(n)
        await until(lambda: statistics(handle).durable_dead == 2)
        assert sorted(jobs.ran) == [0, 3]
        assert jobs.failures == 4  # two attempts each
        assert statistics(handle).durable_retried == 2
        await until(lambda: statistics(handle).durable_running == 0)

        # (counted dead as it ended; kept in the store by the store task's next commit)
        with trio.fail_after(5):
            while len(dead := await store.dead_casts(Jobs)) < 2:  # noqa: ASYNC110 (in the store)
                await trio.sleep(0.001)
        assert [(d.method, d.args, d.kwargs, d.attempts) for d in dead] == [
            ("flaky", (1,), {}, 2),
            ("flaky", (2,), {}, 2),
        ]
        assert all(isinstance(d, DeadCast) and "job 1 failed" in dead[0].error for d in dead)
        assert dead[0].queue == Jobs.__qualname__
        assert dead[0].id < dead[1].id
        assert abs(dead[0].enqueued_at - time.time()) < 60  # wall clock
        assert "is dead (after 2 attempts)" in caplog.text

        jobs.failing = set()
        assert await store.requeue(Jobs, [dead[1].id]) == 1  # in this process: woken at once
        await until(lambda: 2 in jobs.ran)
        assert [d.args for d in await store.dead_casts(Jobs)] == [(1,)]
    assert await store.requeue(Jobs.__qualname__) == 1  # no server running: stays pending
    assert [state for _, state in await stored(pg)] == ["pending"]
    assert await store.dead_casts(Jobs) == []


async def test_an_idempotency_key_stores_a_cast_once(pg: str) -> None:
    store = PostgresStore(pg)
    jobs = Jobs()
    async with open_server(jobs, store=store) as handle:
        await handle.pay(1, 10)
        await handle.pay(1, 11)  # the same key: nothing stored, returns normally
        async with trio.open_nursery() as nursery:  # the same key twice in one commit
            nursery.start_soon(handle.pay, 2, 20)
            nursery.start_soon(handle.pay, 2, 21)
        await until(lambda: len(jobs.ran) == 2)
        await until(lambda: statistics(handle).durable_running == 0)
        await handle.pay(1, 12)  # ran already: its key stays taken
        assert await handle.seen() == jobs.ran
        assert statistics(handle).durable_stored == 2
    assert jobs.ran[0] == 10
    assert jobs.ran[1] in (20, 21)
    rows = await query(pg, "SELECT key, state FROM trioserver_casts ORDER BY id")
    assert rows == [("order-1", "done"), ("order-2", "done")]


async def test_arguments_that_cannot_be_stored_are_refused_and_nothing_is_stored(
    pg: str,
) -> None:
    store = PostgresStore(pg)
    jobs = Jobs()
    async with open_server(jobs, store=store) as handle:
        for bad in ((1, 2), {1: "a"}, float("nan"), object(), [b"bytes"]):
            with pytest.raises(TypeError, match="'data' cannot be stored"):
                await handle.note(bad)
        await handle.note({"a": [1, 2.5, None, True, "x"]})
        await until(lambda: jobs.ran == [1])
        assert statistics(handle).durable_stored == 1
    assert await query(pg, "SELECT count(*) FROM trioserver_casts") == [(0,)]


async def test_two_servers_on_a_queue_the_lease_holder_runs_the_others_casts(pg: str) -> None:
    store = PostgresStore(pg, lease=30.0)  # renewed every 10 s: no poll explains a quick run
    holder, other = Jobs(), Jobs()
    async with open_server(holder, store=store) as first, open_server(other, store=store) as h:
        await trio.sleep(SETTLE)
        for n in range(3):
            await h.job(n)
            assert await until(lambda count=n + 1: len(holder.ran) == count) < 1.0
        assert holder.ran == [0, 1, 2]
        assert other.ran == []
        assert statistics(h).durable_stored == 3
        assert statistics(first).durable_stored == 0
        leases = await query(pg, "SELECT count(*) FROM trioserver_leases")
        assert leases == [(1,)]


def in_another_run(afn: Any, *args: object) -> Any:
    """`trio.run` in a worker thread: a server there is as if in another process to those of
    this run (news of this process between runs of different threads are not told: only
    PostgreSQL's NOTIFY reaches them)."""
    return trio.to_thread.run_sync(trio.run, afn, *args)


async def store_one(conninfo: str, n: int) -> None:
    async with open_server(Jobs(), store=PostgresStore(conninfo, lease=30.0)) as other:
        await other.job(n)


async def test_casts_stored_by_another_process_wake_the_holder_by_notify(pg: str) -> None:
    store = PostgresStore(pg, lease=30.0)  # renewed every 10 s: no poll explains a quick run
    holder = Jobs()
    async with open_server(holder, store=store):
        await trio.sleep(SETTLE)
        for n in range(3):
            await in_another_run(store_one, pg, n)
            assert await until(lambda count=n + 1: len(holder.ran) == count) < 1.0
        assert holder.ran == [0, 1, 2]


async def stand_by(conninfo: str, jobs: Jobs, ready: threading.Event) -> float:
    """Serve `jobs` (not holding the lease), store a cast, and wait until it ran three."""
    jobs.gate.set()
    async with open_server(jobs, store=PostgresStore(conninfo, lease=30.0)) as waiting:
        await waiting.job(2)
        ready.set()
        await until(lambda: len(jobs.ran) == 3, within=10.0)
        return time.monotonic()


async def test_the_lease_passes_at_once_to_a_waiting_process_when_its_holder_stops(
    pg: str,
) -> None:
    store = PostgresStore(pg, lease=30.0)  # expiring in 30 s: only the release explains it
    holder, other = Jobs(), Jobs()
    stop = trio.Event()
    ready = threading.Event()
    async with trio.open_nursery() as nursery:
        first = await nursery.start(run_server, holder, store, stop)
        await first.slow(0)  # holds the holder until its stop (then it is stored again)
        await first.job(1)
        waiting = trio.Event()
        done: list[float] = []

        async def other_process() -> None:
            done.append(await in_another_run(stand_by, pg, other, ready))
            waiting.set()

        nursery.start_soon(other_process)
        await trio.to_thread.run_sync(ready.wait)
        await until(lambda: statistics(first).running == 1)
        assert other.ran == []
        await trio.sleep(SETTLE)  # (the notification of its cast is heard)
        stopped = time.monotonic()
        stop.set()  # the holder stops: it gives back its casts and the lease, and notifies
        with trio.fail_after(10):
            await waiting.wait()
    assert done[0] - stopped < 1.0
    assert other.ran == [0, 1, 2]  # in commit order
    assert holder.ran == []
    assert await stored(pg) == []


async def test_a_dead_holders_lease_is_taken_over_once_it_expired(pg: str) -> None:
    store = PostgresStore(pg, lease=1.0)
    await store.dead_casts(Jobs)  # (creates the tables)
    # A holder that died: its lease expires in 1 s; it had claimed two casts, one is pending.
    await query(
        pg,
        "INSERT INTO trioserver_leases VALUES (%s, 'dead', clock_timestamp() + interval '1 s')",
        Jobs.__qualname__,
    )
    for n, state in ((0, "running"), (1, "running"), (2, "pending")):
        await query(
            pg,
            "INSERT INTO trioserver_casts (queue, method, payload, state, attempts) "
            "VALUES (%s, 'job', %s, %s, 3)",
            Jobs.__qualname__,
            f'{{"args":[{n}],"kwargs":{{}}}}',
            state,
        )
    jobs = Jobs()
    start = trio.current_time()
    async with open_server(jobs, store=store) as handle:
        await handle.job(3)  # stored, pending: the lease is not this run's yet
        await trio.sleep(0.5)
        assert jobs.ran == []
        await until(lambda: len(jobs.ran) == 4, within=3.0)
        took = trio.current_time() - start
        assert 0.9 < took < 1.0 + 1.0 / 3 + 0.5  # at expiry, by the next try (every lease/3)
        assert jobs.ran == [0, 1, 2, 3]
        holders = await query(pg, "SELECT holder FROM trioserver_leases")
        assert holders != [("dead",)]


async def test_a_run_that_lost_its_lease_no_longer_claims(
    pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(pg, lease=30.0)
    jobs = Jobs()
    async with open_server(jobs, store=store) as handle:
        await handle.job(0)
        await until(lambda: jobs.ran == [0])
        await until(lambda: statistics(handle).durable_running == 0)
        # another run takes the lease (this one was stalled past its expiry, say)
        await query(
            pg,
            "UPDATE trioserver_leases SET holder = 'thief', "
            "expires_at = clock_timestamp() + interval '1 hour'",
        )
        await handle.job(1)  # stored pending, for the new holder: this run does not run it
        await trio.sleep(0.1)
        assert jobs.ran == [0]
        assert "lost its lease" in caplog.text
    assert [state for _, state in await stored(pg)] == ["pending"]
    assert await query(pg, "SELECT holder FROM trioserver_leases") == [("thief",)]


async def test_after_a_commit_whose_outcome_is_unknown_the_claims_are_given_back(
    pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(pg, lease=30.0)
    jobs = Jobs()
    async with open_server(jobs, store=store) as handle:
        await handle.job(0)
        await until(lambda: jobs.ran == [0])
        # A claim whose COMMIT went through though its answer was lost: running in the store,
        # unknown to the run. And a trigger that kills the connection in the next COMMIT.
        await query(
            pg,
            "INSERT INTO trioserver_casts (queue, method, payload, state, attempts) "
            "VALUES (%s, 'job', '{\"args\":[7],\"kwargs\":{}}', 'running', 3)",
            Jobs.__qualname__,
        )
        await query(
            pg,
            "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$",
        )
        await query(
            pg,
            "CREATE CONSTRAINT TRIGGER die AFTER INSERT ON trioserver_casts "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die()",
        )
        with pytest.raises(StoreError, match="may or may not be stored"):
            await handle.job(13)  # its COMMIT is cut: for all the run knows, it committed
        await query(pg, "DROP TRIGGER die ON trioserver_casts")
        assert "the store failed to commit" in caplog.text
        await handle.job(1)  # the next commit gives back every claim: 7 runs too
        await until(lambda: sorted(jobs.ran) == [0, 1, 7])
    assert await stored(pg) == []


async def test_servers_on_a_queue_go_on_after_the_database_restarts(
    postgres: PostgresServer, pg: str
) -> None:
    store = PostgresStore(pg, lease=30.0)
    holder, other = Jobs(), Jobs()
    async with open_server(holder, store=store) as first, open_server(other, store=store) as h:
        await trio.sleep(SETTLE)
        await h.job(0)
        await until(lambda: holder.ran == [0])
        await trio.to_thread.run_sync(postgres.stop, "fast")  # every connection is closed
        await trio.to_thread.run_sync(postgres.start)
        await trio.sleep(RETRY_LISTEN + SETTLE)  # the listeners connect again
        await h.job(1)  # its connection is opened again: no StoreError
        await until(lambda: holder.ran == [0, 1])  # the holder's listener heard of it
        await first.job(2)
        await until(lambda: holder.ran == [0, 1, 2])
        assert other.ran == []


def test_the_notification_channel_is_a_short_identifier() -> None:
    assert channel("Jobs") == "trioserver:Jobs"
    long = channel("x" * 100)
    assert len(long.encode()) <= 63
    assert long != channel("x" * 101)
    assert len(channel("é" * 40).encode()) <= 63


def test_the_store_is_checked_when_made_and_hides_the_password() -> None:
    with pytest.raises(TypeError, match="conninfo"):
        PostgresStore(b"dbname=x")  # type: ignore[arg-type]
    with pytest.raises(psycopg.ProgrammingError):
        PostgresStore("dbname='unterminated")
    with pytest.raises(TypeError, match="lease"):
        PostgresStore("dbname=x", lease=0)
    shown = repr(PostgresStore("dbname=app user=me password=secret"))
    assert "secret" not in shown
    assert "dbname=app" in shown


async def test_a_store_that_cannot_connect_refuses_to_start_the_server() -> None:
    store = PostgresStore("host=/nonexistent dbname=x user=x connect_timeout=1")
    with pytest.raises(psycopg.OperationalError):
        async with open_server(Jobs(), store=store):
            pass  # pragma: no cover


def test_trioserver_does_not_import_psycopg_and_the_extra_is_named_when_it_is_missing() -> None:
    def run(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    imported = run("import sys, trioserver; print('psycopg' in sys.modules)")
    assert imported.stdout.strip() == "False", imported.stderr
    missing = run("import sys; sys.modules['psycopg'] = None; import trioserver.postgres")
    assert missing.returncode != 0
    assert "pip install 'trioserver[postgres]'" in missing.stderr
