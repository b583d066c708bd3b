"""Handlers that await: the request waits on I/O that another trio task does.

Three handler bodies, each ending as ``bump`` does (``self.count += n; return self.count``):

- ``event``: make a `trio.Event`, hand it to the device task, wait until the device sets it;
- ``channel``: send ``n`` to the device over a memory channel, receive its reply on another;
- ``sleep0``: ``await trio.sleep(0)`` (no device at all).

The device is one more trio task (two, one per kind of I/O) started next to every contender,
the same code for all of them. Each body runs in trioserver ``@call`` with the default budget,
in ``@call(timeout=None)``, and in the hand-written actor of `contenders.Actor`; ratios are to
that body's actor, at 1 and at 100 callers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio

from trioserver import Instrument, call, open_server, server

from .contenders import Actor, Bump, Contender, LowLevelActor, Opener, instruments_for
from .roundtrip import interleaved

BODIES = ("event", "channel", "sleep0")


class Device:
    """Another trio task doing the I/O: it sets the events handed to it, and echoes a channel."""

    def __init__(self) -> None:
        self.events: deque[trio.Event] = deque()
        self.lot = trio.lowlevel.ParkingLot()
        self.requests, self.inbox = trio.open_memory_channel[int](0)
        self.outbox, self.replies = trio.open_memory_channel[int](0)

    def submit(self, event: trio.Event) -> None:
        self.events.append(event)
        self.lot.unpark()

    async def set_events(self) -> None:
        events = self.events
        while True:
            while events:
                events.popleft().set()
            await self.lot.park()

    async def echo(self) -> None:
        async for n in self.inbox:
            await self.outbox.send(n)

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.set_events)
        nursery.start_soon(self.echo)


class Station:
    """The state every body works on: a counter, and the device it does its I/O with."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.count = 0


async def event_body(self: Station, n: int) -> int:
    done = trio.Event()
    self.device.submit(done)
    await done.wait()
    self.count += n
    return self.count


async def channel_body(self: Station, n: int) -> int:
    await self.device.requests.send(n)
    await self.device.replies.receive()
    self.count += n
    return self.count


async def sleep0_body(self: Station, n: int) -> int:
    await trio.sleep(0)  # noqa: ASYNC115 (the body under test is written so)
    self.count += n
    return self.count


@server
class Budgeted(Station):
    """The bodies as ``@call`` handlers with the default budget (5 s)."""

    event = call(event_body)
    channel = call(channel_body)
    sleep0 = call(sleep0_body)


@server
class Unlimited(Station):
    """The same bodies with ``@call(timeout=None)``."""

    event = call(timeout=None)(event_body)
    channel = call(timeout=None)(channel_body)
    sleep0 = call(timeout=None)(sleep0_body)


class Plain(Station):
    """The same bodies as plain methods: what the hand-written actor runs."""

    event = event_body
    channel = channel_body
    sleep0 = sleep0_body


class HandlerActor(Actor):
    """`contenders.Actor` (a task reading a memory channel) running one given handler."""

    def __init__(self, handler: Callable[[int], Awaitable[object]]) -> None:
        super().__init__()
        self.handler = handler

    async def serve(self) -> None:
        handler = self.handler
        async for request in self.receive:
            try:
                request.result = await handler(request.n)
            except Exception as exc:
                request.error = exc
            request.done.set()


def trioserver_opener(
    cls: type[Budgeted] | type[Unlimited],
    body: str,
    *,
    instrumented: bool | Callable[[], Instrument] = False,
) -> Opener:
    @asynccontextmanager
    async def opener() -> AsyncGenerator[Bump, None]:
        async with trio.open_nursery() as nursery:
            device = Device()
            device.start(nursery)
            instruments = instruments_for(instrumented)
            async with open_server(cls(device), instruments=instruments) as handle:
                bump: Bump = getattr(handle, body)
                yield bump
            nursery.cancel_scope.cancel()

    return opener


class Served(Protocol):
    """A hand-written server task running one handler: the actor, or the lowest-level mailbox."""

    async def serve(self) -> None: ...

    async def bump(self, n: int) -> object: ...


def served_opener(body: str, serving: Callable[[Bump], Served]) -> Opener:
    """The body run by the hand-written server task that ``serving(handler)`` makes."""

    @asynccontextmanager
    async def opener() -> AsyncGenerator[Bump, None]:
        async with trio.open_nursery() as nursery:
            device = Device()
            device.start(nursery)
            it = serving(getattr(Plain(device), body))
            nursery.start_soon(it.serve)
            yield it.bump
            nursery.cancel_scope.cancel()

    return opener


def actor_opener(body: str) -> Opener:
    return served_opener(body, HandlerActor)


def lowlevel_opener(body: str) -> Opener:
    """The lowest-level mailbox of `contenders.LowLevelActor` running the body: the least a
    server task can add to it (no deadline, no statistics, no checks)."""
    return served_opener(body, LowLevelActor)


def lowlevel(body: str) -> Contender:
    """The body in the lowest-level mailbox (`instructions` counts it; not timed here)."""
    return Contender(
        f"{body}_lowlevel",
        f"{body}: lowest-level mailbox (deque + reschedule)",
        lowlevel_opener(body),
        baseline=actor_name(body),
    )


def actor_name(body: str) -> str:
    return f"{body}_actor"


def contenders() -> list[Contender]:
    found: list[Contender] = []
    for body in BODIES:
        reference = actor_name(body)
        found += [
            Contender(
                f"{body}_budget",
                f"{body}: @call, budget 5 s",
                trioserver_opener(Budgeted, body),
                baseline=reference,
            ),
            Contender(
                f"{body}_none",
                f"{body}: @call(timeout=None)",
                trioserver_opener(Unlimited, body),
                baseline=reference,
            ),
            Contender(
                reference,
                f"{body}: hand-written actor (reference)",
                actor_opener(body),
                baseline=reference,
            ),
        ]
    return found


def run_awaiting(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    return interleaved(
        contenders(), callers=(1, 100), rounds=rounds, calls=calls, seed=seed, title="awaiting"
    )
