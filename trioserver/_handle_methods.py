"""Handle methods: what ``handle.method`` is once `@server` has collected the marks.

Each is generated with the handler's own parameter list (as attrs and
dataclasses generate ``__init__``), so Python itself binds the arguments in the
caller: a wrong call raises `TypeError` there, at once, and queues nothing.
"""

from __future__ import annotations

import inspect
import linecache
from collections.abc import Callable
from types import CodeType
from typing import TYPE_CHECKING, Any

from ._cleanup import sent_shielded

if TYPE_CHECKING:
    from ._spec import Method

_P = inspect.Parameter


def handle_method(method: Method) -> Callable[..., Any]:
    """Build the function that sends `method`'s requests to the running server."""
    fn = method.fn
    params = list(inspect.signature(fn).parameters.values())
    last_positional_only = max(
        (i for i, p in enumerate(params) if p.kind is _P.POSITIONAL_ONLY), default=-1
    )
    namespace: dict[str, Any] = {"_trioserver_method": method}
    signature: list[str] = []
    positional: list[str] = []
    keywords: list[str] = []
    star_written = False
    for index, param in enumerate(params):
        name = param.name
        if param.kind is _P.VAR_POSITIONAL:
            signature.append(f"*{name}")
            positional.append(f"*{name}")
            star_written = True
        elif param.kind is _P.VAR_KEYWORD:
            signature.append(f"**{name}")
            keywords.append(f"**{name}")
        else:
            if param.kind is _P.KEYWORD_ONLY and not star_written:
                signature.append("*")
                star_written = True
            if param.default is _P.empty:
                signature.append(name)
            else:
                namespace[f"_trioserver_d{index}"] = param.default
                signature.append(f"{name}=_trioserver_d{index}")
            if index == 0:
                pass  # self: the handle itself, not an argument of the handler
            elif param.kind is _P.KEYWORD_ONLY:
                keywords.append(f"{name!r}: {name}")
            else:
                positional.append(name)
        if index == last_positional_only:
            signature.append("/")
    self_name = params[0].name
    namespace["_trioserver_label"] = method.label
    args = "(" + ", ".join(positional) + ("," if len(positional) == 1 else "") + ")"
    kwargs = "{" + ", ".join(keywords) + "}" if keywords else "None"
    # The request's coroutine is named after the handle method, so that a forgotten `await`
    # warns "coroutine 'Theater.reserve' was never awaited", not the runtime's own name:
    # one attribute store per call (docs/misuse.md gives its measured cost).
    entry = "durable_cast" if method.durable is not None else method.kind
    send = f"{self_name}._trioserver_state.{entry}(_trioserver_method, {args}, {kwargs})"
    if method.cleanup:  # sent, and awaited, shielded (`_cleanup`)
        namespace["_trioserver_shielded"] = sent_shielded
        send = (
            f"_trioserver_shielded({self_name}._trioserver_state.{entry}, "
            f"_trioserver_method, {args}, {kwargs})"
        )
    source = (
        f"def {method.name}({', '.join(signature)}):\n"
        f"    _trioserver_request = {send}\n"
        f"    _trioserver_request.__qualname__ = _trioserver_label\n"
        f"    return _trioserver_request\n"
    )
    exec(
        _compile(source, f"<trioserver generated handle {fn.__module__}.{method.label}>"), namespace
    )
    caller: Callable[..., Any] = namespace[method.name]
    caller.__qualname__ = fn.__qualname__
    caller.__module__ = fn.__module__
    caller.__doc__ = fn.__doc__
    caller.__wrapped__ = fn  # type: ignore[attr-defined]
    caller._trioserver_method = method  # type: ignore[attr-defined]
    return caller


def _compile(source: str, filename: str) -> CodeType:
    """Compile `source` under a file name of its own, registered in `linecache` (as attrs does),
    so that tracebacks, `inspect.getsource` and debuggers show the generated lines."""
    base, count = filename, 1
    while filename in linecache.cache:  # a class defined again (in a loop, a test): number it
        filename = f"{base[:-1]}-{count}>"
        count += 1
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return compile(source, filename, "exec")
