"""Supervision: restart crashed servers with fresh state, as OTP supervisors do.

A supervisor runs servers made by factories, hands out handles that stay valid
across restarts, and restarts servers that crash (``on_start`` raised, a cast
marked ``crash=True`` raised, or the watchdog found a handler hung well past its
deadline) by its strategy, within a restart intensity; past it, it gives up and
fails upward, as structured concurrency expects.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, ParamSpec, TypeVar, cast

import attrs
import trio

from ._errors import HandleNotCopyable, InvalidServerDefinition, ServerCrashed
from ._lifecycle import open_server
from ._loop import crash
from ._runtime import Runtime
from ._spec import SPEC, STATE, ServerSpec, spec_of
from ._store import Store

P = ParamSpec("P")
T = TypeVar("T")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
HANDLE_CLASS = "_trioserver_supervised_handle"

logger = logging.getLogger("trioserver")


@attrs.frozen
class Backoff:
    """Exponential backoff with jitter between a crash and the restart.

    The n-th consecutive restart of a child waits ``min(initial * factor**(n-1),
    maximum)`` seconds, times a random factor within ``1 +- jitter``.
    """

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0
    jitter: float = 0.1

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.initial * self.factor ** max(attempt - 1, 0), self.maximum)
        return base * (1 + rng.uniform(-self.jitter, self.jitter))


@attrs.frozen
class SupervisorStatistics:
    """What a supervisor has done: `Supervisor.statistics`."""

    children: int = 0
    """How many servers it runs."""
    restarts: int = 0
    """Restarts of servers, in all (a one_for_all restart counts each server it restarts)."""
    crashes: int = 0
    """Crashes it handled: servers that crashed, or that the watchdog found hung."""
    hung: int = 0
    """Handlers the watchdog found still running well past their deadline."""


@attrs.define(eq=False)
class _Child:
    """One supervised server: how to make it, and what runs now."""

    factory: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    spec: ServerSpec
    current: Any = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    done: trio.Event = attrs.Factory(trio.Event)
    generation: int = 0
    consecutive: int = 0  # restarts since it last ran for a whole period without crashing
    started_at: float = 0.0
    hung: bool = False  # the watchdog found its handler hung: its task cannot be waited for

    def state(self) -> Any:
        return self.current.__dict__[STATE]


def _current_state(handle: Any) -> Any:
    child: _Child = handle._child
    return child.state()


def _handle_repr(handle: Any) -> str:
    child: _Child = handle._child
    return f"<supervised {child.spec.name} handle>"


def _handle_getattr(handle: Any, name: str) -> Any:
    """Anything but a handler method reads the current object's attribute, as on the object
    `open_server` gives: the handle is typed as the class, and behaves as one."""
    child: _Child = object.__getattribute__(handle, "_child")
    return getattr(child.current, name)


def _handle_setattr(handle: Any, name: str, value: Any) -> None:
    """Attributes are set on the current object, as on the object `open_server` gives (from
    outside a handler: unguarded, and lost at the next restart; for tests and debugging)."""
    if name == "_child":
        object.__setattr__(handle, name, value)
        return
    child: _Child = object.__getattribute__(handle, "_child")
    setattr(child.current, name, value)


def _handle_delattr(handle: Any, name: str) -> None:
    child: _Child = object.__getattribute__(handle, "_child")
    delattr(child.current, name)


def _handle_not_copyable(handle: Any, *_: Any) -> Any:
    """Copying or pickling is refused, as for a running server's object: one handle per
    supervised server (pass the handle itself around; it cannot cross processes)."""
    child: _Child = object.__getattribute__(handle, "_child")
    raise HandleNotCopyable(
        f"{child.spec.name}: a supervised server's handle cannot be copied or pickled; pass "
        f"the handle itself, or copy its state inside a handler"
    )


def _handle_class(spec: ServerSpec) -> type:
    """A class of handles that forward to whichever object currently runs for a child."""
    cls: type | None = spec.cls.__dict__.get(HANDLE_CLASS)
    if cls is None:
        namespace: dict[str, Any] = {
            name: spec.cls.__dict__.get(name) or getattr(spec.cls, name) for name in spec.methods
        }
        namespace[SPEC] = spec
        namespace[STATE] = property(_current_state)
        namespace["__slots__"] = ("_child",)
        namespace["__repr__"] = _handle_repr
        namespace["__getattr__"] = _handle_getattr
        namespace["__setattr__"] = _handle_setattr
        namespace["__delattr__"] = _handle_delattr
        namespace["__copy__"] = _handle_not_copyable
        namespace["__deepcopy__"] = _handle_not_copyable
        namespace["__reduce_ex__"] = _handle_not_copyable
        cls = type(f"{spec.cls.__name__}Handle", (), namespace)
        setattr(spec.cls, HANDLE_CLASS, cls)
    return cls


class Supervisor:
    """Runs servers and restarts the ones that crash; made by `open_supervisor`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        strategy: Strategy,
        intensity: int,
        period: float,
        backoff: Backoff | None,
        watchdog_grace: float | None,
        seed: int | None,
        store: Store | None = None,
    ) -> None:
        self._nursery = nursery
        self.store = store  # where the durable casts of its servers are stored
        self.strategy: Strategy = strategy
        self.intensity = intensity
        self.period = period
        self.backoff = backoff
        self.watchdog_grace = watchdog_grace
        self._rng = random.Random(seed)
        self._children: list[_Child] = []
        self._crash_send, self._crash_receive = trio.open_memory_channel[
            tuple[_Child, int, BaseException]
        ](256)
        self._recent: deque[float] = deque()
        self.gave_up: BaseException | None = None
        self._stopping = False  # stop_all has begun: no crash restarts anything any more
        self._restarts = 0
        self._crashes = 0
        self._hung = 0

    async def start(self, factory: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Start a server made by ``factory(*args, **kwargs)``; return a handle to it.

        The handle is typed as the server class and stays valid across restarts:
        each restart makes a fresh object with the same factory and arguments. It has the
        surface of an `open_server` handle: handler methods go through the server, other
        attributes are read from (or set on) the object running now; copying or pickling
        it raises `HandleNotCopyable`.

        Returns:
          The handle; ``await handle.method(...)`` reaches the current object.

        Cancellation:
          Cancelled while `on_start` runs, the server does not start.

        Errors:
          A call through the handle while its server is restarting gets
          `ServerCrashed`.

        Raises:
          InvalidServerDefinition: `factory` does not make a server object.
          Exception: whatever `on_start` raised on the first start (later
            starts are restarts, under the supervisor's rules).
        """
        obj = factory(*args, **kwargs)
        child = _Child(factory, args, kwargs, spec_of(obj))
        child.current = obj
        await self._nursery.start(self._run, child, obj)
        self._children.append(child)
        handle_class: Any = _handle_class(child.spec)
        handle: Any = handle_class.__new__(handle_class)
        handle._child = child
        return cast("T", handle)

    def statistics(self) -> SupervisorStatistics:
        """A snapshot of what this supervisor has done."""
        return SupervisorStatistics(
            children=len(self._children),
            restarts=self._restarts,
            crashes=self._crashes,
            hung=self._hung,
        )

    async def _run(self, child: _Child, obj: object, task_status: trio.TaskStatus[None]) -> None:
        """One run of a child's server, in its own task; a crash is reported to `supervise`."""
        generation = child.generation
        done = child.done  # this run's: a restart gives the child a new one
        child.current = obj
        child.started_at = trio.current_time()
        started = False
        try:
            with child.scope:
                store = self.store if child.spec.durable else None
                async with open_server(obj, store=store):
                    started = True
                    task_status.started()
                    await trio.sleep_forever()
        except Exception as exc:
            if not started and generation == 0:
                raise  # on_start raised at the first start: the caller of `start` hears it
            last = getattr(obj.__dict__[STATE], "last", None)
            if generation == child.generation:
                self._crash_send.send_nowait((child, generation, exc))
            elif last is not None and exc is last.stop_error:
                logger.error("%s.on_stop raised", child.spec.name, exc_info=exc)
            else:  # a run that was stopped or replaced (say, by the watchdog) has ended
                logger.debug("an earlier run of %s ended with %r", child.spec.name, exc)
        finally:
            done.set()
            if not started and generation != 0:
                task_status.started()  # a restart that failed or was stopped before it began

    async def supervise(self) -> None:
        """Handle crashes one at a time, for as long as the supervisor runs."""
        async for child, generation, error in self._crash_receive:
            if generation != child.generation or self._stopping:
                continue  # a run that was already replaced, or stopped
            self._crashes += 1
            now = trio.current_time()
            self._recent.append(now)
            while self._recent and self._recent[0] <= now - self.period:
                self._recent.popleft()
            if len(self._recent) > self.intensity:
                error.add_note(
                    f"trioserver: the supervisor gave up: {len(self._recent)} crashes within "
                    f"{self.period:g} s (intensity {self.intensity})"
                )
                self.gave_up = error
                self._nursery.cancel_scope.cancel(reason="the supervisor gave up")
                return
            logger.warning(
                "%s crashed (%r); restarting (%s)", child.spec.name, error, self.strategy
            )
            await self._restart(child)

    async def _restart(self, crashed: _Child) -> None:
        index = self._children.index(crashed)
        if self.strategy == "one_for_one":
            affected = [crashed]
        elif self.strategy == "one_for_all":
            affected = list(self._children)
        else:
            affected = self._children[index:]
        for child in reversed(affected):  # stop in the reverse of the start order, as OTP does
            child.generation += 1
            child.scope.cancel(reason="the supervisor restarts it")
            if child is not crashed or not child.hung:
                await child.done.wait()
        if trio.current_time() - crashed.started_at > self.period:
            crashed.consecutive = 0  # it had been fine for a whole period
        crashed.consecutive += 1
        if self.backoff is not None:
            await trio.sleep(self.backoff.delay(crashed.consecutive, self._rng))
        if self._stopping:
            return  # the supervisor stops meanwhile: nothing is started again
        for child in affected:
            child.scope = trio.CancelScope()
            child.done = trio.Event()
            child.hung = False
            self._restarts += 1
            await self._nursery.start(self._run, child, child.factory(*child.args, **child.kwargs))

    async def stop_all(self) -> None:
        """Stop every server, in the reverse of their start order."""
        self._stopping = True
        for child in reversed(self._children):
            child.generation += 1
            child.scope.cancel(reason="the supervisor stopped")
            if not child.hung:
                await child.done.wait()

    async def watchdog(self, grace: float) -> None:
        """Find handlers still running `grace` seconds past their deadline; crash their server."""
        interval = max(grace / 4, 0.01)
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for child in self._children:
                state = child.state()
                if (
                    self._stopping
                    or child.hung
                    or not isinstance(state, Runtime)
                    or state.current is None
                ):
                    continue
                request = state.current
                if now <= request.cut_at + grace:
                    continue
                self._hung += 1
                child.hung = True
                why = (
                    f"{request.method.label} has not returned {now - request.cut_at:.3g} s past "
                    f"its deadline; it ignores cancellation"
                )
                logger.error("watchdog: %s", why)
                error = ServerCrashed(why)
                crash(state, error, why)
                self._crash_send.send_nowait((child, child.generation, error))


@asynccontextmanager
async def open_supervisor(
    *,
    strategy: Strategy = "one_for_one",
    intensity: int = 3,
    period: float = 5.0,
    backoff: Backoff | None = None,
    watchdog_grace: float | None = 1.0,
    seed: int | None = None,
    store: Store | None = None,
) -> AsyncGenerator[Supervisor]:
    """Run a supervisor for the duration of the block.

    Args:
      strategy: Which servers a crash restarts: ``"one_for_one"`` (the crashed
        one), ``"one_for_all"`` (all), ``"rest_for_one"`` (the crashed one and
        those started after it), as in OTP.
      intensity: At most this many crashes within `period` seconds are
        restarted; one more and the supervisor gives up. The default, 3 in 5 s,
        is Elixir's: OTP's 1 in 5 s gives up on the second transient failure.
      period: The window of `intensity`, in seconds.
      backoff: Wait between a crash and its restart (`Backoff`); none if None.
      watchdog_grace: A handler still running this many seconds past its
        deadline is reported and its server restarted; None turns the
        watchdog off.
      seed: Seeds the backoff's jitter, for reproducible tests.
      store: Where the durable casts of its servers are stored (each server its own
        queue), as `open_server`'s ``store``: a restarted server runs the stored casts
        its crashed run left before new requests.

    Yields:
      The `Supervisor`; `Supervisor.start` adds servers.

    Cancellation:
      Leaving the block stops every server, in the reverse of their start
      order (as leaving `open_server` does).

    Errors:
      When the intensity is exceeded, every server is stopped and the last
      crash's exception comes out of the block, with a note saying so. A
      server hung in a handler that ignores cancellation cannot be stopped:
      the watchdog restarts it, but leaving the block waits for that handler.

    Raises:
      InvalidServerDefinition: a bad strategy, intensity, period or grace.
    """
    if strategy not in ("one_for_one", "one_for_all", "rest_for_one"):
        raise InvalidServerDefinition(f"open_supervisor: unknown strategy {strategy!r}")
    if isinstance(intensity, bool) or not isinstance(intensity, int) or intensity < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidServerDefinition(
            f"open_supervisor: intensity must be an int >= 0, not {intensity!r}"
        )
    if not period > 0:
        raise InvalidServerDefinition(f"open_supervisor: period must be > 0, not {period!r}")
    if watchdog_grace is not None and not watchdog_grace >= 0:
        raise InvalidServerDefinition(
            f"open_supervisor: watchdog_grace must be None or >= 0, not {watchdog_grace!r}"
        )
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        supervisor = Supervisor(
            nursery, strategy, intensity, period, backoff, watchdog_grace, seed, store
        )
        nursery.start_soon(supervisor.supervise)
        if watchdog_grace is not None:
            nursery.start_soon(supervisor.watchdog, watchdog_grace)
        try:
            yield supervisor
        except BaseException as exc:  # re-raised below, outside the nursery: unwrapped
            failure = exc
        finally:
            with trio.CancelScope(shield=True):
                await supervisor.stop_all()
            nursery.cancel_scope.cancel(reason="the supervisor stopped")
    error = supervisor.gave_up or failure
    if error is not None:
        raise error
