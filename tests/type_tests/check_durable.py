# pyright: reportUnnecessaryTypeIgnoreComment=true
"""Type tests for durable casts: the handle method keeps the handler's parameters and returns
None; ``store=`` takes a store. Checked by ``mypy --strict`` and pyright strict, never run."""

from __future__ import annotations

from typing import assert_type

from trioserver import DeadCast, SQLiteStore, cast, open_server, server


def once_per_subject(to: str, subject: str) -> str:
    return f"{to}:{subject}"


@server
class Mailer:
    @cast(durable=True, attempts=5, backoff=0.5, key=once_per_subject)
    async def send(self, to: str, subject: str) -> None:
        pass

    @cast(durable=True)
    def note(self, text: str, *, level: int = 0) -> None:
        pass


async def check_durable() -> None:
    store = SQLiteStore("casts.db", synchronous="NORMAL")
    async with open_server(Mailer(), store=store) as mailer:
        assert_type(await mailer.send("ann@example.com", "hello"), None)
        assert_type(await mailer.note("x", level=2), None)
    dead = await store.dead_casts(Mailer)
    assert_type(dead, list[DeadCast])
    assert_type(await store.requeue("Mailer", [d.id for d in dead]), int)


async def check_durable_must_fail(mailer: Mailer) -> None:
    await mailer.send("ann", 3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await mailer.note("x", level="high")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    SQLiteStore("casts.db", synchronous="OFF")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    open_server(Mailer(), store="casts.db")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
