"""Sphinx configuration for the trioserver docs.

Built with warnings as errors and ``nitpicky = True`` by ``make test``::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
    .venv/bin/python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest

The second command runs every ``testcode`` block of every page on trio's
virtual clock and compares what it prints with the ``testoutput`` below it,
so an example that drifts from the code fails the build.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

import trioserver  # noqa: E402

project = "trioserver"
author = "the trioserver authors"
copyright = "2025, the trioserver authors"
release = trioserver.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "myst_parser",
    "sphinxcontrib_trio",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Every cross-reference must resolve.
nitpicky = True
nitpick_ignore = [
    # Type variables in signatures (``open_server(obj: T) -> AsyncGenerator[T]``): a TypeVar
    # has no page of its own, here or anywhere.
    ("py:class", "T"),
    ("py:class", "trioserver._lifecycle.T"),
    ("py:class", "trioserver._server.T"),
    ("py:class", "S"),
    ("py:class", "P"),
    ("py:class", "R"),
    # psycopg's docs are not among the inventories kept offline (docs/_inventories).
    ("py:exc", "psycopg.ProgrammingError"),
]

# `name` in docstrings means a Python object, as in trio's docs.
default_role = "py:obj"

autodoc_member_order = "bysource"
# Signatures without annotations: `call` and `cast` have typing overloads that say nothing to
# a reader (ParamSpec plumbing); the docstrings say what each argument is.
autodoc_typehints = "none"
autodoc_preserve_defaults = True

# Google style, with the two sections trioserver adds to every public callable.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [
    ("Cancellation", "notes_style"),
    ("Errors", "notes_style"),
]

# Intersphinx, offline. The build runs where the network reaches package registries only, so
# Sphinx cannot download objects.inv from the projects' sites. docs/_inventories/ holds small
# inventories in the objects.inv format, listing just the objects these pages refer to with
# the URLs they have in each project's real docs; make_inventories.py there writes them (edit
# its lists and rerun it when a page refers to a new name). Links still go to the real sites.
_INV = "_inventories"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", f"{_INV}/python.inv"),
    "trio": ("https://trio.readthedocs.io/en/stable/", f"{_INV}/trio.inv"),
    "attrs": ("https://www.attrs.org/en/stable/", f"{_INV}/attrs.inv"),
    "hypothesis": ("https://hypothesis.readthedocs.io/en/latest/", f"{_INV}/hypothesis.inv"),
    "outcome": ("https://outcome.readthedocs.io/en/latest/", f"{_INV}/outcome.inv"),
    "ray": ("https://docs.ray.io/en/latest/", f"{_INV}/ray.inv"),
}
intersphinx_timeout = 1

# Doctests: each example imports what it uses and runs its own `main` on virtual time
# (``trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))``), so that it runs
# as pasted (tests/test_docs_blocks.py runs each alone). The one thing the examples share
# here is where trioserver's log lines go: beside the output, as ``LEVEL message``.
doctest_global_setup = """
import logging

class PrintLog(logging.Handler):  # shows trioserver's log lines in the examples' output
    def emit(self, record):
        print(f"{record.levelname} {record.getMessage()}")

_log = logging.getLogger("trioserver")
_log.handlers = [PrintLog()]
_log.propagate = False
"""
doctest_test_doctest_blocks = ""  # only explicit testcode/doctest directives run

html_theme = "furo"
html_title = f"trioserver {release}"
html_static_path: list[str] = []

# Google-style docstrings write `timeout` for the callable's own parameters, which have no
# target; a default-role reference to a bare lower-case identifier that resolves nowhere is
# shown as code instead of warning. Dotted or capitalised names (`trio.Cancelled`,
# `CallTimeout`) and every explicit role still must resolve.
_PARAMETER = re.compile(r"[a-z_][a-z0-9_]*\Z")


def _parameter_names(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py" or node.get("reftype") != "obj":
        return None
    target = node.get("reftarget", "")
    if target.startswith("@"):  # `@server`: the decorator `server`
        return env.domains["py"].resolve_xref(
            env, node["refdoc"], app.builder, "obj", target[1:], node, contnode
        )
    if node.get("refexplicit") or not _PARAMETER.match(node.get("reftarget", "")):
        return None
    from docutils import nodes

    return nodes.literal(node.astext(), node.astext())


# Napoleon reads an attribute docstring's first line "Text: more" as "type: description"
# (Google style's inline attribute type). trioserver annotates its attributes instead, and
# writes "Never started: the caller left", so the line is handed to napoleon as prose.
def _attribute_prose(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what == "attribute" and name.startswith("trioserver.") and lines and ":" in lines[0]:
        lines[:0] = ["..", ""]  # an empty comment as the "type" line: napoleon leaves the rest


# Pages that other parts of the project write (the testing module's and the benchmarks'). The
# contents list them; until a page exists, its toctree entry is left out, so that the build
# stays green while the page is being written, without ignoring any other warning.
OPTIONAL_PAGES = ("finding-races", "reference-testing", "performance")


def _leave_out_missing_pages(app: Any, docname: str, source: list[str]) -> None:
    if docname != "index":
        return
    missing = [page for page in OPTIONAL_PAGES if not (HERE / f"{page}.md").exists()]
    if missing:
        lines = source[0].splitlines(keepends=True)
        source[0] = "".join(line for line in lines if line.strip() not in missing)


# trioserver's public names report the module ``trioserver`` (``trioserver.CallTimeout``, as
# trio's report ``trio``), but their attributes' docstrings are in the private module that
# defines them. autodoc is told that module when it asks a class's (to find the attributes),
# and the attributes' docstrings are read from it.
def _defined_in() -> dict[tuple[str, str], str]:
    """(public module, class name) -> the private module that defines it."""
    found: dict[tuple[str, str], str] = {}
    for public, folder in (
        ("trioserver", "trioserver"),
        ("trioserver.testing", "trioserver/testing"),
    ):
        names = importlib.import_module(public).__all__
        for path in sorted((HERE.parent / folder).glob("_*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and node.name in names:
                    found[public, node.name] = f"{public}.{path.stem}"
    return found


_DEFINED_IN = _defined_in()


def _class_attribute(obj: Any, name: str, *default: Any) -> Any:
    if name == "__module__":
        module = getattr(obj, "__module__", None)
        if module in ("trioserver", "trioserver.testing"):
            return _DEFINED_IN.get((module, obj.__qualname__), module)
    from sphinx.util.inspect import safe_getattr

    return safe_getattr(obj, name, *default)


def _attribute_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what != "attribute" or lines or not name.startswith("trioserver."):
        return
    owner, _, attribute = name.rpartition(".")
    module, _, cls = owner.rpartition(".")
    defined_in = _DEFINED_IN.get((module, cls))
    if defined_in is None:
        return
    from sphinx.pycode import ModuleAnalyzer

    analyzer = ModuleAnalyzer.for_module(defined_in)
    analyzer.analyze()
    lines.extend(analyzer.attr_docs.get((cls, attribute), []))


# trioserver's public submodules (`trioserver.ray`) name the package's own errors as they
# import them, bare (`ServerStopped`): a bare name that their module does not document is
# looked up in `trioserver`.
def _package_names(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    module = node.get("py:module") or ""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not module.startswith("trioserver.") or "." in target:
        return None
    return env.domains["py"].resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], f"trioserver.{target}", node, contnode
    )


def setup(app: Any) -> None:
    app.add_autodoc_attrgetter(type, _class_attribute)
    app.connect("autodoc-process-docstring", _attribute_docstring, priority=300)
    app.connect("source-read", _leave_out_missing_pages)
    app.connect("autodoc-process-docstring", _attribute_prose, priority=400)  # before napoleon
    app.connect("missing-reference", _package_names, priority=800)
    app.connect("missing-reference", _parameter_names, priority=900)
