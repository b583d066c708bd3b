"""Fixtures for every test module: the PostgreSQL servers of tests/postgres.py and the Ray
cluster of tests/ray_cluster.py (started only for the tests that ask for them; importing the
latter sets Ray's environment before any test module imports Ray). Tests marked ``crash``
(real processes killed at random moments, a minute or so each file) are skipped with
``TRIOSERVER_CRASH_TESTS=0``: `make test` runs them once, not in each of its four runs."""

from __future__ import annotations

import os

import pytest

from .postgres import pg, postgres, postgres_fsync  # noqa: F401 (fixtures)
from .ray_cluster import ray_cluster  # noqa: F401 (a fixture)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("TRIOSERVER_CRASH_TESTS", "1") != "0":
        return
    skip = pytest.mark.skip(
        reason="crash tests run once per `make test` (TRIOSERVER_CRASH_TESTS=0)"
    )
    for item in items:
        if item.get_closest_marker("crash") is not None:
            item.add_marker(skip)
