"""request_log: provider calls ride on their request's access line, and none is lost; uvicorn's
WebSocket handshake lines lose their query strings."""

from __future__ import annotations

import asyncio
import logging

import pytest

from payout_gateway.request_log import (
    HandshakeQueryFilter,
    RequestIdFilter,
    collecting_provider_calls,
    report_provider_call,
    request_id_for,
    reset_request_id,
    set_request_id,
)

logger = logging.getLogger("tests.request_log")


def call(path: str) -> dict[str, object]:
    return {"provider": "COMMET", "method": "POST", "path": path, "status": 201}


def own_lines(caplog: pytest.LogCaptureFixture) -> list[object]:
    return [r.__dict__["path"] for r in caplog.records if r.getMessage() == "provider call"]


def test_calls_inside_a_request_are_collected_and_outside_logged_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=logger.name)
    report_provider_call(logger, call("/before"))
    with collecting_provider_calls() as calls:
        report_provider_call(logger, call("/first"))
        report_provider_call(logger, call("/retried"))
    report_provider_call(logger, call("/after"))
    assert [c["path"] for c in calls] == ["/first", "/retried"]
    assert own_lines(caplog) == ["/before", "/after"]


def test_a_request_inside_another_collects_its_own_calls() -> None:
    with collecting_provider_calls() as outer:
        report_provider_call(logger, call("/outer"))
        with collecting_provider_calls() as inner:  # e.g. a webhook delivered in-process
            report_provider_call(logger, call("/inner"))
        report_provider_call(logger, call("/outer-again"))
    assert [c["path"] for c in outer] == ["/outer", "/outer-again"]
    assert [c["path"] for c in inner] == ["/inner"]


async def test_a_task_reporting_after_its_request_ended_logs_its_call_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task inherits the request's context; its call must not go onto a line already
    written."""
    caplog.set_level(logging.INFO, logger=logger.name)
    request_over = asyncio.Event()

    async def later() -> None:
        report_provider_call(logger, call("/during"))
        await request_over.wait()
        report_provider_call(logger, call("/after-the-request"))

    with collecting_provider_calls() as calls:
        task = asyncio.create_task(later())
        await asyncio.sleep(0)
    request_over.set()
    await task
    assert [c["path"] for c in calls] == ["/during"]
    assert own_lines(caplog) == ["/after-the-request"]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("lb-7f3a.2c:1", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("has space", False),
        ('quote"d', False),
        ("", False),
        (None, False),
    ],
)
def test_a_callers_request_id_is_kept_only_when_it_is_a_plain_token(
    given: str | None, kept: bool
) -> None:
    request_id = request_id_for(given)
    if kept:
        assert request_id == given
    else:
        assert request_id != given and len(request_id) == 32 and int(request_id, 16) >= 0


async def test_records_logged_while_serving_a_request_carry_its_id() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RequestIdFilter())
    log = logging.getLogger("payout_gateway.test_request_id")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        serving = set_request_id("req-1")
        log.info("inside")
        # A task started while serving keeps the id (the context is copied).
        await asyncio.create_task(asyncio.to_thread(log.info, "in a thread"))
        reset_request_id(serving)
        log.info("outside")
    finally:
        log.removeHandler(handler)
    assert [getattr(r, "request_id", None) for r in records] == ["req-1", "req-1", None]


@pytest.mark.parametrize(
    ("message", "args"),
    [
        ('%s - "WebSocket %s" [accepted]', ("127.0.0.1:5000", "/graphql?token=pgw_secret")),
        ('%s - "WebSocket %s" 403', ("127.0.0.1:5000", "/graphql?account=000123456789")),
        ('%s - "WebSocket %s" %d', ("127.0.0.1:5000", "/graphql?a=1&b=2", 500)),
    ],
)
def test_uvicorns_websocket_handshake_lines_lose_their_query_string(
    message: str, args: tuple[object, ...]
) -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, message, args, None)
    assert HandshakeQueryFilter().filter(record)
    assert "?" not in record.getMessage()
    assert record.getMessage().startswith('127.0.0.1:5000 - "WebSocket /graphql"')
    assert record.args == (args[0], "/graphql", *args[2:])


def test_other_records_pass_the_handshake_filter_untouched() -> None:
    args = ("/graphql?kept=1",)
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "path %s", args, None)
    assert HandshakeQueryFilter().filter(record)
    assert record.args == args
