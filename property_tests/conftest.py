"""What every property suite shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from property_tests.scale import FAULT_EXAMPLES


@pytest.fixture(autouse=True)
def _quiet_trioserver_logger() -> Iterator[None]:
    """Casts' failures, supervisors' restarts and stops are logged; the scenarios make
    thousands. (Only while these tests run: tests/ read the logger's records.)"""
    logger = logging.getLogger("trioserver")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    yield
    logger.setLevel(level)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The large mode (``TRIOSERVER_FAULT_EXAMPLES``) runs for as long as it takes: the
    per-test limit of ``make test`` (pytest-timeout, by SIGALRM) would land in a scenario's
    trio run and be reported as a TrioInternalError that does not replay."""
    if FAULT_EXAMPLES:
        for item in items:
            item.add_marker(pytest.mark.timeout(0))
