"""Hypothesis settings suited to race tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.configuration


def race_settings(**changes: Any) -> hypothesis.settings:
    """Hypothesis settings for race tests: no deadline, and no "explain" phase.

    Each example is a whole trio run, so Hypothesis' per-example deadline only
    makes tests flaky on a busy machine; the explain phase re-runs a failing
    example many times over to annotate lines, which the story already does
    better, at many times the cost of finding the race.

    Args:
      **changes: Any other settings (``max_examples=500``, ``database=None``...).

    Returns:
      The settings, on top of the current profile.
    """
    phases = [phase for phase in hypothesis.Phase if phase is not hypothesis.Phase.explain]
    options: dict[str, Any] = {"deadline": None, "phases": phases}
    options.update(changes)
    return hypothesis.settings(**options)


def storage_home() -> Path:
    """Where race tests keep Hypothesis' storage when the user has not chosen a place.

    ``$XDG_CACHE_HOME/trioserver/hypothesis/<hash of the working directory>`` (``~/.cache``
    if unset), or a directory under the system's temporary directory if that cannot be made.

    Returns:
      The directory (made if missing).
    """
    key = hashlib.sha1(str(Path.cwd()).encode()).hexdigest()[:16]
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    for base in (Path(cache), Path(tempfile.gettempdir()) / f"trioserver-{os.getuid()}"):
        home = base / "trioserver" / "hypothesis" / key
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        return home
    return Path(tempfile.mkdtemp(prefix="trioserver-hypothesis-"))  # pragma: no cover


@contextlib.contextmanager
def hypothesis_storage() -> Generator[None]:
    """Inside the block, Hypothesis' storage (its ``.hypothesis/`` directory: the example
    database and its caches) is kept in `storage_home`, unless the user chose a place:
    ``HYPOTHESIS_STORAGE_DIRECTORY`` is set, or ``hypothesis.configuration.set_hypothesis_home_dir``
    was called with another directory than the default ``.hypothesis`` of the working
    directory."""
    configuration: Any = hypothesis.configuration
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield
        return
    current = configuration.storage_directory(intent_to_write=False).home_directory
    default = getattr(configuration, "__hypothesis_home_directory_default", None)
    if current not in (default, Path.cwd() / ".hypothesis"):
        yield  # the user chose it
        return
    configuration.set_hypothesis_home_dir(storage_home())
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(current)
