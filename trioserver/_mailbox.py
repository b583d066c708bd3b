"""The mailbox: requests in arrival order, taken by the server's task, withdrawn by leavers."""

from __future__ import annotations

from collections import deque

from trio.lowlevel import ParkingLot

from ._request import GUARDED, QUEUED, WITHDRAWN, Request


class Mailbox:
    """A FIFO of requests; withdrawal is O(1) (the entry is skipped when it reaches the front).

    The server's task takes requests from it while it runs; a request put while the server
    has no task starts one (`_loop.wake`).

    Guarded calls whose guard was false when they reached the front wait in `blocked`, in
    arrival order (every one of them is older than everything still in the FIFO), until
    `_guards.next_request` finds their guard true. They count as queued, but not in
    `backlog`: they do not hold the server while they wait.

    It keeps `backlog`, the expected seconds of work waiting in it (for admission), and, when
    bounded, a parking lot where callers wait for room.
    """

    __slots__ = (
        "_queue",
        "backlog",
        "blocked",
        "capacity",
        "guarded",
        "peak_queued",
        "queued",
        "room",
    )

    def __init__(self, capacity: int | None = None) -> None:
        self._queue: deque[Request] | None = None  # made at the first request: idle ones are many
        self.blocked: list[Request] | None = None  # guarded calls waiting for their guard
        self.guarded = 0  # how many of `blocked` still wait (GUARDED)
        self.queued = 0
        self.peak_queued = 0
        self.backlog = 0.0
        self.capacity = capacity
        # callers waiting for room in a full mailbox (only a bounded one has them)
        self.room = ParkingLot() if capacity is not None else None

    def full(self) -> bool:
        """Whether a new request must wait (or be refused): no room, or others waiting first."""
        return self.capacity is not None and (self.queued >= self.capacity or bool(self.room))

    def pass_room(self) -> None:
        """A caller woken for room will not use it (refused, or leaving): wake the next one."""
        if self.room and self.capacity is not None and self.queued < self.capacity:
            self.room.unpark()

    def put(self, request: Request) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(request)
        self.queued += 1
        self.backlog += request.cost
        if self.queued > self.peak_queued:
            self.peak_queued = self.queued

    def withdraw(self, request: Request) -> None:
        if request.state == GUARDED:
            request.state = WITHDRAWN
            self._unblocked()
            return
        request.state = WITHDRAWN
        self._left(request)
        # Withdrawn entries wait for the front to be dropped; compact if they pile up.
        queue = self._queue
        if queue is not None and len(queue) > 64 + 2 * self.queued:
            self._queue = deque(r for r in queue if r.state == QUEUED)

    def take_nowait(self) -> Request | None:
        queue = self._queue
        while queue:
            request = queue.popleft()
            if request.state == QUEUED:
                self.queued -= 1  # (`_left`, inlined: once per request taken)
                self.backlog = self.backlog - request.cost if self.queued else 0.0
                if self.room:
                    self.room.unpark()
                return request
        return None

    def _left(self, request: Request) -> None:
        self.queued -= 1
        self.backlog = self.backlog - request.cost if self.queued else 0.0
        if self.room:
            self.room.unpark()

    # -- guarded calls -------------------------------------------------------------------

    def block(self, request: Request) -> None:
        """`request` (just taken) waits for its guard: queued again, without its cost."""
        request.state = GUARDED
        blocked = self.blocked
        if blocked is None:
            blocked = self.blocked = []
        blocked.append(request)
        self.guarded += 1
        self.queued += 1

    def waiting_guards(self) -> list[Request]:
        """The guarded calls still waiting, oldest first (a copy: guards may change it)."""
        blocked = self.blocked
        if blocked is None:
            return []
        live = [request for request in blocked if request.state == GUARDED]
        self.blocked = live or None
        return list(live)

    def unblock(self, request: Request) -> None:
        """`request`'s guard holds: it leaves the mailbox to start."""
        request.state = QUEUED
        self._unblocked()

    def _unblocked(self) -> None:
        self.guarded -= 1
        self.queued -= 1
        if not self.queued:
            self.backlog = 0.0
        if self.room:
            self.room.unpark()

    def shrink(self) -> None:
        """Let the queue go while nothing is queued (it is made again at the next put)."""
        if not self.queued:
            self._queue = None
            self.blocked = None

    def drain(self) -> list[Request]:
        """Take every queued request at once (waiting guards first), leaving the mailbox empty."""
        pending = [r for r in self.blocked or () if r.state == GUARDED]
        pending += [r for r in self._queue or () if r.state == QUEUED]
        self._queue = None
        self.blocked = None
        self.guarded = 0
        self.queued = 0
        self.backlog = 0.0
        if self.room is not None:
            self.room.unpark_all()
        return pending
