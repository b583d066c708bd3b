"""The linearizability check: Wing and Gong's search, memoized (Lowe), partitioned by key.

A history is linearizable if each operation can be given one instant between
its invocation and its ending such that, run one at a time in that order, the
sequential model returns what each caller saw. Unknown endings may take
effect at any instant after their invocation, or never, and match any result.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import attrs

from ._history import Entry, Operation, Refused, Result, Unknown, same_result
from ._model import Model

S = TypeVar("S")

#: Default budget: search steps (model applications) per partition before "inconclusive".
DEFAULT_BUDGET = 200_000


@attrs.frozen
class Linearizable:
    """The history is linearizable.

    Attributes:
      order: One linearization, entries in order, partition after partition.
      steps: Search steps taken.
    """

    order: tuple[Entry, ...]
    steps: int


@attrs.frozen
class Violation:
    """No linearization exists. What the search got furthest with, for the story.

    Attributes:
      partition: The key of the partition that failed (``None`` if not partitioned).
      entries: That partition's entries.
      prefix: The longest linearizable prefix found, in order.
      stuck: The operation that cannot be placed after it: it ended before any
        other could go first, and the model disagrees with its result.
      expected: What the model says `stuck` does after `prefix`.
      steps: Search steps taken.
    """

    partition: object
    entries: tuple[Entry, ...]
    prefix: tuple[Entry, ...]
    stuck: Entry
    expected: Result
    steps: int


@attrs.frozen
class Inconclusive:
    """The search budget ran out before an answer: neither a pass nor a violation.

    Attributes:
      partition: The partition whose search ran out.
      steps: Search steps taken.
    """

    partition: object
    steps: int


Verdict = Linearizable | Violation | Inconclusive


@attrs.define(eq=False)
class _Node:
    entry: Entry
    is_call: bool
    match: _Node | None = None  # the call's return node
    prev: _Node | None = None
    next: _Node | None = None


def check_linearizable(
    entries: Sequence[Entry],
    model: Model[Any],
    *,
    partition: Callable[[Operation], Hashable] | None = None,
    budget: int = DEFAULT_BUDGET,
) -> Verdict:
    """Check a history against a sequential model.

    Args:
      entries: The recorded entries (``History.entries``). `Refused` ones are
        left out (they had no effect); ones that never ended count as `Unknown`.
      model: The sequential model; each partition starts from ``model.initial()``.
      partition: Optional: each operation's key. Keys must be independent
        (operations with different keys never affect each other).
      budget: Search steps allowed per partition.

    Returns:
      `Linearizable`, the first `Violation` (in order of the partitions'
      first invocation), or `Inconclusive` if a budget ran out and no
      partition failed.
    """
    kept = [e for e in entries if not isinstance(e.ending, Refused)]
    groups: dict[Hashable, list[Entry]] = {}
    for entry in kept:
        key = partition(entry.operation) if partition is not None else None
        groups.setdefault(key, []).append(entry)
    order: list[Entry] = []
    steps = 0
    inconclusive: Inconclusive | None = None
    for key, group in groups.items():
        verdict = _check_partition(key, group, model, budget)
        if isinstance(verdict, Violation):
            return verdict
        if isinstance(verdict, Inconclusive):
            inconclusive = inconclusive or verdict
            continue
        order.extend(verdict.order)
        steps += verdict.steps
    if inconclusive is not None:
        return inconclusive
    return Linearizable(tuple(order), steps)


def _is_unknown(entry: Entry) -> bool:
    return entry.ending is None or isinstance(entry.ending, Unknown)


def _check_partition(key: Hashable, entries: list[Entry], model: Model[S], budget: int) -> Verdict:
    # Events in real-time order; an unknown ending returns "at infinity", after everything.
    infinity = float("inf")
    events: list[tuple[float, int, _Node]] = []
    for index, entry in enumerate(entries):
        call = _Node(entry, True)
        ret = _Node(entry, False)
        call.match = ret
        events.append((float(entry.invoked), 0, call))
        end = infinity if _is_unknown(entry) or entry.ended is None else float(entry.ended)
        events.append((end, 1 + index, ret))
    events.sort(key=lambda item: (item[0], item[1]))
    head = _Node(entries[0], False)  # sentinel
    previous = head
    for _, _, event in events:
        previous.next = event
        event.prev = previous
        previous = event
    bit = {id(entry): 1 << index for index, entry in enumerate(entries)}

    definite_left = sum(1 for e in entries if not _is_unknown(e))
    state = model.initial()
    linearized = 0
    stack: list[tuple[_Node, S]] = []
    seen: set[tuple[int, Hashable]] = set()
    steps = 0
    best: tuple[tuple[Entry, ...], Entry] | None = None

    def lift(call: _Node) -> None:
        for node in (call, call.match):
            assert node is not None
            assert node.prev is not None
            node.prev.next = node.next
            if node.next is not None:
                node.next.prev = node.prev

    def unlift(call: _Node) -> None:
        for node in (call.match, call):
            assert node is not None
            assert node.prev is not None
            node.prev.next = node
            if node.next is not None:
                node.next.prev = node

    node: _Node | None = head.next
    while definite_left > 0:
        assert node is not None  # a definite return node is always ahead
        if node.is_call:
            steps += 1
            if steps > budget:
                return Inconclusive(key, steps - 1)
            entry = node.entry
            after, result = model.apply(state, entry.operation)
            ending = entry.ending if entry.ending is not None else Unknown("never ended")
            if same_result(result, ending):
                mask = linearized | bit[id(entry)]
                memo = (mask, model.fingerprint(after))
                if memo not in seen:
                    seen.add(memo)
                    stack.append((node, state))
                    state, linearized = after, mask
                    if not _is_unknown(entry):
                        definite_left -= 1
                    lift(node)
                    node = head.next
                    continue
            node = node.next
        else:
            # A return reached before its call was placed: undo the last placement.
            if best is None or len(stack) > len(best[0]):
                best = (tuple(n.entry for n, _ in stack), node.entry)
            if not stack:
                break
            call, state = stack.pop()
            linearized &= ~bit[id(call.entry)]
            if not _is_unknown(call.entry):
                definite_left += 1
            unlift(call)
            node = call.next
    if definite_left == 0:
        return Linearizable(tuple(n.entry for n, _ in stack), steps)
    assert best is not None
    prefix, stuck = best
    replay = model.initial()
    for entry in prefix:
        replay, _ = model.apply(replay, entry.operation)
    _, expected = model.apply(replay, stuck.operation)
    return Violation(key, tuple(entries), prefix, stuck, expected, steps)
