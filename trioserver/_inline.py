"""A handler calling its own server, from its own task: the handler runs inline, at once.

It runs inside the outer handler's budget and turn: queueing it would wait on itself. So
would a guarded method whose guard is false: that is a `DeadlockError`, at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trio.lowlevel import checkpoint

from ._errors import DeadlockError
from ._guards import holds_inline

if TYPE_CHECKING:
    from ._spec import Method
    from ._state import ServerState


async def run_inline(state: ServerState, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
    await checkpoint()
    obj = state.obj
    if method.guard is not None and not holds_inline(state, method, obj):
        raise DeadlockError(
            f"{method.label} was called by a handler of its own server, and its guard is "
            f"false: it would wait for a change only the server can make, while the server "
            f"waits for it. Check the condition in the handler instead."
        )
    if kwargs is None:
        kwargs = {}
    if method.is_async:
        return await method.run(obj, *args, **kwargs)
    return method.run(obj, *args, **kwargs)
