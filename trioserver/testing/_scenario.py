"""The scenario runner: concurrent lanes of client operations, run and checked in one call."""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs
import hypothesis
import trio
from hypothesis import strategies as st

from .._lifecycle import open_server
from .._spec import SPEC, ServerSpec
from ._errors import ModelMismatch, RaceFound, RunStuck
from ._history import History, Operation
from ._linearizability import DEFAULT_BUDGET, Inconclusive
from ._model import Model, ServerModel
from ._report import timeline
from ._scheduler import Decision, Deviation, schedule_strategy, steer
from ._settings import race_settings
from ._stuck import STUCK_AFTER, Stopped, Watch, collect_abandoned
from ._verify import Checked, Run, describe_inconclusive, verify

T = TypeVar("T")

#: How lanes are named in reports.
CALLERS = ("ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal")


@attrs.frozen(eq=False)
class ClientOperation:
    """One kind of client operation a lane may perform.

    Attributes:
      name: Its name in histories and in the model.
      run: ``async def run(handle, *args)``: what the client does.
      arguments: Strategy for its positional arguments, as a tuple.
      composite: Whether it makes several calls (then any trioserver error in
        it leaves its effects unknown; see `classify`).
    """

    name: str
    run: Callable[..., Awaitable[Any]]
    arguments: st.SearchStrategy[tuple[Any, ...]]
    composite: bool = True


def operation(
    run: Callable[..., Awaitable[Any]],
    *arguments: st.SearchStrategy[Any],
    name: str | None = None,
) -> ClientOperation:
    """A composite client operation: ``async def run(handle, *args)`` that makes several calls.

    Args:
      run: The client function; its first argument is the server's handle.
      *arguments: One strategy per further argument.
      name: Its name; ``run.__name__`` if omitted. The model must know it.

    Returns:
      The operation, for `check_scenarios`'s `operations`.

    Raises:
      TypeError: `run` cannot take the handle and one argument per strategy.
    """
    label = name or str(getattr(run, "__name__", "operation"))
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError):  # pragma: no cover (a builtin: nothing to check)
        signature = None
    if signature is not None:
        try:
            signature.bind(None, *(None for _ in arguments))
        except TypeError:
            raise TypeError(
                f"operation({label}): {label}{signature} cannot be called with the handle and "
                f"{len(arguments)} argument(s): give one strategy per parameter after the "
                f"handle"
            ) from None
    return ClientOperation(label, run, st.tuples(*arguments))


def call_operations(
    cls: type, arguments: Mapping[str, st.SearchStrategy[Any]] | None = None
) -> list[ClientOperation]:
    """One operation per ``@call`` and ``@cast`` method of a server class, arguments drawn from
    its signature (a cast's caller sees ``None``; the model applies its effect).

    Args:
      cls: A ``@server`` class.
      arguments: Strategies by parameter name (``{"seat": st.sampled_from(["A1", "A2"])}``);
        other parameters are drawn with ``st.from_type`` of their annotation.

    Returns:
      The operations, in the order the class defines them.

    Raises:
      TypeError: `cls` is not a server class, or a parameter has neither a
        strategy in `arguments` nor an annotation.
    """
    spec = getattr(cls, SPEC, None)
    if not isinstance(spec, ServerSpec):
        raise TypeError(f"{cls!r} is not a @server class")
    arguments = arguments or {}
    operations: list[ClientOperation] = []
    for name, method in spec.methods.items():
        hints = typing.get_type_hints(method.fn)
        strategies: list[st.SearchStrategy[Any]] = []
        for param in list(inspect.signature(method.fn).parameters.values())[1:]:
            if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                continue
            if param.name in arguments:
                strategies.append(arguments[param.name])
            elif param.name in hints:
                strategies.append(st.from_type(hints[param.name]))
            else:
                raise TypeError(
                    f"{method.label}: parameter {param.name!r} has no annotation; give a "
                    f"strategy for it in arguments="
                )
        operations.append(ClientOperation(name, _caller_of(name), st.tuples(*strategies), False))
    return operations


def _caller_of(name: str) -> Callable[..., Awaitable[Any]]:
    async def call_method(handle: object, *args: Any) -> Any:
        return await getattr(handle, name)(*args)

    call_method.__name__ = name
    return call_method


@attrs.frozen
class Step:
    """One operation of a lane: wait `delay` virtual seconds, then invoke."""

    delay: float
    name: str
    args: tuple[Any, ...]

    def __repr__(self) -> str:
        return f"Step({self.delay!r}, {self.name!r}, {self.args!r})"


@attrs.frozen
class Scenario:
    """A drawn example: each lane's steps, and the schedule (``None`` in fallback scheduling).

    Its ``repr`` is Python that rebuilds it, for `ScenarioTest.replay`.
    """

    lanes: tuple[tuple[Step, ...], ...]
    schedule: tuple[Deviation, ...] | None

    def __repr__(self) -> str:
        return f"Scenario(lanes={self.lanes!r}, schedule={self.schedule!r})"

    @property
    def operations(self) -> int:
        """How many operations all lanes make together."""
        return sum(len(lane) for lane in self.lanes)


class ScenarioTest(Generic[T]):
    """Concurrent lanes of client operations against a fresh server, checked for races.

    Each example starts a server from `factory`, runs 1 to `lanes` lanes at
    once (each a sequence of up to `steps` operations, each after a drawn
    virtual delay) in one `trio.run` on a `trio.testing.MockClock` (autojump), under a drawn
    schedule, and checks the history for linearizability against `model`.

    Args:
      factory: Makes the server object (a fresh one per example).
      operations: What lanes do (`ClientOperation` objects); default: every ``@call``
        method (see `call_operations`).
      arguments: Strategies by parameter name, for operations drawn from signatures.
      model: The sequential model; default ``ServerModel(factory)``: the class
        itself, one call at a time. A composite operation needs a model that knows it.
      partition: Optional key of an operation; independent keys are checked apart.
      lanes: At most this many concurrent callers (at least 1).
      steps: At most this many operations per lane.
      delays: The virtual delays a step may wait before invoking.
      max_deviations: The bound on deviations from the canonical scheduling order.
      budget: Linearizability search steps per partition before "inconclusive".
      name: How reports name the server; its class name by default.
      settle_limit: Virtual seconds the lanes may run; then the calls still in flight are
        cancelled (unknown outcomes) and the server stops. A guarded call whose guard never
        holds waits in the mailbox with no deadline of its own: this ends it.
      stuck_after: Real seconds a run may go on with every task waiting, no deadline pending
        and no task run, before it is taken for a deadlock and reported (`RunStuck`) instead
        of hanging the test. Only a wait for a worker thread (``thread=True``) or for I/O
        looks like that and is not one: raise it if one takes longer.
    """

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        operations: Sequence[ClientOperation] | None = None,
        arguments: Mapping[str, st.SearchStrategy[Any]] | None = None,
        model: Model[Any] | None = None,
        partition: Callable[[Operation], Hashable] | None = None,
        lanes: int = 3,
        steps: int = 2,
        delays: Sequence[float] = (0.0, 1.0),
        max_deviations: int = 4,
        budget: int = DEFAULT_BUDGET,
        name: str | None = None,
        settle_limit: float = 3600.0,
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        self.factory = factory
        self._sample = factory()
        self.name = name or type(self._sample).__name__
        ops = list(operations) if operations is not None else None
        self.operations = ops or call_operations(type(self._sample), arguments)
        self._by_name = {op.name: op for op in self.operations}
        self.model: Model[Any] = model if model is not None else ServerModel(factory)
        self.partition = partition
        self.lanes = lanes
        self.steps = steps
        self.delays = tuple(delays)
        self.max_deviations = max_deviations
        self.budget = budget
        self.settle_limit = settle_limit
        self.stuck_after = stuck_after
        self.inconclusive = 0
        self._alone: dict[str, ModelMismatch | None] = {}  # steps run alone, by repr

    def scenarios(self) -> st.SearchStrategy[Scenario]:
        """The strategy of examples (lanes and schedule); shrinks to fewer, shorter lanes.

        Returns:
          A strategy of `Scenario`.
        """
        step = st.one_of(
            [
                st.builds(Step, st.sampled_from(self.delays), st.just(op.name), op.arguments)
                for op in self.operations
            ]
        )
        lane = st.lists(step, min_size=1, max_size=self.steps).map(tuple)
        lanes = st.lists(lane, min_size=1, max_size=self.lanes).map(tuple)
        return st.builds(Scenario, lanes, schedule_strategy(self.max_deviations))

    def run(self, scenario: Scenario) -> Run:
        """Run one example; no checking.

        Args:
          scenario: The example.

        Returns:
          Its history and the scheduling decisions taken.

        Raises:
          RunStuck: The run stopped for good (a deadlock): it was abandoned.
        """
        history = History(self.name, partition=self.partition)
        watch = Watch(self.stuck_after)
        decisions: list[Decision] = []
        stopped: Stopped | None = None
        try:
            with steer(scenario.schedule) as decisions:
                trio.run(
                    self._program(scenario, history),
                    clock=watch.clock,
                    instruments=[watch.instrument],
                )
        except trio.TrioInternalError as error:
            if not isinstance(error.__cause__, Stopped):
                raise
            stopped = error.__cause__
            stopped.__traceback__ = stopped.__context__ = None  # (they hold the whole run)
        if stopped is not None:
            collect_abandoned()  # (nothing here holds the run: its program is gone)
            report = _stuck_report(self.name, stopped, history, decisions, scenario)
            raise RunStuck(report, history, stopped.waiting)
        return Run((Checked(history, self.model),), tuple(decisions))

    def _program(self, scenario: Scenario, history: History) -> Callable[[], Awaitable[None]]:
        """The example as a trio program: a fresh server, and the lanes' calls recorded."""
        handle = self.factory()

        async def lane(caller: str, steps: tuple[Step, ...]) -> None:
            for step in steps:
                await trio.sleep(step.delay)
                op = self._by_name[step.name]
                with contextlib.suppress(Exception):  # recorded; the lane goes on, like a client
                    await history.call(
                        caller,
                        functools.partial(op.run, handle),
                        *step.args,
                        name=op.name,
                        composite=op.composite,
                    )

        async def main() -> None:
            async with open_server(handle):
                # (a call still waiting then, on a guard that never held, is cancelled)
                with trio.move_on_after(self.settle_limit):
                    async with trio.open_nursery() as nursery:
                        for caller, steps in zip(CALLERS * 8, scenario.lanes, strict=False):
                            nursery.start_soon(lane, caller, steps, name=caller)

        return main

    def check(self, scenario: Scenario) -> None:
        """Run one example and check it (the body of the Hypothesis test).

        Args:
          scenario: The example.

        Raises:
          RaceFound: Its history is not linearizable (the message is the story).
          ModelMismatch: It is not, but the model and the server already disagree on a
            call run alone (in its history, or on a fresh server).
          NondeterministicTest: It failed, and ran differently the second time.
          IncompleteHistory: A call did not end with exactly one outcome.
          RunStuck: The run stopped for good (a deadlock).
        """
        run = self.run(scenario)
        replay = (
            "Hypothesis replays the falsifying example when the test runs again (from its "
            "example database); or, by hand:\n  test.replay(" + repr(scenario) + ")"
        )
        # Under fallback scheduling (schedule None) trio's shuffle is seeded by Hypothesis: a
        # second run could not reproduce it, so the determinism guard is off.
        rerun = None if scenario.schedule is None else (lambda: self.run(scenario))
        found: RaceFound | ModelMismatch | None = None
        inconclusive: list[Inconclusive] = []
        try:
            inconclusive = verify(run, rerun=rerun, replay=replay, budget=self.budget)
        except RaceFound as race:
            found = self._mismatch_alone(scenario) or race
        except ModelMismatch as mismatch:
            found = mismatch
        # Raised here, afresh and not while handling another: Hypothesis sees one failure per
        # kind, wherever it was found.
        if isinstance(found, ModelMismatch):
            raise ModelMismatch(found.report, found.history, found.entry, found.expected)
        if found is not None:
            raise found
        if inconclusive:
            self.inconclusive += 1
            hypothesis.event(describe_inconclusive(inconclusive))

    def _mismatch_alone(self, scenario: Scenario) -> ModelMismatch | None:
        """Run each of `scenario`'s steps alone, on a fresh server: the `ModelMismatch` of the
        first on which the server and the model disagree (no race needed to show it). Each
        distinct step is run once per test (shrinking meets the same ones again and again)."""
        for lane in scenario.lanes:
            for step in lane:
                alone = Scenario(lanes=((Step(0.0, step.name, step.args),),), schedule=())
                key = repr(alone)
                if key not in self._alone:
                    self._alone[key] = self._check_alone(alone)
                if self._alone[key] is not None:
                    return self._alone[key]
        return None

    def _check_alone(self, alone: Scenario) -> ModelMismatch | None:
        replay = (
            "Run alone, as the report of a failing example did to tell a model mismatch "
            "from a race:\n  test.replay(" + repr(alone) + ")"
        )
        try:
            verify(self.run(alone), rerun=None, replay=replay, budget=self.budget)
        except ModelMismatch as mismatch:
            return mismatch
        return None

    def replay(self, scenario: Scenario) -> None:
        """Run and check one example by hand, as the report of a failure shows it.

        Args:
          scenario: The example, as the report prints it.

        Raises:
          RaceFound: As `check`.
        """
        self.check(scenario)

    def hypothesis_test(
        self, settings: hypothesis.settings | None = None, *, seed: int | None = None
    ) -> Callable[[], None]:
        """The Hypothesis test: call it (or return it from a pytest test function).

        Args:
          settings: Hypothesis settings; `race_settings` by default.
          seed: Optional: the seed of Hypothesis' random choices (``hypothesis.seed``), to
            repeat a search exactly (with ``database=None``) or to compare seeds.

        Returns:
          A function that runs the examples and raises the first failure, shrunk.
        """
        chosen = settings if settings is not None else race_settings()

        @chosen
        @hypothesis.given(self.scenarios())
        def test(scenario: Scenario) -> None:
            self.check(scenario)

        if seed is not None:
            test = hypothesis.seed(seed)(test)
        return test


def _stuck_report(
    name: str,
    stopped: Stopped,
    history: History,
    decisions: list[Decision],
    scenario: Scenario,
) -> str:
    lines = [
        f"{name}: the run stopped for good at t={stopped.at:.3f}: every task waits, no "
        f"deadline is pending, and no task ran for a while (a deadlock: a wake-up that never "
        f"comes, or waits in a cycle). The run was abandoned.",
        "",
        "Waiting:",
        *(f"  {line}" for line in stopped.waiting),
        "",
    ]
    if history.entries:
        lines += [timeline(history.entries), ""]
    lines += ["Scheduling decisions (departures from oldest-task-first):"]
    lines += [f"  {d.describe()}" for d in decisions] or ["  none: the canonical order"]
    lines += [
        "",
        "Replay: Hypothesis replays the falsifying example when the test runs again (from its "
        "example database); or, by hand:\n  test.replay(" + repr(scenario) + ")",
    ]
    return "\n".join(lines)


def check_scenarios(
    factory: Callable[[], T],
    *,
    settings: hypothesis.settings | None = None,
    seed: int | None = None,
    **options: Any,
) -> None:
    """Find races in a server: run concurrent lanes of calls under Hypothesis, check each run.

    ``check_scenarios(Counter, arguments={"n": st.integers(0, 3)})`` is a
    whole test: see `ScenarioTest` for the options.

    Args:
      factory: Makes a fresh server object.
      settings: Hypothesis settings; `race_settings` by default.
      seed: Optional: the seed of Hypothesis' random choices (see `ScenarioTest.hypothesis_test`).
      **options: Options of `ScenarioTest`.

    Raises:
      RaceFound: A run that is not linearizable, shrunk; the message is the story.
      ModelMismatch: The model and the server disagree on a call run alone: not a race.
      NondeterministicTest: A failing run that ran differently when run again.
      IncompleteHistory: A call that did not end with exactly one outcome.
    """
    ScenarioTest(factory, **options).hypothesis_test(settings, seed=seed)()
