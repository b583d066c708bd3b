# pyright: reportUnnecessaryTypeIgnoreComment=true
"""Type tests: handles to servers in Ray actors (`trioserver.ray`) are typed as the class.

Checked by ``mypy --strict`` and pyright strict, never run (pytest does not collect
``check_*.py``). Each must-fail line carries the exact mypy code and pyright rule; with
unused-ignore reporting on in both tools, a line that stops being an error fails the check.
"""

from __future__ import annotations

from typing import assert_type

import trioserver.ray
from trioserver import ServerStatistics, call, cast, server


@server
class Theater:
    def __init__(self, seats: int, name: str = "main") -> None:
        self.owner: dict[str, str] = {}
        self.seats = seats
        self.name = name

    @call(timeout=4.0)
    async def reserve(self, seat: str, user: str) -> str:
        self.owner[seat] = user
        return seat

    @call
    def who(self, seat: str) -> str | None:
        return self.owner.get(seat)

    @call()
    async def count(self, *, prefix: str = "") -> int:
        return sum(seat.startswith(prefix) for seat in self.owner)

    @cast
    async def audit(self, note: str) -> None:
        pass


@server
class Empty:
    @call
    def ping(self) -> bool:
        return True


async def check_start() -> None:
    theater = await trioserver.ray.start(Theater, 10)
    assert_type(theater, Theater)
    assert_type(await theater.reserve("A1", "ann"), str)
    assert_type(await theater.who("A1"), str | None)
    assert_type(await theater.count(prefix="A"), int)
    assert_type(await theater.audit("checked"), None)
    assert_type(await trioserver.ray.statistics(theater), ServerStatistics)
    assert_type(await trioserver.ray.stop(theater), None)
    named = await trioserver.ray.start(
        Theater, 10, "balcony", name="theater", max_restarts=2, namespace="shows"
    )
    assert_type(named, Theater)
    assert_type(await trioserver.ray.start(Empty), Empty)


async def check_connect() -> None:
    theater = trioserver.ray.connect("theater", Theater, namespace="shows")
    assert_type(theater, Theater)
    assert_type(await theater.reserve("A1", "ann"), str)


async def check_open_server() -> None:
    async with trioserver.ray.open_server(Theater, 10, name="theater") as theater:
        assert_type(theater, Theater)
        assert_type(await theater.who("A1"), str | None)


async def check_must_fail(theater: Theater) -> None:
    # The constructor's arguments are checked: a wrong type, a missing one, one too many.
    await trioserver.ray.start(Theater, "ten")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await trioserver.ray.start(Theater)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await trioserver.ray.start(Empty, 1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    # The handle's methods keep their parameter and return types.
    await theater.reserve("A1", 3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await theater.who("A1", "B2")  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    seat: int = await theater.reserve("A1", "ann")  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    await theater.refund("A1")  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    # connect's class gives the handle's type.
    other: Empty = trioserver.ray.connect("theater", Theater)  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    print(seat, other)
