"""`PostgresStore`: durable casts in PostgreSQL, a queue shared by several processes.

The extra ``trioserver[postgres]`` installs what it needs (psycopg 3). Its synchronous API
runs in trio's worker threads, one round at a time per server run; a listener waits for
PostgreSQL's notifications on trio's own I/O loop, with no thread parked.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import trio

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:  # pragma: no cover - the extra is installed for the tests
    raise ImportError(
        "trioserver.postgres needs psycopg 3, which is not installed: install the extra "
        "with `pip install 'trioserver[postgres]'`"
    ) from exc

from ._store import DEAD, DONE, PENDING, RUNNING, Batch, Committed, Store, StoredCast

__all__ = ["PostgresStore"]

logger = logging.getLogger("trioserver")

RETRY_LISTEN = 1.0
"""Seconds between attempts to reconnect a listener whose connection was lost."""

SCHEMA_LOCK = 0x7472696F73657276  # "trioserv": the advisory lock taken while creating tables

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS trioserver_casts (
        id BIGSERIAL PRIMARY KEY,
        queue TEXT NOT NULL,
        method TEXT NOT NULL,
        payload TEXT NOT NULL,
        key TEXT,
        state TEXT NOT NULL,
        failed INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL,
        run_after DOUBLE PRECISION NOT NULL DEFAULT 0,
        error TEXT,
        enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS trioserver_casts_key "
    "ON trioserver_casts (queue, key) WHERE key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS trioserver_casts_state ON trioserver_casts (queue, state, id)",
    """CREATE TABLE IF NOT EXISTS trioserver_leases (
        queue TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )""",
)

# Acquire or renew the lease, on the database's clock: one statement, so that two processes
# trying at once cannot both win (the loser's upsert waits for the winner's row, then finds
# it held). A row comes back only if this holder has the lease now.
LEASE = """
    INSERT INTO trioserver_leases AS lease (queue, holder, expires_at)
    VALUES (%(queue)s, %(holder)s, clock_timestamp() + %(lease)s * interval '1 second')
    ON CONFLICT (queue) DO UPDATE
        SET holder = excluded.holder, expires_at = excluded.expires_at
        WHERE lease.holder = excluded.holder OR lease.expires_at <= clock_timestamp()
    RETURNING 1
"""

# Still the holder: a claim or a release by a run that lost its lease without noticing would
# take what is the new holder's. (Expired but not taken over, the lease is still this run's:
# its next renewal keeps it.) The row stays locked until commit: no takeover interleaves.
STILL_HOLDING = """
    SELECT 1 FROM trioserver_leases WHERE queue = %s AND holder = %s FOR UPDATE
"""

CLAIM = """
    UPDATE trioserver_casts SET state = %(running)s
    WHERE id IN (
        SELECT id FROM trioserver_casts
        WHERE queue = %(queue)s AND state = %(pending)s
        ORDER BY id LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, method, payload, failed, attempts, run_after
"""

INSERT = """
    INSERT INTO trioserver_casts (queue, method, payload, key, state, attempts)
    VALUES (%s, %s, %s, %s, %s, %s)
    ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id
"""

NOTIFY = "SELECT pg_notify(%s, '')"

PLACE = ("host", "hostaddr", "port", "dbname", "options")
"""What names a database (and its tables) in a conninfo: stores that name the same one share
their news in this process at once (`Store._news`), not only through NOTIFY."""


def channel(queue: str) -> str:
    """The notification channel of `queue`: its name if it fits PostgreSQL's 63 bytes of an
    identifier, else a digest of it (two queues sharing a channel only wake each other)."""
    name = f"trioserver:{queue}"
    if len(name.encode()) <= 63:
        return name
    return f"trioserver:{hashlib.sha256(queue.encode()).hexdigest()[:32]}"


class PostgresStore(Store):
    """Durable casts in PostgreSQL: one queue shared by the servers of several processes.

    Each server run opens its own connection (psycopg 3, in trio's worker threads) and
    commits each round of casts in one transaction, on disk when the cast's ``await``
    returns (with PostgreSQL's default ``synchronous_commit``). One run at a time holds a
    queue's lease and runs its stored casts; the other runs store casts for it, and
    PostgreSQL's ``NOTIFY`` wakes it. When the holder stops it gives the lease back; when
    its process dies, another run takes over once the lease has expired (on the database's
    clock) and runs what was left, so a cast that was running may run twice.

    Args:
      conninfo: A libpq connection string or URI (``"dbname=app host=/run/postgresql"``,
        ``"postgresql://user@host/app"``). The tables ``trioserver_casts`` and
        ``trioserver_leases`` are created if missing.
      queue: The queue name of the servers using this store; by default each server's is
        its class's qualified name.
      lease: Seconds a run's lease on its queue lasts unless renewed (it is renewed every
        third of it): how long the queue waits after its holder's process died.

    Raises:
      TypeError: `queue` or `lease` is not right.
      psycopg.ProgrammingError: `conninfo` cannot be parsed.
    """

    def __init__(self, conninfo: str, *, queue: str | None = None, lease: float = 10.0) -> None:
        super().__init__(queue=queue, lease=lease)
        if not isinstance(conninfo, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"conninfo must be a str, not {type(conninfo).__name__}")
        params = conninfo_to_dict(conninfo)  # a malformed one is refused now, not at start
        self.conninfo = conninfo
        where = {name: params[name] for name in PLACE if name in params}
        self._database = f"postgresql:{make_conninfo('', **where)}"
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def __repr__(self) -> str:
        shown = {
            name: "***" if name == "password" else value
            for name, value in conninfo_to_dict(self.conninfo).items()
        }
        return f"PostgresStore({make_conninfo('', **shown)!r})"

    def _place(self) -> str:
        return self._database

    def _open(self) -> psycopg.Connection[Any]:
        """A connection (autocommit: transactions are explicit), the tables created first if
        this store has not checked them yet."""
        db = psycopg.connect(self.conninfo, autocommit=True)
        try:
            with self._schema_lock:
                if not self._schema_ready:
                    _create_schema(db)
                    self._schema_ready = True
        except BaseException:
            db.close()
            raise
        return db

    def connect(self, queue: str, holder: str) -> _PostgresConnection:
        return _PostgresConnection(self, queue, holder)

    def listen(self, queue: str) -> _PostgresListener:
        return _PostgresListener(self, channel(queue))

    def _list_dead(self, queue: str) -> list[tuple[Any, ...]]:
        with self._open() as db:
            return db.execute(
                "SELECT id, method, payload, key, attempts, error, "
                "extract(epoch FROM enqueued_at)::float8 "
                "FROM trioserver_casts WHERE queue = %s AND state = %s ORDER BY id",
                (queue, DEAD),
            ).fetchall()

    def _requeue(self, queue: str, ids: list[int] | None) -> int:
        with self._open() as db, db.transaction():
            cursor = db.execute(
                "UPDATE trioserver_casts SET state = %s, failed = 0, run_after = 0 "
                "WHERE queue = %s AND state = %s "
                "AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[]))",
                (PENDING, queue, DEAD, ids, ids),
            )
            count = cursor.rowcount
            if count:
                db.execute(NOTIFY, (channel(queue),))
            return count


def _create_schema(db: psycopg.Connection[Any]) -> None:
    """Create the tables if missing; the advisory lock keeps processes starting at once from
    racing (``CREATE TABLE IF NOT EXISTS`` is not safe against a concurrent one)."""
    with db.transaction():
        db.execute("SET LOCAL client_min_messages = warning")  # no "already exists" notices
        db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for statement in SCHEMA:
            db.execute(statement)


class _PostgresConnection:
    """One server run's connection: `commit` runs a `Batch` in one transaction.

    A connection lost before its transaction's COMMIT (the server restarted since the last
    round) is opened again and the batch tried once more; lost during the COMMIT, the round
    fails and the batch may or may not be committed. If it was, casts it claimed are
    running in the store and unknown to the run: so the next commit holding the lease gives
    back every claim, as a takeover does (`Committed.took_over`), and the run claims them
    again (those it was running may run twice). The lease lives in the database: the run
    keeps it if the database is back before it expires.
    """

    def __init__(self, store: PostgresStore, queue: str, holder: str) -> None:
        self.store = store
        self.queue = queue
        self.holder = holder
        self.channel = channel(queue)
        self.holding = False
        self.unsure = False  # a COMMIT's outcome is unknown: it may have claimed casts
        self.db: psycopg.Connection[Any] | None = store._open()  # pyright: ignore[reportPrivateUsage]

    def commit(self, batch: Batch) -> Committed:
        held = self.holding
        for retry in (True, False):
            db = self._connection()
            sent = False  # COMMIT was sent: the batch may be committed
            try:
                with db.transaction(), db.cursor() as cursor:
                    committed = self._run(cursor, batch)
                    sent = True
            except psycopg.OperationalError:
                self.holding = held
                if sent and db.broken:
                    self.unsure = True
                if sent or not retry or not db.broken:
                    raise
                # Lost before COMMIT (the server restarted since this connection's last
                # round): nothing was committed, so it is tried once more on a new one.
                continue
            except BaseException:
                self.holding = held
                raise
            self.unsure = False
            if batch.release:
                self.holding = False
            return committed
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> psycopg.Connection[Any]:
        db = self.db
        if db is not None and not db.closed and not db.broken:
            return db
        self.db = None
        if db is not None:
            db.close()
        db = self.db = self.store._open()  # pyright: ignore[reportPrivateUsage]
        return db

    def _run(self, cursor: psycopg.Cursor[Any], batch: Batch) -> Committed:
        """The batch's statements, in the order of `_sqlite._SQLiteConnection.commit`."""
        queue = self.queue
        took_over = False
        if batch.lease:
            took_over = self._lease(cursor)
        elif self.holding and (
            batch.claim or batch.release or (batch.claim_inserts and batch.inserts) or self.unsure
        ):
            cursor.execute(STILL_HOLDING, (queue, self.holder))
            self.holding = cursor.fetchone() is not None
        if self.unsure and self.holding and not took_over:
            took_over = True
            self._give_back(cursor)
        if batch.done:
            cursor.execute(
                "DELETE FROM trioserver_casts WHERE id = ANY(%s::bigint[]) AND key IS NULL",
                (batch.done,),
            )
            cursor.execute(
                "UPDATE trioserver_casts SET state = %s "
                "WHERE id = ANY(%s::bigint[]) AND key IS NOT NULL",
                (DONE, batch.done),
            )
        # Retried and dead marks apply to running casts only: if this run lost its lease
        # meanwhile, the new holder runs them afresh, and a mark does not lock a pending
        # row (which its claim would pass over: FOR UPDATE SKIP LOCKED).
        if batch.retried:
            ids, failed, after, errors = zip(*batch.retried, strict=True)
            cursor.execute(
                "UPDATE trioserver_casts AS c SET failed = r.failed, run_after = r.run_after, "
                "error = r.error FROM unnest(%s::bigint[], %s::integer[], %s::float8[], "
                "%s::text[]) AS r (id, failed, run_after, error) "
                "WHERE c.id = r.id AND c.state = %s",
                (list(ids), list(failed), list(after), list(errors), RUNNING),
            )
        if batch.dead:
            ids, failed, errors = zip(*batch.dead, strict=True)
            cursor.execute(
                "UPDATE trioserver_casts AS c SET state = %s, failed = r.failed, "
                "error = r.error FROM unnest(%s::bigint[], %s::integer[], %s::text[]) "
                "AS r (id, failed, error) WHERE c.id = r.id AND c.state = %s",
                (DEAD, list(ids), list(failed), list(errors), RUNNING),
            )
        claimed: list[StoredCast] = []
        if batch.claim and self.holding:
            cursor.execute(
                CLAIM,
                {"running": RUNNING, "pending": PENDING, "queue": queue, "limit": batch.claim},
            )
            claimed = sorted((StoredCast(*row) for row in cursor.fetchall()), key=_by_id)
        ids_: list[int | None] = []
        # New casts go straight to this run if nothing older is left pending (claimed now,
        # or before; not if claims were just given back).
        claim_new = self.holding and (
            (batch.claim_inserts and not took_over) or len(claimed) < batch.claim
        )
        if batch.inserts:
            state = RUNNING if claim_new else PENDING
            cursor.executemany(
                INSERT,
                [
                    (queue, new.method, new.payload, new.key, state, new.attempts)
                    for new in batch.inserts
                ],
                returning=True,
            )
            while True:
                row = cursor.fetchone()
                ids_.append(None if row is None else row[0])  # None: its key was taken
                if not cursor.nextset():
                    break
            if state == PENDING and not self.holding and any(i is not None for i in ids_):
                cursor.execute(NOTIFY, (self.channel,))  # the holder claims them
        if batch.release and self.holding:
            self._give_back(cursor)
            cursor.execute(
                "DELETE FROM trioserver_leases WHERE queue = %s AND holder = %s",
                (queue, self.holder),
            )
            cursor.execute(NOTIFY, (self.channel,))  # a run waiting for the lease takes it
        return Committed(self.holding, took_over, claimed, ids_, claim_new and bool(batch.inserts))

    def _lease(self, cursor: psycopg.Cursor[Any]) -> bool:
        """Acquire or renew the queue's lease; True if it was just taken over (the casts its
        last holder claimed and did not finish are pending again)."""
        cursor.execute(
            LEASE, {"queue": self.queue, "holder": self.holder, "lease": self.store.lease}
        )
        if cursor.fetchone() is None:
            self.holding = False  # another run holds it
            return False
        took_over = not self.holding
        if took_over:
            self._give_back(cursor)
        self.holding = True
        return took_over

    def _give_back(self, cursor: psycopg.Cursor[Any]) -> None:
        """Every claim of the queue is pending again (its holder's run is over, or unsure)."""
        cursor.execute(
            "UPDATE trioserver_casts SET state = %s WHERE queue = %s AND state = %s",
            (PENDING, self.queue, RUNNING),
        )

    def close(self) -> None:
        db, self.db = self.db, None
        if db is not None:
            db.close()


def _by_id(row: StoredCast) -> int:
    return row.id


class _PostgresListener:
    """LISTEN on a queue's channel, on its own autocommit connection, waited for on trio's
    I/O loop (`trio.lowlevel.wait_readable` on its socket), with no thread parked.

    `wait` returns when a notification came, and once after each (re)connection, since what
    was notified while it was not listening is missed. It does not raise for a lost
    connection: it logs it and connects again, at once, then every `RETRY_LISTEN` seconds.
    """

    def __init__(self, store: PostgresStore, channel: str) -> None:
        self.store = store
        self.channel = channel
        self.db: psycopg.Connection[Any] | None = None
        self.closed = False
        self.down = False  # lost (logged once), not listening again yet
        self.retry = False  # the last attempt to connect failed: wait before the next
        self.lock = threading.Lock()  # `closed` and `db` between a connecting thread and `close`

    async def wait(self) -> None:
        while True:
            db = self.db
            if db is None:
                if self.retry:
                    await trio.sleep(RETRY_LISTEN)
                try:
                    # abandoned if cancelled: `_connect` then closes what it opened
                    await trio.to_thread.run_sync(self._connect, abandon_on_cancel=True)
                except psycopg.Error as exc:
                    self._lost(exc)
                    self.retry = True
                    continue
                self.retry = self.down = False
                return
            try:
                if list(db.notifies(timeout=0)):  # (all of them: a generator left open loses some)
                    return
                await trio.lowlevel.wait_readable(db.fileno())
            except psycopg.Error as exc:
                self._lost(exc)

    def _connect(self) -> None:
        db = psycopg.connect(self.store.conninfo, autocommit=True)
        try:
            db.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            with self.lock:
                if not self.closed and self.db is None:
                    self.db = db
                    return
        except BaseException:
            db.close()
            raise
        db.close()  # closed meanwhile (its `wait` was cancelled and this thread abandoned)

    def _lost(self, exc: psycopg.Error) -> None:
        if not self.down:
            logger.warning(
                "%r: listening on %r failed (%r); connecting again every %g s",
                self.store,
                self.channel,
                exc,
                RETRY_LISTEN,
            )
        self.down = True
        with self.lock:
            db, self.db = self.db, None
        if db is not None:
            db.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            db, self.db = self.db, None
        if db is not None:
            db.close()
