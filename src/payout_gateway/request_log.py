"""One log line per request, the provider calls it makes riding on it; and the request's id
on every record logged while it is served.

A request that adds a bank account used to write two JSON lines, its access line and one per
provider call, and each line costs the logging machinery and its JSON formatter more than
the rest of the record put together (about a tenth of an add's CPU for the two). The calls a
request makes now go into its access line as ``provider_calls`` (one entry per attempt, so
retries show), the line to read first anyway. A call made outside any logged request (the
status refresher, a task that outlived its request) still gets a line of its own.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
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


_REQUEST_ID: ContextVar[str | None] = ContextVar("payout_gateway_request_id", default=None)
# What a caller's (or its load balancer's) own X-Request-Id may be to be kept as the id.
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_for(given: str | None) -> str:
    """The id a request is known by: the caller's ``X-Request-Id`` when it is a plain token
    (so a load balancer's id carries through), else a new one: this process's random prefix
    and a count (unique without a uuid4's 2 µs of randomness per request)."""
    if given is not None and _GIVEN_ID.fullmatch(given):
        return given
    return f"{_process_prefix}{next(_issued):012x}"


def _new_process_prefix() -> None:
    global _process_prefix, _issued
    _process_prefix, _issued = os.urandom(10).hex(), itertools.count()


_process_prefix = ""
_issued = itertools.count()
_new_process_prefix()
# A forked child starts its own series (``serve --workers`` spawns, but a fork must not repeat).
os.register_at_fork(after_in_child=_new_process_prefix)


def set_request_id(request_id: str) -> Token[str | None]:
    """Records logged from here (and by tasks started from here) carry ``request_id`` until
    the token goes back to ``reset_request_id``. A plain pair, not a context manager: this is
    on every request's path, and a ``contextmanager`` costs about 1 µs more."""
    return _REQUEST_ID.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    _REQUEST_ID.reset(token)


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Puts the id of the request being served on each record the gateway's handler writes,
    so that an error line and the request's access line can be found together."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = _REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class HandshakeQueryFilter(logging.Filter):
    """Cuts the query string from uvicorn's WebSocket handshake lines (``"WebSocket
    /graphql?..." [accepted]``, ``403`` and the like), which print the path with it whatever
    the access-log setting. The gateway reads nothing from a WebSocket's query string, but a
    client may still put a credential or an account number there, and no log line may carry
    one (the access log leaves query strings out for the same reason)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            isinstance(record.msg, str)
            and record.msg.startswith('%s - "WebSocket %s"')
            and isinstance(record.args, tuple)
            and len(record.args) >= 2
            and isinstance(record.args[1], str)
        ):
            path, _, _ = record.args[1].partition("?")
            record.args = (record.args[0], path, *record.args[2:])
        return True


def report_provider_call(logger: logging.Logger, call: ProviderCall) -> None:
    """Onto the access line of the request making the call, or a record of its own on
    ``logger`` when no request is collecting."""
    collector = _CURRENT.get()
    if collector is not None and collector.open:
        collector.calls.append(call)
    else:
        logger.info("provider call", extra=call)
