"""Budgets: the `timeout=` a handler or server declares, checked once at definition time."""

from __future__ import annotations

import math
import numbers

from ._errors import InvalidServerDefinition

DEFAULT_TIMEOUT = 5.0
"""The budget of a handler whose server and method set none (GenServer's default)."""


class Inherit:
    """Marker for "no budget given here: use the server's default"."""

    def __repr__(self) -> str:
        return "INHERIT"


INHERIT = Inherit()


def check_timeout(value: object, where: str) -> float | None:
    """Return `value` as seconds (``None`` for no limit), or refuse it naming `where`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidServerDefinition(
            f"{where}: timeout must be None or a number of seconds >= 0, not {value!r}"
        )
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        raise InvalidServerDefinition(
            f"{where}: timeout must be None or a number of seconds >= 0, not {value!r}"
        )
    return None if math.isinf(seconds) else seconds
