"""The linearizability checker on hand-built histories."""

from __future__ import annotations

from trioserver.testing import (
    History,
    Inconclusive,
    Linearizable,
    Operation,
    Raised,
    Refused,
    Returned,
    ServerModel,
    Unknown,
    Violation,
    check_linearizable,
)


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
