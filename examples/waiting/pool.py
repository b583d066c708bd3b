"""A connection pool whose checkout waits in the mailbox, not in the server.

`Pool.checkout` is a guarded call, ``@call(when=lambda self: bool(self.free))``: a caller
who finds the pool empty waits without holding the server, so the `Pool.release` that frees
a connection is served behind it, and then the oldest waiter gets the connection. A waiter
whose patience (its trio deadline) runs out withdraws its request: it never gets a
connection it would not use. A caller cancelled while it holds a connection gives it back
from a ``finally:`` under a shield; without the shield, the cancelled `release` call would
never be queued and the connection would leak (``--no-shield`` shows it).

Run it with ``python examples/waiting/pool.py``: on trio's virtual clock, so it is instant
and prints exactly what ``tests/test_examples_waiting.py`` checks. ``--wall-clock`` runs the
same 3.2 seconds on the real clock.
"""

from __future__ import annotations

import argparse
import functools
import math

import attrs
import trio
import trio.testing

from trioserver import call, open_server, server, statistics

SIZE = 2  # connections in the pool


@attrs.frozen
class User:
    name: str
    arrives: float  # seconds after the start
    works: float  # how long the user holds a connection
    patience: float = math.inf  # how long the user waits for one (a trio deadline)
    cancelled_at: float | None = None  # when the user's own task is cancelled, holding it


USERS = (
    User("ann", 0.0, works=3.2),
    User("bob", 0.1, works=1.0),
    User("cat", 0.2, works=1.0),
    User("dan", 0.3, works=1.0, patience=0.5),  # gives up at 0.8: withdrawn
    User("eve", 0.4, works=10.0, cancelled_at=2.5),  # cancelled while she holds one
    User("fay", 0.5, works=0.5, patience=2.5),  # gets eve's connection, if eve gives it back
)


class Story:
    """What happened, as ``(time, line)``: printed as it happens, kept for the tests."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self.start = trio.current_time()

    def say(self, line: str) -> None:
        now = round(trio.current_time() - self.start, 3)
        self.lines.append((now, line))
        print(f"{now:4.1f}  {line}")


@server
class Pool:
    def __init__(self, size: int, story: Story) -> None:
        self.free = [f"conn{i}" for i in range(1, size + 1)]
        self.lent: dict[str, str] = {}  # connection -> who holds it
        self.story = story

    @call(when=lambda self: bool(self.free))
    def checkout(self, who: str) -> str:
        conn = self.free.pop(0)
        self.lent[conn] = who
        self.story.say(f"{conn} to {who}")
        return conn

    @call
    def release(self, conn: str) -> None:
        who = self.lent.pop(conn)
        self.free.append(conn)
        self.story.say(f"{conn} back from {who}")


async def use(pool: Pool, user: User, story: Story, *, shield: bool = True) -> None:
    await trio.sleep_until(story.start + user.arrives)
    with trio.CancelScope() as scope:
        if user.cancelled_at is not None:
            scope.deadline = story.start + user.cancelled_at  # (stands for any cancellation)
        conn = None
        with trio.move_on_after(user.patience):
            conn = await pool.checkout(user.name)
        if conn is None:
            story.say(f"{user.name} gave up waiting: request withdrawn")
            return
        try:
            await trio.sleep(user.works)
        except trio.Cancelled:
            story.say(f"{user.name} cancelled, holding {conn}")
            raise
        finally:
            # A cancelled caller's calls are refused at once, nothing queued: only a shielded
            # call still reaches the server. (shield=False is here to show the leak.)
            with trio.CancelScope(shield=shield):
                await pool.release(conn)


@attrs.frozen
class Result:
    lines: tuple[tuple[float, str], ...]  # the story, as (seconds, line)
    leaked: dict[str, str]  # connection -> who never gave it back
    checkouts: int  # checkout handlers that ran
    withdrawn: int  # requests whose caller left while they waited
    longest_wait: float  # the longest a checkout that started waited, in seconds
    guard_evaluations: int
    elapsed: float


async def main(*, shield: bool = True) -> Result:
    story = Story()
    pool = Pool(SIZE, story)
    async with open_server(pool) as handle:
        async with trio.open_nursery() as nursery:
            for user in USERS:
                nursery.start_soon(functools.partial(use, handle, user, story, shield=shield))
        stats = statistics(handle)
    elapsed = round(trio.current_time() - story.start, 3)
    waits = stats.methods["checkout"].queue_wait
    leaked = ", ".join(f"{conn} (held by {who})" for conn, who in pool.lent.items())
    print(f"leaked: {leaked or 'none'}; free at the end: {len(pool.free)} of {SIZE}")
    print(
        f"checkouts {waits.count}, withdrawn {stats.withdrawn}, longest wait {waits.max:.1f} s, "
        f"guard evaluations {stats.guard_evaluations}"
    )
    return Result(
        lines=tuple(story.lines),
        leaked=dict(pool.lent),
        checkouts=waits.count,
        withdrawn=stats.withdrawn,
        longest_wait=round(waits.max, 3),
        guard_evaluations=stats.guard_evaluations,
        elapsed=elapsed,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--wall-clock", action="store_true", help="run on the real clock")
    parser.add_argument(
        "--no-shield", action="store_true", help="give connections back without a shield"
    )
    args = parser.parse_args()
    clock = None if args.wall_clock else trio.testing.MockClock(autojump_threshold=0)
    trio.run(functools.partial(main, shield=not args.no_shield), clock=clock)


if __name__ == "__main__":
    cli()
