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
    try:
        seconds = float(value)
    except OverflowError:  # an int or a Fraction beyond a float's range
        if not value < 0:
            raise InvalidServerDefinition(
                f"{where}: timeout {_short(value)} is too large for a number of seconds "
                f"(beyond a float's range); for no limit of its own, write timeout=None"
            ) from None
        seconds = -math.inf  # refused below, as any negative
    if math.isnan(seconds) or seconds < 0:
        raise InvalidServerDefinition(
            f"{where}: timeout must be None or a number of seconds >= 0, not {_short(value)}"
        )
    return None if math.isinf(seconds) else seconds


def _short(value: object) -> str:
    """`value`'s repr, cut short: a huge int has hundreds of digits."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"
