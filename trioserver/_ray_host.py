"""The Ray actor that hosts one server: trio on a thread of its own, serving with `open_server`.

Ray runs the actor's methods as coroutines on its asyncio loop, many at once (the actor's
``max_concurrency``); each posts its request into the trio run, where a job task calls the
local handle as any caller would, under the remote caller's remaining time, and posts the
reply back. trioserver serializes the handlers; asyncio only carries requests. A coroutine
that Ray cancels (`ray.cancel`: its caller left) cancels its job, which withdraws a queued
request or cuts a running handler, as a local caller leaving does. Ray may lose a cancellation
that overtakes its request, so a caller who leaves also sends `Host.withdraw` with its call's
token: it cancels the call's coroutine as Ray would, or, if the call has not come yet, is kept
(`WITHDRAWN_KEPT` of them, for `WITHDRAWN_SECONDS`) to refuse it when it comes.

Only `trioserver.ray` imports this module (it imports Ray's cloudpickle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import traceback
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import ray
import trio
from ray import cloudpickle as _cloudpickle  # pyright: ignore[reportMissingTypeStubs]

from ._errors import CallTimeout, NotSendable, ServerCrashed, ServerStopped, TrioServerError
from ._lifecycle import open_server
from ._reply import Shed
from ._spec import SPEC, Method, ServerSpec
from ._statistics import ServerStatistics, statistics

logger = logging.getLogger("trioserver")

cloudpickle: Any = _cloudpickle  # Ray's vendored cloudpickle has no type hints

Reply = tuple[Any, ...]
"""What an actor method returns: ``(True, value)``, or ``(False, exception, traceback)`` where
the traceback is the handler's, as text, or None."""

CRASH_EXIT = 70
"""The actor process's exit status when its server crashed: Ray restarts it (`max_restarts`)."""

CRASH_GRACE = 0.2
"""Seconds a crashed server's actor waits before it exits, so that the replies already made
(`ServerCrashed` to the callers it had) can leave; callers whose reply is lost hear the same
from Ray."""


def ok(value: object) -> Reply:
    return (True, value)


def failure(exc: BaseException, label: str) -> Reply:
    """The reply carrying `exc`, checked to survive pickling; with the handler's traceback."""
    if isinstance(exc, TrioServerError):  # the runtime's own: sendable, and no handler frames
        return (False, exc, None)
    text = "".join(traceback.format_exception(exc))
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
    except Exception as why:  # a class that pickles but cannot be rebuilt from its args too
        exc = NotSendable(
            f"{label} raised {type(exc).__module__}.{type(exc).__qualname__}: {exc}, which "
            f"cannot be sent back from its Ray actor: pickling it failed with {why!r}"
        )
    return (False, exc, text)


WITHDRAWN_KEPT = 4096
"""How many withdrawals of calls that have not come (yet) an actor keeps: a call that comes
after its withdrawal is refused. Most never come (Ray's own cancellation stopped them)."""

WITHDRAWN_SECONDS = 600.0
"""How long an actor keeps a withdrawal of a call that has not come."""

Token = tuple[int, int]
"""A call's token: its caller's process's origin and the call's number there."""


class Job:
    """One request, as it crosses from the actor's asyncio loop into the trio run and back."""

    __slots__ = ("after", "future", "label", "left", "loop", "remaining", "scope", "turn")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Reply],
        label: str,
        remaining: float | None,
    ) -> None:
        self.loop = loop
        self.future = future
        self.label = label
        self.remaining = remaining  # the remote caller's time left when it called, or None
        self.scope: trio.CancelScope | None = None
        self.left = False  # the caller left (its coroutine was cancelled)
        self.turn: trio.Event | None = None  # set once this job has reached the server
        self.after: trio.Event | None = None  # the previous job's `turn`

    def leave(self) -> None:
        """In the trio thread: the caller left; cancel the job wherever it is."""
        self.left = True
        if self.scope is not None:
            self.scope.cancel(reason="its caller left")

    def send(self, reply: Reply) -> None:
        """In the trio thread: post the reply to the coroutine waiting on the asyncio loop."""
        with contextlib.suppress(RuntimeError):  # (the loop is closed: the actor is exiting)
            self.loop.call_soon_threadsafe(_resolve, self.future, reply)


def _resolve(future: asyncio.Future[Reply], reply: Reply) -> None:
    if not future.done():  # (not cancelled: its caller left meanwhile)
        future.set_result(reply)


class Host:
    """The actor: ``Host(cls, args)`` runs ``cls(*args)``'s server on a trio thread.

    Its constructor returns once the server has started (`on_start` finished), so Ray
    delivers no call before; a restart runs it again, with a fresh object.
    """

    def __init__(self, cls: type, args: tuple[Any, ...]) -> None:
        self._spec: ServerSpec = getattr(cls, SPEC)
        self._methods: dict[str, Method] = {m.label: m for m in self._spec.methods.values()}
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._handle: Any = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._jobs: trio.Nursery | None = None
        self._last_turn: trio.Event | None = None
        self._ended: asyncio.Future[None] | None = None  # made by `stop`: the run ended
        self._finished = False  # the run has ended (with `_ended`, under `_lock`)
        self._lock = threading.Lock()
        self._stopped = False  # stopped by `stop` (else, once the run ended, it crashed)
        self._ending = False  # the server's run is ending: no job may reach it now
        self._end_error: BaseException | None = None  # what ended the run, if it raised
        # On the asyncio loop: the calls in flight by token, and the withdrawals of calls that
        # have not come, oldest first, with the (monotonic) time each came.
        self._calls: dict[Token, asyncio.Future[Reply]] = {}
        self._withdrawn: dict[Token, float] = {}
        thread = threading.Thread(
            target=self._run, args=(cls, args), name=f"trioserver {self._spec.name}", daemon=True
        )
        thread.start()
        self._started.wait()

    # -- the trio thread ------------------------------------------------------------------

    def _run(self, cls: type, args: tuple[Any, ...]) -> None:
        try:
            trio.run(self._main, cls, args)
            if self._start_error is not None and _restarted():
                raise self._start_error  # a restart that failed: Ray may try again
        except BaseException as exc:
            self._end_error = exc  # (stopped: an `on_stop` error, which `stop` raises)
            if not self._stopped:  # pragma: no cover - ends the process (test_ray.py's actors)
                # The server crashed (a fatal handler error): end the process, so that Ray
                # restarts the actor as configured and callers hear it.
                logger.error("%s crashed in its Ray actor", self._spec.name, exc_info=exc)
                time.sleep(CRASH_GRACE)
                logging.shutdown()
                os._exit(CRASH_EXIT)
        finally:
            self._started.set()  # (a start that failed before it began)
            with self._lock:
                self._finished = True
                ended = self._ended
            if ended is not None:
                ended.get_loop().call_soon_threadsafe(_ended, ended)

    async def _main(self, cls: type, args: tuple[Any, ...]) -> None:
        self._token = trio.lowlevel.current_trio_token()
        ended: BaseException | None = None  # raised out of the job nursery, unwrapped
        async with trio.open_nursery() as jobs:
            self._jobs = jobs
            try:
                async with open_server(cls(*args)) as handle:
                    self._handle = handle
                    self._stop = trio.Event()
                    self._started.set()
                    await self._stop.wait()
                # (leaving it: its callers still waiting heard ServerStopped)
            except Exception as exc:
                if self._stop is None:
                    self._start_error = exc  # the constructor or on_start: `ready` says so
                else:
                    ended = exc  # a crash, or on_stop's error
            except BaseException as exc:  # (KeyboardInterrupt, SystemExit: fatal)
                ended = exc
            finally:
                self._ending = True
                # Job tasks that were told post their replies on their way out; those still
                # waiting for their turn are cut, and reply that the server is not running.
                jobs.cancel_scope.cancel()
        if ended is not None:
            raise ended

    def _begin(self, job: Job, work: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        """In the trio thread, in arrival order: start `job`'s task."""
        job.after = self._last_turn
        job.turn = self._last_turn = trio.Event()
        assert self._jobs is not None
        try:
            self._jobs.start_soon(self._do, job, work, args)
        except RuntimeError:  # the nursery is closing: the server stopped
            job.send(failure(self._not_running(job.label), job.label))

    async def _do(
        self, job: Job, work: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        reply = None
        scope = trio.CancelScope()
        try:
            with scope:
                job.scope = scope
                if job.left:
                    scope.cancel()
                if job.remaining is not None:
                    scope.deadline = trio.current_time() + job.remaining
                turn = job.turn
                assert turn is not None
                try:
                    # Requests reach the server in the order they reached this thread: trio
                    # starts a batch of new tasks in random order, so each waits for the one
                    # before. Shielded: one whose caller left (or whose server is ending)
                    # still waits for the one before, or the one after would pass it.
                    after = job.after
                    job.after = None
                    if after is not None and not after.is_set():
                        with trio.CancelScope(shield=True):
                            await after.wait()
                finally:
                    turn.set()
                try:
                    reply = ok(await work(*args))
                except Exception as exc:
                    reply = failure(exc, job.label)
        finally:
            # Every way out replies, unless the caller left: cut by the caller's deadline
            # (this scope), or by the server's end (the job nursery's scope, whose
            # cancellation passes through this one: a job still waiting for its turn then).
            if reply is None and not job.left:
                if self._ending:
                    reply = failure(self._not_running(job.label), job.label)
                elif job.remaining is not None and trio.current_time() < scope.deadline:
                    # cancelled before its deadline, by admission: the caller's call ends as
                    # its deadline would (`_caller.end_as_deadline`, on the caller's side)
                    reply = (False, Shed(f"{job.label} refused by admission"), None)
                else:
                    why = CallTimeout(f"{job.label} did not finish before its caller's deadline")
                    reply = failure(why, job.label)
            if reply is not None:
                job.send(reply)

    def _not_running(self, label: str) -> TrioServerError:
        name = self._spec.name
        if self._stopped:
            return ServerStopped(f"{label}: {name} is not running: it was stopped")
        if self._start_error is not None:
            why = f"it failed to start ({self._start_error!r})"
            return ServerCrashed(f"{label}: {name} is not running: {why}")
        return ServerCrashed(f"{label}: {name} is not running: it crashed")

    # -- the actor's methods, on Ray's asyncio loop ---------------------------------------

    async def _bridge(
        self,
        label: str,
        remaining: float | None,
        call: Token | None,
        work: Callable[..., Awaitable[Any]],
        *args: Any,
    ) -> Reply:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        job = Job(loop, future, label, remaining)
        token = self._token
        assert token is not None
        try:
            token.run_sync_soon(self._begin, job, work, args)
        except trio.RunFinishedError:
            return failure(self._not_running(label), label)
        if call is not None:
            self._calls[call] = future
        try:
            return await future
        except asyncio.CancelledError:  # `ray.cancel` or `withdraw`: the caller left
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(job.leave)
            task = asyncio.current_task()
            if task is not None and not task.cancelling():  # (`withdraw`: Ray's task ends)
                return failure(TrioServerError(f"{label}: its caller left"), label)
            raise
        finally:
            if call is not None:
                del self._calls[call]

    def _method(self, label: str) -> Method:
        method = self._methods.get(label)
        if method is None:
            raise TypeError(
                f"{label} is not a handler of {self._spec.name}, which this Ray actor hosts: "
                f"was the handle made with the right class?"
            )
        return method

    async def ready(self) -> Reply:
        """Whether the server started: ``(True, None)``, or the error that stopped it."""
        if self._start_error is not None:
            return failure(self._start_error, f"{self._spec.name} (starting)")
        return ok(None)

    async def call(
        self,
        request: tuple[str, tuple[Any, ...], dict[str, Any], float | None, Token | None]
        | tuple[str, tuple[Any, ...], dict[str, Any], float | None],
    ) -> Reply:
        """Run a call (or queue a cast) under the caller's remaining time; its reply.

        The request is one argument, ``(label, args, kwargs, remaining, token)``: Ray
        serializes each argument of an actor call apart, and one costs about 0.1 ms less a
        call than four (measured from trio, 1 caller, p50 1.13 ms against 1.27 ms). A call
        withdrawn by its token before it came (`withdraw`) is refused: it never reaches the
        server, and its reply goes to no one.
        """
        label, args, kwargs, remaining = request[:4]
        call = request[4] if len(request) > 4 else None  # (a caller of before withdrawals: none)
        if call is not None and self._withdrawn.pop(call, None) is not None:
            return failure(TrioServerError(f"{label}: its caller left before it came"), label)
        try:
            method = self._method(label)
        except TypeError as exc:
            return failure(exc, label)
        if method.kind == "cast":
            remaining = None  # casts do not inherit their caster's deadline
        if self._handle is None:  # it did not start
            return failure(self._not_running(label), label)
        bound = getattr(self._handle, method.name)
        return await self._bridge(label, remaining, call, _apply, bound, args, kwargs)

    async def withdraw(self, call: Token) -> None:
        """The caller of `call` left (it sends this besides ``ray.cancel``, which Ray may lose
        when it overtakes the call): cancel the call's coroutine as ``ray.cancel`` does, or,
        if the call has not come, refuse it when it comes."""
        future = self._calls.get(call)
        if future is not None:
            future.cancel()  # (`_bridge` then cancels its job, as for `ray.cancel`)
            return
        now = time.monotonic()
        withdrawn = self._withdrawn
        withdrawn[call] = now
        while len(withdrawn) > WITHDRAWN_KEPT or (
            withdrawn and next(iter(withdrawn.values())) < now - WITHDRAWN_SECONDS
        ):
            del withdrawn[next(iter(withdrawn))]

    async def statistics(self) -> Reply:
        """The server's statistics, taken in its trio run."""
        label = f"statistics({self._spec.name})"
        if self._handle is None:  # it did not start
            return failure(self._not_running(label), label)
        return await self._bridge(label, None, None, _snapshot, self._handle)

    async def stop(self) -> Reply:
        """Stop the server as leaving `open_server` does; return once it has stopped (at
        once if it never started or has stopped)."""
        stopping = self._stop
        if stopping is None:  # it never started
            return ok(None)
        with self._lock:
            ended = self._ended
            if ended is None and not self._finished:  # the first stop: tell the run
                self._stopped = True
                ended = self._ended = asyncio.get_running_loop().create_future()
                assert self._token is not None
                # (if the run is ending on its own, `_run` resolves `ended` as it finishes)
                with contextlib.suppress(trio.RunFinishedError):
                    self._token.run_sync_soon(stopping.set)
        if ended is not None:
            await asyncio.shield(ended)
        if self._stopped and self._end_error is not None:
            return failure(self._end_error, f"{self._spec.name} (stopping)")
        return ok(None)


def _restarted() -> bool:
    """Whether this is an actor that Ray restarted (False outside an actor)."""
    if not ray.is_initialized():  # (asking would start a Ray cluster)
        return False
    context: Any = ray.get_runtime_context()  # (Ray types it loosely)
    if context.get_actor_id() is None:
        return False
    with warnings.catch_warnings():  # (it reads a property Ray deprecated for users)
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(context.was_current_actor_reconstructed)


def _ended(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _apply(bound: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: Any) -> Any:
    return await bound(*args, **kwargs)


async def _snapshot(handle: object) -> ServerStatistics:
    return statistics(handle)
