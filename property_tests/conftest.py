"""What every property suite shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _quiet_trioserver_logger() -> Iterator[None]:
    """Casts' failures, supervisors' restarts and stops are logged; the scenarios make
    thousands. (Only while these tests run: tests/ read the logger's records.)"""
    logger = logging.getLogger("trioserver")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    yield
    logger.setLevel(level)
