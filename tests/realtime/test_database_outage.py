"""WebSocket clients while the gateway's database is unavailable: a connection whose credential
cannot be looked up is closed with 1013 (Try Again Later), never 4403 (Forbidden), and a running
subscription that meets the outage ends with a typed, retryable STORE_UNAVAILABLE error instead
of an UNAUTHENTICATED one."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.events import ObjectType
from tests.realtime.support import (
    Database,
    ServerLoop,
    acknowledged,
    bearer,
    connected,
    eventually,
    gateway_with_fake_commet,
    received,
    subscribe,
)
from tests.support.gateway import RunningGateway, SeededOrg

# The ids the gateway gives (request_log.request_id_for): a process prefix and a count, in hex.
REQUEST_ID = re.compile(r"[0-9a-f]{32}")

# One organization per test: a key the gateway has looked up is cached for 5 s (tenancy.py),
# and each connection test needs its first lookup to meet the outage.
ORGS = tuple(
    SeededOrg(name, Provider.COMMET, f"ck_live_outage{number:07d}")
    for number, name in enumerate(
        ("outage-header", "outage-payload", "outage-logged", "outage-reauth", "outage-read"),
        start=1,
    )
)
TRY_AGAIN_LATER = 1013
FORBIDDEN = 4403
PAYOUT_CHANGES = "subscription { payoutStatusChanged { payoutId toStatus } }"
PAYOUT_ACCOUNT_CHANGES = "subscription { payoutAccountStatusChanged { toStatus } }"
BANK_ACCOUNT_CHANGES = "subscription { bankAccountStatusChanged { toStatus } }"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with gateway_with_fake_commet(tmp_path_factory.mktemp("outage"), ORGS) as running:
        yield running


@pytest.fixture
def database(gw: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> Database:
    return Database(gw, monkeypatch)


async def close_answering(
    gw: RunningGateway, payload: object, headers: dict[str, str] | None = None
) -> Close:
    """The close frame the server answers ``connection_init`` with."""
    init = (
        {"type": "connection_init"}
        if payload is None
        else {"type": "connection_init", "payload": payload}
    )
    async with connected(gw, headers) as ws:
        await ws.send(json.dumps(init))
        with pytest.raises(ConnectionClosed) as closed:
            answer = await ws.recv(decode=True)
            pytest.fail(f"answered {answer!r} instead of closing")
    assert closed.value.rcvd is not None, "the connection ended without a close frame"
    return closed.value.rcvd


def assert_try_again_later(close: Close) -> None:
    assert close.code == TRY_AGAIN_LATER
    assert close.reason == "The gateway's database is unavailable; retry the connection later."
    # RFC 6455: a close frame's reason fits in 123 bytes.
    assert len(close.reason.encode()) <= 123


async def test_a_handshake_header_that_cannot_be_looked_up_is_closed_with_try_again_later(
    gw: RunningGateway, database: Database
) -> None:
    database.available = False
    close = await close_answering(gw, None, headers={"Authorization": bearer(gw, "outage-header")})
    assert_try_again_later(close)


@pytest.mark.parametrize("field", ["Authorization", "authorization"])
async def test_a_connection_init_credential_that_cannot_be_looked_up_is_closed_with_try_again_later(
    gw: RunningGateway, database: Database, field: str
) -> None:
    database.available = False
    close = await close_answering(gw, {field: bearer(gw, "outage-payload")})
    assert_try_again_later(close)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"Authorization": "pgw_without_scheme"},
        {"authorization": "Basic cGd3Og=="},
        {"Authorization": ["Bearer", "pgw_x"]},
    ],
)
async def test_a_credential_refused_without_the_database_is_still_forbidden_during_an_outage(
    gw: RunningGateway, database: Database, payload: object
) -> None:
    database.available = False
    assert (await close_answering(gw, payload)).code == FORBIDDEN


async def test_an_unknown_key_is_still_forbidden_while_the_database_answers(
    gw: RunningGateway,
) -> None:
    close = await close_answering(gw, {"Authorization": "Bearer pgw_not_a_key"})
    assert close.code == FORBIDDEN


async def test_the_refused_connection_is_logged_with_the_cause_type_only(
    gw: RunningGateway,
    database: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database.available = False
    caplog.set_level(logging.WARNING)
    close = await close_answering(gw, {"Authorization": bearer(gw, "outage-logged")})
    assert close.code == TRY_AGAIN_LATER
    await eventually(lambda: _closing_records(caplog) != [], message="the close logged")
    [record] = _closing_records(caplog)
    assert record.levelno == logging.WARNING
    assert "OSError" in record.getMessage()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert gw.keys["outage-logged"] not in logged
    assert "the database is gone" not in logged  # the cause's type, not its message


def _closing_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "1013" in r.getMessage()]


def assert_ended_by_the_outage(answer: Any, operation_id: str) -> None:
    assert answer["id"] == operation_id and answer["type"] == "next", answer
    assert answer["payload"]["data"] is None
    [error] = answer["payload"]["errors"]
    # Not the revoked key's UNAUTHENTICATED: the credential was not found wanting. The
    # operation's own request id, as an HTTP request's.
    assert error["extensions"] == {
        "code": "STORE_UNAVAILABLE",
        "retryable": True,
        "requestId": error["extensions"]["requestId"],
    }
    assert REQUEST_ID.fullmatch(error["extensions"]["requestId"]), error
    assert error["message"] == (
        "The gateway's database is unavailable: this subscription has ended; subscribe again."
    )


async def test_a_subscription_whose_key_cannot_be_checked_again_ends_with_a_retryable_error(
    gw: RunningGateway, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ServerLoop(gw, monkeypatch)
    async with connected(gw) as ws:
        await acknowledged(ws, bearer(gw, "outage-reauth"))
        await subscribe(ws, "1", PAYOUT_CHANGES)
        await eventually(lambda: server.subscribers() == 1, message="subscription live")
        # The key was looked up at connection_init and would be answered from the cache for
        # 5 s (tenancy.py); without it, the check before the event asks the database. A
        # payout's event reads nothing more from the store: only that check meets the outage.
        monkeypatch.setattr(gw.state.tenancy, "_cache", None)
        database.available = False
        await server.publish(ObjectType.PAYOUT)
        assert_ended_by_the_outage(await received(ws), "1")
        assert await received(ws) == {"id": "1", "type": "complete"}

        # The connection stays open: subscribed again once the database answers, the next
        # change arrives.
        database.available = True
        await eventually(lambda: server.subscribers() == 0, message="subscription released")
        await subscribe(ws, "2", PAYOUT_CHANGES)
        await eventually(lambda: server.subscribers() == 1, message="subscribed again")
        await server.publish(ObjectType.PAYOUT)
        event = await received(ws)
        assert event["id"] == "2" and event["type"] == "next", event
        assert event["payload"]["data"]["payoutStatusChanged"]["toStatus"] == "PAID"


@pytest.mark.parametrize(
    ("query", "object_type"),
    [
        pytest.param(PAYOUT_ACCOUNT_CHANGES, ObjectType.PAYOUT_ACCOUNT, id="payout account"),
        pytest.param(BANK_ACCOUNT_CHANGES, ObjectType.BANK_ACCOUNT, id="bank account"),
    ],
)
async def test_a_subscription_whose_event_cannot_be_read_ends_with_the_same_retryable_error(
    gw: RunningGateway,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    object_type: ObjectType,
) -> None:
    server = ServerLoop(gw, monkeypatch)
    async with connected(gw) as ws:
        await acknowledged(ws, bearer(gw, "outage-read"))
        await subscribe(ws, "1", query)
        await eventually(lambda: server.subscribers() == 1, message="subscription live")
        # The key, looked up at connection_init, is most likely still cached: then the first
        # to meet the outage is the event's read of the object it shows (else the check of
        # the key, which answers the same).
        database.available = False
        await server.publish(object_type)
        assert_ended_by_the_outage(await received(ws), "1")
        assert await received(ws) == {"id": "1", "type": "complete"}
