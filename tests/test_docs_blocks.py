"""Every Python code block of the docs (docs/**/*.md) and of README.md runs as pasted.

Each block is written to a file in a fresh temporary directory and run there by this venv's
interpreter, in a process of its own, with nothing run before it: no shared set-up, no block
of the same page before it. A block that is followed by its output (a ``testoutput``, or
in markdown a paragraph "It prints..." and a ``text`` block) must print that output.
trioserver's log lines, which the doctest build prints as ``LEVEL message`` beside the
output, are not on standard output in a pasted run: they must be on standard error instead
(Python's last-resort handler prints each message there). A name that a block uses but does
not define fails too, even in code the run does not reach (ruff's undefined-name check).

A block that does not run alone says so in the page, on the line just above it, with a
comment that the rendered page does not show:

- in a reST block (``eval-rst``): ``.. fragment: NAME, why``;
- in MyST markdown: ``% fragment: NAME, why``.

``fragment`` is for a block that continues an earlier one or is not a program;
``needs-service`` instead of ``fragment`` marks a block that needs a server this test does not
start (a Ray cluster of its own, a PostgreSQL database). ``SKIPPED`` below lists every marked
block by name, and the test checks that the marked blocks are exactly those.

The blocks run two at a time (the test machines have two cores); each has ``TIMEOUT``
seconds.
"""

from __future__ import annotations

import concurrent.futures
import doctest
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TIMEOUT = 120.0
WORKERS = 2

SKIPPED = {
    "overload-deadline-block": "fragment",
    "cancellation-sleeper": "fragment",
    "cancellation-worker": "fragment",
    "contract-fast": "fragment",
    "contract-fragile": "fragment",
    "races-model": "fragment",
    "races-hunt": "fragment",
    "races-replay": "fragment",
    "races-fixed": "fragment",
    "races-released": "fragment",
    "races-guarded-pool": "fragment",
    "races-threads": "fragment",
    "casts-stop": "fragment",
    "lifecycle-errors": "fragment",
    "overload-bounded": "fragment",
    "overload-trace": "fragment",
    "supervision-backoff": "fragment",
    "supervision-intensity": "fragment",
    "tutorial-withdrawn": "fragment",
    # A second process in front of a Ray cluster that a first one (shop.py) started, itself
    # running until Ctrl+C; the first Ray block (theater.py) runs here, as pasted.
    "ray-shop": "needs-service",
    "ray-till": "needs-service",
    # A PostgreSQL server at a made-up address; the store's tests run one (tests/postgres.py).
    "postgres-mailer": "needs-service",
}
"""The blocks marked as not running alone: a fragment, or one that needs a service."""

MARKER = re.compile(r"^\s*(?:%|\.\.) (fragment|needs-service): ([\w.-]+)\b")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(.*?)\s*$")
DIRECTIVE = re.compile(r"^(\s*)\.\. ([\w-]+)::\s*(.*?)\s*$")
LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$")

PYTHON_FENCES = {"python", "py", "python3", "{code-block} python", "{code} python", "{testcode}"}
RST_CODE = {
    ("testcode", ""),
    ("code-block", "python"),
    ("code", "python"),
    ("sourcecode", "python"),
}
# Blocks of Python this test cannot run as a program: none is used; if one appears, the test
# fails (it would otherwise be skipped silently).
UNSUPPORTED_FENCES = {"pycon", "{doctest}", "{testsetup}", "{testcleanup}"}
UNSUPPORTED_RST = {"doctest", "testsetup", "testcleanup"}


@attrs.frozen
class Block:
    """One Python code block of a page."""

    page: str  # relative to the repository
    line: int  # of the first line of code, 1-based
    code: str
    output: str | None  # what the page shows it prints, if it does
    marker: tuple[str, str] | None  # (kind, name) from the comment above it

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    found = [
        path
        for path in sorted(DOCS.rglob("*.md"))
        if not {"_build", "_inventories"} & set(path.relative_to(DOCS).parts)
    ]
    return [*found, ROOT / "README.md"]


def directive_body(lines: list[str], start: int) -> tuple[list[str], int, int]:
    """The content of a reST directive whose body starts at `start`: (its lines, dedented,
    without the options; the index of its first line; the index of the line after it)."""
    after = start
    while after < len(lines) and (not lines[after].strip() or lines[after][:1].isspace()):
        after += 1
    while after > start and not lines[after - 1].strip():
        after -= 1
    first = start
    while first < after and (not lines[first].strip() or lines[first].lstrip()[:1] == ":"):
        first += 1  # blank lines and options (`:hide:`) come before the content
    body = lines[first:after]
    indent = min((len(line) - len(line.lstrip()) for line in body if line.strip()), default=0)
    return [line[indent:] if line.strip() else "" for line in body], first, after


def marker_above(lines: list[str], index: int) -> tuple[str, str] | None:
    """The marker on the nearest non-blank line above `index`, if it is one."""
    i = index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i < 0:
        return None
    found = MARKER.match(lines[i])
    return (found[1], found[2]) if found else None


def rst_blocks(page: str, lines: list[str], offset: int) -> Iterator[Block]:
    """The code blocks of reST text whose first line is line `offset` + 1 of the page."""
    i = 0
    while i < len(lines):
        directive = DIRECTIVE.match(lines[i])
        if directive is None:
            i += 1
            continue
        name, argument = directive[2], directive[3]
        if name in UNSUPPORTED_RST:
            raise AssertionError(f"{page}:{offset + i + 1}: a `{name}` block cannot run alone")
        if (name, argument) not in RST_CODE and not (name == "testcode" and argument):
            i += 1
            continue
        code, first, after = directive_body(lines, i + 1)
        output = None
        j = after
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and DIRECTIVE.match(lines[j]) and "testoutput" in lines[j]:
            output = "\n".join(directive_body(lines, j + 1)[0]) + "\n"
        code_text = "\n".join(code) + "\n"
        yield Block(page, offset + first + 1, code_text, output, marker_above(lines, i))
        i = after


def printed_below(lines: list[str], start: int) -> str | None:
    """The output shown after a markdown code block that ends at `start`: a paragraph that
    begins "It prints", then a ``text`` block."""
    paragraph = []
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    while i < len(lines) and lines[i].strip():
        paragraph.append(lines[i])
        i += 1
    if not paragraph or not paragraph[0].startswith("It prints"):
        return None
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or lines[i].strip() != "```text":
        return None
    end = next(n for n in range(i + 1, len(lines)) if lines[n].startswith("```"))
    return "\n".join(lines[i + 1 : end]) + "\n"


def closes(line: str, chars: str) -> bool:
    """Whether `line` closes a fence opened with `chars`: the same character, at least as
    many, and nothing else."""
    fence = FENCE.match(line)
    return bool(fence and not fence[3] and fence[2][0] == chars[0] and fence[2] >= chars)


def markdown_blocks(page: str, lines: list[str], offset: int = 0) -> Iterator[Block]:
    """The code blocks of MyST text whose first line is line `offset` + 1 of the page."""
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        chars, info = fence[2], fence[3]
        end = i + 1
        while end < len(lines) and not closes(lines[end], chars):
            end += 1
        body = lines[i + 1 : end]
        where = f"{page}:{offset + i + 1}"
        assert info not in UNSUPPORTED_FENCES, f"{where}: a `{info}` block cannot run alone"
        if info in PYTHON_FENCES:
            skip = 0
            while skip < len(body) and body[skip].startswith(":"):  # a directive's options
                skip += 1
            code = "\n".join(body[skip:]) + "\n"
            output = printed_below(lines, end + 1)
            yield Block(page, offset + i + 2 + skip, code, output, marker_above(lines, i))
        elif info == "{eval-rst}":
            yield from rst_blocks(page, body, offset + i + 1)
        elif info.startswith("{") and not info.startswith("{code"):
            # A directive whose content is markdown (a note, a toctree...): look inside.
            yield from markdown_blocks(page, body, offset + i + 1)
        i = end + 1


def blocks_of(path: Path) -> list[Block]:
    page = path.relative_to(ROOT).as_posix()
    return list(markdown_blocks(page, path.read_text(encoding="utf-8").splitlines()))


BLOCKS = [block for path in pages() for block in blocks_of(path)]
TO_RUN = [block for block in BLOCKS if block.marker is None]


def run_block(block: Block) -> subprocess.CompletedProcess[str]:
    """Run `block` as a user who pasted it into a file would: `python block.py`, in an empty
    directory, with this venv's interpreter and this tree's trioserver."""
    with tempfile.TemporaryDirectory(prefix="trioserver-docs-") as folder:
        (Path(folder) / "block.py").write_text(block.code, encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        env.pop("RAY_ADDRESS", None)  # a Ray block starts a cluster of its own, as pasted
        env["RAY_TMPDIR"] = folder
        return subprocess.run(
            [sys.executable, "block.py"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest) -> Iterator[dict[str, concurrent.futures.Future[Any]]]:
    """The selected blocks, started two at a time as soon as the first test asks."""
    selected = {
        item.callspec.params["block"].id
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is sys.modules[__name__]
        and hasattr(item, "callspec")
        and isinstance(item.callspec.params.get("block"), Block)
    }
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = {
            block.id: pool.submit(run_block, block) for block in TO_RUN if block.id in selected
        }
        yield futures
        for future in futures.values():
            future.cancel()


def printed(output: str) -> tuple[str, list[str]]:
    """The testoutput a page shows, split: (what is printed, the log messages)."""
    lines, logged = [], []
    for line in output.splitlines(keepends=True):
        log = LOG_LINE.match(line)
        if log:
            logged.append(log[2])
        else:
            lines.append(line)
    return "".join(lines), logged


CHECKER = doctest.OutputChecker()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("block", TO_RUN, ids=[block.id for block in TO_RUN])
def test_block_runs_as_pasted(
    block: Block, runs: dict[str, concurrent.futures.Future[Any]]
) -> None:
    if "import ray" in block.code:
        pytest.importorskip("ray", reason="Ray is not installed (the extra trioserver[ray])")
    result = runs[block.id].result()
    assert result.returncode == 0, f"{block.id} failed when run alone:\n{result.stderr}"
    if block.output is None:
        return
    shown, logged = printed(block.output)
    assert CHECKER.check_output(shown, result.stdout, FLAGS), (
        f"{block.id} printed\n{result.stdout}\nwhere the page shows\n{shown}"
    )
    for message in logged:  # Python's last-resort handler: the message alone, on stderr
        pattern = message.replace("...", "\x00")
        expected = re.escape(pattern).replace("\x00", ".*")
        assert re.search(expected, result.stderr), (
            f"{block.id}: the log line {message!r} is not on standard error:\n{result.stderr}"
        )


def test_the_skipped_blocks_are_exactly_the_marked_ones() -> None:
    marked = [block.marker for block in BLOCKS if block.marker is not None]
    names = [name for _, name in marked]
    assert len(names) == len(set(names)), f"two blocks are marked with one name: {names}"
    assert {name: kind for kind, name in marked} == SKIPPED


def test_every_page_is_read() -> None:
    """The parser finds the blocks: the index's example, a python fence, a nested note."""
    ids = {block.id.split(":")[0] for block in TO_RUN}
    assert {"docs/index.md", "docs/tutorial.md", "README.md"} <= ids
    assert len(TO_RUN) >= 50


def test_no_block_names_what_it_does_not_define(tmp_path: Path) -> None:
    """A name used in a branch the run does not take (a handler never called) must be defined
    too: ruff's undefined-name check (F821) over every block that runs alone."""
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed beside this interpreter (the extra trioserver[dev])")
    files = {}
    for n, block in enumerate(TO_RUN):
        path = tmp_path / f"block{n}.py"
        path.write_text(block.code, encoding="utf-8")
        files[path.name] = block.id
    result = subprocess.run(
        [str(ruff), "check", "--isolated", "--select", "F821", "--output-format", "concise", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    found = [
        f"{files[line.split(':')[0]]}: {line.split(': ', 1)[1]}"
        for line in result.stdout.splitlines()
        if line.split(":")[0] in files
    ]
    assert not found, "\n".join(found)
    assert result.returncode == 0, result.stdout + result.stderr
