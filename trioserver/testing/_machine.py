"""`ServerMachine`: a Hypothesis state machine whose rules are trio code, on virtual time.

Every example runs in one `trio.run`, in a helper thread, on a `trio.testing.MockClock`.
Hypothesis stays in the test's thread and hands each step over through a
barrier: the step runs in the trio thread with the clock's autojump on, then
`trio.testing.wait_all_tasks_blocked` makes sure that every task is blocked,
the clock is frozen (autojump off) and only then does Hypothesis get control
back. The two threads never run at once, so an example replays exactly.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import queue
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, ClassVar, TypeVar

import attrs
import hypothesis.stateful
import outcome
import trio
import trio.testing
from hypothesis import strategies as st

from .._lifecycle import serve
from ._history import History, Operation
from ._linearizability import DEFAULT_BUDGET
from ._model import Model, ServerModel
from ._scheduler import LANE, Decision, Deviation, hook_available, schedule_strategy, steer
from ._verify import Checked, Run, describe_inconclusive, verify

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: The extra rule argument that carries a step's schedule (Hypothesis prints it with the step).
SCHEDULE = "trio_schedule"
#: Deviations drawn per step; a machine uses at most its `max_deviations` of them.
_DRAWN_DEVIATIONS = 4
#: Real seconds the test thread waits for one step before declaring the trio thread stuck.
_STEP_LIMIT = 300.0


@attrs.frozen(eq=False)
class _Job:
    fn: Callable[[], Awaitable[Any]]
    schedule: tuple[Deviation, ...] | None
    reply: queue.Queue[tuple[outcome.Outcome[Any], list[Decision]]]


async def _hold_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


class _TrioThread:
    """One `trio.run` on a `trio.testing.MockClock` in a helper thread: one job at a time."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock(autojump_threshold=math.inf)
        self._ready: queue.Queue[BaseException | None] = queue.Queue()
        self._token: trio.lowlevel.TrioToken | None = None
        self._send: trio.MemorySendChannel[_Job | None] | None = None
        self.servers: trio.Nursery | None = None
        self.lanes: trio.Nursery | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trioserver.testing", daemon=True)
        self._thread.start()
        failure = self._ready.get()
        if failure is not None:
            raise failure

    def _run(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as error:  # reported to the test thread
            self.error = error
            self._ready.put(error)

    async def _main(self) -> None:
        send, receive = trio.open_memory_channel[_Job | None](math.inf)
        self._send = send
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as root:
            # Servers and background calls live in nurseries of their own, so that teardown can
            # cancel them without cancelling the loop that runs the steps.
            self.lanes = await root.start(_hold_nursery)
            self.servers = await root.start(_hold_nursery)
            self._ready.put(None)
            async for job in receive:
                if job is None:
                    break
                with steer(job.schedule) as decisions:
                    self.clock.autojump_threshold = 0
                    result = await outcome.acapture(job.fn)
                    await trio.testing.wait_all_tasks_blocked()
                    self.clock.autojump_threshold = math.inf
                job.reply.put((result, list(decisions)))
            root.cancel_scope.cancel()

    def run(
        self, fn: Callable[[], Awaitable[T]], schedule: tuple[Deviation, ...] | None
    ) -> tuple[T, list[Decision]]:
        """Run ``await fn()`` in the trio thread, then until every task is blocked."""
        assert self._token is not None
        assert self._send is not None
        reply: queue.Queue[tuple[outcome.Outcome[Any], list[Decision]]] = queue.Queue()
        self._token.run_sync_soon(self._send.send_nowait, _Job(fn, schedule, reply))
        waited = 0.0
        while True:
            try:
                result, decisions = reply.get(timeout=1.0)
                break
            except queue.Empty:
                waited += 1.0
                if not self._thread.is_alive():
                    raise RuntimeError("trioserver.testing: the trio thread died") from self.error
                if waited > _STEP_LIMIT:
                    raise RuntimeError(
                        f"trioserver.testing: a step did not finish within {_STEP_LIMIT:.0f} s "
                        "of real time (does it block the event loop?)"
                    ) from None
        return result.unwrap(), decisions

    def close(self) -> None:
        """End the trio run (stopping any server left) and join the thread."""
        if self._token is not None and self._send is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._send.send_nowait, None)
        self._thread.join(timeout=_STEP_LIMIT)


class ServerMachine(hypothesis.stateful.RuleBasedStateMachine):
    """A Hypothesis state machine for servers: async rules, virtual time, checked histories.

    Write rules with this module's `rule`, `initialize` and `invariant`
    (``async def`` allowed; plain ``def`` too). In them, start servers with
    `serve`, make recorded calls through `client` proxies, start calls in the
    background with `start`, let virtual time pass with ``await
    trio.sleep(...)`` and wait for background calls with `settle`. Each
    example is one `trio.run` on a `trio.testing.MockClock`; each async step runs under a
    schedule drawn by Hypothesis (the ``trio_schedule`` argument in printed
    steps), and ends when every task is blocked, so invariants see a quiet
    state.

    At teardown, background calls get up to `settle_limit` virtual seconds to
    end (then they are cancelled: unknown outcomes), servers stop, and every
    history is checked: every call ended exactly once, and the history is
    linearizable against its model. A failure is run again (same steps, same
    schedules) before it is reported; if it runs differently the test is
    reported as nondeterministic. The replay calls the same rules with the
    same arguments, so arguments drawn from bundles of objects made by an
    earlier run cannot be replayed. Rule names must not shadow this class's
    methods (`serve`, `record`, `history`, `client`, `start`, `settle`).

    Attributes:
      max_deviations: The bound on scheduling deviations per step (at most 4).
      budget: Linearizability search steps per partition before "inconclusive".
      settle_limit: Virtual seconds that teardown waits for background calls.
    """

    max_deviations: ClassVar[int] = 4
    budget: ClassVar[int] = DEFAULT_BUDGET
    settle_limit: ClassVar[float] = 3600.0

    def __init__(self) -> None:
        super().__init__()
        self._trio = _TrioThread()
        self._checked: list[Checked] = []
        self._by_handle: dict[int, History] = {}
        self._steps: list[tuple[Callable[..., Any], dict[str, Any], tuple[Deviation, ...] | None]]
        self._steps = []
        self._decisions: list[Decision] = []
        self._running = 0
        self._callers: dict[str, int] = {}
        self._idle: trio.Event | None = None
        self._closed = False

    # -- what rules use ---------------------------------------------------------------------

    async def serve(
        self,
        factory: Callable[[], T],
        *,
        name: str | None = None,
        model: Model[Any] | None = None,
        partition: Callable[[Operation], Hashable] | None = None,
    ) -> T:
        """Start a server for this example and record the calls made through its clients.

        Args:
          factory: Makes the server object; also the default model's factory.
          name: How reports name it; its class name by default.
          model: Its sequential model; default ``ServerModel(factory)`` (one per server
            class, shared by all examples, so the answers it remembers serve them all).
          partition: Optional key of an operation; keys are checked apart.

        Returns:
          The server's handle (stopped at teardown).

        Cancellation:
          As `trioserver.serve`: the server stops with the example.
        """
        assert self._trio.servers is not None
        obj = factory()
        handle: T = await self._trio.servers.start(serve, obj)
        history = History(name or type(obj).__name__, partition=partition)
        self._by_handle[id(handle)] = history
        self._checked.append(Checked(history, model if model is not None else _model_of(factory)))
        return handle

    def record(
        self,
        name: str,
        model: Model[Any],
        *,
        partition: Callable[[Operation], Hashable] | None = None,
    ) -> History:
        """A history for composite client operations, checked against `model` at teardown.

        Record operations with ``await history.call(caller, fn, *args, composite=True)``.

        Args:
          name: How reports name it.
          model: The model of the composite operations.
          partition: Optional key of an operation.

        Returns:
          The history.
        """
        history = History(name, partition=partition)
        self._checked.append(Checked(history, model))
        return history

    def history(self, handle: object) -> History:
        """The history of a server started with `serve`.

        Args:
          handle: Its handle.

        Returns:
          The history.

        Raises:
          KeyError: The handle was not started by `serve`.
        """
        return self._by_handle[id(handle)]

    def client(self, handle: T, caller: str) -> T:
        """A proxy of `handle` whose calls are recorded as `caller`'s (see `History.client`).

        Args:
          handle: A handle from `serve`.
          caller: The caller's name in the story.

        Returns:
          The proxy, typed as the handle.
        """
        return self.history(handle).client(handle, caller)

    def start(
        self, caller: str, fn: Callable[..., Awaitable[object]], *args: Any, **kwargs: Any
    ) -> None:
        """Start ``await fn(*args, **kwargs)`` in the background, in a task named `caller`.

        Use it with recorded calls (a `client`'s methods, or `History.call`):
        their exceptions are recorded outcomes, so the background task
        swallows them.

        Args:
          caller: The task's name (the story names scheduling decisions by it).
          fn: The async function.
          *args: Its positional arguments.
          **kwargs: Its keyword arguments.

        Cancellation:
          Calls still running when teardown has waited `settle_limit` virtual
          seconds are cancelled; their outcome is unknown.
        """
        assert self._trio.lanes is not None
        self._callers[caller] = self._callers.get(caller, 0) + 1
        if self._callers[caller] > 1:  # one column per concurrent caller in the story
            caller = f"{caller}#{self._callers[caller]}"
        self._running += 1
        if self._idle is None or self._idle.is_set():
            self._idle = trio.Event()

        async def lane() -> None:
            LANE.set(caller)  # (tasks it starts are named by it in scheduling decisions)
            try:
                await fn(*args, **kwargs)
            except Exception:
                pass  # a recorded outcome
            finally:
                self._running -= 1
                if self._running == 0 and self._idle is not None:
                    self._idle.set()

        self._trio.lanes.start_soon(lane, name=caller)

    async def settle(self) -> None:
        """Wait (on virtual time) until every call started with `start` has ended.

        Cancellation:
          If cancelled, the background calls go on.
        """
        if self._running and self._idle is not None:
            await self._idle.wait()
        await trio.lowlevel.checkpoint()

    # -- machinery ----------------------------------------------------------------------------

    def _step(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        schedule: tuple[Deviation, ...] | None,
    ) -> Any:
        self._steps.append((fn, kwargs, schedule))
        if not inspect.iscoroutinefunction(fn):
            return fn(self, **kwargs)
        if schedule is not None:
            schedule = schedule[: max(0, min(self.max_deviations, _DRAWN_DEVIATIONS))]

        async def body() -> Any:
            return await fn(self, **kwargs)

        result, decisions = self._trio.run(body, schedule)
        self._decisions.extend(decisions)
        return result

    async def _finish(self) -> None:
        with trio.move_on_after(self.settle_limit):
            await self.settle()
        assert self._trio.lanes is not None
        assert self._trio.servers is not None
        self._trio.lanes.cancel_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        self._trio.servers.cancel_scope.cancel()

    def _end_run(self) -> Run:
        if not self._closed:
            self._closed = True
            try:
                self._trio.run(self._finish, _canonical())
            finally:
                self._trio.close()
        return Run(tuple(self._checked), tuple(self._decisions))

    def _replay(self) -> Run:
        again = type(self)()
        for fn, kwargs, schedule in self._steps:
            again._step(fn, kwargs, schedule)
        return again._end_run()

    def teardown(self) -> None:
        """Stop the servers and check every history (see the class).

        Raises:
          IncompleteHistory: A call did not end with exactly one outcome.
          RaceFound: A history is not linearizable; the message is the story.
          NondeterministicTest: A failing example ran differently the second time.
        """
        failing = sys.exc_info()[1] is not None  # a rule failed: report that, not this
        run = self._end_run()
        if failing:
            return
        replay = (
            "Hypothesis replays the falsifying example (the steps printed above, with their "
            "trio_schedule) when the test runs again, from its example database."
        )
        # Under fallback scheduling trio's shuffle is seeded by Hypothesis, so a replay by hand
        # cannot reproduce it: the determinism guard is off.
        rerun = self._replay if hook_available() else None
        inconclusive = verify(run, rerun=rerun, replay=replay, budget=self.budget)
        if inconclusive:
            hypothesis.event(describe_inconclusive(inconclusive))


#: The default models of server classes: one per class for all examples, so that the answers
#: it remembers (a handler depends only on the state and its arguments) serve every example.
#: (Only classes: a factory made afresh per example, a lambda, would never be met again.)
_MODELS: weakref.WeakKeyDictionary[type, ServerModel[Any]] = weakref.WeakKeyDictionary()


def _model_of(factory: Callable[[], T]) -> ServerModel[T]:
    if not isinstance(factory, type):
        return ServerModel(factory)
    model = _MODELS.get(factory)
    if model is None:
        model = _MODELS[factory] = ServerModel(factory)
    return model


def _canonical() -> tuple[Deviation, ...] | None:
    return () if hook_available() else None


def _schedules() -> st.SearchStrategy[Any]:
    return st.deferred(lambda: schedule_strategy(_DRAWN_DEVIATIONS))


def _as_step(fn: Callable[..., Any], scheduled: bool) -> Callable[..., Any]:
    if scheduled:

        @functools.wraps(fn)
        def step(self: ServerMachine, **kwargs: Any) -> Any:
            schedule = kwargs.pop(SCHEDULE)
            return self._step(fn, kwargs, schedule)  # pyright: ignore[reportPrivateUsage]

    else:

        @functools.wraps(fn)
        def step(self: ServerMachine, **kwargs: Any) -> Any:
            return self._step(fn, kwargs, None)  # pyright: ignore[reportPrivateUsage]

    del step.__wrapped__  # Hypothesis must see the step's own signature
    return step


def rule(
    *,
    targets: Sequence[hypothesis.stateful.Bundle[Any]] = (),
    target: hypothesis.stateful.Bundle[Any] | None = None,
    **kwargs: st.SearchStrategy[Any],
) -> Callable[[F], F]:
    """`hypothesis.stateful.rule` for a `ServerMachine`: the rule may be ``async def``.

    An ``async def`` rule runs in the example's trio run, under a schedule
    drawn by Hypothesis, and returns when every task is blocked.

    Args:
      targets: As Hypothesis' ``rule``.
      target: As Hypothesis' ``rule``.
      **kwargs: Strategies for the rule's arguments, as Hypothesis' ``rule``.

    Returns:
      The decorator.
    """

    def accept(fn: F) -> F:
        scheduled = inspect.iscoroutinefunction(fn)
        extra = {SCHEDULE: _schedules()} if scheduled else {}
        make: Any = hypothesis.stateful.rule
        decorate: Any = make(targets=targets, target=target, **kwargs, **extra)
        result: F = decorate(_as_step(fn, scheduled))
        return result

    return accept


def initialize(
    *,
    targets: Sequence[hypothesis.stateful.Bundle[Any]] = (),
    target: hypothesis.stateful.Bundle[Any] | None = None,
    **kwargs: st.SearchStrategy[Any],
) -> Callable[[F], F]:
    """`hypothesis.stateful.initialize` for a `ServerMachine`: it may be ``async def``.

    Args:
      targets: As Hypothesis' ``initialize``.
      target: As Hypothesis' ``initialize``.
      **kwargs: Strategies for its arguments.

    Returns:
      The decorator.
    """

    def accept(fn: F) -> F:
        scheduled = inspect.iscoroutinefunction(fn)
        extra = {SCHEDULE: _schedules()} if scheduled else {}
        make: Any = hypothesis.stateful.initialize
        decorate: Any = make(targets=targets, target=target, **kwargs, **extra)
        result: F = decorate(_as_step(fn, scheduled))
        return result

    return accept


def invariant(*, check_during_init: bool = False) -> Callable[[F], F]:
    """`hypothesis.stateful.invariant` for a `ServerMachine`: it may be ``async def``.

    Invariants run after each step, when every task is blocked; an ``async
    def`` one runs in the trio thread in the canonical order.

    Args:
      check_during_init: As Hypothesis' ``invariant``.

    Returns:
      The decorator.
    """

    def accept(fn: F) -> F:
        decorate: Any = hypothesis.stateful.invariant(check_during_init=check_during_init)
        if not inspect.iscoroutinefunction(fn):
            return decorate(fn)  # type: ignore[no-any-return]

        @functools.wraps(fn)
        def check(self: ServerMachine) -> None:
            async def body() -> Any:
                return await fn(self)

            self._trio.run(body, _canonical())  # pyright: ignore[reportPrivateUsage]

        del check.__wrapped__
        return decorate(check)  # type: ignore[no-any-return]

    return accept
