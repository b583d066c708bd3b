"""`SQLiteStore`: durable casts in a SQLite file (stdlib `sqlite3`), the embedded default."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from typing import Any, Literal

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: the lease row alone)
    fcntl = None  # type: ignore[assignment]

from ._store import DEAD, DONE, PENDING, RUNNING, Batch, Committed, Store, StoredCast

Synchronous = Literal["FULL", "NORMAL"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS trioserver_casts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        method TEXT NOT NULL,
        payload TEXT NOT NULL,
        key TEXT,
        state TEXT NOT NULL,
        failed INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL,
        run_after REAL NOT NULL DEFAULT 0,
        error TEXT,
        enqueued_at REAL NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS trioserver_casts_key "
    "ON trioserver_casts (queue, key) WHERE key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS trioserver_casts_state ON trioserver_casts (queue, state, id)",
    """CREATE TABLE IF NOT EXISTS trioserver_leases (
        queue TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL
    )""",
)


class SQLiteStore(Store):
    """Durable casts in a SQLite file: the embedded store, for servers of one process.

    Each server run opens its own connection (WAL journal, ``BEGIN IMMEDIATE``
    transactions) used by one worker thread at a time; casts arriving together share one
    commit. With ``synchronous="FULL"`` (the default) a commit is on disk when the cast's
    ``await`` returns, and survives a crash of the process or of the machine; ``"NORMAL"``
    survives a crash of the process, and may lose the last commits if the machine loses
    power.

    Args:
      path: The database file (created if missing, with its tables).
      synchronous: ``"FULL"`` or ``"NORMAL"``, SQLite's setting of that name.
      queue: The queue name of the servers using this store; by default each server's is
        its class's qualified name.
      lease: Seconds a run's lease on its queue lasts unless renewed (it is renewed every
        third of it). A second process opening the same file and queue waits for it.
      busy_timeout: Seconds a commit waits for another process's transaction on the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        queue: str | None = None,
        lease: float = 10.0,
        busy_timeout: float = 5.0,
    ) -> None:
        super().__init__(queue=queue, lease=lease)
        if synchronous not in ("FULL", "NORMAL"):
            raise TypeError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        self.path = os.fspath(path)
        self.synchronous: Synchronous = synchronous
        self.busy_timeout = float(busy_timeout)

    def _place(self) -> str:
        return f"sqlite:{os.path.realpath(self.path)}"

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, synchronous={self.synchronous!r})"

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # transactions are ours: BEGIN IMMEDIATE ... COMMIT
            check_same_thread=False,  # worker threads, one at a time
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        for statement in SCHEMA:
            db.execute(statement)
        return db

    def connect(self, queue: str, holder: str) -> _SQLiteConnection:
        digest = hashlib.sha256(queue.encode()).hexdigest()[:16]
        lock = f"{self.path}-trioserver-{digest}.lock"
        return _SQLiteConnection(self._open(), queue, holder, self.lease, lock)

    def _list_dead(self, queue: str) -> list[tuple[Any, ...]]:
        db = self._open()
        try:
            return db.execute(
                "SELECT id, method, payload, key, attempts, error, enqueued_at "
                "FROM trioserver_casts WHERE queue = ? AND state = ? ORDER BY id",
                (queue, DEAD),
            ).fetchall()
        finally:
            db.close()

    def _requeue(self, queue: str, ids: list[int] | None) -> int:
        db = self._open()
        try:
            db.execute("BEGIN IMMEDIATE")
            if ids is None:
                cursor = db.execute(
                    "UPDATE trioserver_casts SET state = ?, failed = 0, run_after = 0 "
                    "WHERE queue = ? AND state = ?",
                    (PENDING, queue, DEAD),
                )
                count = cursor.rowcount
            else:
                count = 0
                for id_ in ids:
                    cursor = db.execute(
                        "UPDATE trioserver_casts SET state = ?, failed = 0, run_after = 0 "
                        "WHERE queue = ? AND state = ? AND id = ?",
                        (PENDING, queue, DEAD, id_),
                    )
                    count += cursor.rowcount
            db.execute("COMMIT")
            return count
        finally:
            db.close()


class _SQLiteConnection:
    """One server run's connection: `commit` runs a `Batch` in one transaction.

    Its lease is a row (holder, expiry) and, where the system has ``flock``, an exclusive
    lock on a file beside the database, held while it holds the lease: the system releases
    it when the process dies, so the next run takes the queue over at once, not when the
    row expires (a live holder keeps the lock: no other run can take it)."""

    def __init__(
        self, db: sqlite3.Connection, queue: str, holder: str, lease: float, lock: str
    ) -> None:
        self.db = db
        self.queue = queue
        self.holder = holder
        self.lease = lease
        self.holding = False
        self.lock_path = lock
        self.lock: int | None = None  # the lock file's descriptor while it holds the lease

    def commit(self, batch: Batch) -> Committed:
        db = self.db
        queue = self.queue
        held = self.holding
        db.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            took_over = False
            if batch.lease:
                took_over = self._lease(now)
            if batch.done:
                db.executemany(
                    "DELETE FROM trioserver_casts WHERE id = ? AND key IS NULL",
                    [(id_,) for id_ in batch.done],
                )
                db.executemany(
                    "UPDATE trioserver_casts SET state = ? WHERE id = ? AND key IS NOT NULL",
                    [(DONE, id_) for id_ in batch.done],
                )
            if batch.retried:
                db.executemany(
                    "UPDATE trioserver_casts SET failed = ?, run_after = ?, error = ? WHERE id = ?",
                    [(failed, after, error, id_) for id_, failed, after, error in batch.retried],
                )
            if batch.dead:
                db.executemany(
                    "UPDATE trioserver_casts SET state = ?, failed = ?, error = ? WHERE id = ?",
                    [(DEAD, failed, error, id_) for id_, failed, error in batch.dead],
                )
            claimed: list[StoredCast] = []
            if batch.claim and self.holding:
                rows = db.execute(
                    "SELECT id, method, payload, failed, attempts, run_after "
                    "FROM trioserver_casts WHERE queue = ? AND state = ? ORDER BY id LIMIT ?",
                    (queue, PENDING, batch.claim),
                ).fetchall()
                db.executemany(
                    "UPDATE trioserver_casts SET state = ? WHERE id = ?",
                    [(RUNNING, row[0]) for row in rows],
                )
                claimed = [StoredCast(*row) for row in rows]
            ids: list[int | None] = []
            # (new casts go straight to this run if nothing older is left pending)
            claim_new = self.holding and (batch.claim_inserts or len(claimed) < batch.claim)
            for new in batch.inserts:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO trioserver_casts "
                    "(queue, method, payload, key, state, attempts, enqueued_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        queue,
                        new.method,
                        new.payload,
                        new.key,
                        RUNNING if claim_new else PENDING,
                        new.attempts,
                        now,
                    ),
                )
                ids.append(cursor.lastrowid if cursor.rowcount == 1 else None)
            if batch.release and self.holding:
                db.execute(
                    "UPDATE trioserver_casts SET state = ? WHERE queue = ? AND state = ?",
                    (PENDING, queue, RUNNING),
                )
                db.execute(
                    "DELETE FROM trioserver_leases WHERE queue = ? AND holder = ?",
                    (queue, self.holder),
                )
            db.execute("COMMIT")
            if batch.release:
                self._unlock()
        except BaseException:
            self.holding = held
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        holding = self.holding
        if batch.release:
            self.holding = False
        return Committed(holding, took_over, claimed, ids, claim_new and bool(batch.inserts))

    def _lease(self, now: float) -> bool:
        """Acquire or renew the queue's lease; True if it was just taken over (the casts its
        last holder claimed and did not finish are pending again)."""
        db = self.db
        row = db.execute(
            "SELECT holder, expires_at FROM trioserver_leases WHERE queue = ?", (self.queue,)
        ).fetchone()
        locked = self._locked()
        if locked is None:  # (no flock here: the row alone says)
            if row is not None and row[0] != self.holder and row[1] > now:
                self.holding = False  # another run holds it
                return False
        elif not locked:
            self.holding = False  # a live run holds it (and its lock)
            return False
        db.execute(
            "INSERT OR REPLACE INTO trioserver_leases (queue, holder, expires_at) VALUES (?, ?, ?)",
            (self.queue, self.holder, now + self.lease),
        )
        took_over = not self.holding
        if took_over:
            db.execute(
                "UPDATE trioserver_casts SET state = ? WHERE queue = ? AND state = ?",
                (PENDING, self.queue, RUNNING),
            )
        self.holding = True
        return took_over

    def _locked(self) -> bool | None:
        """Take (or keep) the lease's file lock: True if held, False if a live run holds it,
        None where the system has no ``flock``."""
        if fcntl is None:
            return None
        if self.lock is not None:
            return True
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self.lock = descriptor
        return True

    def _unlock(self) -> None:
        if self.lock is not None:
            os.close(self.lock)  # (closing it releases the lock)
            self.lock = None

    def close(self) -> None:
        self._unlock()
        self.db.close()
