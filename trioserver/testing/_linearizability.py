"""The linearizability check: Wing and Gong's search, memoized (Lowe), partitions interleaved.

A history is linearizable if each operation can be given one instant between
its invocation and its ending such that, run one at a time in that order, the
sequential model returns what each caller saw. Unknown endings may take
effect at any instant after their invocation, or never, and match any result.

The search is Porcupine's (Wing and Gong's depth-first search over a linked
list of call and return events, memoized on (linearized set, state) as Lowe
proposed), with these changes:

* Unknown calls are optional, and tried after the definite ones. A state
  reached with a set of unknown calls placed is pruned if the same state, with
  the same definite calls, was searched to failure with a subset of them: it
  has no more options. An unknown call that changes nothing is never placed.
  This is what keeps histories with many timed-out writes (Jepsen's ``:info``)
  cheap.
* A call is not tried again on the state it last failed on.
* Among the calls that may go next, the latest invoked is tried first. (A call
  that leaves the state as it was is not placed for good, as a read could be:
  a write of the value held changes nothing here, and may still be needed
  later, where it does.)
* The memo is capped (`cache_limit`, counted across partitions): past it the
  search remembers nothing more. It stays correct, only slower.
* Partitions are searched in turns of a few thousand steps each, like
  goroutines sharing one core, and the check stops at the first violation:
  an illegal key is found after about (number of partitions) x (its own
  cost) steps, however hard the other keys are.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Generator, Hashable, Sequence
from typing import Any, TypeVar

import attrs

from ._history import Entry, Operation, Refused, Result, Returned, Unknown, same_result
from ._model import Model

S = TypeVar("S")

#: Default budget: search steps (model applications) per partition before "inconclusive".
DEFAULT_BUDGET = 1_000_000
#: Default cap on remembered (linearized set, state) pairs, across partitions: about 300
#: bytes each (measured with tracemalloc, search stack included), so about 300 MB.
DEFAULT_CACHE_LIMIT = 1_000_000
#: Steps a partition searches before the next one's turn.
_TURN = 2_000


@attrs.frozen
class Linearizable:
    """The history is linearizable.

    Attributes:
      order: One linearization, entries in order, partition after partition.
      steps: Search steps taken, all partitions together.
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
      steps: Search steps taken until the violation was found, all partitions
        together.
    """

    partition: object
    entries: tuple[Entry, ...]
    prefix: tuple[Entry, ...]
    stuck: Entry
    expected: Result
    steps: int


@attrs.frozen
class Inconclusive:
    """The search stopped before an answer: neither a pass nor a violation.

    Attributes:
      partition: The partition whose search ran out (the budget), or that was
        being searched when the time limit ran out.
      steps: Search steps taken, all partitions together.
      reason: Which limit ran out, and how to raise it.
    """

    partition: object
    steps: int
    reason: str = "the search budget ran out"


Verdict = Linearizable | Violation | Inconclusive


class _Tally:
    """What all the partitions of one check share: steps taken, memo entries held."""

    __slots__ = ("cache_limit", "remembered", "steps")

    def __init__(self, cache_limit: int) -> None:
        self.steps = 0
        self.remembered = 0
        self.cache_limit = cache_limit


def _clock() -> float:
    return time.perf_counter()


def check_linearizable(
    entries: Sequence[Entry],
    model: Model[Any],
    *,
    partition: Callable[[Operation], Hashable] | None = None,
    budget: int = DEFAULT_BUDGET,
    time_limit: float | None = None,
    cache_limit: int = DEFAULT_CACHE_LIMIT,
) -> Verdict:
    """Check a history against a sequential model.

    Args:
      entries: The recorded entries (``History.entries``). `Refused` ones are
        left out (they had no effect); ones that never ended count as `Unknown`.
      model: The sequential model; each partition starts from ``model.initial()``.
      partition: Optional: each operation's key. Keys must be independent
        (operations with different keys never affect each other).
      budget: Search steps (model applications) allowed per partition.
      time_limit: Optional: wall-clock seconds for the whole check, looked at
        between turns (every few thousand steps).
      cache_limit: How many (linearized set, state) pairs the search may remember,
        all partitions together (about 300 bytes each). Past it the search
        remembers no more: the verdict is the same, it may only take more steps.

    Returns:
      `Linearizable`; the first `Violation` found (partitions are searched in
      turns, so a cheap one is found early however hard the others are); or
      `Inconclusive` if a partition's budget ran out and no partition failed, or
      the time limit ran out.

    Raises:
      ValueError: A negative `budget` or `cache_limit`, or a negative or NaN `time_limit`.
    """
    if budget < 0:
        raise ValueError(f"check_linearizable(budget={budget!r}): a budget is a step count >= 0")
    if cache_limit < 0:
        raise ValueError(f"check_linearizable(cache_limit={cache_limit!r}): must be >= 0")
    if time_limit is not None and not time_limit >= 0:
        raise ValueError(
            f"check_linearizable(time_limit={time_limit!r}): seconds >= 0, or None for none"
        )
    kept = [e for e in entries if not isinstance(e.ending, Refused)]
    groups: dict[Hashable, list[Entry]] = {}
    for entry in kept:
        key = partition(entry.operation) if partition is not None else None
        groups.setdefault(key, []).append(entry)
    tally = _Tally(cache_limit)
    turns: collections.deque[tuple[Hashable, Generator[None, None, Verdict]]] = collections.deque(
        (key, _search(key, group, model, budget, tally)) for key, group in groups.items()
    )
    orders: dict[Hashable, tuple[Entry, ...]] = {}
    inconclusive: Inconclusive | None = None
    began = _clock()
    while turns:
        key, search = turns.popleft()
        try:
            next(search)
        except StopIteration as done:
            verdict: Verdict = done.value
            if isinstance(verdict, Violation):
                verdict = _retold(verdict, groups[key], model, budget, tally, began, time_limit)
                return attrs.evolve(verdict, steps=tally.steps)
            if isinstance(verdict, Inconclusive):
                inconclusive = inconclusive or verdict
            else:
                orders[key] = verdict.order
            continue
        if time_limit is not None and _clock() - began >= time_limit:
            return Inconclusive(
                key,
                tally.steps,
                f"the time limit of {time_limit:g} s ran out with {len(turns) + 1} of "
                f"{len(groups)} partition(s) unfinished (time_limit=None for none)",
            )
        turns.append((key, search))
    if inconclusive is not None:
        return attrs.evolve(inconclusive, steps=tally.steps)
    order = tuple(entry for key in groups for entry in orders[key])
    return Linearizable(order, tally.steps)


def _retold(
    violation: Violation,
    entries: list[Entry],
    model: Model[Any],
    budget: int,
    tally: _Tally,
    began: float,
    time_limit: float | None,
) -> Violation:
    """The violation's story as a search in invocation order tells it, if that is cheap.

    The search tries the latest invoked call first (it is faster); a story reads
    best with the calls in the order they were made (``ann`` placed, then
    ``bob`` cannot be). So the failing partition is searched again that way,
    with at most the steps it took (and the time left), and that story is kept
    if it finds the violation too. Its steps count in the total.
    """
    again = _search(
        violation.partition,
        entries,
        model,
        min(budget, violation.steps + 1_000),
        tally,
        latest_first=False,
    )
    while True:
        try:
            next(again)
        except StopIteration as done:
            told: Verdict = done.value
            break
        if time_limit is not None and _clock() - began >= time_limit:
            again.close()
            return violation
    if not isinstance(told, Violation):
        return violation
    return attrs.evolve(violation, prefix=told.prefix, stuck=told.stuck, expected=told.expected)


def _is_unknown(entry: Entry) -> bool:
    return entry.ending is None or isinstance(entry.ending, Unknown)


class _Node:
    """A call or a return in a doubly linked list of events (Porcupine's ``node``)."""

    __slots__ = (
        "bit",
        "ending",
        "entry",
        "failed_at",
        "is_call",
        "match",
        "next",
        "operation",
        "position",
        "prev",
    )

    def __init__(self, entry: Entry, is_call: bool, position: float, bit: int) -> None:
        self.entry = entry
        self.operation = entry.operation
        self.ending = entry.ending
        self.is_call = is_call
        self.position = position
        self.bit = bit
        self.match: _Node | None = None  # a call's return
        self.prev: _Node | None = None
        self.next: _Node | None = None
        # The fingerprint of the last state this call was tried on and could not be
        # placed (its result disagreed, or it changed nothing and is unknown).
        self.failed_at: Hashable = _NEVER


_NEVER: Hashable = object()


def _linked(nodes: list[_Node], head: _Node) -> None:
    previous = head
    for node in nodes:
        previous.next = node
        node.prev = previous
        previous = node


def _first_return(head: _Node) -> _Node:
    node = head.next
    while node is not None and node.is_call:
        node = node.next
    assert node is not None
    return node


class _Memo:
    """Remembered states: per (definite set, state fingerprint), the unknown sets searched.

    An entry is ``[unknown set, finished]``. A state is pruned if the same
    (definite set, state) was reached with the same unknown set (in the search
    or done), or with a subset of it and searched to failure: from there every
    continuation of ours was open too.
    """

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally
        self.table: dict[tuple[int, Hashable], list[list[Any]]] = {}
        self.held = 0  # entries held, counted in ``tally.remembered`` too

    def pruned(self, kept: list[list[Any]], unknown: int) -> bool:
        """Whether a state reached with the unknown set `unknown` is pruned by `kept`."""
        return any(
            used == unknown or (finished and used & ~unknown == 0) for used, finished in kept
        )

    def add(
        self, key: tuple[int, Hashable], kept: list[list[Any]] | None, unknown: int
    ) -> list[Any] | None:
        """Remember a state entered; its entry (``None`` when the cache is full)."""
        if self.tally.remembered >= self.tally.cache_limit:
            return None
        entry: list[Any] = [unknown, False]
        if kept is None:
            self.table[key] = [entry]
        else:
            kept.append(entry)
        self.tally.remembered += 1
        self.held += 1
        return entry

    def finish(self, key: tuple[int, Hashable], entry: list[Any]) -> None:
        """`entry` was searched to failure; drop the finished entries it now covers."""
        entry[1] = True
        kept = self.table[key]
        if len(kept) > 1:
            used = entry[0]
            before = len(kept)
            kept[:] = [e for e in kept if e is entry or not (e[1] and used & ~e[0] == 0)]
            self.tally.remembered -= before - len(kept)
            self.held -= before - len(kept)


def _search(
    key: Hashable,
    entries: list[Entry],
    model: Model[S],
    budget: int,
    tally: _Tally,
    *,
    latest_first: bool = True,
) -> Generator[None, None, Verdict]:
    """One partition's search; yields between turns, returns its verdict.

    Its memo entries count toward ``tally.cache_limit`` while it runs.
    """
    memo = _Memo(tally)
    try:
        return (yield from _search_with(key, entries, model, budget, tally, memo, latest_first))
    finally:
        tally.remembered -= memo.held


def _search_with(
    key: Hashable,
    entries: list[Entry],
    model: Model[S],
    budget: int,
    tally: _Tally,
    memo: _Memo,
    latest_first: bool,
) -> Generator[None, None, Verdict]:
    """`_search`'s body.

    Beside the memo, a call is not tried again on the state it last failed on
    (``failed_at``), and an unknown one not on a state it leaves unchanged.
    """
    definite: list[_Node] = []
    unknown: list[_Node] = []
    infinity = math.inf
    for entry in entries:
        if _is_unknown(entry):
            unknown.append(_Node(entry, True, entry.invoked, 1 << len(unknown)))
            continue
        call = _Node(entry, True, entry.invoked, 1 << (len(definite) // 2))
        call.match = _Node(entry, False, infinity if entry.ended is None else entry.ended, 0)
        definite += (call, call.match)
    # Calls before returns at one position (closed intervals, as Porcupine).
    definite.sort(key=lambda n: (n.position, not n.is_call))
    unknown.sort(key=lambda n: n.position)
    first = _Node(entries[0], False, -infinity, 0)  # sentinel heads
    first_unknown = _Node(entries[0], True, -infinity, 0)
    _linked(definite, first)
    _linked(unknown, first_unknown)

    table = memo.table
    apply = model.apply
    fingerprint = model.fingerprint
    steps = 0
    state = model.initial()
    state_fp = fingerprint(state)
    done = 0  # the definite calls placed, as a set of bits
    used = 0  # the unknown calls placed
    left = len(definite) // 2

    def expand(
        state: S, state_fp: Hashable, steps: int
    ) -> tuple[list[tuple[_Node, S, Hashable]] | None, int]:
        """The calls that may go next, with the state each leads to, and the steps
        taken (``None`` if the budget ran out)."""
        children: list[tuple[_Node, S, Hashable]] = []
        node = first.next
        assert node is not None  # a return not placed is always ahead
        while node.is_call:
            if node.failed_at != state_fp:
                if steps >= budget:
                    return None, steps
                steps += 1
                after, result = apply(state, node.operation)
                ending = node.ending
                if type(result) is Returned and type(ending) is Returned:
                    try:
                        ok = bool(result.value == ending.value)
                    except Exception:
                        ok = False
                else:
                    assert ending is not None
                    ok = same_result(result, ending)
                if ok:
                    after_fp = fingerprint(after)
                    children.append((node, after, after_fp))
                else:
                    node.failed_at = state_fp
            node = node.next
            assert node is not None
        # Latest invoked first: on Porcupine's histories (benchmarks/porcupine.py) this
        # takes 232k steps instead of 742k on kv c50-ok, 466k instead of 937k in all.
        if latest_first:
            children.reverse()
        # Past the first return not placed, only unknown calls invoked before it.
        bound = node.position
        node = first_unknown.next
        while node is not None and node.position < bound:
            if node.failed_at != state_fp:
                if steps >= budget:
                    return None, steps
                steps += 1
                after, _ = apply(state, node.operation)
                after_fp = fingerprint(after)
                if after_fp == state_fp:
                    node.failed_at = state_fp  # changes nothing: never needed
                else:
                    children.append((node, after, after_fp))
            node = node.next
        return children, steps

    def out_of_budget() -> Inconclusive:
        return Inconclusive(
            key,
            steps,
            f"the search budget of {budget} steps ran out on partition {key!r} (raise budget=)",
        )

    best: tuple[tuple[Entry, ...], Entry, S] | None = None
    if left == 0:
        return Linearizable((), 0)
    children, steps = expand(state, state_fp, steps)
    tally.steps += steps
    if children is None:
        return out_of_budget()
    pause = _TURN
    # A frame per search node: its children, the next to try, the call placed to get
    # there, the state and fingerprint before it, and its memo key and entry.
    stack: list[list[Any]] = [[children, 0, None, state, state_fp, None, None]]
    while True:
        frame = stack[-1]
        children = frame[0]
        index = frame[1]
        placed = False
        while index < len(children):
            node, after, after_fp = children[index]
            index += 1
            # The memo (inlined `_Memo.enter`, as it runs on every placement).
            match = node.match
            if match is None:
                memo_key = (done, after_fp)
                new_used = used | node.bit
            else:
                memo_key = (done | node.bit, after_fp)
                new_used = used
            kept = table.get(memo_key)
            if kept is not None and memo.pruned(kept, new_used):
                continue
            memo_entry = memo.add(memo_key, kept, new_used)
            frame[1] = index
            # Lift the call (and its return) out of the list.
            prev = node.prev
            nxt = node.next
            prev.next = nxt
            if nxt is not None:
                nxt.prev = prev
            if match is None:
                used = new_used
            else:
                done = memo_key[0]
                left -= 1
                prev = match.prev
                nxt = match.next
                prev.next = nxt
                if nxt is not None:
                    nxt.prev = prev
            stack.append([None, 0, node, state, state_fp, memo_key, memo_entry])
            state, state_fp = after, after_fp
            placed = True
            break
        if placed:
            if left == 0:
                return Linearizable(tuple(f[2].entry for f in stack[1:]), steps)
            before = steps
            grown, steps = expand(state, state_fp, steps)
            tally.steps += steps - before
            if grown is None:
                return out_of_budget()
            stack[-1][0] = grown
            if steps >= pause:
                yield
                pause = steps + _TURN
            continue
        # Every child tried: back up.
        if best is None or len(stack) - 1 > len(best[0]):
            best = (tuple(f[2].entry for f in stack[1:]), _first_return(first).entry, state)
        if len(stack) == 1:
            break
        _, _, node, state, state_fp, memo_key, memo_entry = stack.pop()
        if memo_entry is not None:
            memo.finish(memo_key, memo_entry)
        match = node.match
        if match is None:
            used &= ~node.bit
        else:
            done &= ~node.bit
            left += 1
            match.prev.next = match
            if match.next is not None:
                match.next.prev = match
        node.prev.next = node
        if node.next is not None:
            node.next.prev = node
    assert best is not None
    prefix, stuck, reached = best
    _, expected = model.apply(reached, stuck.operation)
    return Violation(key, tuple(entries), prefix, stuck, expected, steps)
