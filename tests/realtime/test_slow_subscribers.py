"""A subscriber that stops reading, over real sockets: it is told it missed changes (never
handed a stream with a silent gap), and the organization's other subscribers get every change."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import ClientConnection, connect

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.events import ObjectType
from payout_gateway.events import broker as broker_module
from tests.realtime.support import (
    PROTOCOL,
    ServerLoop,
    acknowledged,
    bearer,
    connected,
    eventually,
    gateway_with_fake_commet,
    received,
    subscribe,
    ws_url,
)
from tests.support.gateway import RunningGateway, SeededOrg

ORG = "slow-subscriber"
ORGS = (SeededOrg(ORG, Provider.COMMET, "ck_live_slowsub0000001"),)
PAYOUT_CHANGES = "subscription { payoutStatusChanged { payoutId toStatus } }"
QUEUE_SIZE = 20
# A bound on the publishing, should the slow subscriber never fall behind: not a timing claim.
MAX_PUBLISHED = 200_000


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with gateway_with_fake_commet(tmp_path_factory.mktemp("slow"), ORGS) as running:
        yield running


def payout_id(n: int) -> str:
    return f"po_{n:06d}"


async def publish(server: ServerLoop, n: int) -> None:
    """Payout ``n`` paid, published as the pipeline does, on the gateway's loop."""
    await server.publish(ObjectType.PAYOUT, payout_id(n))


def shown(message: dict[str, Any]) -> str:
    """The gateway id of the payout a ``next`` shows."""
    global_id = message["payload"]["data"]["payoutStatusChanged"]["payoutId"]
    return base64.b64decode(global_id).decode().removeprefix("Payout:")


async def stalled_connection(gw: RunningGateway) -> ClientConnection:
    """A client whose socket takes little and which reads one message ahead at most: once it
    stops calling recv, the gateway's writes to it stop going through."""
    address = urlsplit(gw.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((address.hostname, address.port))
    sock.setblocking(False)
    return await connect(
        ws_url(gw.graphql_url),
        sock=sock,
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
        max_queue=1,
        # Uncompressed: repetitive JSON deflates to a few bytes a message, which would take
        # far more changes to fill the socket's buffers.
        compression=None,
        open_timeout=10,
        close_timeout=10,
    )


async def test_a_subscriber_that_stops_reading_is_told_it_missed_changes(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A small buffer per subscription, so that the test publishes little to overflow it.
    monkeypatch.setattr(broker_module, "SUBSCRIBER_QUEUE_SIZE", QUEUE_SIZE)
    caplog.set_level(logging.WARNING, logger="payout_gateway.events")
    server = ServerLoop(gw, monkeypatch)
    slow = await stalled_connection(gw)
    try:
        async with connected(gw) as steady:
            for ws in (slow, steady):
                await acknowledged(ws, bearer(gw, ORG))
                await subscribe(ws, "1", PAYOUT_CHANGES)
            await eventually(lambda: server.subscribers() == 2, message="both subscribed")
            steady_seen: list[str] = []

            async def drain_steady() -> None:
                while True:
                    message = await received(steady)
                    assert message["type"] == "next", message
                    steady_seen.append(shown(message))

            draining = asyncio.create_task(drain_steady())
            published = 0
            # The slow client reads nothing now: publish until its subscription has fallen
            # further behind than the gateway keeps for it.
            while not any("slow subscriber" in r.getMessage() for r in caplog.records):
                assert published < MAX_PUBLISHED, "the slow subscriber never fell behind"
                await publish(server, published)
                published += 1
            # One more after it fell behind, which it must not be shown past a silent gap.
            await publish(server, published)
            published += 1
            await eventually(
                lambda: len(steady_seen) == published or draining.done(),
                timeout=60,
                message="the steady subscriber got every change",
            )
            draining.cancel()
            # Every change, once, in order, for the subscriber that kept reading.
            assert steady_seen == [payout_id(n) for n in range(published)]

        # The slow client reads again: what it is shown is a run of changes without a gap,
        # then an error saying it missed some, which ends the subscription.
        shown_ids: list[str] = []
        while not shown_ids or shown_ids[-1] != payout_id(published - 1):
            message = await received(slow)
            if message["type"] != "next" or "errors" in message["payload"]:
                break
            shown_ids.append(shown(message))
        assert shown_ids == [payout_id(n) for n in range(len(shown_ids))], "a silent gap"
        assert len(shown_ids) < published
        assert message["type"] == "next", message
        [error] = message["payload"]["errors"]
        assert error["extensions"] == {"code": "SUBSCRIPTION_OVERFLOW", "retryable": True}
        assert await received(slow) == {"id": "1", "type": "complete"}
        # The connection itself goes on: the client subscribes again on it.
        await eventually(lambda: server.subscribers() == 0, message="both subscriptions ended")
        await subscribe(slow, "2", PAYOUT_CHANGES)
        await eventually(lambda: server.subscribers() == 1, message="subscribed again")
        await publish(server, published)
        assert shown(await received(slow)) == payout_id(published)
    finally:
        await slow.close()
    # One warning for the subscription that fell behind, not one per change it missed.
    warnings = [r for r in caplog.records if "slow subscriber" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_a_subscriber_whose_changes_were_lost_between_replicas_is_told_so(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ServerLoop(gw, monkeypatch)
    async with connected(gw) as ws:
        await acknowledged(ws, bearer(gw, ORG))
        await subscribe(ws, "1", PAYOUT_CHANGES)
        await eventually(lambda: server.subscribers() == 1, message="subscribed")
        await publish(server, 1)
        assert shown(await received(ws)) == payout_id(1)

        await server.lose_changes()
        message = await received(ws)
        assert message["type"] == "next", message
        [error] = message["payload"]["errors"]
        assert error["extensions"] == {"code": "SUBSCRIPTION_OVERFLOW", "retryable": True}
        assert "lost on their way to this subscription" in error["message"]
        assert await received(ws) == {"id": "1", "type": "complete"}
        # The connection goes on: subscribing again on it shows what comes next.
        await subscribe(ws, "2", PAYOUT_CHANGES)
        await eventually(lambda: server.subscribers() == 1, message="subscribed again")
        await publish(server, 2)
        assert shown(await received(ws)) == payout_id(2)
