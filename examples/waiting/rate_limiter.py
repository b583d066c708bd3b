"""A rate limiter: `acquire` waits, in the mailbox, for a token.

A token bucket as a server: `RateLimiter.acquire` is a guarded call,
``@call(when=lambda self: self.tokens >= 1)``, so a caller who finds the bucket empty waits
without holding the server, and the refills are served behind it. A refill task casts
`RateLimiter.refill` every `PERIOD` seconds. The refill has to reach the server as a request:
guards are evaluated in the server's turn (when a request arrives, and when a handler ends),
never polled, so a guard that read the clock would not become true by itself. Waiters get
tokens oldest first; one whose patience (its trio deadline) runs out withdraws its request and
takes no token.

Run it with ``python examples/waiting/rate_limiter.py``: on trio's virtual clock, so it is
instant and prints exactly what ``tests/test_examples_waiting.py`` checks. ``--wall-clock``
runs the same 1.2 seconds on the real clock.
"""

from __future__ import annotations

import argparse
import itertools
import math

import attrs
import trio
import trio.testing

from trioserver import call, cast, open_server, server, statistics

BURST = 3  # tokens the bucket holds (and starts with)
PERIOD = 0.2  # one token is added every PERIOD seconds: 5 a second


@attrs.frozen
class Client:
    name: str
    arrives: float  # seconds after the start
    patience: float = math.inf  # how long it waits for a token (a trio deadline)


CLIENTS = (
    *(Client(name, 0.03 * i) for i, name in enumerate("abcdef")),
    Client("g", 0.18, patience=0.3),  # gives up at 0.48, between two refills
    *(Client(name, 0.21 + 0.03 * i) for i, name in enumerate("hij")),
)


class Story:
    """What happened, as ``(time, line)``: printed as it happens, kept for the tests."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self.start = trio.current_time()

    def now(self) -> float:
        return round(trio.current_time() - self.start, 3)

    def say(self, line: str) -> None:
        self.lines.append((self.now(), line))
        print(f"{self.now():5.2f}  {line}")


@server
class RateLimiter:
    def __init__(self, burst: int, story: Story) -> None:
        self.burst = burst
        self.tokens = burst
        self.story = story

    @call(when=lambda self: self.tokens >= 1)
    def acquire(self, who: str) -> float:
        """Take a token; returns when it was granted, in seconds after the start."""
        self.tokens -= 1
        self.story.say(f"token to {who} ({self.tokens} left)")
        return self.story.now()

    @cast
    def refill(self) -> None:
        self.tokens = min(self.burst, self.tokens + 1)


async def refill_every(limiter: RateLimiter, period: float, start: float) -> None:
    """Add a token every `period` seconds, on a fixed schedule (no drift), until cancelled."""
    for tick in range(1, 1_000_000):
        await trio.sleep_until(start + tick * period)
        await limiter.refill()


async def client(limiter: RateLimiter, me: Client, story: Story, granted: dict[str, float]) -> None:
    await trio.sleep_until(story.start + me.arrives)
    with trio.move_on_after(me.patience) as waiting:
        granted[me.name] = await limiter.acquire(me.name)
    if waiting.cancelled_caught:
        story.say(f"{me.name} gave up waiting: request withdrawn, no token taken")


@attrs.frozen
class Result:
    lines: tuple[tuple[float, str], ...]  # the story, as (seconds, line)
    granted: dict[str, float]  # client -> when it got its token (seconds after the start)
    withdrawn: int  # requests whose caller left while they waited
    tokens_left: int
    refills: int  # refill casts handled
    guard_evaluations: int
    elapsed: float


async def main() -> Result:
    story = Story()
    limiter = RateLimiter(BURST, story)
    granted: dict[str, float] = {}
    async with open_server(limiter) as handle, trio.open_nursery() as refills:
        refills.start_soon(refill_every, handle, PERIOD, story.start)
        async with trio.open_nursery() as clients:
            for me in CLIENTS:
                clients.start_soon(client, handle, me, story, granted)
        refills.cancel_scope.cancel()
        stats = statistics(handle)
    elapsed = story.now()
    after_burst = sorted(granted.values())[BURST:]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(after_burst)]
    print(
        f"{len(granted)} tokens granted in {elapsed:.2f} s: {BURST} from the full bucket, "
        f"then one every {min(gaps):.2f} s or more"
    )
    print(f"withdrawn {stats.withdrawn}, tokens left {limiter.tokens}")
    return Result(
        lines=tuple(story.lines),
        granted=dict(granted),
        withdrawn=stats.withdrawn,
        tokens_left=limiter.tokens,
        refills=stats.methods["refill"].service.count,
        guard_evaluations=stats.guard_evaluations,
        elapsed=elapsed,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--wall-clock", action="store_true", help="run on the real clock")
    args = parser.parse_args()
    clock = None if args.wall_clock else trio.testing.MockClock(autojump_threshold=0)
    trio.run(main, clock=clock)


if __name__ == "__main__":
    cli()
