# pyright: reportUnnecessaryTypeIgnoreComment=true
"""Type tests: ``await handle.method(...)`` keeps the handler's parameter and return types.

Checked by ``mypy --strict`` and pyright strict, never run (pytest does not
collect ``check_*.py``). Each must-fail line carries the exact mypy code and
pyright rule; with unused-ignore reporting on in both tools, a line that stops
being an error fails the check.
"""

from __future__ import annotations

from typing import Generic, TypeVar, assert_type

import trio

from trioserver import (
    ServerStatistics,
    call,
    cast,
    open_server,
    open_supervisor,
    serve,
    server,
    start_server,
    statistics,
)

K = TypeVar("K")
V = TypeVar("V")


class SeatTaken(Exception):
    pass


@server
class Theater:
    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    @call(timeout=4.0)
    async def reserve(self, seat: str, user: str) -> str:
        if seat in self.owner:
            raise SeatTaken(seat)
        self.owner[seat] = user
        return seat

    @call
    def who(self, seat: str) -> str | None:
        return self.owner.get(seat)

    @call()
    async def count(self, *, prefix: str = "", limit: int = 10) -> int:
        return min(limit, sum(seat.startswith(prefix) for seat in self.owner))

    @call(timeout=None)
    def seats(self, first: int, /, last: int = 10) -> list[str]:
        return [f"A{n}" for n in range(first, last)]

    @call(timeout=0)
    async def tags(self, /, *names: str, **labels: int) -> dict[str, int]:
        return {name: labels.get(name, 0) for name in names}

    @call
    def names(self, *names: str) -> int:
        return len(names)

    # mypy rejects a method with **kwargs for Concatenate[S, P] unless `self` is
    # positional-only (as in `tags` above), because `self=` could then go to **kwargs;
    # pyright accepts it. Pinned here: if mypy changes, this ignore becomes unused and fails.
    @call  # type: ignore[arg-type]
    def options(self, **options: int) -> int:
        return len(options)

    @cast
    async def audit(self, note: str) -> None:
        pass

    @call(cleanup=True)
    def give_back(self, seat: str) -> bool:
        return self.owner.pop(seat, None) is not None

    @cast(cleanup=True, timeout=1.0)
    async def forget(self, user: str) -> None:
        pass

    @cast(timeout=1.0)
    def log(self, line: str, *, level: int = 0) -> None:
        pass


@server(timeout=2.5)
class Store(Generic[K, V]):
    def __init__(self) -> None:
        self.items: dict[K, V] = {}

    @call
    def get(self, key: K) -> V | None:
        return self.items.get(key)

    @call
    async def put(self, key: K, value: V) -> None:
        self.items[key] = value


async def check_open_server() -> None:
    async with open_server(Theater()) as theater:
        assert_type(theater, Theater)
        assert_type(await theater.reserve("A1", "ann"), str)
        assert_type(await theater.reserve(seat="A1", user="ann"), str)
        assert_type(await theater.who("A1"), str | None)
        assert_type(await theater.count(), int)
        assert_type(await theater.count(prefix="A", limit=3), int)
        assert_type(await theater.seats(1), list[str])
        assert_type(await theater.seats(1, last=5), list[str])
        assert_type(await theater.tags("a", "b", a=1), dict[str, int])
        assert_type(await theater.names("a", "b"), int)
        assert_type(await theater.audit("checked"), None)
        assert_type(await theater.log("line", level=2), None)
        assert_type(await theater.give_back("A1"), bool)
        assert_type(await theater.forget("ann"), None)
        assert_type(statistics(theater), ServerStatistics)


async def check_generic_server() -> None:
    async with open_server(Store[str, int]()) as store:
        assert_type(store, Store[str, int])
        assert_type(await store.get("a"), int | None)
        assert_type(await store.put("a", 1), None)


async def check_serve_with_nursery_start() -> None:
    async with trio.open_nursery() as nursery:
        # trio types `Nursery.start` as returning Any, so the handle is typed by annotation.
        theater: Theater = await nursery.start(serve, Theater())
        assert_type(await theater.reserve("A1", "ann"), str)
        assert_type(statistics(theater), ServerStatistics)


async def check_start_server() -> None:
    async with trio.open_nursery() as nursery:
        theater = await start_server(nursery, Theater())
        assert_type(theater, Theater)
        assert_type(await theater.reserve("A1", "ann"), str)
        store = await start_server(nursery, Store[str, int](), instruments=())
        assert_type(store, Store[str, int])


async def check_both_handles_have_one_surface() -> None:
    # Both kinds of handle are typed as the class, and both reach its attributes at run time
    # (tests/test_supervision.py checks the run-time side).
    async with open_server(Theater()) as local, open_supervisor() as supervisor:
        supervised = await supervisor.start(Theater)
        assert_type(supervised, Theater)
        assert_type(local.owner, dict[str, str])
        assert_type(supervised.owner, dict[str, str])
        assert_type(await supervised.reserve("A1", "ann"), str)


async def check_serve_task_status(status: trio.TaskStatus[Theater]) -> None:
    # Started with `nursery.start`, `serve` returns once its server is started (the server
    # lives on in that nursery); awaited directly, it returns only by an exception.
    started = serve(Theater(), task_status=status)
    assert_type(await started, None)


async def check_must_fail(
    theater: Theater, store: Store[str, int], status: trio.TaskStatus[int]
) -> None:
    # Wrong argument types.
    await theater.reserve("A1", 3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await theater.who(1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await theater.count(limit="3")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await theater.audit(b"note")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await theater.tags(1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await theater.give_back(1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await store.put("a", "one")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    # A missing argument, an extra one, an unknown keyword, positional-only by name.
    await theater.reserve("A1")  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    await theater.who("A1", "B2")  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    await theater.log("l", lvl=1)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    await theater.seats(first=1)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    # Return types are kept, not widened to Any.
    seat: int = await theater.reserve("A1", "ann")  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    owner: str = await theater.who("A1")  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    value: str | None = await store.get("a")  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    # The handle is typed as the class: unknown methods are errors.
    await theater.refund("A1")  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    # serve's task_status carries the handle's type.
    await serve(Theater(), task_status=status)  # type: ignore[misc]  # pyright: ignore[reportArgumentType]
    print(seat, owner, value)
