"""Write the small intersphinx inventories that the docs build reads offline.

Run from anywhere: ``.venv/bin/python docs/_inventories/make_inventories.py``.

Why: the docs build runs in CI and on machines whose network reaches package
registries only, so intersphinx cannot download ``objects.inv`` from
docs.python.org or readthedocs. Each project below lists only the objects our
pages and docstrings refer to, with the URL each has in that project's real
documentation (checked against the projects' own doc sources), in the
``objects.inv`` version 2 format that Sphinx writes (a four-line header, then
``name domain:role priority uri dispname`` lines compressed with zlib). Links
in the built HTML therefore go to the real pages. When a page starts
referring to a new name, add it here and rerun; the build (nitpicky, warnings
as errors) says which names are missing.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).parent

# (name, domain:role, page#anchor). An anchor of "$" means "the name itself", as in Sphinx.
Entry = tuple[str, str, str]


def _py(page: str, role: str, *names: str) -> list[Entry]:
    return [(name, f"py:{role}", f"{page}#$") for name in names]


PYTHON: list[Entry] = [
    *_py(
        "library/exceptions.html",
        "exception",
        "BaseException",
        "Exception",
        "TypeError",
        "ValueError",
        "KeyError",
        "RuntimeError",
        "AssertionError",
        "KeyboardInterrupt",
        "SystemExit",
        "TimeoutError",
        "ExceptionGroup",
        "BaseExceptionGroup",
        "GeneratorExit",
    ),
    *_py("library/functions.html", "class", "bool", "float", "int", "object", "type"),
    *_py("library/functions.html", "function", "isinstance", "print", "repr"),
    *_py("library/stdtypes.html", "class", "str", "dict", "list", "tuple", "set"),
    *_py("library/constants.html", "data", "None", "True", "False"),
    ("typing", "py:module", "library/typing.html#module-typing"),
    *_py(
        "library/typing.html",
        "data",
        "typing.Any",
        "typing.NoReturn",
        "typing.Concatenate",
        "typing.Self",
    ),
    *_py(
        "library/typing.html",
        "class",
        "typing.TypeVar",
        "typing.ParamSpec",
        "typing.Protocol",
        "typing.Generic",
    ),
    *_py("library/typing.html", "function", "typing.assert_type", "typing.overload"),
    *_py(
        "library/collections.abc.html",
        "class",
        "collections.abc.AsyncGenerator",
        "collections.abc.AsyncIterator",
        "collections.abc.Awaitable",
        "collections.abc.Callable",
        "collections.abc.Coroutine",
    ),
    ("logging", "py:module", "library/logging.html#module-logging"),
    *_py("library/logging.html", "class", "logging.Logger", "logging.LogRecord"),
    *_py("library/logging.html", "function", "logging.getLogger"),
    *_py("library/logging.html", "data", "logging.WARNING"),
    ("contextvars", "py:module", "library/contextvars.html#module-contextvars"),
    *_py("library/contextvars.html", "class", "contextvars.ContextVar"),
    *_py("library/math.html", "data", "math.inf", "math.nan"),
    *_py("library/contextlib.html", "function", "contextlib.asynccontextmanager"),
    *_py("library/threading.html", "class", "threading.Lock"),
    *_py("library/time.html", "function", "time.time"),
    ("asyncio", "py:module", "library/asyncio.html#module-asyncio"),
    *_py("library/asyncio-sync.html", "class", "asyncio.Lock"),
    *_py("library/asyncio-queue.html", "class", "asyncio.Queue"),
    *_py("library/asyncio-task.html", "class", "asyncio.TaskGroup", "asyncio.Task"),
    *_py(
        "library/asyncio-task.html",
        "function",
        "asyncio.wait_for",
        "asyncio.timeout",
        "asyncio.create_task",
        "asyncio.shield",
    ),
    *_py("library/asyncio-exceptions.html", "exception", "asyncio.CancelledError"),
]

TRIO: list[Entry] = [
    ("trio", "py:module", "reference-core.html#module-trio"),
    *_py(
        "reference-core.html",
        "function",
        "trio.run",
        "trio.open_nursery",
        "trio.move_on_after",
        "trio.move_on_at",
        "trio.fail_after",
        "trio.fail_at",
        "trio.current_effective_deadline",
        "trio.current_time",
        "trio.sleep",
        "trio.sleep_until",
        "trio.sleep_forever",
    ),
    *_py(
        "reference-core.html",
        "exception",
        "trio.Cancelled",
        "trio.TooSlowError",
        "trio.ClosedResourceError",
        "trio.BrokenResourceError",
        "trio.BusyResourceError",
        "trio.WouldBlock",
        "trio.EndOfChannel",
    ),
    *_py(
        "reference-core.html",
        "class",
        "trio.CancelScope",
        "trio.Nursery",
        "trio.TaskStatus",
        "trio.Lock",
        "trio.Event",
        "trio.Semaphore",
        "trio.CapacityLimiter",
        "trio.MemorySendChannel",
        "trio.MemoryReceiveChannel",
    ),
    *_py(
        "reference-core.html",
        "method",
        "trio.Nursery.start",
        "trio.Nursery.start_soon",
        "trio.CancelScope.cancel",
        "trio.TaskStatus.started",
    ),
    *_py(
        "reference-core.html",
        "attribute",
        "trio.CancelScope.deadline",
        "trio.CancelScope.shield",
        "trio.CancelScope.cancelled_caught",
        "trio.CancelScope.cancel_called",
        "trio.Nursery.cancel_scope",
    ),
    *_py("reference-core.html", "data", "trio.TASK_STATUS_IGNORED"),
    *_py("reference-core.html", "function", "trio.open_memory_channel"),
    ("trio.to_thread", "py:module", "reference-core.html#module-trio.to_thread"),
    *_py(
        "reference-core.html",
        "function",
        "trio.to_thread.run_sync",
        "trio.from_thread.run",
        "trio.from_thread.run_sync",
    ),
    ("trio.testing", "py:module", "reference-testing.html#module-trio.testing"),
    *_py("reference-testing.html", "class", "trio.testing.MockClock"),
    *_py(
        "reference-testing.html",
        "attribute",
        "trio.testing.MockClock.autojump_threshold",
        "trio.testing.MockClock.rate",
    ),
    *_py("reference-testing.html", "method", "trio.testing.MockClock.jump"),
    *_py(
        "reference-testing.html",
        "function",
        "trio.testing.assert_checkpoints",
        "trio.testing.assert_no_checkpoints",
        "trio.testing.wait_all_tasks_blocked",
    ),
    *_py("reference-testing.html", "class", "trio.testing.Sequencer"),
    ("trio.lowlevel", "py:module", "reference-lowlevel.html#module-trio.lowlevel"),
    *_py("reference-lowlevel.html", "class", "trio.lowlevel.Task", "trio.lowlevel.RunVar"),
    *_py(
        "reference-lowlevel.html",
        "function",
        "trio.lowlevel.spawn_system_task",
        "trio.lowlevel.checkpoint",
        "trio.lowlevel.checkpoint_if_cancelled",
        "trio.lowlevel.current_task",
        "trio.lowlevel.current_root_task",
        "trio.lowlevel.wait_task_rescheduled",
        "trio.lowlevel.reschedule",
        "trio.lowlevel.cancel_shielded_checkpoint",
        "trio.lowlevel.add_instrument",
    ),
    *_py("reference-lowlevel.html", "class", "trio.abc.Instrument"),
    *_py("reference-core.html", "class", "trio.abc.Clock"),
]

ATTRS: list[Entry] = [
    ("attrs", "py:module", "api.html#module-attrs"),
    *_py(
        "api.html",
        "function",
        "attrs.frozen",
        "attrs.define",
        "attrs.field",
        "attrs.evolve",
        "attrs.asdict",
        "attrs.mutable",
    ),
    *_py("api.html", "exception", "attrs.exceptions.FrozenInstanceError"),
]

HYPOTHESIS: list[Entry] = [
    ("hypothesis", "py:module", "reference/api.html#module-hypothesis"),
    *_py(
        "reference/api.html",
        "function",
        "hypothesis.given",
        "hypothesis.assume",
        "hypothesis.note",
        "hypothesis.event",
        "hypothesis.target",
        "hypothesis.seed",
        "hypothesis.reproduce_failure",
    ),
    *_py(
        "reference/api.html",
        "class",
        "hypothesis.settings",
        "hypothesis.example",
        "hypothesis.Phase",
        "hypothesis.HealthCheck",
        "hypothesis.Verbosity",
    ),
    *_py(
        "reference/api.html",
        "attribute",
        "hypothesis.settings.max_examples",
        "hypothesis.settings.deadline",
        "hypothesis.settings.derandomize",
        "hypothesis.settings.stateful_step_count",
        "hypothesis.settings.database",
        "hypothesis.settings.suppress_health_check",
        "hypothesis.settings.print_blob",
    ),
    ("hypothesis.stateful", "py:module", "reference/api.html#module-hypothesis.stateful"),
    *_py(
        "reference/api.html",
        "class",
        "hypothesis.stateful.RuleBasedStateMachine",
        "hypothesis.stateful.Bundle",
    ),
    *_py(
        "reference/api.html",
        "function",
        "hypothesis.stateful.rule",
        "hypothesis.stateful.invariant",
        "hypothesis.stateful.precondition",
        "hypothesis.stateful.initialize",
        "hypothesis.stateful.consumes",
        "hypothesis.stateful.multiple",
        "hypothesis.stateful.run_state_machine_as_test",
    ),
    (
        "hypothesis.strategies",
        "py:module",
        "reference/strategies.html#module-hypothesis.strategies",
    ),
    *_py(
        "reference/strategies.html",
        "function",
        "hypothesis.strategies.integers",
        "hypothesis.strategies.floats",
        "hypothesis.strategies.sampled_from",
        "hypothesis.strategies.lists",
        "hypothesis.strategies.data",
        "hypothesis.strategies.randoms",
        "hypothesis.strategies.just",
        "hypothesis.strategies.text",
        "hypothesis.strategies.booleans",
    ),
    *_py(
        "reference/strategies.html",
        "class",
        "hypothesis.strategies.SearchStrategy",
        "hypothesis.strategies.DataObject",
    ),
    *_py(
        "reference/api.html",
        "exception",
        "hypothesis.errors.Flaky",
        "hypothesis.errors.InvalidArgument",
        "hypothesis.errors.Unsatisfiable",
    ),
]

OUTCOME: list[Entry] = [
    ("outcome", "py:module", "api.html#module-outcome"),
    *_py("api.html", "class", "outcome.Outcome", "outcome.Value", "outcome.Error"),
    *_py("api.html", "function", "outcome.capture", "outcome.acapture"),
    *_py("api.html", "method", "outcome.Outcome.unwrap", "outcome.Outcome.send"),
]

# Ray's API pages: one page per object, ray-core/api/doc/<name>.html.
RAY: list[Entry] = [
    ("ray", "py:module", "ray-core/api/core.html"),
    *[
        (name, "py:function", f"ray-core/api/doc/{name}.html#$")
        for name in (
            "ray.init",
            "ray.shutdown",
            "ray.remote",
            "ray.cancel",
            "ray.kill",
            "ray.get_actor",
        )
    ],
    ("ray.actor.ActorHandle", "py:class", "ray-core/api/doc/ray.actor.ActorHandle.html#$"),
]

PROJECTS: dict[str, tuple[str, list[Entry]]] = {
    "python": ("3.13", PYTHON),
    "trio": ("0.35", TRIO),
    "attrs": ("26.1", ATTRS),
    "hypothesis": ("6.170", HYPOTHESIS),
    "outcome": ("1.3", OUTCOME),
    "ray": ("2.60", RAY),
}


def inventory(project: str, version: str, entries: list[Entry]) -> bytes:
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    names = [name for name, _, _ in entries]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"{project}: listed twice: {sorted(duplicates)}"
    # "-" as display name means "the name itself".
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in sorted(entries))
    return header.encode() + zlib.compress(body.encode(), 9)


def main() -> None:
    for project, (version, entries) in PROJECTS.items():
        path = HERE / f"{project}.inv"
        path.write_bytes(inventory(project, version, entries))
        print(f"{path.name}: {len(entries)} objects")


if __name__ == "__main__":
    main()
