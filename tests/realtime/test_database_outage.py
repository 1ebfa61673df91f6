"""WebSocket clients while the gateway's database is unavailable: a connection whose credential
cannot be looked up is closed with 1013 (Try Again Later), never 4403 (Forbidden)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import StoreUnavailableError
from payout_gateway.store.database import StoreSession
from tests.realtime.support import WAIT, eventually, ws_url
from tests.support.fakes import FakeProvider
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway

PROTOCOL = "graphql-transport-ws"
# One organization per test: a key the gateway has looked up is cached for 5 s (tenancy.py),
# and each connection test needs its first lookup to meet the outage.
ORGS = tuple(
    SeededOrg(name, Provider.COMMET, f"ck_live_outage{number:07d}")
    for number, name in enumerate(
        ("outage-header", "outage-payload", "outage-logged"),
        start=1,
    )
)
TRY_AGAIN_LATER = 1013
FORBIDDEN = 4403


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(
        tmp_path_factory.mktemp("outage"),
        providers={Provider.COMMET: FakeProvider(Provider.COMMET)},
        orgs=ORGS,
        refresh_interval_seconds=0,
    ) as running:
        yield running


class Database:
    """The gateway's store, made to fail as it does when its database is unavailable: while
    ``available`` is False, every session raises the store's outage error (caused, as the
    store's is, by the driver's failure)."""

    def __init__(self, gw: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        self.available = True
        store = gw.state.store
        working = store.session

        @asynccontextmanager
        async def session(*, write: bool = True) -> AsyncIterator[StoreSession]:
            if not self.available:
                raise StoreUnavailableError() from OSError("the database is gone")
            async with working(write=write) as opened:
                yield opened

        monkeypatch.setattr(store, "session", session)


@pytest.fixture
def database(gw: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> Database:
    return Database(gw, monkeypatch)


@asynccontextmanager
async def connected(
    gw: RunningGateway, headers: dict[str, str] | None = None
) -> AsyncIterator[ClientConnection]:
    async with connect(
        ws_url(gw.graphql_url),
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
        additional_headers=headers,
        open_timeout=WAIT,
        close_timeout=WAIT,
    ) as ws:
        yield ws


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


def bearer(gw: RunningGateway, org: str) -> str:
    return f"Bearer {gw.keys[org]}"


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
