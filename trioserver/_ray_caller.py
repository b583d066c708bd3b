"""The caller's side of a server in a Ray actor: send a request, await its reply from trio.

A reply is awaited without a thread: the Ray reference's `concurrent.futures.Future` gets a
done-callback that posts into the trio run (`TrioToken.run_sync_soon`), which reschedules
the waiting task. A caller who leaves (cancelled, or past its deadline) cancels the Ray task
(`ray.cancel`): queued, it never starts; running, its handler is cancelled in the actor. Ray
may lose a cancellation that overtakes its request (made right after the call, it reaches the
actor first), so the caller also withdraws the call by its token (`Host.withdraw`, an actor
call of its own, which Ray delivers): the actor cancels the request if it has it, or refuses
it when it comes.

Only `trioserver.ray` imports this module (it imports Ray).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import outcome
import ray
import trio
from ray import exceptions as ray_errors
from trio.lowlevel import Abort, checkpoint, checkpoint_if_cancelled

from ._caller import end_as_deadline
from ._errors import (
    CallTimeout,
    NotSendable,
    NotTrioError,
    ServerCrashed,
    ServerStopped,
    TrioServerError,
)
from ._reply import Shed
from ._statistics import ServerStatistics

if TYPE_CHECKING:
    from ._spec import Method, ServerSpec

_INF = math.inf

_ray: Any = ray  # Ray's API is typed loosely (`ray.cancel` takes refs of unknown types)

_ORIGIN = secrets.randbits(62)  # this process's calls' tokens: (origin, number)
_NUMBERS = itertools.count()

INTENDED_EXIT = "INTENDED_USER_EXIT"
"""How Ray's `ActorDiedError` says that the actor exited on purpose (`trioserver.ray.stop`
ends it so): Ray gives no structured field for it, only this text in the message."""


class _Waiter:
    """A trio task waiting for one Ray reference."""

    __slots__ = ("task", "token", "waiting")

    def __init__(self) -> None:
        self.task = trio.lowlevel.current_task()
        self.token = trio.lowlevel.current_trio_token()
        self.waiting = True

    def done(self, future: Any) -> None:
        """In Ray's thread (or this one, if it was done already): wake the task."""
        if self.waiting:
            with contextlib.suppress(trio.RunFinishedError):  # (the caller's run ended)
                self.token.run_sync_soon(self.wake, future)

    def wake(self, future: Any) -> None:
        """In the trio thread: reschedule the task with the reference's outcome."""
        if self.waiting:  # (not if it left meanwhile)
            self.waiting = False
            trio.lowlevel.reschedule(self.task, outcome.capture(future.result))


async def wait_for(ref: Any, leave: Callable[[], object] | None = None) -> Any:
    """The value of the Ray reference `ref` (a Ray error raised as is), awaited from trio.

    Cancellation:
      A cancelled caller cancels `ref`'s task (`ray.cancel`), calls `leave` if given, and
      leaves at once.
    """
    waiter = _Waiter()
    ref.future().add_done_callback(waiter.done)

    def abort(_: object) -> Abort:
        waiter.waiting = False
        _ray.cancel(ref)
        if leave is not None:
            leave()
        return Abort.SUCCEEDED

    return await trio.lowlevel.wait_task_rescheduled(abort)


def unwrap(reply: Any) -> Any:
    """The value of an actor's reply (`_ray_host.Reply`), or raise the exception it carries."""
    if reply[0]:
        return reply[1]
    exc: BaseException = reply[1]
    text: str | None = reply[2]
    if text is not None:
        exc.add_note(f"trioserver.ray: raised in the Ray actor, where it was:\n{text.rstrip()}")
    raise exc


class RemoteServer:
    """The state of a handle to a server in a Ray actor: what ``handle.method(...)`` calls.

    The handle methods that `@server` generates call ``call``/``cast`` on it, as they do on
    a local server's state (`_handle_methods`).
    """

    __slots__ = ("actor", "name", "spec", "stopped")

    def __init__(self, spec: ServerSpec, actor: Any, name: str | None) -> None:
        self.spec = spec
        self.actor = actor  # Ray's ActorHandle of the `_ray_host.Host` actor
        self.name = name
        self.stopped = False  # stopped through this handle's process (`trioserver.ray.stop`)

    def describe(self) -> str:
        where = f"the Ray actor {self.name!r}" if self.name else "a Ray actor"
        return f"{self.spec.name} in {where}"

    def not_running(self, label: str) -> ServerStopped:
        return ServerStopped(f"{label}: {self.describe()} is not running: it was stopped")

    def lost(self, label: str, error: BaseException) -> TrioServerError:
        """What a caller hears when Ray could not deliver the request or its reply."""
        if isinstance(error, ray_errors.RayActorError):
            if self.stopped or INTENDED_EXIT in str(error):
                return self.not_running(label)
            return ServerCrashed(
                f"{label}: {self.describe()} crashed (its actor died or restarted): the "
                f"request may or may not have run"
            )
        if isinstance(error, ray_errors.RayTaskError):  # the actor method did not run, or
            found: object = getattr(error, "cause", None)  # its reply could not be pickled
            cause = found if isinstance(found, BaseException) else error
            if isinstance(cause, ray_errors.RaySystemError):
                what = "its arguments could not be rebuilt in"
            else:
                what = "its reply could not be sent back from"
            return NotSendable(f"{label}: {what} {self.describe()}: {cause}")
        return ServerCrashed(f"{label}: {self.describe()} failed in Ray: {error}")

    def send(
        self,
        label: str,
        args: tuple[Any, ...],
        kwargs: Any,
        remaining: float | None,
        token: tuple[int, int] | None = None,
    ) -> Any:
        """Send a request to the actor (`_ray_host.Host.call`); the reference to its reply.
        A call has a `token`, by which its caller withdraws it (`withdraw`)."""
        try:
            return self.actor.call.remote((label, args, kwargs or {}, remaining, token))
        except TypeError as exc:  # Ray could not pickle the arguments: nothing was sent
            raise NotSendable(
                f"{label}: its arguments cannot be pickled to send them to {self.describe()}"
            ) from exc

    async def request(self, label: str, ref: Any, leave: Callable[[], object] | None = None) -> Any:
        """Await the reply to the actor method call `ref`; its value, or its error. A caller
        who leaves cancels it, and calls `leave`."""
        try:
            reply = await wait_for(ref, leave)
        except ray_errors.RayError as error:
            raise self.lost(label, error) from error
        return unwrap(reply)

    def check(self, label: str) -> None:
        """Refuse a request that cannot be sent: the server was stopped, or this is not trio."""
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            raise NotTrioError(
                f"{label} was called outside trio (asyncio?): trioserver needs trio "
                f"(trio.run, or anyio's trio backend)"
            ) from None
        if self.stopped:
            raise self.not_running(label)

    async def call(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
        label = method.label
        self.check(label)
        await checkpoint_if_cancelled()
        deadline = trio.current_effective_deadline()
        remaining = None if deadline == _INF else deadline - trio.current_time()
        token = (_ORIGIN, next(_NUMBERS))
        ref = self.send(label, args, kwargs, remaining, token)
        try:
            return await self.request(label, ref, lambda: self.withdraw(token))
        except Shed:  # refused by admission in the actor: it ends as the caller's deadline
            await end_as_deadline(trio.lowlevel.current_task(), deadline, True)
        except CallTimeout:
            if trio.current_time() >= deadline:
                await checkpoint()  # cut at the caller's own deadline: it hears Cancelled
            raise

    def withdraw(self, token: tuple[int, int]) -> None:
        """The caller of the call `token` left: tell the actor (in case Ray loses the
        cancellation of its request, which may overtake it), without waiting."""
        # (from trio's abort, which must not raise: if Ray cannot take it, the actor is gone
        # or Ray is shut down, and there is nothing left to withdraw)
        with contextlib.suppress(Exception):
            self.actor.withdraw.remote(token)

    async def cast(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> None:
        label = method.label
        self.check(label)
        await checkpoint_if_cancelled()  # Cancelled: not sent
        await self.request(label, self.send(label, args, kwargs, None))

    async def durable_cast(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> None:
        raise TrioServerError(  # refused by `start`: only a handle from `connect` gets here
            f"{method.label}: durable casts are not supported in a Ray actor"
        )

    async def remote_statistics(self) -> ServerStatistics:
        label = f"statistics({self.spec.name})"
        if self.stopped:
            raise self.not_running(label)
        snapshot: ServerStatistics = await self.request(label, self.actor.statistics.remote())
        return snapshot

    def statistics(self) -> ServerStatistics:
        """`trioserver.statistics(handle)`, which cannot wait for the actor's reply."""
        raise TrioServerError(
            f"{self.describe()} is in another process: read its statistics with "
            f"`await trioserver.ray.statistics(handle)`"
        )
