"""Guarantee 12: misuse is refused with InvalidServerDefinition naming the class and method.

Each bad definition below is written as a user would write it, in a class body,
and must be refused when the class is defined (or, for a class without
`@server`, on first use). The good cases check that what is accepted behaves as
documented, on virtual time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from trioserver import (
    CallTimeout,
    InvalidServerDefinition,
    call,
    cast,
    open_server,
    server,
    statistics,
)

from .expect import refused


def decorate(mark: Any, timeout: object) -> Any:
    """`mark(timeout=timeout)`, hidden from type checkers: the tests pass bad values on purpose."""
    return mark(timeout=timeout)


BAD_TIMEOUTS = [
    pytest.param(True, id="True"),
    pytest.param(False, id="False"),
    pytest.param(math.nan, id="nan"),
    pytest.param(-1, id="negative-int"),
    pytest.param(-0.001, id="negative-float"),
    pytest.param(-math.inf, id="minus-inf"),
    pytest.param("5", id="str"),
    pytest.param(b"5", id="bytes"),
    pytest.param(1j, id="complex"),
    pytest.param([5.0], id="list"),
]


# --- timeout: keyword-only, None or a real number >= 0 -------------------------------------


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
@pytest.mark.parametrize("timeout", BAD_TIMEOUTS)
def test_handler_timeout_must_be_none_or_a_number_at_least_zero(mark: Any, timeout: object) -> None:
    with refused("Theater.reserve", "timeout", repr(timeout)):

        class Theater:
            @decorate(mark, timeout)
            async def reserve(self, seat: str) -> str:
                return seat


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS)
def test_server_timeout_must_be_none_or_a_number_at_least_zero(timeout: object) -> None:
    with refused("Theater", "timeout", repr(timeout)):

        @decorate(server, timeout)
        class Theater:
            pass


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
@pytest.mark.parametrize("number", [4.0, 4, 0], ids=["float", "int", "zero"])
def test_handler_timeout_is_keyword_only(mark: Any, number: float) -> None:
    kind = mark.__name__
    with refused("Theater.reserve", f"@{kind}(timeout={number!r})"):

        class Theater:
            @mark(number)
            async def reserve(self, seat: str) -> str:
                return seat


@pytest.mark.parametrize("number", [5.0, 5, 0], ids=["float", "int", "zero"])
def test_server_timeout_is_keyword_only(number: float) -> None:
    with refused("Theater", f"@server(timeout={number!r})"):

        @server(number)
        class Theater:
            pass


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_handler_positional_none_timeout_is_refused(mark: Any) -> None:
    # A user who writes @call(None) means "no budget"; silently getting the 5 s default is a trap.
    with refused("Theater.reserve", "keyword-only"):

        class Theater:
            @mark(None)
            async def reserve(self, seat: str) -> str:
                return seat


def test_server_positional_none_timeout_is_refused() -> None:
    with refused("Theater", "keyword-only"):

        @server(None)
        class Theater:
            pass


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
@pytest.mark.parametrize("value", ["4", True], ids=["str", "bool"])
def test_handler_positional_non_number_is_refused(mark: Any, value: object) -> None:
    with refused(f"@{mark.__name__}"):

        class Theater:
            @mark(value)
            async def reserve(self, seat: str) -> str:
                return seat


@pytest.mark.parametrize("value", ["4", True], ids=["str", "bool"])
def test_handler_positional_non_number_names_the_method(value: object) -> None:
    with refused("Theater.reserve"):

        class Theater:
            @call(value)
            async def reserve(self, seat: str) -> str:
                return seat


# --- what a mark may decorate ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("outer", "inner"),
    [(call, call), (cast, cast), (call, cast), (cast, call)],
    ids=["call-call", "cast-cast", "call-cast", "cast-call"],
)
def test_marks_cannot_be_stacked(outer: Any, inner: Any) -> None:
    with refused("Theater.reserve", "twice"):

        class Theater:
            @outer
            @inner
            async def reserve(self, seat: str) -> str:
                return seat


def test_marks_cannot_be_stacked_with_timeouts() -> None:
    with refused("Theater.reserve", "twice"):

        class Theater:
            @call(timeout=1.0)
            @call(timeout=2.0)
            async def reserve(self, seat: str) -> str:
                return seat


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_mark_on_staticmethod_is_refused(mark: Any) -> None:
    with refused("Theater.reserve", "staticmethod"):

        class Theater:
            @mark
            @staticmethod
            async def reserve(seat: str) -> str:
                return seat


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_mark_on_classmethod_is_refused(mark: Any) -> None:
    with refused("Theater.reserve", "classmethod"):

        class Theater:
            @mark
            @classmethod
            async def reserve(cls, seat: str) -> str:
                return seat


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_mark_on_property_is_refused(mark: Any) -> None:
    with refused("property"):

        class Theater:
            @mark
            @property
            def seats(self) -> int:
                return 0


def test_mark_on_property_names_the_method() -> None:
    with refused("Theater.seats"):

        class Theater:
            @call
            @property
            def seats(self) -> int:
                return 0


class _Callable:
    def __call__(self, owner: object) -> None:
        pass


def _function(owner: object, seat: str) -> str:
    return seat


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
@pytest.mark.parametrize(
    "thing",
    [_Callable(), functools.partial(_function, None), print, type("Plain", (), {})],
    ids=["callable-instance", "partial", "builtin", "class"],
)
def test_mark_on_non_function_is_refused(mark: Any, thing: object) -> None:
    # Python gives no method name here (the object is marked before the class sees it), so
    # the message names the object and says what a mark is for.
    with refused("def or async def"):

        class Theater:
            reserve = mark(thing)


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_generator_handler_is_refused(mark: Any) -> None:
    with refused("Theater.seats", "generator"):

        class Theater:
            @mark
            def seats(self) -> Iterator[str]:
                yield "A1"


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_async_generator_handler_is_refused(mark: Any) -> None:
    with refused("Theater.seats", "generator"):

        class Theater:
            @mark
            async def seats(self) -> Any:
                yield "A1"


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_handler_without_self_is_refused(mark: Any) -> None:
    with refused("Theater.reserve", "self"):

        class Theater:
            @mark
            async def reserve() -> None:
                pass


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_handler_whose_first_parameter_is_keyword_only_is_refused(mark: Any) -> None:
    with refused("Theater.reserve", "self"):

        class Theater:
            @mark
            async def reserve(*, seat: str) -> None:
                pass


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_handler_taking_only_star_args_is_refused(mark: Any) -> None:
    with refused("Theater.reserve", "self"):

        class Theater:
            @mark
            async def reserve(*args: object) -> None:
                pass


def test_reserved_parameter_name_is_refused_or_works() -> None:
    refusal = ""
    try:

        @server
        class Theater:
            @call
            def reserve(self, _trioserver_method: str) -> str:
                return _trioserver_method

    except InvalidServerDefinition as error:
        refusal = str(error)
    if refusal:
        assert "Theater.reserve" in refusal
        return

    async def main() -> None:
        async with open_server(Theater()) as theater:
            assert await theater.reserve("A1") == "A1"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --- what @server may decorate ---------------------------------------------------------------


def test_server_on_function_is_refused() -> None:
    with refused("book", "class"):

        @server
        def book() -> None:
            pass


def test_server_with_timeout_on_function_is_refused() -> None:
    with refused("book", "class"):

        @server(timeout=1.0)
        def book() -> None:
            pass


def test_server_on_instance_is_refused() -> None:
    class Theater:
        pass

    with refused("Theater", "class"):
        server(Theater())


def test_server_twice_on_a_class_is_refused() -> None:
    with refused("Theater", "already"):

        @server
        @server
        class Theater:
            @call
            def who(self, seat: str) -> str:
                return seat


def test_server_twice_with_timeouts_is_refused() -> None:
    with refused("Theater", "already"):

        @server(timeout=1.0)
        @server(timeout=2.0)
        class Theater:
            pass


# --- lifecycle hooks -------------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["on_start", "on_stop"])
def test_hook_that_is_plain_def_is_refused(hook: str) -> None:
    def plain(self: object) -> None:
        pass

    with refused(f"Theater.{hook}", "async def"):
        server(type("Theater", (), {hook: plain}))


def test_plain_def_on_start_is_refused_as_written() -> None:
    with refused("Theater.on_start", "async def"):

        @server
        class Theater:
            def on_start(self) -> None:
                pass


def test_plain_def_on_stop_is_refused_as_written() -> None:
    with refused("Theater.on_stop", "async def"):

        @server
        class Theater:
            def on_stop(self) -> None:
                pass


@pytest.mark.parametrize("hook", ["on_start", "on_stop"])
@pytest.mark.parametrize("wrapper", [staticmethod, classmethod], ids=["static", "class"])
def test_hook_that_is_not_an_instance_method_is_refused(hook: str, wrapper: Any) -> None:
    async def hook_fn(arg: object = None) -> None:
        pass

    with refused(f"Theater.{hook}", "async def"):
        server(type("Theater", (), {hook: wrapper(hook_fn)}))


@pytest.mark.parametrize("hook", ["on_start", "on_stop"])
@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
def test_hook_marked_as_handler_is_refused(hook: str, mark: Any) -> None:
    async def hook_fn(self: object) -> None:
        pass

    hook_fn.__qualname__ = f"Theater.{hook}"
    with refused(f"Theater.{hook}", f"@{mark.__name__}"):
        server(type("Theater", (), {hook: mark(hook_fn)}))


def test_on_start_marked_call_is_refused_as_written() -> None:
    with refused("Theater.on_start", "@call"):

        @server
        class Theater:
            @call
            async def on_start(self) -> None:
                pass


def test_on_stop_marked_cast_with_timeout_is_refused_as_written() -> None:
    with refused("Theater.on_stop", "@cast"):

        @server
        class Theater:
            @cast(timeout=1.0)
            async def on_stop(self) -> None:
                pass


# --- reserved names --------------------------------------------------------------------------


def test_reserved_attribute_name_is_refused() -> None:
    with refused("Theater._trioserver_cache", "reserved"):

        @server
        class Theater:
            _trioserver_cache: dict[str, str] = {}  # noqa: RUF012


def test_reserved_method_name_is_refused() -> None:
    with refused("Theater._trioserver_helper", "reserved"):

        @server
        class Theater:
            def _trioserver_helper(self) -> None:
                pass


def test_reserved_handler_name_is_refused() -> None:
    with refused("Theater._trioserver_reserve", "reserved"):

        @server
        class Theater:
            @call
            async def _trioserver_reserve(self) -> None:
                pass


def test_reserved_name_in_a_base_class_is_refused() -> None:
    class Mixin:
        _trioserver_state = "mine"

    with refused("Mixin._trioserver_state", "reserved"):

        @server
        class Theater(Mixin):
            pass


def test_names_merely_containing_trioserver_are_fine() -> None:
    @server
    class Theater:
        trioserver_note = "ok"
        _trio_server = "ok"
        __trioserver = "ok"  # name-mangled to _Theater__trioserver

    assert Theater.trioserver_note == "ok"


# --- classes whose instances have no __dict__ ------------------------------------------------


def test_attrs_slotted_class_is_refused_with_advice() -> None:
    with refused("Theater", "__dict__", "slots=False"):

        @server
        @attrs.define
        class Theater:
            seats: int = 0

            @call
            def count(self) -> int:
                return self.seats


def test_plain_slotted_class_is_refused_with_advice() -> None:
    with refused("Theater", "__dict__", "__slots__"):

        @server
        class Theater:
            __slots__ = ("seats",)


async def test_attrs_class_without_slots_is_accepted(autojump_clock: trio.abc.Clock) -> None:
    @server
    @attrs.define(slots=False)
    class Theater:
        seats: int = 0

        @call
        def take(self) -> int:
            self.seats += 1
            return self.seats

    async with open_server(Theater(seats=3)) as theater:
        assert await theater.take() == 4
        assert statistics(theater).handled == 1


async def test_slotted_class_with_dict_slot_is_accepted(autojump_clock: trio.abc.Clock) -> None:
    @server
    class Theater:
        __slots__ = ("__dict__", "seats")

        def __init__(self) -> None:
            self.seats = 0

        @call
        def take(self) -> int:
            self.seats += 1
            return self.seats

    async with open_server(Theater()) as theater:
        assert await theater.take() == 1


# --- marks in a class without @server: refused on first use ----------------------------------


class Unserved:
    @call
    async def reserve(self, seat: str) -> str:
        return seat

    @cast
    def audit(self, note: str) -> None:
        pass


@pytest.mark.parametrize("method", ["reserve", "audit"])
def test_marked_method_in_class_without_server_is_refused_on_first_use(method: str) -> None:
    obj = Unserved()
    with refused(f"Unserved.{method}", "@server"):
        getattr(obj, method)


def test_marked_method_on_the_class_itself_is_the_mark() -> None:
    # Reading it off the class (help(), introspection) must not raise.
    assert Unserved.reserve.name == "reserve"


async def test_open_server_on_class_without_server_is_refused() -> None:
    with refused("Unserved", "@server"):
        async with open_server(Unserved()):
            pass  # pragma: no cover


def test_statistics_on_class_without_server_is_refused() -> None:
    with refused("Unserved", "@server"):
        statistics(Unserved())


@server
class Base:
    @call(timeout=2.0)
    async def wait(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "base"

    @call
    def greet(self) -> str:
        return "base"

    @call
    def shout(self) -> str:
        return "BASE"


def test_new_mark_in_undecorated_subclass_of_a_server_is_refused_on_first_use() -> None:
    class Sub(Base):
        @call
        def extra(self) -> str:
            return "sub"

    with refused("Sub.extra", "@server"):
        Sub().extra  # noqa: B018


# --- accepted definitions and what they mean -------------------------------------------------


async def test_bare_server_and_bare_call_give_the_default_budget_of_five_seconds(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Theater:
        @call
        async def wait(self, seconds: float) -> float:
            await trio.sleep(seconds)
            return trio.current_time()

        @call()
        async def wait_parens(self, seconds: float) -> float:
            await trio.sleep(seconds)
            return trio.current_time()

    async with open_server(Theater()) as theater:
        assert await theater.wait(4.9) == pytest.approx(4.9)
        assert await theater.wait_parens(4.9) == pytest.approx(9.8)
        start = trio.current_time()
        with pytest.raises(CallTimeout, match=r"Theater\.wait did not finish within .*\b5 s"):
            await theater.wait(6.0)
        assert trio.current_time() - start == pytest.approx(5.0)
        start = trio.current_time()
        with pytest.raises(CallTimeout, match=r"Theater\.wait_parens .*\b5 s"):
            await theater.wait_parens(6.0)
        assert trio.current_time() - start == pytest.approx(5.0)


async def test_server_timeout_none_means_handlers_have_no_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server(timeout=None)
    class Theater:
        @call
        async def wait(self, seconds: float) -> float:
            await trio.sleep(seconds)
            return trio.current_effective_deadline()

    async with open_server(Theater()) as theater:
        assert await theater.wait(10_000.0) == math.inf
        assert statistics(theater).timed_out == 0


@pytest.mark.parametrize("budget", [2, 2.5, 0.25], ids=["int", "float", "fraction-of-a-second"])
async def test_int_and_float_budgets_cut_at_start_plus_budget(
    autojump_clock: trio.abc.Clock, budget: float
) -> None:
    @server
    class Theater:
        @call(timeout=budget)
        async def wait(self, seconds: float) -> str:
            await trio.sleep(seconds)
            return "done"

    async with open_server(Theater()) as theater:
        assert await theater.wait(budget * 0.9) == "done"
        start = trio.current_time()
        with pytest.raises(CallTimeout, match=rf"Theater\.wait .*budget of {budget:g} s"):
            await theater.wait(budget * 2)
        assert trio.current_time() - start == pytest.approx(budget)


async def test_server_timeout_is_the_default_for_bare_handlers_only(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server(timeout=1)
    class Theater:
        @call
        async def default(self) -> None:
            await trio.sleep(1.5)

        @call(timeout=3.0)
        async def own(self) -> None:
            await trio.sleep(1.5)

    async with open_server(Theater()) as theater:
        with pytest.raises(CallTimeout, match=r"budget of 1 s"):
            await theater.default()
        await theater.own()


async def test_timeout_zero_cuts_a_handler_that_waits_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Theater:
        @call(timeout=0)
        async def wait(self) -> None:
            await trio.sleep(1.0)

        @call(timeout=0)
        def instant(self) -> str:
            return "ok"

    async with open_server(Theater()) as theater:
        start = trio.current_time()
        with pytest.raises(CallTimeout, match=r"Theater\.wait .*budget of 0 s"):
            await theater.wait()
        assert trio.current_time() == start
        assert await theater.instant() == "ok"


@pytest.mark.parametrize("no_limit", [None, math.inf], ids=["None", "inf"])
async def test_call_timeout_inf_means_no_budget_like_none(
    autojump_clock: trio.abc.Clock, no_limit: float | None
) -> None:
    @server(timeout=1.0, admission=False)  # admission would refuse the 3 s caller below
    class Theater:
        @decorate(call, no_limit)
        async def wait(self, seconds: float) -> float:
            deadline = trio.current_effective_deadline()
            await trio.sleep(seconds)
            return deadline

        @call
        async def bounded(self, seconds: float) -> float:
            await trio.sleep(seconds)
            return trio.current_effective_deadline()

    async with open_server(Theater()) as theater:
        assert await theater.wait(1_000_000.0) == math.inf
        with pytest.raises(CallTimeout):  # the control: the server default does cut
            await theater.bounded(2.0)
        # The caller's deadline still applies, and is the only one.
        start = trio.current_time()
        with trio.move_on_after(3.0) as scope:
            await theater.wait(10.0)
        assert scope.cancelled_caught
        assert trio.current_time() - start == pytest.approx(3.0)
        await trio.testing.wait_all_tasks_blocked()
        stats = statistics(theater)
        assert (stats.handled, stats.timed_out) == (1, 2)


async def test_server_timeout_inf_means_no_budget(autojump_clock: trio.abc.Clock) -> None:
    @server(timeout=math.inf)
    class Theater:
        @call
        async def wait(self, seconds: float) -> float:
            await trio.sleep(seconds)
            return trio.current_effective_deadline()

    async with open_server(Theater()) as theater:
        assert await theater.wait(1_000_000.0) == math.inf
        assert statistics(theater).timed_out == 0


@pytest.mark.parametrize("no_limit", [None, math.inf], ids=["None", "inf"])
async def test_cast_timeout_inf_means_no_budget_like_none(
    autojump_clock: trio.abc.Clock, no_limit: float | None
) -> None:
    @server(timeout=1.0)
    class Theater:
        def __init__(self) -> None:
            self.done = trio.Event()

        @decorate(cast, no_limit)
        async def slow(self, seconds: float) -> None:
            await trio.sleep(seconds)
            self.done.set()

    async with open_server(Theater()) as theater:
        await theater.slow(1_000_000.0)
        await theater.done.wait()
        stats = statistics(theater)
        assert (stats.handled, stats.timed_out) == (1, 0)


async def test_cast_budget_cuts_it(autojump_clock: trio.abc.Clock) -> None:
    # The control for the test above: a finite cast budget is enforced.
    @server
    class Theater:
        @cast(timeout=2)
        async def slow(self, seconds: float) -> None:
            await trio.sleep(seconds)

    async with open_server(Theater()) as theater:
        await theater.slow(1_000_000.0)
        await trio.sleep(2.0)
        await trio.testing.wait_all_tasks_blocked()
        stats = statistics(theater)
        assert (stats.handled, stats.timed_out) == (0, 1)


# --- inheritance -----------------------------------------------------------------------------


async def test_subclass_decorated_again_keeps_and_overrides_handlers(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server
    class Sub(Base):
        @call
        def greet(self) -> str:
            return "sub"

        def shout(self) -> str:
            return "plain"

        @cast
        def note(self, text: str) -> None:
            self.text = text

    async with open_server(Sub()) as sub:
        assert await sub.wait(1.0) == "base"  # inherited, through the server
        with pytest.raises(CallTimeout, match=r"wait .*budget of 2 s"):  # with its own budget
            await sub.wait(3.0)
        assert await sub.greet() == "sub"  # overridden, through the server
        await sub.note("hello")
        await trio.testing.wait_all_tasks_blocked()
        assert sub.text == "hello"
        before = statistics(sub)
        assert (before.handled, before.timed_out) == (3, 1)
        assert sub.shout() == "plain"  # a plain method now: no await, no server
        assert statistics(sub) == before

    async with open_server(Base()) as base:  # the base class is unchanged
        assert await base.greet() == "base"
        assert await base.shout() == "BASE"


async def test_plain_method_overriding_a_handler_works_without_a_running_server() -> None:
    @server
    class Sub(Base):
        def greet(self) -> str:
            return "plain"

    assert Sub().greet() == "plain"


async def test_marks_from_a_plain_base_class_are_collected(autojump_clock: trio.abc.Clock) -> None:
    class Mixin:
        @call(timeout=1.0)
        async def wait(self, seconds: float) -> str:
            await trio.sleep(seconds)
            return "mixin"

    @server
    class Theater(Mixin):
        pass

    async with open_server(Theater()) as theater:
        assert await theater.wait(0.5) == "mixin"
        with pytest.raises(CallTimeout, match=r"Theater\.wait"):
            await theater.wait(2.0)


# --- handler signatures all work through the handle ------------------------------------------

SENTINEL = object()


@server
class Signatures:
    @call
    async def defaults(self, a: int, b: int = 2, c: object = SENTINEL) -> tuple[int, int, object]:
        await trio.lowlevel.checkpoint()
        return (a, b, c)

    @call
    def keyword_only(self, a: int, *, key: str, flag: bool = False) -> tuple[int, str, bool]:
        return (a, key, flag)

    @call
    async def star_args(self, first: int, *rest: int) -> tuple[int, tuple[int, ...]]:
        return (first, rest)

    @call
    def star_kwargs(self, a: int, **options: object) -> tuple[int, dict[str, object]]:
        return (a, options)

    @call
    async def positional_only(self, a: int, b: int = 0, /, c: int = 0) -> tuple[int, int, int]:
        return (a, b, c)

    @call
    def positional_only_and_kwargs(self, a: int, /, **kw: int) -> tuple[int, dict[str, int]]:
        return (a, kw)

    @call
    def everything(
        self, a: int, /, b: int, *args: int, c: int, d: int = 4, **kw: int
    ) -> tuple[object, ...]:
        return (a, b, args, c, d, kw)

    @call
    def one(self, only: int) -> int:
        return only

    @call
    def this_not_self(this, x: int) -> tuple[bool, int]:
        return (isinstance(this, Signatures), x)

    @cast
    def cast_keyword_only(self, *, note: str, times: int = 1) -> None:
        self.notes = [note] * times


async def test_signatures_with_defaults_work_through_the_handle(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Signatures()) as h:
        assert await h.defaults(1) == (1, 2, SENTINEL)  # the default object itself
        assert await h.defaults(1, 3) == (1, 3, SENTINEL)
        assert await h.defaults(1, c="x") == (1, 2, "x")
        assert await h.defaults(b=5, a=4) == (4, 5, SENTINEL)
        assert statistics(h).handled == 4


async def test_keyword_only_parameters_work_through_the_handle(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Signatures()) as h:
        assert await h.keyword_only(1, key="k") == (1, "k", False)
        assert await h.keyword_only(key="k", a=2, flag=True) == (2, "k", True)


async def test_star_args_and_kwargs_work_through_the_handle(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Signatures()) as h:
        assert await h.star_args(1) == (1, ())
        assert await h.star_args(1, 2, 3) == (1, (2, 3))
        assert await h.star_args(*[4, 5]) == (4, (5,))
        assert await h.star_kwargs(1) == (1, {})
        assert await h.star_kwargs(1, x=2, y="z") == (1, {"x": 2, "y": "z"})
        assert await h.star_kwargs(**{"a": 3, "b": 4}) == (3, {"b": 4})


async def test_positional_only_parameters_work_through_the_handle(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Signatures()) as h:
        assert await h.positional_only(1) == (1, 0, 0)
        assert await h.positional_only(1, 2, 3) == (1, 2, 3)
        assert await h.positional_only(1, c=3) == (1, 0, 3)
        # A positional-only name is free for **kwargs, as in Python.
        assert await h.positional_only_and_kwargs(1, a=2) == (1, {"a": 2})


async def test_every_kind_of_parameter_at_once_works_through_the_handle(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_server(Signatures()) as h:
        assert await h.everything(1, 2, c=3) == (1, 2, (), 3, 4, {})
        assert await h.everything(1, 2, 5, 6, c=3, d=7, e=8) == (1, 2, (5, 6), 3, 7, {"e": 8})
        assert await h.one(9) == 9
        assert await h.one(only=9) == 9
        assert await h.this_not_self(5) == (True, 5)
        await h.cast_keyword_only(note="n", times=2)
        await trio.testing.wait_all_tasks_blocked()
        assert h.notes == ["n", "n"]
        assert statistics(h).handled == 6


async def test_inherited_bare_mark_follows_the_subclass_default_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    @server(timeout=1.0)
    class Base:
        @call
        async def wait(self, seconds: float) -> float:
            await trio.sleep(seconds)
            return trio.current_time()

        @call(timeout=2.0)
        async def own(self, seconds: float) -> float:
            await trio.sleep(seconds)
            return trio.current_time()

    @server(timeout=10.0)
    class Sub(Base):
        pass

    async with open_server(Sub()) as sub:
        assert await sub.wait(5.0) == 5.0  # the subclass's 10 s, not the base's 1 s
        with pytest.raises(CallTimeout, match="budget of 2 s"):
            await sub.own(5.0)  # an explicit budget stays
    async with open_server(Base()) as base:
        with pytest.raises(CallTimeout, match="budget of 1 s"):
            await base.wait(5.0)
