"""What the store raises when its database fails: StoreUnavailableError, caused by the driver's
own failure, which the tests of each failure still check."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from payout_gateway.domain.errors import StoreUnavailableError


def caused_by(
    failure: BaseException | None,
    cause: type[BaseException] | tuple[type[BaseException], ...],
    match: str | None = None,
) -> bool:
    """Whether ``failure`` is the store's outage error raised from a ``cause`` whose message
    matches ``match``."""
    return (
        isinstance(failure, StoreUnavailableError)
        and isinstance(failure.__cause__, cause)
        and (match is None or re.search(match, str(failure.__cause__)) is not None)
    )


@contextmanager
def raises_store_unavailable(
    cause: type[BaseException] | tuple[type[BaseException], ...], match: str | None = None
) -> Iterator[None]:
    """``pytest.raises`` for a store session that failed with ``cause``."""
    with pytest.raises(StoreUnavailableError) as raised:
        yield
    assert caused_by(raised.value, cause, match), repr(raised.value.__cause__)
