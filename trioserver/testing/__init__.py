"""Find the races a server still has: Hypothesis state machines and scenarios on virtual time.

Needs Hypothesis (``pip install trioserver[testing]``). Everything runs on
public trio and Hypothesis APIs, except the scheduler hook described in
`hook_available` (guarded by trio version and a probe, with a fallback).
"""

from ._errors import IncompleteHistory as IncompleteHistory
from ._errors import ModelMismatch as ModelMismatch
from ._errors import NondeterministicTest as NondeterministicTest
from ._errors import RaceFound as RaceFound
from ._errors import RunStuck as RunStuck
from ._history import Ending as Ending
from ._history import Entry as Entry
from ._history import History as History
from ._history import Operation as Operation
from ._history import Raised as Raised
from ._history import Refused as Refused
from ._history import Result as Result
from ._history import Returned as Returned
from ._history import Unknown as Unknown
from ._history import classify as classify
from ._linearizability import Inconclusive as Inconclusive
from ._linearizability import Linearizable as Linearizable
from ._linearizability import Verdict as Verdict
from ._linearizability import Violation as Violation
from ._linearizability import check_linearizable as check_linearizable
from ._machine import ServerMachine as ServerMachine
from ._machine import initialize as initialize
from ._machine import invariant as invariant
from ._machine import rule as rule
from ._model import GuardIsFalse as GuardIsFalse
from ._model import Model as Model
from ._model import ServerModel as ServerModel
from ._model import Snapshot as Snapshot
from ._model import freeze as freeze
from ._report import story as story
from ._report import timeline as timeline
from ._scenario import ClientOperation as ClientOperation
from ._scenario import ScenarioTest as ScenarioTest
from ._scenario import call_operations as call_operations
from ._scenario import check_scenarios as check_scenarios
from ._scenario import operation as operation
from ._scheduler import Decision as Decision
from ._scheduler import Deviation as Deviation
from ._scheduler import SchedulingFallbackWarning as SchedulingFallbackWarning
from ._scheduler import hook_available as hook_available
from ._scheduler import schedules as schedules
from ._scheduler import steer as steer
from ._settings import race_settings as race_settings
from ._steps import Scenario as Scenario
from ._steps import Step as Step
from ._verify import Checked as Checked
from ._verify import Run as Run

__all__ = [
    "Checked",
    "ClientOperation",
    "Decision",
    "Deviation",
    "Ending",
    "Entry",
    "GuardIsFalse",
    "History",
    "Inconclusive",
    "IncompleteHistory",
    "Linearizable",
    "Model",
    "ModelMismatch",
    "NondeterministicTest",
    "Operation",
    "RaceFound",
    "Raised",
    "Refused",
    "Result",
    "Returned",
    "Run",
    "RunStuck",
    "Scenario",
    "ScenarioTest",
    "SchedulingFallbackWarning",
    "ServerMachine",
    "ServerModel",
    "Snapshot",
    "Step",
    "Unknown",
    "Verdict",
    "Violation",
    "call_operations",
    "check_linearizable",
    "check_scenarios",
    "classify",
    "freeze",
    "hook_available",
    "initialize",
    "invariant",
    "operation",
    "race_settings",
    "rule",
    "schedules",
    "steer",
    "story",
    "timeline",
]

from .._metadata import fixup_module_metadata as _fixup_module_metadata

_fixup_module_metadata(__name__, __all__, globals())
del _fixup_module_metadata
