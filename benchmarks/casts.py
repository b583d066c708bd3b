"""Casts: fire and forget, measured until the server has done every one.

Callers loop ``await cast(1)``; the handler adds to a counter. A measurement ends when the last
caster is done *and* the server has run every cast: a final round trip (trioserver: a ``@call``
that returns the count; the actor: a request through its channel) is part of the timed region.
The baseline is the hand-written actor of `contenders.Actor` with a fire-and-forget send (``await
send.send(n)``, no reply) running the same body. 1 and 100 callers; ratios to the actor.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import trio

from trioserver import call, cast, open_server, server

from .contenders import Bump, CastOpener, Contender, Reply, Settle
from .roundtrip import interleaved

ACTOR_CASTS = "cast_actor"


class Tally:
    """The state: one counter."""

    def __init__(self) -> None:
        self.count = 0


async def add_body(self: Tally, n: int) -> None:
    self.count += n


async def total_body(self: Tally) -> int:
    return self.count


@server
class Casting(Tally):
    """``add`` as a ``@cast`` with the default budget; ``total`` (a ``@call``) settles."""

    add = cast(add_body)
    total = call(total_body)


@server
class UnlimitedCasting(Tally):
    """The same with ``@cast(timeout=None)``."""

    add = cast(timeout=None)(add_body)
    total = call(timeout=None)(total_body)


class PlainTally(Tally):
    add = add_body
    total = total_body


class CastActor:
    """The hand-written actor: casts are bare numbers on its channel, a round trip a `Reply`."""

    def __init__(self) -> None:
        self.obj = PlainTally()
        self.failed = 0  # casts whose handler raised: nobody to tell
        self.send, self.receive = trio.open_memory_channel[int | Reply](math.inf)

    async def serve(self) -> None:
        obj = self.obj
        async for request in self.receive:
            if type(request) is int:
                try:
                    await obj.add(request)
                except Exception:  # pragma: no cover (this body never raises)
                    self.failed += 1
                continue
            assert isinstance(request, Reply)
            try:
                request.result = await obj.total()
            except Exception as exc:  # pragma: no cover
                request.error = exc
            request.done.set()

    async def add(self, n: int) -> None:
        await self.send.send(n)

    async def total(self) -> object:
        request = Reply(0)
        await self.send.send(request)
        await request.done.wait()
        return request.unwrap()


def trioserver_opener(cls: type[Casting] | type[UnlimitedCasting]) -> CastOpener:
    @asynccontextmanager
    async def opener() -> AsyncGenerator[tuple[Bump, Settle], None]:
        async with open_server(cls()) as handle:
            yield handle.add, handle.total

    return opener


@asynccontextmanager
async def actor_opener() -> AsyncGenerator[tuple[Bump, Settle], None]:
    async with trio.open_nursery() as nursery:
        it = CastActor()
        nursery.start_soon(it.serve)
        yield it.add, it.total
        nursery.cancel_scope.cancel()


CASTS: list[Contender] = [
    Contender(
        "cast_budget",
        "@cast, budget 5 s",
        None,
        baseline=ACTOR_CASTS,
        open_casts=trioserver_opener(Casting),
    ),
    Contender(
        "cast_none",
        "@cast(timeout=None)",
        None,
        baseline=ACTOR_CASTS,
        open_casts=trioserver_opener(UnlimitedCasting),
    ),
    Contender(
        ACTOR_CASTS,
        "hand-written actor, fire-and-forget send (reference)",
        None,
        baseline=ACTOR_CASTS,
        open_casts=actor_opener,
    ),
]


def run_casts(*, rounds: int, calls: int, seed: int) -> dict[str, Any]:
    return interleaved(
        CASTS, callers=(1, 100), rounds=rounds, calls=calls, seed=seed, title="casts"
    )
