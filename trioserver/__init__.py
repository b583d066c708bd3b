"""Serialized, time-limited servers for trio: one task owns the state, every call has a budget."""

from ._blocking import BlockDetector as BlockDetector
from ._errors import CallTimeout as CallTimeout
from ._errors import DeadlockError as DeadlockError
from ._errors import ForeignRunError as ForeignRunError
from ._errors import HandleNotCopyable as HandleNotCopyable
from ._errors import InvalidServerDefinition as InvalidServerDefinition
from ._errors import NotTrioError as NotTrioError
from ._errors import ServerCrashed as ServerCrashed
from ._errors import ServerOverloaded as ServerOverloaded
from ._errors import ServerStopped as ServerStopped
from ._errors import TrioServerError as TrioServerError
from ._instrument import CallInfo as CallInfo
from ._instrument import Instrument as Instrument
from ._instrument import LoggingInstrument as LoggingInstrument
from ._instrument import add_instrument as add_instrument
from ._instrument import remove_instrument as remove_instrument
from ._lifecycle import open_server as open_server
from ._lifecycle import serve as serve
from ._marks import call as call
from ._marks import cast as cast
from ._server import server as server
from ._statistics import MethodStatistics as MethodStatistics
from ._statistics import ServerStatistics as ServerStatistics
from ._statistics import Timing as Timing
from ._statistics import statistics as statistics
from ._supervisor import Backoff as Backoff
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorStatistics as SupervisorStatistics
from ._supervisor import open_supervisor as open_supervisor
from ._trace import TraceInstrument as TraceInstrument

__all__ = [
    "Backoff",
    "BlockDetector",
    "CallInfo",
    "CallTimeout",
    "DeadlockError",
    "ForeignRunError",
    "HandleNotCopyable",
    "Instrument",
    "InvalidServerDefinition",
    "LoggingInstrument",
    "NotTrioError",
    "MethodStatistics",
    "ServerCrashed",
    "ServerOverloaded",
    "ServerStatistics",
    "ServerStopped",
    "Supervisor",
    "SupervisorStatistics",
    "Timing",
    "TraceInstrument",
    "TrioServerError",
    "add_instrument",
    "call",
    "cast",
    "open_server",
    "open_supervisor",
    "remove_instrument",
    "serve",
    "server",
    "statistics",
]

__version__ = "0.1.0"


def _fixup_module_metadata(module_name: str, names: list[str]) -> None:
    """Make each public name report ``trioserver``, where it is imported from, and not the
    private module that defines it (as trio and outcome do): ``trioserver.CallTimeout`` in
    tracebacks, reprs and the docs. Attributes defined in those classes report it too."""
    import typing

    seen: set[int] = set()

    def fix(obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = getattr(obj, "__module__", None)
        if not (isinstance(module, str) and module.startswith(module_name + "._")):
            return
        if isinstance(obj, type):
            resolve_annotations(obj)
        try:
            obj.__module__ = module_name
        except (AttributeError, TypeError):  # read-only, as on some builtins' wrappers
            return
        if isinstance(obj, type):
            for attribute in vars(obj).values():
                fix(getattr(attribute, "__func__", attribute))

    def resolve_annotations(cls: type) -> None:
        # `typing.get_type_hints` evaluates a class's string annotations in the module its
        # `__module__` names: evaluate them now, in the module that wrote them.
        own = vars(cls).get("__annotations__")
        if not own or not any(isinstance(value, str) for value in own.values()):
            return
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception:  # a name only imported for type checkers: leave them as written
            return
        cls.__annotations__ = {name: hints[name] for name in own}

    namespace = globals()
    for name in names:
        fix(namespace[name])


_fixup_module_metadata(__name__, __all__)
del _fixup_module_metadata
