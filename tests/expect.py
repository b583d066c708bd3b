"""Shared expectations of the definition tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from trioserver import InvalidServerDefinition, TrioServerError


@contextmanager
def refused(*names: str) -> Iterator[None]:
    """Expect InvalidServerDefinition (a TypeError and a TrioServerError) naming each of `names`."""
    with pytest.raises(InvalidServerDefinition) as info:
        yield
    error = info.value
    assert isinstance(error, TypeError)
    assert isinstance(error, TrioServerError)
    for name in names:
        assert name in str(error), f"{name!r} not named in: {error}"
