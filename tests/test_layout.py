"""The layout shows the architecture: no import cycles, trio's internals in one module, and Ray
imported only by the extra that needs it (`trioserver.ray`)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import trioserver

PACKAGE = Path(trioserver.__file__).parent

# What trioserver reads of trio's private run loop: only `_private` may name it (and the
# testing module's scheduler hook, which guards its own).
TRIO_PRIVATE = re.compile(
    r"trio\._|\bGLOBAL_RUN_CONTEXT\b|\.(_abort_func|_cancel_status|_cancel_points|"
    r"_schedule_points|_runner|_deadline|_registered_deadline|_shield|"
    r"_attempt_delivery_of_any_pending_cancel)\b"
)
ALLOWED_PRIVATE = {"_private.py", "testing/_scheduler.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every trioserver module `path` imports: at the top, in functions, or for types only."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("trioserver"):
                continue
            for alias in node.names:  # `from . import _loop` imports the module `_loop`
                candidate = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py")
                found.add(candidate if is_module.exists() else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("trioserver"))
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    # A package's __init__ only re-exports: importing `trioserver.testing` from inside it is
    # importing the submodules it names, so edges into a package stop at the package.
    return {name: _imports(path) & set(modules) for name, path in modules.items()}


def test_the_import_graph_of_trioserver_is_acyclic() -> None:
    graph = _graph()
    assert "trioserver._loop" in graph
    assert "trioserver._caller" in graph["trioserver._runtime"]  # the walk sees real edges
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        path.append(name)
        for target in sorted(graph[name]):
            if not target.endswith("trioserver") and target != "trioserver.testing":
                visit(target)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_trios_private_names_are_used_in_one_module_only() -> None:
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if TRIO_PRIVATE.search(path.read_text())
    )
    assert "_private.py" in users  # the pattern finds what it is meant to find
    assert set(users) <= ALLOWED_PRIVATE, users


# `trioserver.ray` is an extra: the package works, and says what to install, without Ray.


def test_importing_trioserver_does_not_import_ray() -> None:
    code = "import sys, trioserver; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def test_without_ray_the_import_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "try:\n    import trioserver.ray\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent
    )
    assert "pip install 'trioserver[ray]'" in done.stdout, done.stderr
