"""The private path: on only for the trio versions it was read against, off by one switch.

Every other test runs with it on and again with ``TRIOSERVER_PRIVATE=0`` (`make test`).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trioserver import _private


def _run(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PATH": ""},
    )
    return result.stdout + result.stderr


def test_the_private_path_is_found_on_the_trio_it_was_read_against() -> None:
    low, high = _private.TESTED_TRIO_VERSIONS
    version = tuple(int(part) for part in trio.__version__.split(".")[:2])
    assert (low <= version < high) == _private.SUPPORTED


def test_another_trio_version_turns_it_off_with_one_warning_naming_the_cost() -> None:
    out = _run(
        """
        import trio
        trio.__version__ = "0.99.0"
        import trioserver, trioserver._private as p
        print("enabled", p.ENABLED, "supported", p.SUPPORTED)
        """
    )
    assert "enabled False supported False" in out
    assert out.count("RuntimeWarning") == 1
    assert "public trio only" in out
    assert "slower" in out


def test_the_switch_turns_it_off_without_a_warning() -> None:
    out = _run(
        """
        import trioserver._private as p
        print("enabled", p.ENABLED, "supported", p.SUPPORTED)
        """,
        TRIOSERVER_PRIVATE="0",
    )
    assert "enabled False supported" in out
    assert "Warning" not in out


def test_missing_internals_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _private._find() is not None or not _private.SUPPORTED
    monkeypatch.setattr(_private, "_deadline_is_apart_from_its_timer", lambda: False)
    assert _private._find() is None
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "trio._core._traps", None)  # an import that fails
    assert _private._find() is None


@settings(database=None, deadline=None, max_examples=200)
@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.floats(min_value=1.0, max_value=100.0)), st.booleans()),
        max_size=6,
    )
)
def test_the_deadline_read_is_trios_under_any_nesting_of_deadlines_and_shields(
    scopes: list[tuple[float | None, bool]],
) -> None:
    # each scope: its deadline (None: none) and whether it shields; innermost last. The read
    # walks out to the first shield (its deadline counted) or past the root, taking the least
    async def main() -> None:
        with contextlib.ExitStack() as stack:
            for deadline, shield in scopes:
                scope = stack.enter_context(trio.CancelScope(shield=shield))
                if deadline is not None:
                    scope.deadline = trio.current_time() + deadline
            task = trio.lowlevel.current_task()
            assert _private.effective_deadline(task) == trio.current_effective_deadline()

    trio.run(main, clock=trio.testing.MockClock())
