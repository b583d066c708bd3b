"""The linearizability checker on hand-built histories."""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from trioserver.testing import (
    Entry,
    History,
    Inconclusive,
    Linearizable,
    Model,
    Operation,
    Raised,
    Refused,
    Result,
    Returned,
    ServerModel,
    Unknown,
    Violation,
    check_linearizable,
)
from trioserver.testing._history import same_result


class Register:
    def __init__(self) -> None:
        self.value = 0

    def write(self, value: int) -> None:
        self.value = value

    def read(self) -> int:
        return self.value


class Seats:
    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    def reserve(self, seat: str, user: str) -> str:
        if seat in self.owner:
            raise KeyError(seat)
        self.owner[seat] = user
        return seat


def write(value: int) -> Operation:
    return Operation("write", (value,))


READ = Operation("read")


def test_overlapping_write_and_read_may_see_the_new_value() -> None:
    h = History("register")
    w = h.invoke("a", write(1))
    r = h.invoke("b", READ)
    h.end(r, Returned(1))
    h.end(w, Returned(None))
    verdict = check_linearizable(h.entries, ServerModel(Register))
    assert isinstance(verdict, Linearizable)
    assert [e.operation.name for e in verdict.order] == ["write", "read"]


def test_a_read_after_a_finished_write_must_see_it() -> None:
    h = History("register")
    w = h.invoke("a", write(1))
    h.end(w, Returned(None))
    r = h.invoke("b", READ)
    h.end(r, Returned(0))
    verdict = check_linearizable(h.entries, ServerModel(Register))
    assert isinstance(verdict, Violation)
    assert verdict.prefix == (w,)
    assert verdict.stuck is r
    assert verdict.expected == Returned(1)


def test_an_unknown_write_may_take_effect_late_or_never() -> None:
    h = History("register")
    w = h.invoke("a", write(1))
    h.end(w, Unknown("cut by its budget"))
    first = h.invoke("b", READ)
    h.end(first, Returned(0))
    second = h.invoke("b", READ)
    h.end(second, Returned(1))
    assert isinstance(check_linearizable(h.entries, ServerModel(Register)), Linearizable)
    never = History("register")
    w = never.invoke("a", write(1))
    never.end(w, Unknown("cut by its budget"))
    read = never.invoke("b", READ)
    never.end(read, Returned(0))
    assert isinstance(check_linearizable(never.entries, ServerModel(Register)), Linearizable)


def test_an_unknown_write_cannot_be_undone() -> None:
    h = History("register")
    w = h.invoke("a", write(1))
    h.end(w, Unknown("cut by its budget"))
    first = h.invoke("b", READ)
    h.end(first, Returned(1))
    second = h.invoke("b", READ)
    h.end(second, Returned(0))
    assert isinstance(check_linearizable(h.entries, ServerModel(Register)), Violation)


def test_a_cut_reservation_is_no_false_alarm_but_would_be_if_counted_as_definite() -> None:
    def history(cut: Returned | Unknown) -> History:
        h = History("theater")
        hung = h.invoke("hung", Operation("reserve", ("A1", "hung")))
        h.end(hung, cut)
        ann = h.invoke("ann", Operation("reserve", ("A1", "ann")))
        h.end(ann, Returned("A1"))
        return h

    unknown = history(Unknown("cut by its budget"))
    assert isinstance(check_linearizable(unknown.entries, ServerModel(Seats)), Linearizable)
    definite = history(Returned("A1"))
    assert isinstance(check_linearizable(definite.entries, ServerModel(Seats)), Violation)


def test_exceptions_match_by_type_and_arguments() -> None:
    h = History("theater")
    ann = h.invoke("ann", Operation("reserve", ("A1", "ann")))
    h.end(ann, Returned("A1"))
    bob = h.invoke("bob", Operation("reserve", ("A1", "bob")))
    h.end(bob, Raised(KeyError("A1")))
    assert isinstance(check_linearizable(h.entries, ServerModel(Seats)), Linearizable)
    h.entries[1].ending = Raised(KeyError("A2"))
    assert isinstance(check_linearizable(h.entries, ServerModel(Seats)), Violation)


def test_refused_calls_had_no_effect() -> None:
    h = History("register")
    w = h.invoke("a", write(1))
    h.end(w, Refused("ServerOverloaded"))
    r = h.invoke("b", READ)
    h.end(r, Returned(0))
    assert isinstance(check_linearizable(h.entries, ServerModel(Register)), Linearizable)


def test_partitions_are_checked_apart_and_the_failing_key_is_named() -> None:
    h = History("theater", partition=lambda op: op.args[0])
    for seat in ("A1", "A2"):
        ann = h.invoke("ann", Operation("reserve", (seat, "ann")))
        bob = h.invoke("bob", Operation("reserve", (seat, "bob")))
        h.end(ann, Returned(seat))
        h.end(bob, Returned(seat) if seat == "A2" else Raised(KeyError(seat)))
    verdict = check_linearizable(h.entries, ServerModel(Seats), partition=h.partition)
    assert isinstance(verdict, Violation)
    assert verdict.partition == "A2"
    assert len(verdict.entries) == 2


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def increment(self) -> int:
        self.value += 1
        return self.value


def concurrent_increments(n: int) -> History:
    h = History("counter")
    entries = [h.invoke(f"c{i}", Operation("increment")) for i in range(n)]
    for i, entry in enumerate(reversed(entries)):
        h.end(entry, Returned(i + 1))
    return h


def test_memoization_keeps_many_concurrent_calls_cheap() -> None:
    # 10 concurrent increments: 10! orders, but only 2**10 (set, state) pairs.
    verdict = check_linearizable(concurrent_increments(10).entries, ServerModel(Counter))
    assert isinstance(verdict, Linearizable)
    assert verdict.steps < 20_000


def test_a_search_past_its_budget_is_inconclusive() -> None:
    h = concurrent_increments(10)
    h.entries[0].ending = Returned(99)  # impossible: the search must try every order
    verdict = check_linearizable(h.entries, ServerModel(Counter), budget=50)
    assert isinstance(verdict, Inconclusive)
    assert verdict.steps == 50


# Issue 16, point 5: the checker on Porcupine's histories, and what that showed.


class Keyed(Model[int]):
    """One integer per key (histories partitioned by key): increment, write, read."""

    def __init__(self) -> None:
        self.applied = 0  # model applications, to count the search's work independently

    def initial(self) -> int:
        return 0

    def apply(self, state: int, operation: Operation) -> tuple[int, Result]:
        self.applied += 1
        if operation.name == "increment":
            return state + 1, Returned(state + 1)
        if operation.name == "write":
            return operation.args[1], Returned(None)
        return state, Returned(state)


def by_key(operation: Operation) -> Hashable:
    return operation.args[0]


def hard_key(h: History, key: str, n: int) -> None:
    """`n` concurrent writes and a read that sees none of them: every subset is tried."""
    writes = [h.invoke(f"{key}{i}", Operation("write", (key, i + 1))) for i in range(n)]
    read = h.invoke(f"{key}-r", Operation("read", (key,)))
    h.end(read, Returned(99))
    for entry in writes:
        h.end(entry, Returned(None))


def illegal_key(h: History, key: str) -> None:
    """A read after a finished write that does not see it."""
    w = h.invoke(f"{key}-w", Operation("write", (key, 1)))
    h.end(w, Returned(None))
    r = h.invoke(f"{key}-r", Operation("read", (key,)))
    h.end(r, Returned(2))


def test_an_illegal_key_behind_a_hard_one_is_found_in_few_steps() -> None:
    alone = History("hard", partition=by_key)
    hard_key(alone, "hard", 11)
    verdict = check_linearizable(alone.entries, Keyed(), partition=by_key)
    assert isinstance(verdict, Violation)
    assert verdict.steps > 50_000  # the hard key really is hard
    h = History("both", partition=by_key)
    hard_key(h, "hard", 11)  # first: checked one key after the other, it would go first
    illegal_key(h, "bad")
    model = Keyed()
    verdict = check_linearizable(h.entries, model, partition=by_key)
    assert isinstance(verdict, Violation)
    assert verdict.partition == "bad"
    # Counted by the model, not by the checker, and not by the wall clock.
    assert model.applied < 10_000
    # Every application is a step, but for one per search to say what the model expected
    # (the failing key is searched again in invocation order, for the story).
    assert verdict.steps + 2 == model.applied


def test_steps_add_up_across_partitions() -> None:
    h = History("keys", partition=by_key)
    for key in ("a", "b", "c"):
        entries = [h.invoke(f"{key}{i}", Operation("increment", (key,))) for i in range(6)]
        for i, entry in enumerate(reversed(entries)):
            h.end(entry, Returned(i + 1))
    model = Keyed()
    verdict = check_linearizable(h.entries, model, partition=by_key)
    assert isinstance(verdict, Linearizable)
    assert verdict.steps == model.applied
    apart = 0
    for key in ("a", "b", "c"):
        one = check_linearizable([e for e in h.entries if by_key(e.operation) == key], Keyed())
        apart += one.steps
    assert verdict.steps == apart
    assert len(verdict.order) == 18


def test_many_unknown_writes_stay_cheap() -> None:
    # Jepsen's etcd histories: timed-out writes (":info") pile up. Each may take effect
    # at any time after its call, or never. A state reached with a set of them placed is
    # pruned if a search with a subset of them placed failed from the same state.
    def history(seen: int) -> History:
        h = History("register")
        for value in range(1, 14):
            h.end(h.invoke(f"w{value}", write(value)), Unknown("timed out"))
        h.end(h.invoke("r", READ), Returned(seen))
        return h

    ok = check_linearizable(history(7).entries, ServerModel(Register))
    assert isinstance(ok, Linearizable)
    assert [e.operation for e in ok.order][-2:] == [write(7), READ]
    bad = check_linearizable(history(99).entries, ServerModel(Register))
    assert isinstance(bad, Violation)
    # About 60,000 steps, and as many again for the story; the old search ran out of its
    # 200,000 steps (inconclusive).
    assert bad.steps < 150_000


def test_a_time_limit_gives_inconclusive_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import trioserver.testing._linearizability as checker

    ticks = iter(range(1_000_000))
    monkeypatch.setattr(checker, "_clock", lambda: float(next(ticks)))  # 1 s a look
    h = History("hard", partition=by_key)
    hard_key(h, "hard", 11)
    verdict = check_linearizable(h.entries, Keyed(), partition=by_key, time_limit=2.5)
    assert isinstance(verdict, Inconclusive)
    assert verdict.partition == "hard"
    assert "time limit of 2.5 s" in verdict.reason
    assert verdict.steps < 10_000  # three turns, not the whole search
    assert isinstance(check_linearizable(h.entries, Keyed(), partition=by_key), Violation)


def test_a_full_memo_costs_steps_not_the_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    import trioserver.testing._linearizability as checker

    held: list[int] = []
    add = checker._Memo.add

    def counted(self: Any, *args: Any) -> Any:
        entry = add(self, *args)
        held.append(self.tally.remembered)
        return entry

    monkeypatch.setattr(checker._Memo, "add", counted)
    h = History("hard", partition=by_key)
    hard_key(h, "hard", 6)
    free = check_linearizable(h.entries, Keyed(), partition=by_key)
    assert isinstance(free, Violation)
    assert max(held) > 50
    held.clear()
    capped = check_linearizable(h.entries, Keyed(), partition=by_key, cache_limit=50)
    assert isinstance(capped, Violation)
    assert max(held) <= 50
    none = check_linearizable(h.entries, Keyed(), partition=by_key, cache_limit=0)
    assert isinstance(none, Violation)
    assert none.steps > 5 * free.steps  # 6! orders instead of 2**6 sets
    assert capped.steps > free.steps


def test_bad_limits_are_named_errors() -> None:
    with pytest.raises(ValueError, match="budget"):
        check_linearizable([], ServerModel(Register), budget=-1)
    with pytest.raises(ValueError, match="cache_limit"):
        check_linearizable([], ServerModel(Register), cache_limit=-1)
    with pytest.raises(ValueError, match="time_limit"):
        check_linearizable([], ServerModel(Register), time_limit=float("nan"))


@pytest.mark.parametrize(
    ("name", "linearizable"),
    [
        ("jepsen/etcd_002.log", True),  # 1.18M steps on the old checker: inconclusive
        ("jepsen/etcd_000.log", False),
        ("kv/c10-ok.txt", True),
        ("kv/c10-bad.txt", False),
    ],
)
def test_porcupines_histories_at_default_settings(name: str, linearizable: bool) -> None:
    from benchmarks.porcupine import check, expected_verdicts

    assert expected_verdicts()[name] is linearizable
    verdict = check(name)
    assert isinstance(verdict, Linearizable if linearizable else Violation)


# The prunings (unknown calls dominated, reads placed for good, failed states skipped,
# partitions in turns, a full memo) against a search with none of them.

EXAMPLES = int(os.environ.get("TRIOSERVER_CHECKER_EXAMPLES", "1000"))


class Cas(Model[int | None]):
    """A register per key, 0 at first: read, write, compare-and-set. (A write of the
    value a register holds changes nothing there, but not everywhere: a search may not
    take it for a read.)"""

    def initial(self) -> int | None:
        return 0

    def apply(self, state: int | None, operation: Operation) -> tuple[int | None, Result]:
        if operation.name == "read":
            return state, Returned(state)
        if operation.name == "write":
            return operation.args[1], Returned(None)
        _, expected, new = operation.args
        return (new, Returned(True)) if state == expected else (state, Returned(False))


def test_a_write_of_the_value_held_is_not_a_read() -> None:
    # write(0) on 0 changes nothing there, but the only linearization puts it after
    # write(1): a search that took it for a read (placed first, for good) would call this
    # history a violation. (The counter twin of property_tests found it: increment and
    # set(0) overlapping, then get() -> 0.)
    h = History("register", partition=by_key)
    zero = h.invoke("a", Operation("write", ("k", 0)))
    one = h.invoke("b", Operation("write", ("k", 1)))
    h.end(one, Returned(None))
    h.end(zero, Returned(None))
    h.end(h.invoke("c", Operation("read", ("k",))), Returned(0))
    assert brute_force(h.entries, Cas())
    verdict = check_linearizable(h.entries, Cas(), partition=by_key)
    assert isinstance(verdict, Linearizable)
    assert [e.operation.args for e in verdict.order] == [("k", 1), ("k", 0), ("k",)]


def brute_force(entries: list[Entry], model: Model[Any]) -> bool:
    """Every order that respects real time; unknown calls placed anywhere, or never."""

    def definite(entry: Entry) -> bool:
        return entry.ending is not None and not isinstance(entry.ending, Unknown)

    def end(entry: Entry) -> float:
        return float("inf") if entry.ended is None else entry.ended

    def search(state: Any, left: list[Entry]) -> bool:
        if not any(definite(e) for e in left):
            return True
        deadline = min(end(e) for e in left if definite(e))
        for entry in left:
            if entry.invoked > deadline:
                continue
            after, result = model.apply(state, entry.operation)
            ending = entry.ending
            if definite(entry) and ending is not None and not same_result(result, ending):
                continue
            if search(after, [e for e in left if e is not entry]):
                return True
        return False

    return search(model.initial(), list(entries))


OUTCOMES = st.sampled_from(["answered", "answered", "answered", "unknown", "never"])


@st.composite
def histories(draw: st.DrawFn) -> History:
    n = draw(st.integers(1, 7))
    ops = []
    for _ in range(n):
        key = draw(st.sampled_from("aab"))
        name = draw(st.sampled_from(["read", "write", "cas"]))
        args: tuple[Any, ...] = (key,)
        if name == "write":
            args = (key, draw(st.sampled_from([0, 1])))
        elif name == "cas":
            args = (key, draw(st.sampled_from([None, 0, 1])), draw(st.sampled_from([0, 1])))
        ops.append(Operation(name, args))
    # Events: each call, then later its ending; the order is drawn.
    events = draw(st.permutations([(i, 0) for i in range(n)] + [(i, 1) for i in range(n)]))
    h = History("drawn", partition=by_key)
    recorded: dict[int, Entry] = {}
    pending: list[tuple[int, int]] = []
    for i, kind in events:
        if kind == 0:
            recorded[i] = h.invoke(f"c{i}", ops[i])
            for j, _ in [p for p in pending if p[0] == i]:
                pending.remove((j, 1))
                end_drawn(draw, h, recorded[j])
        elif i in recorded:
            end_drawn(draw, h, recorded[i])
        else:
            pending.append((i, 1))
    return h


def end_drawn(draw: st.DrawFn, h: History, entry: Entry) -> None:
    outcome = draw(OUTCOMES)
    if outcome == "never":
        return
    if outcome == "unknown":
        h.end(entry, Unknown("cut"))
    elif entry.operation.name == "write":
        h.end(entry, Returned(None))
    elif entry.operation.name == "cas":
        h.end(entry, Returned(draw(st.booleans())))
    else:
        h.end(entry, Returned(draw(st.sampled_from([0, 1]))))


@hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None)
@hypothesis.given(histories(), st.sampled_from([None, 0, 3]))
def test_the_search_agrees_with_brute_force(h: History, cache_limit: int | None) -> None:
    limits = {} if cache_limit is None else {"cache_limit": cache_limit}
    verdict = check_linearizable(h.entries, Cas(), partition=by_key, **limits)
    keys = {by_key(e.operation) for e in h.entries}
    expected = all(
        brute_force([e for e in h.entries if by_key(e.operation) == key], Cas()) for key in keys
    )
    assert isinstance(verdict, Linearizable if expected else Violation)
    if isinstance(verdict, Linearizable):
        # The order is a linearization: replayed per key, every definite result matches.
        states: dict[Hashable, Any] = {}
        for entry in verdict.order:
            key = by_key(entry.operation)
            states[key], result = Cas().apply(states.get(key, 0), entry.operation)
            if entry.ending is not None and not isinstance(entry.ending, Unknown):
                assert same_result(result, entry.ending)
        placed = {id(e) for e in verdict.order}
        definite = [e for e in h.entries if e.ending is not None]
        assert all(id(e) in placed for e in definite if not isinstance(e.ending, Unknown))
