"""How much of each property suite runs by default, and how to run it all.

The fault-injection suites (test_faults, test_cleanup_faults, test_durable_faults,
test_ray_faults, test_opentelemetry, test_instrument_lifecycle) run a few dozen to a few
hundred scenarios in ``make test``;
``TRIOSERVER_FAULT_EXAMPLES=N`` runs N (or a stated fraction of N) per test: `fault_settings`.

``make test`` draws the same scenarios on every run (Hypothesis's ``derandomize``: the seed
follows from the test), so that the test command, and CI, give one verdict for one revision;
the large mode draws fresh seeds on every run, and is where the suites explore (run it before
a change is done; ``TRIOSERVER_FAULT_EXAMPLES=150`` draws fresh seeds at about the default
size). What the large mode finds is kept as an explicit ``@hypothesis.example``.

``make test`` runs a few seeds and a few hundred examples per test, so that the suite stays
quick on a small machine. ``TRIOSERVER_FULL_RACES=1`` runs what the issue asks for: 20 seeds
per race, 1,000 examples per correct twin. benchmarks/race_figures.py always runs it all and
measures it.
"""

from __future__ import annotations

import os

import hypothesis
from hypothesis import HealthCheck

FULL = os.environ.get("TRIOSERVER_FULL_RACES") == "1"
SEEDS = range(20) if FULL else range(3)
TWIN_EXAMPLES = 1000 if FULL else 200
MACHINE_TWIN_EXAMPLES = 1000 if FULL else 100

FAULT_EXAMPLES = int(os.environ.get("TRIOSERVER_FAULT_EXAMPLES", "0"))


def fault_settings(default: int, large: int | None = None) -> hypothesis.settings:
    """A fault suite's settings: `default` examples, the same on every run, or `large`
    (`FAULT_EXAMPLES` unless given), drawn fresh on every run, when
    ``TRIOSERVER_FAULT_EXAMPLES`` is set; no example database, the first failure only."""
    return hypothesis.settings(
        max_examples=(FAULT_EXAMPLES if large is None else large) or default,
        deadline=None,
        derandomize=not FAULT_EXAMPLES,
        database=None,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
