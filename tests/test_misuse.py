"""Misuse gets a named error at the earliest point, naming the class and method (guarantee 12).

Each test writes the mistake as a user would, and checks the error's type and that its
message names what was written and what to write instead. docs/misuse.md has one row per
mistake.
"""

from __future__ import annotations

import copy
import fractions
import inspect
import pickle
import traceback
import typing
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

import trioserver
import trioserver.testing
from trioserver import (
    HandleNotCopyable,
    TrioServerError,
    call,
    cast,
    open_server,
    serve,
    server,
    statistics,
)

from .expect import refused


def decorate(mark: Any, **options: object) -> Any:
    """`mark(**options)`, hidden from type checkers: the tests pass bad values on purpose."""
    return mark(**options)


# --- 1. a timeout beyond a float's range --------------------------------------------------


HUGE = [
    pytest.param(10**400, id="int"),
    pytest.param(fractions.Fraction(10**400, 3), id="fraction"),
]


@pytest.mark.parametrize("mark", [call, cast], ids=["call", "cast"])
@pytest.mark.parametrize("timeout", HUGE)
def test_handler_timeout_too_large_for_a_float_is_refused(mark: Any, timeout: object) -> None:
    # It raised a bare OverflowError ("int too large to convert to float"), naming nothing.
    with refused("Theater.reserve", "too large", "timeout=None"):

        class Theater:
            @decorate(mark, timeout=timeout)
            async def reserve(self, seat: str) -> str:
                return seat


@pytest.mark.parametrize("timeout", HUGE)
def test_server_timeout_too_large_for_a_float_is_refused(timeout: object) -> None:
    with refused("@server on", "Theater:", "too large", "timeout=None"):

        @decorate(server, timeout=timeout)
        class Theater:
            pass


def test_hugely_negative_timeout_is_refused_as_negative() -> None:
    with refused("Theater.reserve", ">= 0"):

        class Theater:
            @decorate(call, timeout=-(10**400))
            async def reserve(self, seat: str) -> str:
                return seat


# --- 2. when_full without a bounded mailbox -----------------------------------------------


@pytest.mark.parametrize("when_full", ["wait", "refuse"])
def test_when_full_without_mailbox_size_is_refused(when_full: str) -> None:
    # It was silently ignored: the mailbox has no bound, so it is never full.
    with refused("@server on", "Theater:", f"when_full={when_full!r}", "mailbox_size"):

        @decorate(server, when_full=when_full)
        class Theater:
            pass


# --- 3. lifecycle hooks that take more than self ------------------------------------------


SIGNATURES = ["self, x", "self, x=1", "self, *args", "self, *, x=1", "self, **kw", "", "*args"]


@pytest.mark.parametrize("hook", ["on_start", "on_stop"])
@pytest.mark.parametrize("signature", SIGNATURES)
def test_hook_with_parameters_other_than_self_is_refused(hook: str, signature: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"async def {hook}({signature}): pass", namespace)
    namespace[hook].__qualname__ = f"Theater.{hook}"
    with refused(f"Theater.{hook}({signature})", f"async def {hook}(self)"):
        server(type("Theater", (), {hook: namespace[hook]}))


def test_on_start_with_a_parameter_is_refused_as_written() -> None:
    with refused("Theater.on_start(self, payments):", "async def on_start(self)"):

        @server
        class Theater:
            async def on_start(self, payments: object) -> None:
                pass


@pytest.mark.parametrize("hook", ["on_start", "on_stop"])
@pytest.mark.parametrize("wrapper", [staticmethod, classmethod])
def test_static_or_class_method_hook_is_refused_by_what_it_is(hook: str, wrapper: Any) -> None:
    async def hook_fn(arg: object = None) -> None:
        pass

    with refused(f"Theater.{hook}", f"a {wrapper.__name__}", f"drop @{wrapper.__name__}"):
        server(type("Theater", (), {hook: wrapper(hook_fn)}))


# --- 4. the class given where a server object is needed -----------------------------------


@server
class Theater:
    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    @call
    async def reserve(self, seat: str, user: str) -> str:
        self.owner[seat] = user
        return seat

    @cast
    async def audit(self, note: str) -> None:
        pass


GIVEN_THE_CLASS = ("the server class Theater itself", "Theater(...)")


async def test_open_server_given_the_class_says_to_give_an_instance() -> None:
    # It said "type is not a server: decorate the class type with @server".
    with refused(*GIVEN_THE_CLASS):
        async with open_server(Theater):
            pass


async def test_serve_given_the_class_says_to_give_an_instance() -> None:
    async with trio.open_nursery() as nursery:
        with refused(*GIVEN_THE_CLASS):
            await nursery.start(serve, Theater)


def test_statistics_given_the_class_says_to_give_an_instance() -> None:
    with refused(*GIVEN_THE_CLASS):
        statistics(Theater)


async def test_open_server_given_a_plain_class_says_to_decorate_it_and_give_an_instance() -> None:
    class Plain:
        pass

    with refused("the class", "Plain", "@server", "Plain(...)"):
        async with open_server(Plain):
            pass


# --- 5. a mark left in a class body, applied to nothing -----------------------------------


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("call(42)", "@call(timeout=42)"),
        ("cast(0.5)", "@cast(timeout=0.5)"),
        ("call(None)", "@call(timeout=None)"),
        ("cast('x')", "@cast, or @cast(timeout=seconds)"),
        ("call(timeout=3)", "@call(timeout=3)"),
        ("cast(timeout=1, crash=True)", "@cast(timeout=1, crash=True)"),
        ("call()", "@call()"),
        ("call", "@call"),
        ("cast", "@cast"),
    ],
)
def test_mark_left_as_a_value_in_the_class_body_is_refused(written: str, meant: str) -> None:
    # It was left on the class as a stray decorator object.
    namespace: dict[str, Any] = {"call": call, "cast": cast}
    with refused(f"Theater.reserve = {written}", f"write {meant}", "def reserve(self"):
        exec(f"class Theater:\n    reserve = {written}\n", namespace)
        server(namespace["Theater"])


def test_mark_left_as_a_value_in_a_base_class_is_refused() -> None:
    class Base:
        reserve = decorate(call, timeout=3)

    with refused("Base.reserve = call(timeout=3)"):

        @server
        class Theater(Base):
            pass


# --- 6. copying or pickling a running server's handle -------------------------------------


COPIERS: list[Any] = [
    pytest.param(copy.copy, id="copy"),
    pytest.param(copy.deepcopy, id="deepcopy"),
    *(
        pytest.param(lambda obj, p=protocol: pickle.dumps(obj, p), id=f"pickle{protocol}")
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    ),
]


@pytest.mark.parametrize("copier", COPIERS)
async def test_copying_a_running_handle_is_refused(copier: Callable[[object], object]) -> None:
    # copy.copy made a second live handle on the same run; pickle failed with
    # "cannot pickle '_contextvars.Context' object".
    async with open_server(Theater()) as theater:
        with pytest.raises(HandleNotCopyable) as info:
            copier(theater)
        assert isinstance(info.value, TypeError)
        assert isinstance(info.value, TrioServerError)
        assert "Theater" in str(info.value)
        assert "stop it first" in str(info.value)
        assert await theater.reserve("A1", "ann") == "A1"  # still running


def _copies(obj: Theater) -> list[Theater]:
    return [copy.copy(obj), copy.deepcopy(obj), pickle.loads(pickle.dumps(obj))]


async def test_a_stopped_server_copies_as_a_fresh_server_object() -> None:
    theater = Theater()
    async with open_server(theater):
        await theater.reserve("A1", "ann")
    for duplicate in _copies(theater):
        assert duplicate.owner == {"A1": "ann"}
        assert "_trioserver_state" not in vars(duplicate)
        assert statistics(duplicate).handled == 0  # not the original's last run
        async with open_server(duplicate):
            assert await duplicate.reserve("A2", "bob") == "A2"
        assert duplicate.owner["A2"] == "bob"


def test_a_never_started_server_copies_as_a_plain_object() -> None:
    # As before; the guard above must not change it.
    theater = Theater()
    theater.owner["A1"] = "ann"
    for duplicate in _copies(theater):
        assert vars(duplicate) == {"owner": {"A1": "ann"}}


@server
class OwnState:
    """A server with its own __getstate__/__setstate__: they are kept."""

    def __init__(self) -> None:
        self.cache: dict[str, int] = {"x": 1}
        self.seen = 0

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["cache"] = {}  # not worth keeping
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.seen += 1

    @call
    def get(self) -> int:
        return self.seen


async def test_a_user_defined_getstate_is_kept_and_guarded() -> None:
    obj = OwnState()
    async with open_server(obj):
        with pytest.raises(HandleNotCopyable):
            pickle.dumps(obj)
    for duplicate in (copy.copy(obj), pickle.loads(pickle.dumps(obj))):
        assert vars(duplicate) == {"cache": {}, "seen": 1}
        async with open_server(duplicate):
            assert await duplicate.get() == 1


# --- 7. a forgotten await names the handle method -----------------------------------------


def _forget_await(make: Callable[[], object], label: str) -> None:
    with pytest.warns(RuntimeWarning, match=rf"^coroutine '{label}' was never awaited$"):
        make()  # the coroutine it returns is dropped at once (freed: no reference cycle)


async def test_a_forgotten_await_names_the_handle_method() -> None:
    # It warned "coroutine 'Runtime.call' was never awaited", naming an internal.
    theater = Theater()
    async with open_server(theater):
        _forget_await(lambda: theater.reserve("A1", "ann"), "Theater.reserve")
        _forget_await(lambda: theater.audit("note"), "Theater.audit")


def test_a_forgotten_await_on_a_server_never_started_names_the_handle_method() -> None:
    theater = Theater()
    _forget_await(lambda: theater.reserve("A1", "ann"), "Theater.reserve")


# --- 8. public names report the public module ---------------------------------------------


@pytest.mark.parametrize("name", trioserver.__all__)
def test_public_names_report_trioserver(name: str) -> None:
    obj = getattr(trioserver, name)
    assert obj.__module__ == "trioserver"
    assert obj.__qualname__ == name


@pytest.mark.parametrize("name", trioserver.testing.__all__)
def test_public_names_of_the_testing_module_report_it(name: str) -> None:
    obj = getattr(trioserver.testing, name)
    if hasattr(obj, "__module__") and callable(obj):
        assert obj.__module__ == "trioserver.testing"


def test_methods_of_public_classes_report_trioserver() -> None:
    assert trioserver.Supervisor.start.__module__ == "trioserver"
    assert trioserver.LoggingInstrument.call_finished.__module__ == "trioserver"


def test_a_public_error_reads_as_trioserver_dot_name() -> None:
    assert repr(trioserver.CallTimeout) == "<class 'trioserver.CallTimeout'>"
    lines = traceback.format_exception_only(trioserver.ServerStopped("gone"))
    assert lines == ["trioserver.ServerStopped: gone\n"]
    error = pickle.loads(pickle.dumps(trioserver.CallTimeout("late")))
    assert type(error) is trioserver.CallTimeout


@pytest.mark.parametrize(
    "name",
    [name for name in trioserver.__all__ if isinstance(getattr(trioserver, name), type)],
)
def test_type_hints_of_public_classes_still_resolve(name: str) -> None:
    # Their annotations are strings, evaluated in the module `__module__` names: reporting
    # `trioserver` there must not break them (it did, for ServerStatistics' `Mapping`).
    typing.get_type_hints(getattr(trioserver, name))


# --- 9. handle methods' generated source is shown -----------------------------------------


def test_handle_method_source_is_registered_in_linecache() -> None:
    code = Theater.reserve.__code__
    assert code.co_filename.startswith("<trioserver generated handle ")
    assert "Theater.reserve" in code.co_filename
    source = inspect.getsource(code)
    assert source.startswith("def reserve(self, seat, user):\n")
    assert "self._trioserver_state.call(_trioserver_method, (seat, user), None)" in source


def test_a_traceback_through_a_handle_method_shows_its_line() -> None:
    with pytest.raises(AttributeError) as info:
        Theater.reserve(object(), "A1", "ann")  # type: ignore[arg-type]
    text = "".join(traceback.format_exception(info.value))
    assert "<trioserver generated handle" in text
    assert "_trioserver_request = self._trioserver_state.call(" in text


def test_each_generated_handle_method_has_a_file_name_of_its_own() -> None:
    def make() -> type:
        @server
        class Theater:
            @call
            async def reserve(self, seat: str) -> str:
                return seat

        return Theater

    first, second = make(), make()
    first_code = first.reserve.__code__  # type: ignore[attr-defined]
    second_code = second.reserve.__code__  # type: ignore[attr-defined]
    assert first_code.co_filename != second_code.co_filename
    assert first_code.co_filename != Theater.reserve.__code__.co_filename
