"""Fault injection for durable casts: Hypothesis draws runs of a server on one SQLite file
(casters, cancellations, stops mid-flight, store failures); property_tests/durable_faults.py
checks the invariants (no acknowledged cast lost, one outcome per caller, commit order, ...).

Real time (the store works in threads), short: about 25 examples in ``make test``;
``TRIOSERVER_FAULT_EXAMPLES=N`` runs N // 4.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import hypothesis
import pytest
from hypothesis import HealthCheck, given

from property_tests.durable_faults import DurableScenario, check, durable_scenarios

EXAMPLES = int(os.environ.get("TRIOSERVER_FAULT_EXAMPLES", "0")) // 4


@pytest.fixture(autouse=True)
def _quiet_trioserver_logger() -> Iterator[None]:
    logger = logging.getLogger("trioserver")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    yield
    logger.setLevel(level)


@hypothesis.settings(
    max_examples=EXAMPLES or 25,
    deadline=None,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(durable_scenarios())
def test_durable_casts_survive_stops_cancellations_and_store_faults(
    scenario: DurableScenario,
) -> None:
    check(scenario)
