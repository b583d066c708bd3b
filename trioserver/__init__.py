"""Serialized, time-limited servers for trio: one task owns the state, every call has a budget."""

from ._blocking import BlockDetector as BlockDetector
from ._errors import CallTimeout as CallTimeout
from ._errors import DeadlockError as DeadlockError
from ._errors import ForeignRunError as ForeignRunError
from ._errors import HandleNotCopyable as HandleNotCopyable
from ._errors import InvalidServerDefinition as InvalidServerDefinition
from ._errors import NotInHandlerError as NotInHandlerError
from ._errors import NotTrioError as NotTrioError
from ._errors import ServerCrashed as ServerCrashed
from ._errors import ServerOverloaded as ServerOverloaded
from ._errors import ServerStopped as ServerStopped
from ._errors import StoreError as StoreError
from ._errors import TrioServerError as TrioServerError
from ._instrument import CallInfo as CallInfo
from ._instrument import Instrument as Instrument
from ._instrument import LoggingInstrument as LoggingInstrument
from ._instrument import add_instrument as add_instrument
from ._instrument import remove_instrument as remove_instrument
from ._lifecycle import open_server as open_server
from ._lifecycle import serve as serve
from ._lifecycle import start_server as start_server
from ._marks import call as call
from ._marks import cast as cast
from ._released import released as released
from ._server import server as server
from ._sqlite import SQLiteStore as SQLiteStore
from ._statistics import MethodStatistics as MethodStatistics
from ._statistics import ServerStatistics as ServerStatistics
from ._statistics import Timing as Timing
from ._statistics import statistics as statistics
from ._store import DeadCast as DeadCast
from ._store import Store as Store
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
    "DeadCast",
    "DeadlockError",
    "ForeignRunError",
    "HandleNotCopyable",
    "Instrument",
    "InvalidServerDefinition",
    "LoggingInstrument",
    "NotInHandlerError",
    "NotTrioError",
    "MethodStatistics",
    "ServerCrashed",
    "ServerOverloaded",
    "ServerStatistics",
    "SQLiteStore",
    "ServerStopped",
    "Store",
    "StoreError",
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
    "released",
    "remove_instrument",
    "serve",
    "start_server",
    "server",
    "statistics",
]

__version__ = "0.1.0"


from ._metadata import fixup_module_metadata as _fixup_module_metadata

_fixup_module_metadata(__name__, __all__, globals())
del _fixup_module_metadata
