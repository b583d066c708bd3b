"""The scenario runner: concurrent lanes of client operations, run and checked in one call."""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import typing
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs
import hypothesis
import trio
from hypothesis import strategies as st

from .._lifecycle import open_server
from .._spec import SPEC, ServerSpec
from ._errors import ModelMismatch, RaceFound, RunStuck
from ._history import Entry, History, Operation
from ._linearizability import DEFAULT_BUDGET, Inconclusive
from ._model import Model, ServerModel
from ._report import timeline
from ._scheduler import LANE, Decision, schedule_strategy, steer
from ._settings import hypothesis_storage, race_settings
from ._steps import Scenario, Step
from ._stuck import STUCK_AFTER, Stopped, Watch, collect_abandoned
from ._verify import Checked, Run, describe_inconclusive, verify

T = TypeVar("T")

#: The delays a step may wait by default (virtual seconds).
DEFAULT_DELAYS = (0.0, 0.5, 1.0)
#: One drawn step in this many is a pure wait (shrinking turns steps into waits).
_WAIT_ONE_IN = 12


def lane_name(index: int) -> str:
    """How reports name lane `index` (from 0): ``#1``, ``#2``... No drawn value is shown
    so (strings are quoted, and ``#`` starts no Python literal), so lanes never look like
    the values a test draws."""
    return f"#{index + 1}"


def _is_server(obj: object) -> bool:
    return isinstance(getattr(type(obj), SPEC, None), ServerSpec)


def servers_of(obj: object) -> tuple[object, ...]:
    """The server objects a scenario's factory made: `obj` itself if it is one, else the
    server objects among the items of a tuple or list, or the values of a mapping.

    Raises:
      TypeError: There is none.
    """
    if _is_server(obj):
        return (obj,)
    items: list[object] = []
    if isinstance(obj, Mapping):
        mapping: Mapping[object, object] = obj  # pyright: ignore[reportUnknownVariableType]
        items = list(mapping.values())
    elif isinstance(obj, (tuple, list)):
        sequence: Sequence[object] = obj  # pyright: ignore[reportUnknownVariableType]
        items = [*sequence]
    servers = tuple(item for item in items if _is_server(item))
    if not servers:
        raise TypeError(
            f"ScenarioTest: the factory made {obj!r}, which is no @server object, nor a "
            f"tuple, list or mapping of them"
        )
    return servers


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


class ScenarioTest(Generic[T]):
    """Concurrent lanes of client operations against fresh servers, checked for races.

    Each example starts the servers `factory` makes, runs 1 to `lanes` lanes at
    once (each a sequence of up to `steps` steps: an operation after a drawn virtual
    delay, or now and then a pure wait) in one `trio.run` on a `trio.testing.MockClock`
    (autojump), under a drawn schedule, and checks the history for linearizability
    against `model`. Lanes are named ``#1``, ``#2``... in reports (no drawn value is shown
    so: strings are quoted, and ``#`` starts no Python literal).

    Args:
      factory: Makes the server object (a fresh one per example); or, for a scenario over
        several servers, a tuple, list or mapping of server objects (each is started; the
        operations get the whole of it as their handle, and `operations` and `model` must
        be given: a composite model, such as a plain class with one method per operation).
      operations: What lanes do (`ClientOperation` objects); default: every ``@call``
        and ``@cast`` method (see `call_operations`).
      arguments: Strategies by parameter name, for operations drawn from signatures.
      model: The sequential model; default ``ServerModel(factory)``: the class
        itself, one call at a time. A composite operation needs a model that knows it.
      partition: Optional key of an operation; independent keys are checked apart.
      lanes: At most this many concurrent callers (at least 1).
      steps: At most this many steps per lane (at least 1).
      delays: The virtual delays a step may wait before invoking (and a pure wait may
        last), at least one, none negative. They are drawn in increasing order, so
        shrinking lowers a delay one value at a time, toward the smallest.
      max_deviations: The bound on deviations from the canonical scheduling order.
      budget: Linearizability search steps per partition before "inconclusive".
      name: How reports name the server; its class name by default (the class names,
        for several servers).
      settle_limit: Virtual seconds the lanes may run; then the calls still in flight are
        cancelled (unknown outcomes) and the server stops. A guarded call whose guard never
        holds waits in the mailbox with no deadline of its own: this ends it.
      stuck_after: Real seconds a run may go on with every task waiting, no deadline pending
        and no task run, before it is taken for a deadlock and reported (`RunStuck`) instead
        of hanging the test. Only a wait for a worker thread (``thread=True``) or for I/O
        looks like that and is not one: raise it if one takes longer.

    Raises:
      TypeError: `factory` makes no server object (nor a collection of them); or it makes
        several and `operations` or `model` is missing.
      ValueError: `lanes`, `steps` or `delays` out of range.
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
        delays: Sequence[float] = DEFAULT_DELAYS,
        max_deviations: int = 4,
        budget: int = DEFAULT_BUDGET,
        name: str | None = None,
        settle_limit: float = 3600.0,
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        if lanes < 1 or steps < 1:
            raise ValueError(f"ScenarioTest: lanes={lanes} and steps={steps} must be >= 1")
        if not delays or any(not 0 <= d < math.inf for d in delays):
            raise ValueError(
                f"ScenarioTest: delays={tuple(delays)!r} must hold at least one finite "
                f"delay, none negative"
            )
        self.factory = factory
        self._sample = factory()
        servers = servers_of(self._sample)
        single = len(servers) == 1 and servers[0] is self._sample
        self.name = name or ", ".join(type(obj).__name__ for obj in servers)
        ops = list(operations) if operations is not None else None
        if not single and (not ops or model is None):
            raise TypeError(
                f"ScenarioTest over several servers ({self.name}): give operations= (client "
                f"operations that take the factory's {type(self._sample).__name__} as their "
                f"handle) and model= (a composite model, such as ServerModel(PlainClass))"
            )
        self.operations = ops or call_operations(type(self._sample), arguments)
        self._by_name = {op.name: op for op in self.operations}
        self.model: Model[Any] = model if model is not None else ServerModel(factory)
        self.partition = partition
        self.lanes = lanes
        self.steps = steps
        self.delays = tuple(sorted(set(delays)))
        self.max_deviations = max_deviations
        self.budget = budget
        self.settle_limit = settle_limit
        self.stuck_after = stuck_after
        self.inconclusive = 0
        self._alone: dict[str, ModelMismatch | None] = {}  # steps run alone, by repr
        self._failing: Scenario | None = None  # the last example that raised RaceFound

    def scenarios(self) -> st.SearchStrategy[Scenario]:
        """The strategy of examples (lanes and schedule); shrinks to fewer, shorter lanes,
        smaller delays, and operations turned into pure waits.

        Returns:
          A strategy of `Scenario`.
        """
        delays = st.sampled_from(self.delays)
        call = st.one_of(
            [st.builds(Step, delays, st.just(op.name), op.arguments) for op in self.operations]
        )
        wait = st.builds(Step, delays, st.none(), st.just(()))
        # A wait is the simplest step (kind 0), so shrinking tries one in place of each call.
        kind = st.integers(0, _WAIT_ONE_IN - 1)
        step = kind.flatmap(lambda k: wait if k == 0 else call)
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
          ValueError: A step names no operation of this test.
          RunStuck: The run stopped for good (a deadlock): it was abandoned.
        """
        unknown = {
            step.name
            for lane in scenario.lanes
            for step in lane
            if step.name is not None and step.name not in self._by_name
        }
        if unknown:
            raise ValueError(
                f"{self.name}: the scenario names operations this test does not have: "
                f"{sorted(unknown)} (it has {sorted(self._by_name)})"
            )
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
        """The example as a trio program: fresh servers, and the lanes' calls recorded."""
        handle = self.factory()
        servers = servers_of(handle)

        async def lane(caller: str, steps: tuple[Step, ...]) -> None:
            LANE.set(caller)  # (tasks it starts are named by it in scheduling decisions)
            for step in steps:
                await trio.sleep(step.delay)
                if step.name is None:
                    continue  # a pure wait
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
            async with contextlib.AsyncExitStack() as stack:
                for obj in servers:
                    await stack.enter_async_context(open_server(obj))
                # (a call still waiting then, on a guard that never held, is cancelled)
                with trio.move_on_after(self.settle_limit):
                    async with trio.open_nursery() as nursery:
                        for index, steps in enumerate(scenario.lanes):
                            caller = lane_name(index)
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
            self._failing = found.scenario = scenario
            raise found
        if inconclusive:
            self.inconclusive += 1
            if hypothesis.currently_in_test_context():
                hypothesis.event(describe_inconclusive(inconclusive))

    def _mismatch_alone(self, scenario: Scenario) -> ModelMismatch | None:
        """Run each of `scenario`'s steps alone, on a fresh server: the `ModelMismatch` of the
        first on which the server and the model disagree (no race needed to show it). Each
        distinct step is run once per test (shrinking meets the same ones again and again)."""
        for lane in scenario.lanes:
            for step in lane:
                if step.name is None:
                    continue
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

    def minimal(self, scenario: Scenario) -> tuple[Scenario, RaceFound] | None:
        """Make a failing example as small as the race it shows (`hypothesis_test` does this
        to the example Hypothesis has shrunk): each operation (those the story does not show
        first) is removed, or else replaced by a pure wait as long as it took, as long as the
        example still fails with `RaceFound`; then waits that no longer line anything up go.
        If operations the story does not show remain, the report says why.

        Args:
          scenario: An example that fails with `RaceFound`.

        Returns:
          The smaller example and its `RaceFound`, or None if `scenario` does not fail so.
        """
        race = self._race(scenario)
        if race is None:
            return None
        improved = True
        while improved:
            improved = False
            for candidate in self._smaller(scenario, race):
                found = self._race(candidate)
                if found is not None:
                    scenario, race, improved = candidate, found, True
                    break
        extra = sum(1 for _ in _unshown(scenario, race))
        if extra:
            note = (
                f"\n\nThe replay holds {extra} operation(s) more than the story shows (of "
                f"other partitions, or outside the calls that conflict): without any one of "
                f"them, and with it replaced by a pure wait as long as it took, the race no "
                f"longer shows. They take part in its timing or its scheduling (each "
                f"scheduling deviation counts the passes with several runnable tasks)."
            )
            race = RaceFound(race.report + note, race.history, race.violation, scenario)
        return scenario, race

    def _race(self, scenario: Scenario) -> RaceFound | None:
        try:
            self.check(scenario)
        except RaceFound as race:
            return race
        except Exception:
            return None  # another failure: not this kind of candidate
        return None

    def _smaller(self, scenario: Scenario, race: RaceFound) -> Iterator[Scenario]:
        """Candidates one step smaller than `scenario`, most promising first."""
        lanes = [list(lane) for lane in scenario.lanes]

        def build(changed: list[list[Step]]) -> Scenario:
            kept = tuple(tuple(lane) for lane in changed if lane)
            return Scenario(lanes=kept or ((),), schedule=scenario.schedule)

        unshown = list(_unshown(scenario, race))
        for i, j, entry in unshown + [c for c in _operations(scenario, race) if c not in unshown]:
            step = lanes[i][j]
            yield build(
                [lane if k != i else lane[:j] + lane[j + 1 :] for k, lane in enumerate(lanes)]
            )
            if entry is not None and entry.ended_at is not None:
                took = entry.ended_at - entry.invoked_at
                wait = Step(step.delay + took, None)
                yield build(
                    [
                        lane if k != i else [*lane[:j], wait, *lane[j + 1 :]]
                        for k, lane in enumerate(lanes)
                    ]
                )
        for i, lane in enumerate(lanes):
            if all(step.name is None for step in lane):  # a lane of waits only
                yield build([other for k, other in enumerate(lanes) if k != i])
            for j, step in enumerate(lane):
                if step.name is not None:
                    continue
                if j == len(lane) - 1:  # a wait at the end lines nothing up
                    yield build([o if k != i else o[:j] for k, o in enumerate(lanes)])
                else:  # a wait before a step: one delay
                    after = lane[j + 1]
                    merged = Step(step.delay + after.delay, after.name, after.args)
                    yield build(
                        [
                            o if k != i else [*o[:j], merged, *o[j + 2 :]]
                            for k, o in enumerate(lanes)
                        ]
                    )

    def hypothesis_test(
        self, settings: hypothesis.settings | None = None, *, seed: int | None = None
    ) -> Callable[[], None]:
        """The Hypothesis test: call it (or return it from a pytest test function).

        A race it finds is reported on the smallest example Hypothesis shrinks to, made
        smaller still by `minimal`. Hypothesis' storage (its example database and caches)
        is kept out of the working directory, in
        ``$XDG_CACHE_HOME/trioserver/hypothesis/<hash of the working directory>``
        (``~/.cache`` if unset), unless the user chose a place for it
        (``HYPOTHESIS_STORAGE_DIRECTORY``, or a ``database`` in `settings`).

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

        def run_test() -> None:
            self._failing = None
            with hypothesis_storage():
                try:
                    test()
                except RaceFound:
                    failing = self._failing
                    smaller = None if failing is None else self.minimal(failing)
                    if smaller is None:
                        raise
                else:
                    return
            raise smaller[1] from None

        run_test.__name__ = run_test.__qualname__ = f"test_{self.name}_scenarios"
        return run_test


def _unshown(scenario: Scenario, race: RaceFound) -> Iterator[tuple[int, int, Entry | None]]:
    """The operation steps of `scenario` (lane, index, and the entry it made, if any) that
    the story of `race` does not show."""
    shown = {entry.id for entry in race.violation.entries}
    for i, j, entry in _operations(scenario, race):
        if entry is None or entry.id not in shown:
            yield i, j, entry


def _operations(scenario: Scenario, race: RaceFound) -> Iterator[tuple[int, int, Entry | None]]:
    """The operation steps of `scenario`: lane, index, and the entry it made in `race`'s
    history (None if it made none)."""
    by_caller: dict[str, list[Entry]] = {}
    for entry in sorted(race.history.entries, key=lambda e: e.invoked):
        by_caller.setdefault(entry.caller, []).append(entry)
    for i, lane in enumerate(scenario.lanes):
        entries = iter(by_caller.get(lane_name(i), []))
        for j, step in enumerate(lane):
            if step.name is None:
                continue
            yield i, j, next(entries, None)


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
