"""README.md says what is true: its Python example runs (on virtual time) and prints what the
README shows, the make targets it names exist, and its links lead to files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
BLOCKS = [(lang, body) for lang, body in FENCE.findall(README)]
PYTHON = [body for lang, body in BLOCKS if lang == "python"]


def output_after(block: str) -> str:
    """The ```text block that follows `block` in the README: what it prints."""
    index = [body for _, body in BLOCKS].index(block)
    lang, body = BLOCKS[index + 1]
    assert lang == "text", "a python block that prints is followed by a text block of its output"
    return body


def test_readme_has_a_python_example() -> None:
    assert PYTHON


@pytest.mark.parametrize("block", PYTHON)
def test_python_block_runs_and_prints_what_the_readme_shows(
    block: str, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, Any] = {"__name__": "readme"}  # not __main__: main() is ours to run
    exec(compile(block, "README.md", "exec"), namespace)
    assert 'if __name__ == "__main__":\n    trio.run(main)' in block, "runnable as a script"
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(namespace["main"], clock=clock)
    assert capsys.readouterr().out == output_after(block)
    # One 0.1 s payment (ann or bob), then cid's hung one, cut at its 0.5 s budget.
    assert clock.current_time() == pytest.approx(0.6)


def test_make_targets_named_in_the_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.MULTILINE))
    named = set(re.findall(r"`?make (\w+)`?", README))
    assert {"demo", "test", "docs", "bench"} <= named
    assert named <= targets


def test_links_lead_to_files() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert local
    for link in local:
        assert (ROOT / link).exists(), link
