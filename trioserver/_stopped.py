"""A server object that is not running: never started, or stopped (or crashed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trio.lowlevel import current_task

from ._errors import ServerStopped, TrioServerError
from ._inline import run_inline
from ._statistics import ServerStatistics

if TYPE_CHECKING:
    from ._spec import Method, ServerSpec
    from ._state import ServerState


class NotRunning:
    """The state of a server object that is not running: every request gets `ServerStopped`
    (`ServerCrashed` after a crash)."""

    __slots__ = ("error", "last", "spec", "why")

    def __init__(
        self,
        spec: ServerSpec,
        why: str,
        last: ServerState | None = None,
        error: type[TrioServerError] = ServerStopped,
    ) -> None:
        self.spec = spec
        self.why = why
        self.last = last  # the run that ended, for statistics
        self.error = error

    def _refuse(self, method: Method) -> TrioServerError:
        return self.error(f"{method.label}: {self.spec.name} is not running: {self.why}")

    async def call(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
        last = self.last
        if last is not None and last.task is current_task():  # on_stop calling its own server
            return await run_inline(last, method, args, kwargs)
        raise self._refuse(method)

    async def cast(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> None:
        raise self._refuse(method)

    async def durable_cast(self, method: Method, args: tuple[Any, ...], kwargs: Any) -> None:
        raise self._refuse(method)

    def statistics(self) -> ServerStatistics:
        return ServerStatistics() if self.last is None else self.last.statistics()
