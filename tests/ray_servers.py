"""Servers for tests/test_ray.py, in a module of their own: Ray's workers import it by name
to rebuild the classes (a test module would run its fixtures' set-up there too)."""

from __future__ import annotations

import os
import threading

import trio

from trioserver import call, cast, server


class SeatTaken(Exception):
    """Raised by `Theater.reserve` for a seat sold already."""


class Unrebuildable(Exception):
    """An exception that pickles but cannot be rebuilt: its ``__init__`` wants two arguments
    and it passes one to `Exception`."""

    def __init__(self, seat: str, reason: str) -> None:
        super().__init__(f"{seat}: {reason}")


def _rebuild(pid: int) -> Local:
    if os.getpid() != pid:
        raise RuntimeError("a Local cannot be rebuilt in another process")
    return Local()


class Local:
    """An object that pickles, but cannot be rebuilt in another process."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (_rebuild, (os.getpid(),))


@server
class Theater:
    """The seed's theater: a reservation checks the seat, pays (slowly), then sells it."""

    def __init__(self, seats: int) -> None:
        self.seats = [f"A{n}" for n in range(seats)]
        self.owner: dict[str, str] = {}
        self.sales: list[tuple[str, str]] = []  # every sale made, in order

    @call(timeout=10.0)
    async def reserve(self, seat: str, user: str, pay_secs: float) -> str:
        if seat in self.owner:
            raise SeatTaken(seat)
        await trio.sleep(pay_secs)  # the payment: other callers wait, none sells the seat
        self.owner[seat] = user
        self.sales.append((seat, user))
        return seat

    @call
    def sold(self) -> list[tuple[str, str]]:
        return list(self.sales)


@server
class Probe:
    """Records what its handlers saw, on the actor's trio clock."""

    def __init__(self, start_error: str | None = None) -> None:
        self.events: list[str] = []
        self.count = 0
        self.start_error = start_error
        self.windows: list[tuple[str, float]] = []  # (how a hold ended, its duration)

    async def on_start(self) -> None:
        if self.start_error is not None:
            raise LookupError(self.start_error)

    @call(timeout=30.0)
    async def hold(self, seconds: float) -> float:
        """Sleep; record how it ended and how long it ran. Returns the time it had left (its
        deadline, from its own budget and its caller's deadline) as it started."""
        started = trio.current_time()
        deadline = trio.current_effective_deadline()
        how = "cancelled"
        try:
            await trio.sleep(seconds)
            how = "finished"
        finally:
            self.windows.append((how, trio.current_time() - started))
        return deadline - started

    @call(timeout=0.5)
    async def hang(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.events.append("hang cut")

    @cast(crash=True)
    def crash(self) -> None:
        raise RuntimeError("crashing the server")  # it stops; its actor exits, Ray restarts it

    @call
    def mark(self, tag: object) -> int:
        self.events.append(str(tag))
        return len(self.events)

    @cast
    async def note(self, tag: str) -> None:
        self.events.append(tag)

    @call
    def seen(self) -> list[str]:
        return list(self.events)

    @call
    def held(self) -> list[tuple[str, float]]:
        return list(self.windows)

    @call
    def increment(self) -> int:
        self.count += 1
        return self.count

    @call
    def pid(self) -> int:
        return os.getpid()

    @call
    def exit_process(self) -> None:
        os._exit(1)  # the actor's process dies mid-call

    @call
    def fail(self, kind: str) -> None:
        if kind == "seat":
            raise SeatTaken("B7")
        if kind == "group":
            raise ExceptionGroup("two", [ValueError(1), KeyError("k")])
        if kind == "unrebuildable":
            raise Unrebuildable("B7", "sold")
        raise ValueError(kind)

    @call
    def lock(self) -> object:
        return threading.Lock()  # cannot be pickled


@server
class Failing:
    """A server whose `on_start` or `on_stop` raises, as told."""

    def __init__(self, when: str) -> None:
        self.when = when

    async def on_start(self) -> None:
        if self.when == "start":
            raise LookupError("no seats")

    async def on_stop(self) -> None:
        if self.when == "stop":
            raise KeyError("till")

    @call
    def ping(self) -> bool:
        return True


@server
class Mailer:
    """A server with a durable cast, which trioserver.ray refuses."""

    @cast(durable=True)
    def send(self, to: str) -> None:
        pass


@server
class Relay:
    """Calls another server in a Ray actor from its handler (a handle passed as argument)."""

    @call(timeout=20.0)
    async def forward(self, target: Probe, seconds: float) -> float:
        return await target.hold(seconds)  # under this handler's deadline
