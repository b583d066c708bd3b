"""A local Ray cluster for the tests of `trioserver.ray`, started by the test run itself.

Ray reads its settings from the environment when it is imported, so `configure` runs when
conftest.py imports this module, before any test module imports Ray:

- its processes bind to this host's address unless told otherwise: the test cluster stays on
  the loopback interface (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which makes Ray use
  127.0.0.1, as it does on macOS and Windows);
- Ray 2.60 turns token authentication on, with a token it writes to ``~/.ray/auth_token``:
  the cluster gets a token of its own, in the environment (``RAY_AUTH_TOKEN``), which other
  drivers the tests start inherit; nothing is written to the home directory.

Fixture (import it into conftest.py): ``ray_cluster``, the session's cluster (two CPUs, no
dashboard, its files in a temporary directory), started on first use; it yields the
cluster's address. At the end it shuts the cluster down with ``ray.shutdown()``, puts the
environment back, and checks that none of the cluster's processes is left.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NAMESPACE = "trioserver-tests"
"""The Ray namespace of the tests' named servers."""

SETTINGS = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}
SAVED = {name: os.environ.get(name) for name in [*SETTINGS, "RAY_ADDRESS"]}


def configure() -> None:
    """Set Ray's environment for the test cluster (before Ray is imported)."""
    os.environ.update(SETTINGS)
    os.environ.pop("RAY_ADDRESS", None)  # (`ray.init` would join that cluster instead)


def restore() -> None:
    for name, value in SAVED.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


configure()


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (Linux's /proc; an empty set elsewhere)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # (a zombie has exited; its parent reaps it)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (the extra trioserver[ray])")
    # Ray keeps a session's files and logs in /tmp/ray unless told otherwise: a directory of
    # its own, removed at the end. Short, for Ray's unix sockets are in it.
    temp = tempfile.mkdtemp(prefix="trioserver-ray-")
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            namespace=NAMESPACE,
            logging_level="WARNING",
            log_to_driver=False,
            _temp_dir=temp,
        )
        yield ray.get_runtime_context().gcs_address
    finally:
        processes = descendants(os.getpid())
        ray.shutdown()
        restore()
        deadline = time.monotonic() + 30
        while (left := {pid for pid in processes if alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left after ray.shutdown(): {sorted(left)}"
