"""One log line per request: the provider calls a request makes ride on its access-log record.

A request that adds a bank account used to write two JSON lines, its access line and one per
provider call, and each line costs the logging machinery and its JSON formatter more than
the rest of the record put together (about a tenth of an add's CPU for the two). The calls a
request makes now go into its access line as ``provider_calls`` (one entry per attempt, so
retries show), the line to read first anyway. A call made outside any logged request (the
status refresher, a task that outlived its request) still gets a line of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

ProviderCall = dict[str, Any]


class _RequestCalls:
    """The calls of one request; closed once its access line is written."""

    __slots__ = ("calls", "open")

    def __init__(self) -> None:
        self.calls: list[ProviderCall] = []
        self.open = True


_CURRENT: ContextVar[_RequestCalls | None] = ContextVar(
    "payout_gateway_request_calls", default=None
)


@contextmanager
def collecting_provider_calls() -> Iterator[list[ProviderCall]]:
    """Provider calls reported inside the block (and by tasks it starts, until it ends) are
    collected in the list it yields instead of being logged one by one."""
    collector = _RequestCalls()
    token = _CURRENT.set(collector)
    try:
        yield collector.calls
    finally:
        collector.open = False
        _CURRENT.reset(token)


def report_provider_call(logger: logging.Logger, call: ProviderCall) -> None:
    """Onto the access line of the request making the call, or a record of its own on
    ``logger`` when no request is collecting."""
    collector = _CURRENT.get()
    if collector is not None and collector.open:
        collector.calls.append(call)
    else:
        logger.info("provider call", extra=call)
