"""Fault injection for durable casts: Hypothesis draws runs of a server on one SQLite file
(casters, cancellations, stops mid-flight, store failures); property_tests/durable_faults.py
checks the invariants (no acknowledged cast lost, one outcome per caller, commit order, ...).

Real time (the store works in threads), short: about 25 examples in ``make test``;
``TRIOSERVER_FAULT_EXAMPLES=N`` runs N // 4.
"""

from __future__ import annotations

from hypothesis import given

from property_tests.durable_faults import DurableScenario, check, durable_scenarios
from property_tests.scale import FAULT_EXAMPLES, fault_settings


@fault_settings(25, large=FAULT_EXAMPLES // 4)
@given(durable_scenarios())
def test_durable_casts_survive_stops_cancellations_and_store_faults(
    scenario: DurableScenario,
) -> None:
    check(scenario)
