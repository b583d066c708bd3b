"""A handler calling its own server, from its own task: the handler runs inline, at once.

It runs inside the outer handler's budget and turn: queueing it would wait on itself.
"""

from __future__ import annotations

from typing import Any

from trio.lowlevel import checkpoint

from ._spec import Method


async def run_inline(obj: object, method: Method, args: tuple[Any, ...], kwargs: Any) -> Any:
    await checkpoint()
    if kwargs is None:
        kwargs = {}
    if method.is_async:
        return await method.run(obj, *args, **kwargs)
    return method.run(obj, *args, **kwargs)
