"""Serialized, time-limited servers for trio: one task owns the state, every call has a budget."""

from ._errors import CallTimeout as CallTimeout
from ._errors import DeadlockError as DeadlockError
from ._errors import InvalidServerDefinition as InvalidServerDefinition
from ._errors import ServerOverloaded as ServerOverloaded
from ._errors import ServerStopped as ServerStopped
from ._errors import TrioServerError as TrioServerError
from ._handler import call as call
from ._handler import cast as cast
from ._lifecycle import open_server as open_server
from ._lifecycle import serve as serve
from ._server import server as server
from ._statistics import ServerStatistics as ServerStatistics
from ._statistics import statistics as statistics

__all__ = [
    "CallTimeout",
    "DeadlockError",
    "InvalidServerDefinition",
    "ServerOverloaded",
    "ServerStatistics",
    "ServerStopped",
    "TrioServerError",
    "call",
    "cast",
    "open_server",
    "serve",
    "server",
    "statistics",
]

__version__ = "0.1.0"
